//! A scriptable upstream standing in for api.anthropic.com: std threads and std::net only,
//! HTTP/1.1 keep-alive, plain or TLS, recording every request it receives.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{self, encode_chunk, Framing, Headers, LAST_CHUNK};
use super::rng;
use super::IO_TIMEOUT;

/// How often blocked mock threads look at the shutdown flag and idle clocks.
const TICK: Duration = Duration::from_millis(50);

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Index of the TCP connection it came on (0 = first accepted).
    pub conn: usize,
    /// Position among all requests this mock recorded.
    pub seq: usize,
    pub method: String,
    /// Request target exactly as sent, query string included.
    pub target: String,
    /// Headers in wire order with their original case.
    pub headers: Headers,
    /// The decoded body bytes.
    pub body: Vec<u8>,
    /// Whether the body arrived with chunked transfer coding.
    pub chunked: bool,
}

impl Recorded {
    /// The target's path, without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A one-way turnstile the test opens to let a gated reply send its next piece.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    /// Pieces the test has let through and the mock has not yet taken.
    permits: usize,
    /// Writers parked at the gate now, waiting for a permit.
    waiting: usize,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets exactly one more piece through.
    pub fn open_one(&self) {
        let (lock, cond) = &*self.state;
        lock.lock().unwrap().permits += 1;
        cond.notify_all();
    }

    /// Waits (up to [`IO_TIMEOUT`]) until a writer is parked at the gate: every piece before
    /// the gated one has been written by then, and the gated one has not. Panics on timeout.
    pub fn wait_until_held(&self) {
        let (lock, cond) = &*self.state;
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut state = lock.lock().unwrap();
        while state.waiting == 0 {
            let now = Instant::now();
            assert!(
                now < deadline,
                "no reply reached the gate within {IO_TIMEOUT:?}"
            );
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits for a permit and takes it; false on timeout or when `stop` becomes true.
    fn pass(&self, limit: Duration, stop: &AtomicBool) -> bool {
        let (lock, cond) = &*self.state;
        let deadline = Instant::now() + limit;
        let mut state = lock.lock().unwrap();
        state.waiting += 1;
        cond.notify_all();
        while state.permits == 0 {
            if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                state.waiting -= 1;
                return false;
            }
            state = cond.wait_timeout(state, TICK).unwrap().0;
        }
        state.waiting -= 1;
        state.permits -= 1;
        true
    }
}

/// How the reply body goes on the wire.
#[derive(Clone)]
pub enum ReplyBody {
    /// With Content-Length.
    Fixed(Vec<u8>),
    /// Chunked, one wire chunk per element.
    Chunked(Vec<Vec<u8>>),
    /// No length; the connection is closed after the body.
    UntilClose(Vec<u8>),
    /// Chunked; the first piece goes at once, each later one only after a gate permit.
    Gated { pieces: Vec<Vec<u8>>, gate: Gate },
    /// Chunked; one piece every `interval` (a live stream).
    Paced {
        pieces: Vec<Vec<u8>>,
        interval: Duration,
    },
    /// These bytes instead of a whole response (status and headers ignored), then close.
    Raw(Vec<u8>),
    /// Read the request, never answer, keep the connection open.
    Never,
}

/// What the handler wants sent back for one request.
#[derive(Clone)]
pub struct MockReply {
    pub status: u16,
    pub headers: Headers,
    pub body: ReplyBody,
    /// Pause before the first byte of the reply.
    pub delay: Duration,
    /// Close the connection after this reply.
    pub close: bool,
}

impl MockReply {
    /// `status` with no headers and an empty Content-Length body.
    pub fn new(status: u16) -> MockReply {
        MockReply {
            status,
            headers: Headers::default(),
            body: ReplyBody::Fixed(Vec::new()),
            delay: Duration::ZERO,
            close: false,
        }
    }

    /// `status` with `Content-Type: application/json` and `body`.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> MockReply {
        MockReply::new(status)
            .header("Content-Type", "application/json")
            .body(body)
    }

