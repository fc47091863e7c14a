//! Mock Anthropic upstream for the benchmarks: thread per core on monoio, HTTP/1.1
//! keep-alive, pre-rendered responses, so it is never the bottleneck being measured.
//!
//! ```text
//! cargo run --release --example mock_upstream -- --port 18100 [--host 127.0.0.1] [--workers N]
//! ```
//!
//! Every request's body is read whole (Content-Length) and dropped. What comes back is
//! chosen by the query string (or `x-mock-*` headers, for clients that cannot set one):
//!
//! - no `events` / `stream`: a non-streaming Messages JSON body with Content-Length,
//!   ~600 B (`json_size=N` changes it);
//! - `events=N` or `stream=1`: an SSE Messages stream in chunked framing — message_start,
//!   content_block_start, ping, N content_block_delta text events of ~`size` bytes each
//!   (default 200), content_block_stop, message_delta with usage, message_stop — with
//!   `delay_ms` between the text events (default 0: the whole stream in one write).
//!
//! - `die_after=N` (SSE): the connection is dropped after N text events, mid-stream
//!   (fault injection for bench/soak.sh).
//!
//! Example: `POST /v1/messages?events=30&size=200&delay_ms=0`.
//! Prints `mock_upstream listening on HOST:PORT …` once every worker is bound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// Largest request head accepted; Claude clients send a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// Initial read buffer per connection; small because W4 keeps thousands open.
const READ_BUF: usize = 4 * 1024;
/// Read buffer used while draining large request bodies.
const BODY_BUF: usize = 64 * 1024;
/// Distinct (events, size) renderings kept per worker; more are rendered per request.
const CACHE_LIMIT: usize = 256;
const MAX_EVENTS: u32 = 1_000_000;
const MAX_EVENT_SIZE: u32 = 1 << 20;

struct Options {
    host: String,
    port: u16,
    workers: usize,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("mock_upstream: {msg}");
    eprintln!("usage: mock_upstream --port PORT [--host 127.0.0.1] [--workers N]");
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut opts = Options {
        host: "127.0.0.1".into(),
        port: 0,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage_exit(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--host" | "-H" => opts.host = value(),
            "--port" | "-p" => {
                opts.port = value().parse().unwrap_or_else(|_| usage_exit("bad --port"))
            }
            "--workers" | "-w" => {
                opts.workers = value()
                    .parse()
                    .unwrap_or_else(|_| usage_exit("bad --workers"))
            }
            "--help" | "-h" => usage_exit("help"),
            other => usage_exit(&format!("unknown argument {other}")),
        }
    }
    if opts.port == 0 {
        usage_exit("--port is required");
    }
    opts.workers = opts.workers.max(1);
    opts
}

fn main() {
    let opts = parse_options();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, String>>();
    let mut threads = Vec::new();
    for id in 0..opts.workers {
        let host = opts.host.clone();
        let port = opts.port;
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mock-{id}"))
            .spawn(move || run_worker(host, port, ready))
            .expect("spawning a worker thread");
        threads.push(thread);
    }
    drop(ready_tx);
    let mut driver = "";
    for _ in 0..opts.workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err(e)) => {
                eprintln!("mock_upstream: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("mock_upstream: a worker died before binding");
                std::process::exit(1);
            }
        }
    }
    println!(
        "mock_upstream listening on {}:{} ({} workers, {driver})",
        opts.host, opts.port, opts.workers
    );
    for thread in threads {
        let _ = thread.join();
    }
}

