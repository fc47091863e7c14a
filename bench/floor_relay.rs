//! The floor: the leanest HTTP/1.1 relay this runtime allows, measured beside nexus to
//! show what the kernel and monoio cost on this machine before nexus does any work.
//!
//! One upstream connection per client connection, requests forwarded as received,
//! responses relayed as they arrive (Content-Length or chunked, framing passed through).
//! No accounting, credentials, header rewriting, timeouts, pooling or error answers:
//! whatever nexus spends above this figure pays for its features. Calibration only.
//!
//! `floor_relay --port PORT --upstream HOST:PORT [--workers N]`

use std::net::SocketAddr;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use nexus::http::chunked::ChunkedDecoder;

const BUFFER: usize = 32 * 1024;

/// How much of a message is still to come after its head.
enum Body {
    Length(usize),
    Chunked(ChunkedDecoder),
}

/// Head length and body framing of the message at the start of `buf`, once whole.
fn framing(buf: &[u8], request: bool) -> Option<(usize, Body)> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    if request {
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(buf).ok()? {
            httparse::Status::Complete(n) => Some((n, body_of(req.headers)?)),
            httparse::Status::Partial => None,
        }
    } else {
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(buf).ok()? {
            httparse::Status::Complete(n) => Some((n, body_of(resp.headers)?)),
            httparse::Status::Partial => None,
        }
    }
}

fn body_of(headers: &[httparse::Header]) -> Option<Body> {
    let mut body = Body::Length(0);
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = Body::Length(std::str::from_utf8(h.value).ok()?.trim().parse().ok()?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = Body::Chunked(ChunkedDecoder::new());
        }
    }
    Some(body)
}

/// Reads more bytes after those in `buf`; `None` at EOF or on an error.
async fn read_more(stream: &mut TcpStream, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    if buf.capacity() - buf.len() < BUFFER / 2 {
        buf.reserve(BUFFER);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
    match res {
        Ok(n) if n > 0 => Some(slice.into_inner()),
        _ => None,
    }
}

/// Relays one message from `from` to `to`; `buf` holds what was already read of it.
/// Returns the buffer (emptied) for the next message, or `None` when either side ended.
async fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    mut buf: Vec<u8>,
    request: bool,
) -> Option<Vec<u8>> {
    let (head_len, mut body) = loop {
        if let Some(found) = framing(&buf, request) {
            break found;
        }
        buf = read_more(from, buf).await?;
    };
    let mut start = head_len;
    loop {
        let fresh = &buf[start..];
        let (take, done) = match &mut body {
            Body::Length(left) => {
                let take = fresh.len().min(*left);
                *left -= take;
                (take, *left == 0)
            }
            Body::Chunked(decoder) => {
                let progress = decoder.feed(fresh, &mut |_| {}).ok()?;
                (progress.consumed, progress.done)
            }
        };
        buf.truncate(start + take);
        let (res, b) = to.write_all(buf).await;
        res.ok()?;
        buf = b;
        buf.clear();
        if done {
            return Some(buf);
        }
        start = 0;
        buf = read_more(from, buf).await?;
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr) {
    let _ = client.set_nodelay(true);
    let Ok(mut up) = TcpStream::connect_addr(upstream).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let mut request = Vec::with_capacity(BUFFER);
    let mut response = Vec::with_capacity(BUFFER);
    loop {
        let Some(b) = relay(&mut client, &mut up, request, true).await else {
            return;
        };
        request = b;
        let Some(b) = relay(&mut up, &mut client, response, false).await else {
            return;
        };
        response = b;
    }
}

fn main() {
    let mut port = None;
    let mut upstream = None;
    let mut workers = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--port" => port = value.parse::<u16>().ok(),
            "--upstream" => upstream = value.parse::<SocketAddr>().ok(),
            "--workers" => workers = value.parse().unwrap_or(1),
            _ => {
                eprintln!("usage: floor_relay --port PORT --upstream HOST:PORT [--workers N]");
                std::process::exit(2);
            }
        }
    }
    let (Some(port), Some(upstream)) = (port, upstream) else {
        eprintln!("usage: floor_relay --port PORT --upstream HOST:PORT [--workers N]");
        std::process::exit(2);
    };
    let (bound, listening) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let bound = bound.clone();
            std::thread::spawn(move || {
                // The same ring setup as nexus (src/server/runtime.rs).
                let mut ring = io_uring::IoUring::builder();
                ring.setup_single_issuer().setup_defer_taskrun();
                let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(1024)
                    .uring_builder(ring)
                    .build()
                    .expect("io_uring runtime");
                rt.block_on(async move {
                    let opts = ListenerOpts::new()
                        .reuse_port(true)
                        .reuse_addr(true)
                        .backlog(4096);
                    let listener =
                        TcpListener::bind_with_config(("127.0.0.1", port), &opts).expect("bind");
                    let _ = bound.send(());
                    loop {
                        if let Ok((client, _)) = listener.accept().await {
                            monoio::spawn(serve(client, upstream));
                        }
                    }
                });
            })
        })
        .collect();
    for _ in 0..threads.len() {
        let _ = listening.recv();
    }
    println!("floor_relay listening on 127.0.0.1:{port}");
    for t in threads {
        let _ = t.join();
    }
}
