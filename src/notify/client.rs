//! The webhook client: POSTs a JSON body over a kept-alive HTTP/1.1 connection (plain or
//! TLS, with the upstream's TLS roots) on the worker's own runtime, and reads the answer
//! to its end so the connection can carry the next event.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls::ClientConfig;

use super::endpoint::{Endpoint, Origin};
use super::resolve::{HostResolver, Lookup};
use crate::http::chunked::ChunkedDecoder;

/// Idle connections kept per worker, across all webhook hosts.
const MAX_IDLE: usize = 16;
/// Idle connections older than this are closed rather than reused: webhook servers
/// close idle keep-alive connections after a minute or so, and a race with that close
/// costs an attempt.
const IDLE_FOR: Duration = Duration::from_secs(20);
/// Longest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Response bodies are read and forgotten; one longer than this closes the connection.
const MAX_BODY: u64 = 1024 * 1024;
/// How often a connect waits for the resolver thread.
const RESOLVE_POLL: Duration = Duration::from_millis(20);

enum Transport {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

struct Conn {
    transport: Transport,
    fd: RawFd,
}

impl Conn {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.transport {
            Transport::Plain(s) => s.write_all(buf).await,
            Transport::Tls(s) => s.write_all(buf).await,
        }
    }

    /// An idle connection is usable only if nothing (no EOF, no stray bytes) is readable.
    fn idle_and_open(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv into a one-byte stack buffer on a socket we own.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

struct Idle {
    tls: bool,
    host: String,
    port: u16,
    conn: Conn,
    since: Instant,
}

impl Idle {
    fn serves(&self, origin: Origin<'_>) -> bool {
        self.tls == origin.tls && self.port == origin.port && self.host == origin.host
    }
}

/// One worker's webhook connections.
pub struct WebhookClient {
    resolver: Arc<HostResolver>,
    tls: TlsConnector,
    idle: RefCell<Vec<Idle>>,
}

/// How one exchange failed.
struct Failed {
    why: String,
    /// Nothing at all came back: on a pooled connection this is the server having closed
    /// it while idle, and the request may go again on a fresh one.
    silent: bool,
}

impl WebhookClient {
    /// A client resolving through `resolver` and trusting `tls`'s roots.
    pub fn new(resolver: Arc<HostResolver>, tls: Arc<ClientConfig>) -> WebhookClient {
        WebhookClient {
            resolver,
            tls: TlsConnector::from(tls),
            idle: RefCell::new(Vec::new()),
        }
    }

    /// POSTs `body` as JSON; the answer's status, or why there was none.
    pub async fn post(&self, endpoint: &Endpoint, body: &[u8]) -> Result<u16, String> {
        let mut request = Vec::with_capacity(192 + endpoint.target.len() + body.len());
        let _ = write!(
            request,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nuser-agent: nexus/{}\r\n\r\n",
            endpoint.target,
            endpoint.authority,
            body.len(),
            env!("CARGO_PKG_VERSION"),
        );
        request.extend_from_slice(body);
        loop {
            let (mut conn, reused) = match self.checkout(endpoint.origin()) {
                Some(conn) => (conn, true),
                None => (self.connect(endpoint).await?, false),
            };
            let (result, back) = exchange(&mut conn, request).await;
            request = back;
            match result {
                Ok((status, keep)) => {
                    if keep {
                        self.checkin(endpoint.origin(), conn);
                    }
                    return Ok(status);
                }
                Err(failed) if failed.silent && reused => continue,
                Err(failed) => return Err(failed.why),
            }
        }
    }

    fn checkout(&self, origin: Origin<'_>) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|i| i.since.elapsed() < IDLE_FOR);
        let at = idle.iter().rposition(|i| i.serves(origin))?;
        let found = idle.swap_remove(at).conn;
        found.idle_and_open().then_some(found)
    }

    fn checkin(&self, origin: Origin<'_>, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            tls: origin.tls,
            host: origin.host.to_string(),
            port: origin.port,
            conn,
            since: Instant::now(),
        });
    }