/// Builds the best runtime available (io_uring with DEFER_TASKRUN + SINGLE_ISSUER, plain
/// io_uring, then epoll) and serves on it.
fn run_worker(host: String, port: u16, ready: mpsc::Sender<Result<&'static str, String>>) {
    let mut ring = io_uring::IoUring::builder();
    ring.setup_single_issuer().setup_defer_taskrun();
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .uring_builder(ring)
        .build()
    {
        return rt.block_on(serve(host, port, ready, "io_uring"));
    }
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()
    {
        return rt.block_on(serve(host, port, ready, "io_uring (no DEFER_TASKRUN)"));
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("building an epoll runtime");
    rt.block_on(serve(host, port, ready, "epoll"))
}

async fn serve(
    host: String,
    port: u16,
    ready: mpsc::Sender<Result<&'static str, String>>,
    driver: &'static str,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(8192);
    let listener = match TcpListener::bind_with_config((host.as_str(), port), &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot listen on {host}:{port}: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(driver));
    let cache = Rc::new(Renderings::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let cache = Rc::clone(&cache);
                monoio::spawn(async move {
                    let _ = connection(stream, cache).await;
                });
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// What one request asked for.
#[derive(Clone, Copy)]
enum Reply {
    Json {
        size: u32,
    },
    /// `die_after`: drop the connection after that many text events (fault injection).
    Sse {
        events: u32,
        size: u32,
        delay_ms: u32,
        die_after: Option<u32>,
    },
}

struct Request {
    reply: Reply,
    content_length: u64,
    close: bool,
    chunked: bool,
}

#[derive(Default)]
struct Params {
    stream: bool,
    events: Option<u32>,
    size: Option<u32>,
    delay_ms: Option<u32>,
    json_size: Option<u32>,
    die_after: Option<u32>,
}

impl Params {
    fn set(&mut self, key: &str, value: &str) {
        let num = || value.parse::<u32>().ok();
        match key {
            "stream" => self.stream = matches!(value, "1" | "true"),
            "events" => self.events = num().map(|n| n.min(MAX_EVENTS)),
            "size" => self.size = num().map(|n| n.min(MAX_EVENT_SIZE)),
            "delay_ms" => self.delay_ms = num(),
            "json_size" => self.json_size = num().map(|n| n.min(MAX_EVENT_SIZE)),
            "die_after" => self.die_after = num(),
            _ => {}
        }
    }

    fn reply(&self) -> Reply {
        if self.stream || self.events.is_some() {
            Reply::Sse {
                events: self.events.unwrap_or(30),
                size: self.size.unwrap_or(200),
                delay_ms: self.delay_ms.unwrap_or(0),
                die_after: self.die_after,
            }
        } else {
            Reply::Json {
                size: self.json_size.unwrap_or(600),
            }
        }
    }
}

fn parse_request(req: &httparse::Request<'_, '_>) -> Result<Request, &'static str> {
    let mut params = Params::default();
    let target = req.path.unwrap_or("/");
    if let Some((_, query)) = target.split_once('?') {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.set(k, v);
        }
    }
    let mut content_length = 0u64;
    let mut close = req.version == Some(0);
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| "header is not UTF-8")?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| "bad content-length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if let Some(key) = strip_prefix_ignore_case(name, "x-mock-") {
            params.set(&key.replace('-', "_").to_ascii_lowercase(), value);
        }
    }
    Ok(Request {
        reply: params.reply(),
        content_length,
        close,
        chunked,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Serves one keep-alive connection until the peer closes it or asks to.
async fn connection(mut stream: TcpStream, cache: Rc<Renderings>) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut pos = 0usize;
    loop {
        // Read until a whole request head is buffered.
        let (head_len, req) = loop {
            if pos < buf.len() {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&buf[pos..]) {
                    Ok(httparse::Status::Complete(n)) => match parse_request(&parsed) {
                        Ok(req) => break (n, req),
                        Err(why) => return reject(&mut stream, 400, why).await,
                    },
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return reject(&mut stream, 400, "malformed request head").await,
                }
                if buf.len() - pos > MAX_HEAD {
                    return reject(&mut stream, 431, "request head too large").await;
                }
            }
            if pos == buf.len() {
                buf.clear();
                pos = 0;
            } else if pos > 0 {
                buf.drain(..pos);
                pos = 0;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_BUF);
            }
            let (len, cap) = (buf.len(), buf.capacity());
            let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
            buf = slice.into_inner();
            if res? == 0 {
                return Ok(());
            }
        };
        if req.chunked {
            return reject(
                &mut stream,
                501,
                "chunked request bodies are not supported by the mock",
            )
            .await;
        }
        pos += head_len;

        // Drain the body: what is buffered first, then straight reads into a scratch buffer.
        let mut remaining = req.content_length;
        let take = remaining.min((buf.len() - pos) as u64) as usize;
        pos += take;
        remaining -= take as u64;
        if pos == buf.len() {
            buf.clear();
            pos = 0;
        }
        if remaining > 0 {
            let small = std::mem::take(&mut buf);
            let mut scratch: Vec<u8> = Vec::with_capacity(if remaining > READ_BUF as u64 {
                BODY_BUF
            } else {
                READ_BUF
            });
            while remaining > 0 {
                scratch.clear();
                let (res, b) = stream.read(scratch).await;
                scratch = b;
                let n = res? as u64;
                if n == 0 {
                    return Ok(());
                }
                if n <= remaining {
                    remaining -= n;
                } else {
                    // The next (pipelined) request began in the same read.
                    pos = remaining as usize;
                    remaining = 0;
                }
            }
            if pos > 0 && pos < scratch.len() {
                buf = scratch;
            } else {
                buf = small;
                buf.clear();
                pos = 0;
            }
        }

        respond(&mut stream, &cache, req.reply).await?;
        if req.close {
            return Ok(());
        }
    }
}

async fn reject(stream: &mut TcpStream, status: u16, why: &str) -> io::Result<()> {
    let body = format!(
        r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"mock: {why}"}}}}"#
    );
    let out = format!(
        "HTTP/1.1 {status} Mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(out.into_bytes()).await.0.map(|_| ())
}