    /// An SSE response (`text/event-stream`, chunked) whose events after the first each wait
    /// for a permit from `gate`.
    pub fn sse_gated(events: Vec<String>, gate: Gate) -> MockReply {
        MockReply::new(200)
            .header("Content-Type", "text/event-stream; charset=utf-8")
            .header("Cache-Control", "no-cache")
            .gated(events.into_iter().map(String::into_bytes).collect(), gate)
    }

    /// An SSE response with every event in its own chunk, sent without waiting.
    pub fn sse(events: Vec<String>) -> MockReply {
        MockReply::new(200)
            .header("Content-Type", "text/event-stream; charset=utf-8")
            .header("Cache-Control", "no-cache")
            .chunked(events.into_iter().map(String::into_bytes).collect())
    }

    /// An SSE response that sends one event every `interval`, like a live generation.
    pub fn sse_paced(events: Vec<String>, interval: Duration) -> MockReply {
        let pieces = events.into_iter().map(String::into_bytes).collect();
        MockReply {
            body: ReplyBody::Paced { pieces, interval },
            ..MockReply::new(200).header("Content-Type", "text/event-stream")
        }
    }

    /// Raw bytes instead of an HTTP response, then close.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> MockReply {
        MockReply {
            body: ReplyBody::Raw(bytes.into()),
            ..MockReply::new(0)
        }
    }

    /// Never answer.
    pub fn never() -> MockReply {
        MockReply {
            body: ReplyBody::Never,
            ..MockReply::new(0)
        }
    }

    /// Adds a header line (kept in order, case as given).
    pub fn header(mut self, name: &str, value: &str) -> MockReply {
        self.headers.0.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds header lines.
    pub fn headers(mut self, headers: &Headers) -> MockReply {
        self.headers.0.extend(headers.0.iter().cloned());
        self
    }

    /// A Content-Length body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> MockReply {
        self.body = ReplyBody::Fixed(body.into());
        self
    }

    /// A chunked body.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> MockReply {
        self.body = ReplyBody::Chunked(chunks);
        self
    }

    /// A close-delimited body.
    pub fn until_close(mut self, body: impl Into<Vec<u8>>) -> MockReply {
        self.body = ReplyBody::UntilClose(body.into());
        self
    }

    /// A chunked body whose pieces after the first wait for `gate`.
    pub fn gated(mut self, pieces: Vec<Vec<u8>>, gate: Gate) -> MockReply {
        assert!(
            !pieces.is_empty() && pieces.iter().all(|p| !p.is_empty()),
            "gated pieces must be non-empty"
        );
        self.body = ReplyBody::Gated { pieces, gate };
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> MockReply {
        self.delay = delay;
        self
    }

    /// Closes the connection after the reply (and says so with `Connection: close`).
    pub fn close(mut self) -> MockReply {
        self.close = true;
        self.header("Connection", "close")
    }
}

/// The request handler: decides the reply from the recorded request.
pub type Handler = Arc<dyn Fn(&Recorded) -> MockReply + Send + Sync>;

/// When the mock closes a keep-alive connection that waits for its next request.
#[derive(Clone, Copy, Debug, Default)]
enum IdleClose {
    /// Never (until the peer closes or the mock stops).
    #[default]
    Never,
    /// Once it has waited this long, before its first request too.
    After(Duration),
    /// After each reply, once it has waited a random time in `0..=max` drawn afresh for
    /// every idle period from `(seed, connection, replies so far)`. A fresh connection waits
    /// for its first request as long as it takes: a real server closes idle keep-alive
    /// connections, not ones just opened.
    Random { max: Duration, seed: u64 },
}

impl IdleClose {
    /// How long the connection may wait for its next request; `None` = no limit.
    fn limit(self, conn: usize, replies: usize) -> Option<Duration> {
        match self {
            IdleClose::Never => None,
            IdleClose::After(after) => Some(after),
            IdleClose::Random { .. } if replies == 0 => None,
            IdleClose::Random { max, seed } => {
                let millis = max.as_millis() as u64;
                let draw = rng::hash3(seed, conn as u64, replies as u64) % (millis + 1);
                Some(Duration::from_millis(draw))
            }
        }
    }
}

