//! One client connection: read request heads (keep-alive, pipelining), route each request,
//! and turn any error into an Anthropic-shaped answer at this one place.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::body_buffers::BodyBuffers;
use super::deadline::Deadline;
use super::worker::Worker;
use crate::config::Config;
use crate::credentials::domain::HostCache;
use crate::http::error::{write_error, ErrorReply};
use crate::http::request::{
    parse_request_into, BodyFraming, HeadError, RequestHead, MAX_HEAD_BYTES,
};
use crate::notify;
use crate::proxy::{self, ProxyError};
use crate::request_id::RequestId;
use crate::routes::{self, Route};

/// Initial read buffer per connection; grows for large bodies and shrinks back after.
const INITIAL_BUFFER: usize = 8 * 1024;
/// Buffers grown past this are dropped between requests so idle connections stay small.
const KEEP_BUFFER_UP_TO: usize = 64 * 1024;
/// Initial capacity of the response-head and upstream-head buffers.
const SCRATCH_BUFFER: usize = 1024;

/// The client side of a connection and its reusable buffers.
pub struct ClientConn {
    stream: TcpStream,
    /// Bytes read from the client; `buf[pos..]` is not yet consumed.
    pub buf: Vec<u8>,
    pub pos: usize,
    /// Scratch for response heads and framed bodies written to the client.
    pub out: Vec<u8>,
    /// The request head being built for the upstream.
    pub upstream_head: Vec<u8>,
    /// The current request's body has not been read to its end.
    pub body_pending: bool,
    /// Some of the current response has been written: errors can no longer be answered.
    pub response_started: bool,
    /// The domain the last Host header named.
    pub hosts: HostCache,
    /// The limit on whichever wait this connection's task is in, client or upstream.
    pub deadline: Rc<Deadline>,
    body_timeout: Duration,
    write_timeout: Duration,
}

impl ClientConn {
    fn new(stream: TcpStream, config: &Config, deadline: Rc<Deadline>) -> Self {
        ClientConn {
            stream,
            buf: Vec::with_capacity(INITIAL_BUFFER),
            pos: 0,
            out: Vec::with_capacity(SCRATCH_BUFFER),
            upstream_head: Vec::with_capacity(SCRATCH_BUFFER),
            body_pending: false,
            response_started: false,
            hosts: HostCache::default(),
            deadline,
            body_timeout: config.body_timeout,
            write_timeout: config.client_write_timeout,
        }
    }

