//! One client connection's transport and buffers: request heads read (keep-alive,
//! pipelining), request bodies read, responses written, each wait bounded by the
//! connection's [`Deadline`].

mod body;
pub mod body_budget;
pub mod body_buffers;
pub mod deadline;
pub mod stream;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};

use crate::config::Config;
use crate::credentials::domain::{Domain, HostCache};
use crate::http::request::{parse_request_into, HeadError, RequestHead, MAX_HEAD_BYTES};
pub use body::{BodyError, HeldBody};
use body_buffers::BodyBuffers;
use deadline::Deadline;
pub use stream::ClientStream;

/// Initial read buffer per connection; grows for large bodies and shrinks back after.
const INITIAL_BUFFER: usize = 8 * 1024;
/// Buffers grown past this are dropped between requests so idle connections stay small.
const KEEP_BUFFER_UP_TO: usize = 64 * 1024;
/// Initial capacity of the response-head and upstream-head buffers.
const SCRATCH_BUFFER: usize = 1024;

/// The client side of a connection and its reusable buffers.
pub struct ClientConn {
    stream: ClientStream,
    /// The SNI name of a TLS connection, which every request's Host must name.
    server_name: Option<Box<str>>,
    /// Bytes read from the client; `buf[pos..]` is not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    /// Scratch for response heads and framed bodies written to the client.
    out: Vec<u8>,
    /// The request head being built for the upstream.
    upstream_head: Vec<u8>,
    /// The current request's body has not been read to its end.
    body_pending: bool,
    /// Some of the current response has been written: errors can no longer be answered.
    response_started: bool,
    /// The domain the last Host header named.
    hosts: HostCache,
    /// The limit on whichever wait this connection's task is in, client or upstream.
    deadline: Rc<Deadline>,
    config: Arc<Config>,
    /// The worker's store of large body buffers.
    bodies: Rc<BodyBuffers>,
}

impl ClientConn {
    /// A connection whose waits `deadline` bounds, lending large buffers from `bodies`.
    pub fn new(
        stream: ClientStream,
        config: Arc<Config>,
        deadline: Rc<Deadline>,
        bodies: Rc<BodyBuffers>,
    ) -> Self {
        ClientConn {
            stream,
            server_name: None,
            buf: Vec::with_capacity(INITIAL_BUFFER),
            pos: 0,
            out: Vec::with_capacity(SCRATCH_BUFFER),
            upstream_head: Vec::with_capacity(SCRATCH_BUFFER),
            body_pending: false,
            response_started: false,
            hosts: HostCache::default(),
            deadline,
            config,
            bodies,
        }
    }

    /// Remembers the SNI name the TLS handshake carried.
    pub fn set_server_name(&mut self, name: Option<String>) {
        self.server_name = name.map(String::into_boxed_str);
    }

    /// The SNI name of a TLS connection (`None` on plain TCP, or when the client sent none).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Ends the connection's TLS session cleanly (nothing on plain TCP); bounded by the
    /// write timeout.
    pub async fn close(&mut self) {
        let deadline = Rc::clone(&self.deadline);
        let _ = deadline
            .within(self.config.client_write_timeout, self.stream.close_notify())
            .await;
    }

    /// Gives the read buffer room for `needed` bytes after the unconsumed ones, from the
    /// worker's kept buffers when one is large enough.
    fn make_room(&mut self, needed: usize) {
        self.bodies.make_room(&mut self.buf, self.pos + needed);
    }

    /// The raw bytes of the request head just parsed into `head`.
    pub fn raw_head(&self, head: &RequestHead) -> &[u8] {
        &self.buf[self.pos - head.head_len..self.pos]
    }

    /// The limit on this connection's current wait, for waits the caller makes itself
    /// (on the upstream).
    pub fn deadline(&self) -> Rc<Deadline> {
        Rc::clone(&self.deadline)
    }

    /// The domain a Host header names (cached: a connection's requests share one Host).
    pub fn domain(&mut self, host: &str) -> Rc<Option<Domain>> {
        self.hosts.domain(host)
    }

    /// The response head being written to the client, and bodies re-framed for it.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The request head being built for the upstream.
    pub fn upstream_head(&mut self) -> &mut Vec<u8> {
        &mut self.upstream_head
    }

    /// Whether any of the current response was written: an error can no longer be
    /// answered.
    pub fn response_started(&self) -> bool {
        self.response_started
    }

    /// Unconsumed bytes already read.
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets consumed bytes when nothing unconsumed remains (cheap: no copy).
    fn discard_consumed(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more of a request body, of which `expected` bytes at most are still to come
    /// (`usize::MAX` when unknown); a pause longer than the body timeout is an error of
    /// kind `TimedOut`, EOF one of kind `UnexpectedEof`.
    async fn read_body_more(&mut self, expected: usize) -> io::Result<usize> {
        let deadline = Rc::clone(&self.deadline);
        match deadline
            .within(self.config.body_timeout, self.read_more(expected))
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
        self.response_started = true;
        let write = self.stream.write_all(std::mem::take(&mut self.out));
        match self
            .deadline
            .within(self.config.client_write_timeout, write)
            .await
        {
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
        self.response_started = true;
        let write = self.stream.write_all(data.slice(range));
        match self
            .deadline
            .within(self.config.client_write_timeout, write)
            .await
        {
            Ok((res, slice)) => (res.map(|_| ()), slice.into_inner()),
            Err(_) => (Err(io::ErrorKind::TimedOut.into()), Vec::new()),
        }
    }

    /// Answers `Expect: 100-continue` before the body is read.
    async fn send_continue(&mut self) -> io::Result<()> {
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
    pub async fn read_head(
        &mut self,
        fresh: bool,
        head: &mut RequestHead,
    ) -> Result<bool, HeadError> {
        let config = Arc::clone(&self.config);
        let mut deadline = fresh.then(|| Instant::now() + config.header_timeout);
        loop {
            if self.available() > 0
                && parse_request_into(
                    &self.buf[self.pos..],
                    &config.upstream,
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
            // A kept-alive connection waiting for its next head (the usual case) reads no
            // clock: the idle limit is a plain duration. The head's own deadline is set only
            // when a partial head is found here on the next turn.
            let limit = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None if self.buf.is_empty() => config.keepalive_timeout,
                None => {
                    deadline = Some(Instant::now() + config.header_timeout);
                    config.header_timeout
                }
            };
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
    pub fn park(&mut self) {
        if self.pos == self.buf.len() {
            self.release_buf(Vec::new());
            self.pos = 0;
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        self.upstream_head = Vec::new();
    }

    /// Replaces the read buffer, handing one grown for a large body to the worker's store.
    fn release_buf(&mut self, with: Vec<u8>) {
        let old = std::mem::replace(&mut self.buf, with);
        if old.capacity() > KEEP_BUFFER_UP_TO {
            self.bodies.keep(old);
        }
    }

    /// Prepares for the next request on this connection.
    pub fn recycle(&mut self) {
        self.discard_consumed();
        let oversized = self.buf.capacity() > KEEP_BUFFER_UP_TO && self.buf.is_empty();
        // (A zero capacity: parked during the last response.)
        if oversized || self.buf.capacity() == 0 {
            self.release_buf(Vec::with_capacity(INITIAL_BUFFER));
        }
        if self.out.capacity() == 0 {
            self.out = Vec::with_capacity(SCRATCH_BUFFER);
        }
        if self.upstream_head.capacity() == 0 {
            self.upstream_head = Vec::with_capacity(SCRATCH_BUFFER);
        }
    }
}