async fn respond(stream: &mut TcpStream, cache: &Renderings, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Json { size } => {
            let bytes = cache.json(size);
            stream.write_all(bytes).await.0?;
        }
        Reply::Sse {
            events,
            size,
            delay_ms,
            die_after,
        } => {
            let sse = cache.sse(events, size);
            if let Some(n) = die_after {
                // Send the opening events and n text events, then vanish mid-stream.
                let end = sse.cuts[(n as usize).min(sse.cuts.len() - 1)];
                stream
                    .write_all(Rc::clone(&sse.bytes).slice(..end))
                    .await
                    .0?;
                return Err(io::Error::other(
                    "die_after: dropping the stream on purpose",
                ));
            }
            if delay_ms == 0 {
                stream.write_all(Rc::clone(&sse.bytes)).await.0?;
            } else {
                // Deadlines from the first write, not sleeps after each write: a busy
                // machine shows up as late (bunched) events, not as a longer stream.
                let delay = Duration::from_millis(delay_ms as u64);
                let began = monoio::time::Instant::now();
                let mut start = 0;
                for (i, &end) in sse.cuts.iter().enumerate() {
                    if i > 0 {
                        monoio::time::sleep_until(began + delay * i as u32).await;
                    }
                    stream
                        .write_all(Rc::clone(&sse.bytes).slice(start..end))
                        .await
                        .0?;
                    start = end;
                }
            }
        }
    }
    Ok(())
}

/// A rendered SSE response and where to pause: `cuts[0]` ends the head and opening
/// events, each later cut ends one text event; the last cut is the end.
struct Sse {
    bytes: Rc<Vec<u8>>,
    cuts: Vec<usize>,
}

/// Per-worker cache of rendered responses (single thread: `RefCell`).
#[derive(Default)]
struct Renderings {
    json: RefCell<HashMap<u32, Rc<Vec<u8>>>>,
    sse: RefCell<HashMap<(u32, u32), Rc<Sse>>>,
}

impl Renderings {
    fn json(&self, size: u32) -> Rc<Vec<u8>> {
        let mut map = self.json.borrow_mut();
        if let Some(hit) = map.get(&size) {
            return Rc::clone(hit);
        }
        let rendered = Rc::new(render_json(size as usize));
        if map.len() < CACHE_LIMIT {
            map.insert(size, Rc::clone(&rendered));
        }
        rendered
    }

    fn sse(&self, events: u32, size: u32) -> Rc<Sse> {
        let mut map = self.sse.borrow_mut();
        if let Some(hit) = map.get(&(events, size)) {
            return Rc::clone(hit);
        }
        let rendered = Rc::new(render_sse(events, size as usize));
        if map.len() < CACHE_LIMIT {
            map.insert((events, size), Rc::clone(&rendered));
        }
        rendered
    }
}

const FILLER: &str = "The quick brown fox reads src/main.rs and proposes a small, careful change. ";

/// `len` bytes of JSON-safe prose.
fn filler(len: usize, seed: usize) -> String {
    FILLER
        .chars()
        .cycle()
        .skip(seed % FILLER.len())
        .take(len)
        .collect()
}

const RESPONSE_HEADERS: &str = "request-id: req_mock0123456789abcdef\r\nanthropic-organization-id: 00000000-0000-0000-0000-000000000000\r\n";

/// A non-streaming Messages response (text + tool_use, as in the API) padded to `size`.
fn render_json(size: usize) -> Vec<u8> {
    let build = |pad: &str| {
        format!(
            concat!(
                r#"{{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5","#,
                r#""content":[{{"type":"text","text":"I'll read the file. {}"}},"#,
                r#"{{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"Read","input":{{"file_path":"/repo/src/main.rs","limit":40}}}}],"#,
                r#""stop_reason":"tool_use","stop_sequence":null,"#,
                r#""usage":{{"input_tokens":901,"cache_creation_input_tokens":120,"cache_read_input_tokens":3000,"output_tokens":72}}}}"#
            ),
            pad
        )
    };
    let bare = build("").len();
    let body = build(&filler(size.saturating_sub(bare), 0));
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{RESPONSE_HEADERS}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn push_chunk(out: &mut Vec<u8>, data: &str) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn text_event(size: usize, i: usize) -> String {
    let build = |text: &str| {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
        )
    };
    let bare = build("").len();
    build(&filler(size.saturating_sub(bare).max(1), i * 7))
}

/// A streamed Messages response in chunked framing, one chunk per SSE event.
fn render_sse(events: u32, size: usize) -> Sse {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n{RESPONSE_HEADERS}\r\n"
    )
    .into_bytes();
    push_chunk(
        &mut out,
        concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",",
            "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,",
            "\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,",
            "\"cache_read_input_tokens\":2048,\"output_tokens\":2}}}\n\n"
        ),
    );
    push_chunk(
        &mut out,
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    push_chunk(&mut out, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    let mut cuts = vec![out.len()];
    for i in 0..events as usize {
        push_chunk(&mut out, &text_event(size, i));
        cuts.push(out.len());
    }
    push_chunk(
        &mut out,
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    push_chunk(
        &mut out,
        &format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
            events.max(1) * 3
        ),
    );
    push_chunk(
        &mut out,
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    out.extend_from_slice(b"0\r\n\r\n");
    // The closing events go out with the last text event, as one write.
    *cuts.last_mut().expect("cuts starts non-empty") = out.len();
    Sse {
        bytes: Rc::new(out),
        cuts,
    }
}