/// Options for a mock upstream.
#[derive(Default)]
pub struct MockBuilder {
    tls: Option<Arc<rustls::ServerConfig>>,
    idle_close: IdleClose,
}

impl MockBuilder {
    /// Serve TLS with this configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> MockBuilder {
        self.tls = Some(config);
        self
    }

    /// Close a keep-alive connection once it has waited this long for its next request.
    pub fn idle_close(mut self, after: Duration) -> MockBuilder {
        self.idle_close = IdleClose::After(after);
        self
    }

    /// Close a keep-alive connection after each reply once it has been idle for a random
    /// time in `0..=max`, a new draw per idle period, reproducible from `seed`.
    pub fn idle_close_random(mut self, max: Duration, seed: u64) -> MockBuilder {
        self.idle_close = IdleClose::Random { max, seed };
        self
    }

    /// Binds 127.0.0.1:0 and starts accepting.
    pub fn start(
        self,
        handler: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static,
    ) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the mock upstream");
        let addr = listener.local_addr().expect("mock address");
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            tls: self.tls,
            idle_close: self.idle_close,
            requests: Mutex::new(Vec::new()),
            recorded: Condvar::new(),
            connections: AtomicUsize::new(0),
            idle_closes: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            fronted_by: OnceLock::new(),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, shared))
        };
        MockUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }
}