    /// Unconsumed bytes already read.
    pub fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets consumed bytes when nothing unconsumed remains (cheap: no copy).
    pub fn discard_consumed(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more of a request body, of which `expected` bytes at most are still to come
    /// (`usize::MAX` when unknown); a pause longer than the body timeout is an error of
    /// kind `TimedOut`, EOF one of kind `UnexpectedEof`.
    pub async fn read_body_more(&mut self, expected: usize) -> io::Result<usize> {
        let deadline = Rc::clone(&self.deadline);
        match deadline
            .within(self.body_timeout, self.read_more(expected))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Reads more client bytes after the existing ones, of which `expected` at most are
    /// still to come. EOF is an error: a request was in progress.
    async fn read_more(&mut self, expected: usize) -> io::Result<usize> {
        // Little room left: grow, unless it is room for all that is still to come. (A body
        // read whole has exactly its room made; growing it for its last few KB reallocated
        // the whole body into a buffer twice its size: W3, 256 KB bodies, one realloc of
        // ~8.9k instructions per request.)
        let room = self.buf.capacity() - self.buf.len();
        if room < 4096 && room < expected {
            self.buf.reserve(16 * 1024);
        }
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        let (res, slice) = self
            .stream
            .read(std::mem::take(&mut self.buf).slice_mut(len..cap))
            .await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            other => other,
        }
    }

    /// Writes `out` to the client and empties it.
    pub async fn write_out(&mut self) -> io::Result<()> {
        let write = self.stream.write_all(std::mem::take(&mut self.out));
        match self.deadline.within(self.write_timeout, write).await {
            Ok((res, mut out)) => {
                out.clear();
                self.out = out;
                res.map(|_| ())
            }
            // The buffer went with the cancelled write; the connection is finished anyway.
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Writes `data[range]` to the client, handing the buffer back.
    pub async fn write_slice(
        &mut self,
        data: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        let write = self.stream.write_all(data.slice(range));
        match self.deadline.within(self.write_timeout, write).await {
            Ok((res, slice)) => (res.map(|_| ()), slice.into_inner()),
            Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
        }
    }

    /// Answers `Expect: 100-continue` before the body is read.
    pub async fn send_continue(&mut self) -> io::Result<()> {
        let (res, _) = self
            .stream
            .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
            .await;
        res.map(|_| ())
    }

    /// Reads until a whole request head is buffered and parsed into `head`. `Ok(false)`:
    /// the client closed or idled out.
    ///
    /// On a fresh connection the head must be complete `header_timeout` after the accept;
    /// on a kept-alive one the client may idle `keepalive_timeout`, then the head must be
    /// complete `header_timeout` after its first byte. A partial head past its deadline is
    /// [`HeadError::Timeout`] (slowloris); an idle connection just closes.
    async fn read_head(
        &mut self,
        worker: &Worker,
        fresh: bool,
        head: &mut RequestHead,
    ) -> Result<bool, HeadError> {
        let config = &worker.shared.config;
        let mut deadline = fresh.then(|| Instant::now() + config.header_timeout);
        loop {
            if self.available() > 0
                && parse_request_into(
                    &self.buf[self.pos..],
                    &worker.shared.config.upstream,
                    &mut self.upstream_head,
                    head,
                )?
            {
                return Ok(true);
            }
            if self.pos > 0 {
                // Keep only the unconsumed (pipelined or partial) bytes, at the front.
                self.buf.copy_within(self.pos.., 0);
                self.buf.truncate(self.buf.len() - self.pos);
                self.pos = 0;
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            // One clock read per wait: a kept-alive head that arrives whole in one read
            // (the usual case) never needs its own deadline, so it is set only when a
            // partial head is found here on the next turn.
            let now = Instant::now();
            let wait_until = match deadline {
                Some(deadline) => deadline,
                None if self.buf.is_empty() => now + config.keepalive_timeout,
                None => *deadline.insert(now + config.header_timeout),
            };
            let limit = wait_until.saturating_duration_since(now);
            // (A cancelled read takes the buffer with it: decide from what was there before.)
            let idle = self.buf.is_empty();
            let deadline = Rc::clone(&self.deadline);
            match deadline.within(limit, self.read_more(usize::MAX)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(false),
                Err(_) if idle => return Ok(false),
                Err(_) => return Err(HeadError::Timeout),
            }
        }
    }

    /// Lets go of the buffers while the response waits on a slow upstream (an event
    /// stream between two events): the request has been forwarded by then, and unread
    /// (pipelined) bytes are kept. [`ClientConn::recycle`] restores them before the next
    /// request. On W4 (3000 streams of one 200 B event per 100 ms) these three held
    /// 6.5 KiB of RSS per open stream, for a few hundred bytes of content.
    pub fn park(&mut self, bodies: &BodyBuffers) {
        if self.pos == self.buf.len() {
            self.release_buf(Vec::new(), bodies);
            self.pos = 0;
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        self.upstream_head = Vec::new();
    }

    /// Replaces the read buffer, handing one grown for a large body to the worker's store.
    fn release_buf(&mut self, with: Vec<u8>, bodies: &BodyBuffers) {
        let old = std::mem::replace(&mut self.buf, with);
        if old.capacity() > KEEP_BUFFER_UP_TO {
            bodies.keep(old);
        }
    }

    /// Prepares for the next request on this connection.
    fn recycle(&mut self, bodies: &BodyBuffers) {
        self.discard_consumed();
        let oversized = self.buf.capacity() > KEEP_BUFFER_UP_TO && self.buf.is_empty();
        // (A zero capacity: parked during the last response.)
        if oversized || self.buf.capacity() == 0 {
            self.release_buf(Vec::with_capacity(INITIAL_BUFFER), bodies);
        }
        if self.out.capacity() == 0 {
            self.out = Vec::with_capacity(SCRATCH_BUFFER);
        }
        if self.upstream_head.capacity() == 0 {
            self.upstream_head = Vec::with_capacity(SCRATCH_BUFFER);
        }
    }
}

/// Serves one client connection until it closes, errs, idles out or shutdown ends it.
pub fn serve(stream: TcpStream, worker: Rc<Worker>) -> impl Future<Output = ()> {
    let _ = stream.set_nodelay(true);
    // The connection is built here and lent to `serve_conn`, rather than `stream` being
    // passed to an async fn: an async fn keeps its arguments twice in its future (2 × 80 B
    // for the stream), and this future is held for as long as the connection is open.
    let mut conn = ClientConn::new(stream, &worker.shared.config, worker.ticks.deadline());
    async move { serve_conn(&mut conn, &worker).await }
}

async fn serve_conn(conn: &mut ClientConn, worker: &Worker) {
    let _open = OpenConnection::count(&worker.shared.stats.proxy.open_connections);
    let lifecycle = &worker.shared.lifecycle;
    // A new connection counts as busy until its first request is answered, so shutdown
    // serves connections it has accepted instead of dropping them.
    let mut first_request = Some(lifecycle.busy_guard());
    // One head per connection, refilled by each request (its strings are reused).
    let mut head = RequestHead::default();
    loop {
        match conn
            .read_head(worker, first_request.is_some(), &mut head)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let reply = match e {
                    HeadError::TooLarge => {
                        ErrorReply::new(431, "request head is larger than 64 KiB")
                    }
                    HeadError::Invalid(why) => ErrorReply::new(400, why),
                    HeadError::Timeout => ErrorReply::new(
                        408,
                        format!(
                            "request head not received within {}s",
                            worker.shared.config.header_timeout.as_secs()
                        ),
                    ),
                };
                let id = worker.request_ids.next();
                log::info!("{id} rejected request head: {}", reply.message);
                write_error(&mut conn.out, &reply, id.as_str(), true, false);
                let _ = conn.write_out().await;
                return;
            }
        };
        let busy = first_request
            .take()
            .unwrap_or_else(|| lifecycle.busy_guard());
        let keep_alive = handle(conn, worker, &head).await;
        drop(busy);
        if !keep_alive || lifecycle.shutting_down() {
            return;
        }
        conn.recycle(&worker.body_buffers);
    }
}

/// Handles one request; returns whether the connection may carry another.
async fn handle(conn: &mut ClientConn, worker: &Worker, head: &RequestHead) -> bool {
    let request_id = worker.request_ids.next();
    conn.pos += head.head_len;
    conn.body_pending = head.framing != BodyFraming::None;
    conn.response_started = false;

    let result = match routes::route(head) {
        Route::Proxy => proxy::forward(conn, worker, head, &request_id).await,
        local => answer_locally(conn, worker, head, local, &request_id).await,
    };
    let keep_alive = |conn: &ClientConn| {
        head.keep_alive && !conn.body_pending && !worker.shared.lifecycle.shutting_down()
    };
    match result {
        Ok(proxy::Outcome { close }) => !close && keep_alive(conn),
        Err(err) => {
            log_failure(&request_id, head, &err);
            if conn.response_started {
                return false;
            }
            let Some(reply) = err.reply(&worker.shared.upstream.display) else {
                return false;
            };
            let keep = keep_alive(conn);
            let head_only = head.method == crate::http::request::Method::Head;
            write_error(&mut conn.out, &reply, request_id.as_str(), !keep, head_only);
            conn.write_out().await.is_ok() && keep
        }
    }
}

async fn answer_locally(
    conn: &mut ClientConn,
    worker: &Worker,
    head: &RequestHead,
    route: Route,
    request_id: &RequestId,
) -> Result<proxy::Outcome, ProxyError> {
    // Local routes take no body; one that was sent is not read, so the connection closes.
    let close = conn.body_pending || !head.keep_alive;
    let started = Instant::now();
    routes::local_response(&mut conn.out, worker, head, route, request_id, close);
    let status = notify::report::status_of(&conn.out);
    conn.response_started = true;
    let written = conn.write_out().await;
    let raw_head = &conn.buf[conn.pos - head.head_len..conn.pos];
    notify::report::log_local(request_id, head, raw_head, status, started.elapsed());
    written.map_err(|_| ProxyError::ClientGone)?;
    Ok(proxy::Outcome { close })
}

/// Keeps the open-connections gauge right on every exit path.
struct OpenConnection<'a>(&'a AtomicI64);

impl<'a> OpenConnection<'a> {
    fn count(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Relaxed);
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn log_failure(request_id: &RequestId, head: &RequestHead, err: &ProxyError) {
    match err {
        ProxyError::ClientGone => log::debug!("{request_id} {} client went away", head.target),
        _ => log::warn!("{request_id} {} failed: {err}", head.target),
    }
}