    async fn connect(&self, endpoint: &Endpoint) -> Result<Conn, String> {
        let addrs = loop {
            match self.resolver.lookup(&endpoint.host, endpoint.port) {
                Lookup::Ready(addrs) => break addrs,
                Lookup::Pending => monoio::time::sleep(RESOLVE_POLL).await,
                Lookup::Failed(why) => return Err(why),
            }
        };
        let mut last = format!("{} resolved to no address", endpoint.host);
        for addr in addrs.iter() {
            let stream = match TcpStream::connect_addr(*addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    last = format!("cannot connect to {addr}: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            if !endpoint.tls {
                return Ok(Conn {
                    transport: Transport::Plain(stream),
                    fd,
                });
            }
            let name = crate::client::tls::server_name(&endpoint.host)?;
            return match self.tls.connect(name, stream).await {
                Ok(tls) => Ok(Conn {
                    transport: Transport::Tls(Box::new(tls)),
                    fd,
                }),
                Err(e) => Err(format!("TLS handshake with {endpoint} failed: {e}")),
            };
        }
        Err(last)
    }
}

/// Sends the request and reads the answer to its end: `(status, connection reusable)`.
/// The request buffer comes back for a possible retry.
async fn exchange(conn: &mut Conn, request: Vec<u8>) -> (Result<(u16, bool), Failed>, Vec<u8>) {
    let (res, request) = conn.write_all(request).await;
    if let Err(e) = res {
        let failed = Failed {
            why: format!("sending failed: {e}"),
            silent: true,
        };
        return (Err(failed), request);
    }
    (read_response(conn).await, request)
}

/// How the response body ends.
enum Body {
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

async fn read_response(conn: &mut Conn) -> Result<(u16, bool), Failed> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let (status, mut keep, mut body, head_len) = loop {
        if let Some(head) = parse_head(&buf)? {
            if (100..200).contains(&head.0) {
                buf.drain(..head.3);
                continue;
            }
            break head;
        }
        if buf.len() >= MAX_HEAD {
            return Err(failed("response head too large"));
        }
        let silent = buf.is_empty();
        buf = read_more(conn, buf, silent).await?;
    };
    buf.drain(..head_len);
    let mut read_total: u64 = 0;
    loop {
        let done = match &mut body {
            Body::Empty => true,
            Body::Length(n) => {
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                keep &= take == buf.len() as u64;
                *n == 0
            }
            Body::Chunked(decoder) => {
                let progress = decoder
                    .feed(&buf, &mut |_| {})
                    .map_err(|e| failed(&format!("bad chunked body: {e}")))?;
                keep &= progress.consumed == buf.len();
                progress.done
            }
            Body::UntilClose => false,
        };
        if done {
            return Ok((status, keep));
        }
        read_total += buf.len() as u64;
        if read_total > MAX_BODY {
            return Ok((status, false));
        }
        buf.clear();
        match read_more(conn, buf, false).await {
            Ok(more) => buf = more,
            Err(_) if matches!(body, Body::UntilClose) => return Ok((status, false)),
            Err(e) => return Err(e),
        }
    }
}

/// A parsed head: status, keep-alive, body framing, head length.
type Head = (u16, bool, Body, usize);

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(failed(&format!("invalid response: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let mut keep = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| failed("invalid content-length"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep &= !value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Body::Empty
    } else if chunked {
        Body::Chunked(ChunkedDecoder::new())
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        keep = false;
        Body::UntilClose
    };
    Ok(Some((status, keep, body, len)))
}

fn failed(why: &str) -> Failed {
    Failed {
        why: why.to_string(),
        silent: false,
    }
}

/// Reads more bytes after those in `buf`; EOF is an error (`silent` if nothing came yet).
async fn read_more(conn: &mut Conn, mut buf: Vec<u8>, silent: bool) -> Result<Vec<u8>, Failed> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = conn.read(buf.slice_mut(len..cap)).await;
    let buf = slice.into_inner();
    match res {
        Ok(0) => Err(Failed {
            why: "the connection closed before a complete answer".into(),
            silent,
        }),
        Ok(_) => Ok(buf),
        Err(e) => Err(Failed {
            why: format!("reading the answer failed: {e}"),
            silent,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let (status, keep, body, len) =
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .ok()
                .flatten()
                .unwrap();
        assert_eq!((status, keep, len), (200, true, 38));
        assert!(matches!(body, Body::Length(2)));
        let (_, keep, body, _) = parse_head(
            b"HTTP/1.1 500 X\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .ok()
        .flatten()
        .unwrap();
        assert!(!keep && matches!(body, Body::Chunked(_)));
        let (_, keep, body, _) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .ok()
            .flatten()
            .unwrap();
        assert!(!keep && matches!(body, Body::UntilClose));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .ok()
            .unwrap()
            .is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