/// A running mock upstream; stops, closes every connection and joins its threads on drop.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    handler: Handler,
    tls: Option<Arc<rustls::ServerConfig>>,
    idle_close: IdleClose,
    requests: Mutex<Vec<Recorded>>,
    recorded: Condvar,
    connections: AtomicUsize,
    /// Connections the mock closed because they sat idle past `idle_close`.
    idle_closes: AtomicUsize,
    /// Connections parked in a [`ReplyBody::Never`] reply now.
    holding: AtomicUsize,
    /// The nexus in front of this mock, whose `/metrics` tell whether it ever connected.
    fronted_by: OnceLock<SocketAddr>,
    stop: AtomicBool,
    /// A handle on every accepted socket, to unblock its thread at shutdown.
    open: Mutex<Vec<TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl MockUpstream {
    /// Options: TLS, idle close.
    pub fn builder() -> MockBuilder {
        MockBuilder::default()
    }

    /// A plain-HTTP mock with default options.
    pub fn start(handler: impl Fn(&Recorded) -> MockReply + Send + Sync + 'static) -> MockUpstream {
        MockUpstream::builder().start(handler)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether this mock speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// The authority nexus must send as `Host` (`localhost:PORT` for TLS, as in its URL).
    pub fn authority(&self) -> String {
        if self.is_tls() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        }
    }

    /// The `UPSTREAM_URL` for nexus.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections the mock has closed (fully: shut down both ways) because they sat idle.
    pub fn idle_closes(&self) -> usize {
        self.shared.idle_closes.load(Ordering::SeqCst)
    }

    /// Waits until the mock has closed at least `n` idle connections; panics after
    /// [`IO_TIMEOUT`].
    pub fn wait_for_idle_closes(&self, n: usize) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.idle_closes() < n {
            assert!(
                Instant::now() < deadline,
                "the mock closed {} idle connections, expected {n} within {IO_TIMEOUT:?}",
                self.idle_closes()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connections parked in a [`MockReply::never`] reply now (read, never answered).
    pub fn holding(&self) -> usize {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections are parked in a never-answered reply; panics
    /// after [`IO_TIMEOUT`].
    pub fn wait_for_holding(&self, n: usize) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.holding() < n {
            assert!(
                Instant::now() < deadline,
                "{} connections held, expected {n} within {IO_TIMEOUT:?}",
                self.holding()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Records which nexus forwards to this mock (done by [`super::Rig`]), so checks like
    /// [`super::assert_no_upstream_contact`] can ask that nexus what it did.
    pub fn set_fronted_by(&self, nexus: SocketAddr) {
        let _ = self.shared.fronted_by.set(nexus);
    }

    /// The nexus in front of this mock, if one was recorded.
    pub fn fronted_by(&self) -> Option<SocketAddr> {
        self.shared.fronted_by.get().copied()
    }

    /// Waits until at least `n` requests are recorded and returns them all; panics after
    /// [`IO_TIMEOUT`].
    pub fn wait_for_requests(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut requests = self.shared.requests.lock().unwrap();
        while requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                panic!("mock upstream saw {} requests, expected {n} within {IO_TIMEOUT:?}: {requests:#?}", requests.len());
            }
            requests = self
                .shared
                .recorded
                .wait_timeout(requests, deadline - now)
                .unwrap()
                .0;
        }
        requests.clone()
    }

    /// The only request recorded; panics if there is not exactly one.
    pub fn single_request(&self) -> Recorded {
        let requests = self.wait_for_requests(1);
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one upstream request, got {requests:#?}"
        );
        requests.into_iter().next().unwrap()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the blocking accept(); it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers: Vec<_> = self.shared.workers.lock().unwrap().drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let index = shared.connections.fetch_add(1, Ordering::SeqCst);
        let worker = {
            let shared = shared.clone();
            thread::spawn(move || serve_connection(stream, index, &shared))
        };
        shared.workers.lock().unwrap().push(worker);
    }
}

/// One accepted connection: plain TCP or rustls over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    /// Ends the connection the way a well-behaved server does (TLS: close_notify first).
    fn close(&mut self) {
        if let Conn::Tls(tls) = self {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        let tcp = match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => &tls.sock,
        };
        let _ = tcp.shutdown(Shutdown::Both);
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

fn serve_connection(tcp: TcpStream, index: usize, shared: &Shared) {
    let Ok(control) = tcp.try_clone() else { return };
    if let Ok(handle) = tcp.try_clone() {
        shared.open.lock().unwrap().push(handle);
    }
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let stream = match &shared.tls {
        Some(config) => match rustls::ServerConnection::new(config.clone()) {
            Ok(conn) => Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            Err(_) => return,
        },
        None => Conn::Plain(tcp),
    };
    let mut reader = BufReader::new(stream);
    let mut replies = 0;
    let idle = loop {
        match wait_for_request(&mut reader, &control, shared, index, replies) {
            Waited::Request => {}
            Waited::Idle => break true,
            Waited::Gone => break false,
        }
        let _ = control.set_read_timeout(Some(IO_TIMEOUT));
        let Ok(Some(request)) = read_request(&mut reader, index) else {
            break false;
        };
        let request = record(shared, request);
        let reply = panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&request)))
            .unwrap_or_else(|_| MockReply::json(500, r#"{"mock":"handler panicked"}"#).close());
        match write_reply(reader.get_mut(), reply, shared) {
            Ok(true) => replies += 1,
            _ => break false,
        }
    };
    reader.get_mut().close();
    if idle {
        // Counted after the close, so a test that saw the count sees a closed socket.
        shared.idle_closes.fetch_add(1, Ordering::SeqCst);
    }
}

/// How waiting for the next request ended.
enum Waited {
    /// Its first byte is here.
    Request,
    /// The connection sat idle past its limit: the mock closes it.
    Idle,
    /// The peer closed, the connection failed, or the mock is stopping.
    Gone,
}

/// Waits for the first byte of the next request on connection `conn`, which has sent
/// `replies` replies so far.
fn wait_for_request(
    reader: &mut BufReader<Conn>,
    control: &TcpStream,
    shared: &Shared,
    conn: usize,
    replies: usize,
) -> Waited {
    let limit = shared.idle_close.limit(conn, replies);
    let idle_since = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Waited::Gone;
        }
        // Wake at the idle limit itself, not at the next tick after it.
        let left = limit.map(|limit| limit.saturating_sub(idle_since.elapsed()));
        if left == Some(Duration::ZERO) && reader.buffer().is_empty() {
            return Waited::Idle;
        }
        let wait = left.map_or(TICK, |left| left.min(TICK));
        let _ = control.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match reader.fill_buf() {
            Ok([]) => return Waited::Gone,
            Ok(_) => return Waited::Request,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Waited::Gone,
        }
    }
}

fn read_request(reader: &mut impl BufRead, conn: usize) -> io::Result<Option<Recorded>> {
    let Some(head) = http::read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = head.start_line.split(' ');
    let (Some(method), Some(target), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(http::invalid(format!(
            "bad request line {:?}",
            head.start_line
        )));
    };
    let framing = Framing::of_request(&head.headers)?;
    let body = http::read_body(reader, framing)?;
    Ok(Some(Recorded {
        conn,
        seq: 0,
        method: method.to_string(),
        target: target.to_string(),
        chunked: framing == Framing::Chunked,
        headers: head.headers,
        body,
    }))
}

fn record(shared: &Shared, mut request: Recorded) -> Recorded {
    let mut requests = shared.requests.lock().unwrap();
    request.seq = requests.len();
    requests.push(request.clone());
    shared.recorded.notify_all();
    request
}

/// Sleeps `total` in ticks; false if the mock started stopping meanwhile.
fn pause(total: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + total;
    while Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(TICK.min(deadline - Instant::now()));
    }
    true
}

fn reply_head(reply: &MockReply, framing_header: Option<(&str, String)>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        reply.status,
        http::reason_phrase(reply.status)
    )
    .into_bytes();
    reply.headers.write_to(&mut out);
    if let Some((name, value)) = framing_header {
        if !reply.headers.contains(name) {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn send(out: &mut Conn, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

/// Writes `reply`; Ok(true) when the connection may serve another request.
fn write_reply(out: &mut Conn, reply: MockReply, shared: &Shared) -> io::Result<bool> {
    if !pause(reply.delay, &shared.stop) {
        return Ok(false);
    }
    match &reply.body {
        ReplyBody::Never => {
            shared.holding.fetch_add(1, Ordering::SeqCst);
            while pause(TICK, &shared.stop) {}
            shared.holding.fetch_sub(1, Ordering::SeqCst);
            return Ok(false);
        }
        ReplyBody::Raw(bytes) => {
            send(out, bytes)?;
            return Ok(false);
        }
        ReplyBody::Fixed(body) => {
            let mut bytes = reply_head(&reply, Some(("Content-Length", body.len().to_string())));
            bytes.extend_from_slice(body);
            send(out, &bytes)?;
        }
        ReplyBody::Chunked(chunks) => {
            let mut bytes = reply_head(&reply, Some(("Transfer-Encoding", "chunked".into())));
            bytes.extend_from_slice(&http::encode_chunked(chunks));
            send(out, &bytes)?;
        }
        ReplyBody::UntilClose(body) => {
            let mut bytes = reply_head(&reply, None);
            bytes.extend_from_slice(body);
            send(out, &bytes)?;
            return Ok(false);
        }
        ReplyBody::Paced { pieces, interval } => {
            send(
                out,
                &reply_head(&reply, Some(("Transfer-Encoding", "chunked".into()))),
            )?;
            for piece in pieces {
                // A write error means nexus dropped the stream: stop, as a server would.
                send(out, &encode_chunk(piece))?;
                if !pause(*interval, &shared.stop) {
                    return Ok(false);
                }
            }
            send(out, LAST_CHUNK)?;
        }
        ReplyBody::Gated { pieces, gate } => {
            let mut bytes = reply_head(&reply, Some(("Transfer-Encoding", "chunked".into())));
            bytes.extend_from_slice(&encode_chunk(&pieces[0]));
            send(out, &bytes)?;
            for piece in &pieces[1..] {
                if !gate.pass(IO_TIMEOUT, &shared.stop) {
                    // The test never opened the gate: abandon the response mid-body.
                    return Ok(false);
                }
                send(out, &encode_chunk(piece))?;
            }
            send(out, LAST_CHUNK)?;
        }
    }
    Ok(!reply.close)
}
