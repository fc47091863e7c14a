//! One whole exchange over a pooled connection: write the request, read the response
//! head, then hand out a reader for the body that returns the connection to the pool
//! when the body ends cleanly.
//!
//! The response head goes through [`crate::http::response::parse_response`] and chunked
//! bodies through [`ChunkedDecoder`], the proxy's own rules: a response with both
//! Content-Length and Transfer-Encoding, a signed, invalid or conflicting Content-Length,
//! or an upgrade is refused, never guessed at.
//!
//! A request is sent again only when it went out on a pooled connection and nothing at
//! all came back (the write failed, or the connection closed before a byte of answer):
//! that is the server having closed the idle connection, not an answer lost. Callers
//! for whom even that is too much (the OAuth refresh: a refresh token must not be spent
//! twice) use a fresh pool, which has no pooled connection to retry from.

use std::fmt;
use std::io;
use std::rc::Rc;

use monoio::buf::IoBufMut;

use super::pool::{ConnectError, Pool};
use super::transport::Connection;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::digits::push_decimal;
use crate::http::headers::push_header;
use crate::http::response::{parse_response, ResponseFraming, ResponseHead, ResponseHeadError};

/// Reads ask for at least this much room.
const READ_ROOM: usize = 4096;

/// What to send: the request line and the caller's headers. The client adds `Host`,
/// `Content-Length` and `User-Agent` itself.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub target: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
}

impl<'a> RequestHead<'a> {
    /// A `POST` to `target`.
    pub fn post(target: &'a str) -> RequestHead<'a> {
        RequestHead {
            method: "POST",
            target,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'a str, value: &'a str) -> RequestHead<'a> {
        self.headers.push((name, value));
        self
    }

    /// The request bytes, body included. Refuses anything that would not stay one header
    /// line: a CR, LF or NUL in a value, a name or method that is not a token.
    fn encode(&self, authority: &str, body: &[u8]) -> Result<Vec<u8>, SendError> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let value = |s: &str| !s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if !token(self.method) {
            return Err(SendError::InvalidHead("the method is not a token"));
        }
        if !self.target.starts_with('/') || self.target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(SendError::InvalidHead(
                "the target is not an origin-form path",
            ));
        }
        if !self.headers.iter().all(|(n, v)| token(n) && value(v)) {
            return Err(SendError::InvalidHead(
                "a header name is not a token or its value holds CR, LF or NUL",
            ));
        }
        let mut out = Vec::with_capacity(160 + self.target.len() + body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut out, b"host", authority.as_bytes());
        for (name, value) in &self.headers {
            push_header(&mut out, name.as_bytes(), value.as_bytes());
        }
        let agent = concat!("nexus/", env!("CARGO_PKG_VERSION"));
        push_header(&mut out, b"user-agent", agent.as_bytes());
        out.extend_from_slice(b"content-length: ");
        push_decimal(&mut out, body.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        Ok(out)
    }
}

/// A final response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Every header as received, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// The request head would not be well-formed HTTP; what is wrong.
    InvalidHead(&'static str),
    Connect(ConnectError),
    Write(io::Error),
    /// The connection closed or failed before a complete response head.
    Read(String),
    /// The response head cannot be trusted (see [`ResponseHeadError`]).
    Head(ResponseHeadError),
    /// The chunked body is malformed.
    Body(ChunkError),
    /// The connection closed before the body's declared end.
    Truncated,
    /// The body is longer than the caller takes (this many bytes).
    TooLarge(usize),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::InvalidHead(why) => write!(f, "request not sent: {why}"),
            SendError::Connect(e) => write!(f, "{e}"),
            SendError::Write(e) => write!(f, "sending failed: {e}"),
            SendError::Read(why) => write!(f, "{why}"),
            SendError::Head(e) => write!(f, "invalid response head ({e:?})"),
            SendError::Body(e) => write!(f, "invalid response body: {e}"),
            SendError::Truncated => f.write_str("the connection closed before the body ended"),
            SendError::TooLarge(max) => write!(f, "response body over {max} bytes"),
        }
    }
}

/// How the rest of the body is delimited.
enum Decoding {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// The response body, read on demand. Dropping it unread closes the connection.
pub struct BodyReader {
    pool: Rc<Pool>,
    conn: Option<Connection>,
    /// Bytes read but not yet decoded start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    decoding: Decoding,
    /// The connection may carry another request once the body has ended.
    reusable: bool,
}

impl Pool {
    /// Sends `head` and `body` and reads the response head; the body is left to the
    /// returned reader. On a pooled connection that the server had closed the request
    /// goes again on a fresh one (see the module doc).
    pub async fn send(
        self: &Rc<Self>,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Result<(Response, BodyReader), SendError> {
        let mut request = head.encode(&self.origin().authority, body)?;
        let is_head = head.method.eq_ignore_ascii_case("HEAD");
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None => (self.connect().await.map_err(SendError::Connect)?, false),
            };
            let (written, back) = conn.write_all(request).await;
            request = back;
            if let Err(e) = written {
                if reused {
                    continue;
                }
                return Err(SendError::Write(e));
            }
            match read_head(&mut conn, is_head).await {
                Ok((response, framing, reusable, buf)) => {
                    let decoding = match framing {
                        ResponseFraming::Empty | ResponseFraming::Length(0) => Decoding::Done,
                        ResponseFraming::Length(n) => Decoding::Length(n),
                        ResponseFraming::Chunked => Decoding::Chunked(ChunkedDecoder::new()),
                        ResponseFraming::UntilClose => Decoding::UntilClose,
                    };
                    let reader = BodyReader {
                        pool: Rc::clone(self),
                        conn: Some(conn),
                        buf,
                        pos: 0,
                        decoding,
                        reusable,
                    };
                    return Ok((response, reader));
                }
                Err((_, true)) if reused => continue,
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// Reads up to the final response head (skipping 1xx). The error says whether nothing
/// at all came back.
async fn read_head(
    conn: &mut Connection,
    is_head: bool,
) -> Result<(Response, ResponseFraming, bool, Vec<u8>), (SendError, bool)> {
    let mut buf = Vec::with_capacity(READ_ROOM);
    let mut scratch = Vec::new();
    let mut answered = false;
    loop {
        let mut headers = Vec::new();
        let mut collect =
            |name: &str, value: &[u8]| headers.push((name.to_string(), value.to_vec()));
        match parse_response(&buf, is_head, &mut scratch, &mut collect) {
            Ok(Some(ResponseHead::Interim(len))) => {
                buf.drain(..len);
                continue;
            }
            Ok(Some(ResponseHead::Final(head))) => {
                buf.drain(..head.head_len);
                let response = Response {
                    status: head.status,
                    headers,
                };
                return Ok((response, head.framing, head.reusable, buf));
            }
            Ok(None) => {}
            Err(e) => return Err((SendError::Head(e), false)),
        }
        match read_more(conn, buf).await {
            (Ok(0), _) => {
                let why = "the connection closed before a complete response".to_string();
                return Err((SendError::Read(why), !answered));
            }
            (Ok(_), more) => buf = more,
            (Err(e), _) => {
                let why = format!("reading the response failed: {e}");
                return Err((SendError::Read(why), !answered));
            }
        }
        answered = true;
    }
}

/// Reads more bytes after those in `buf`. End of stream is `Ok(0)`, a TLS peer that
/// closed without close_notify included: the framing decides whether that was early.
async fn read_more(conn: &mut Connection, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = conn.read(buf.slice_mut(len..cap)).await;
    let res = match res {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    };
    (res, slice.into_inner())
}

impl BodyReader {
    /// Reads the rest of the body, decoded. A body over `max` bytes is an error.
    pub async fn read_to_end(mut self, max: usize) -> Result<Vec<u8>, SendError> {
        let mut body = Vec::new();
        loop {
            let done = self.step(&mut |data| body.extend_from_slice(data))?;
            if body.len() > max {
                return Err(SendError::TooLarge(max));
            }
            if done || self.fill().await? {
                self.finish();
                return Ok(body);
            }
        }
    }

    /// Reads the body to its end and forgets it, so the connection can carry the next
    /// request. A body over `max` bytes is not worth it: the connection is closed instead.
    pub async fn discard(mut self, max: u64) -> Result<(), SendError> {
        let mut seen = 0u64;
        loop {
            let done = self.step(&mut |data| seen += data.len() as u64)?;
            if seen > max {
                return Ok(());
            }
            if done || self.fill().await? {
                self.finish();
                return Ok(());
            }
        }
    }

    /// Decodes what is buffered; true when the body has ended.
    fn step(&mut self, on_data: &mut impl FnMut(&[u8])) -> Result<bool, SendError> {
        let input = &self.buf[self.pos..];
        let (consumed, done) = match &mut self.decoding {
            Decoding::Done => (0, true),
            Decoding::Length(left) => {
                let take = (*left).min(input.len() as u64);
                on_data(&input[..take as usize]);
                *left -= take;
                (take as usize, *left == 0)
            }
            Decoding::Chunked(decoder) => {
                let progress = decoder.feed(input, on_data).map_err(SendError::Body)?;
                (progress.consumed, progress.done)
            }
            Decoding::UntilClose => {
                on_data(input);
                (input.len(), false)
            }
        };
        self.pos += consumed;
        if done {
            self.decoding = Decoding::Done;
        }
        Ok(done)
    }

    /// Reads the next bytes (all buffered ones were decoded); true at the end of an
    /// until-close body, an error at the end of any other.
    async fn fill(&mut self) -> Result<bool, SendError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(SendError::Truncated);
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.pos = 0;
        let (res, buf) = read_more(conn, buf).await;
        self.buf = buf;
        match res {
            Ok(0) if matches!(self.decoding, Decoding::UntilClose) => {
                self.decoding = Decoding::Done;
                self.reusable = false;
                Ok(true)
            }
            Ok(0) => Err(SendError::Truncated),
            Ok(_) => Ok(false),
            Err(e) => Err(SendError::Read(format!("reading the body failed: {e}"))),
        }
    }

    /// The body ended: the connection goes back to the pool if it can carry another
    /// request (nothing after the body, framing that allows it).
    fn finish(&mut self) {
        let clean = self.pos == self.buf.len();
        if let Some(conn) = self.conn.take() {
            if self.reusable && clean {
                self.pool.checkin(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Origin;
    use crate::http::response::ResponseHeadError;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    /// A server on 127.0.0.1 that answers the n-th request (across connections) with
    /// `replies[n]`, closing after the last; returns the port and the connection count.
    fn serve(replies: &'static [&'static str]) -> (u16, Arc<AtomicUsize>) {
        serve_closing(replies, false)
    }

    /// [`serve`], closing each connection after one answer when `close_each`.
    fn serve_closing(
        replies: &'static [&'static str],
        close_each: bool,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            let mut next = 0;
            while next < replies.len() {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                count.fetch_add(1, SeqCst);
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while next < replies.len() {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        break;
                    };
                    seen.drain(..end + 4);
                    let _ = stream.write_all(replies[next].as_bytes());
                    next += 1;
                    if close_each {
                        break;
                    }
                }
            }
        });
        (port, connections)
    }

    fn exchange(port: u16, times: usize) -> Vec<Result<(u16, Vec<u8>), SendError>> {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let origin = Origin::new(None, "127.0.0.1", port, "test").unwrap();
        let pool = Pool::new(Arc::new(origin));
        runtime.block_on(async {
            let mut results = Vec::new();
            for _ in 0..times {
                let head = RequestHead::post("/hook");
                let result = match pool.send(&head, b"").await {
                    Ok((response, body)) => body
                        .read_to_end(1024)
                        .await
                        .map(|body| (response.status, body)),
                    Err(e) => Err(e),
                };
                results.push(result);
            }
            results
        })
    }

    #[test]
    fn bodies_are_decoded_and_connections_kept_alive() {
        let (port, connections) = serve(&[
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes",
            "HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\nuntil close",
        ]);
        let results = exchange(port, 3);
        let got: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                (200, b"ok".to_vec()),
                (201, b"yes".to_vec()),
                (202, b"until close".to_vec())
            ]
        );
        assert_eq!(connections.load(SeqCst), 1, "one kept-alive connection");
    }

    #[test]
    fn a_pooled_connection_closed_while_idle_is_replaced_unseen() {
        const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (port, connections) = serve_closing(&[OK, OK, OK], true);
        let results = exchange(port, 3);
        assert!(
            results.iter().all(|r| matches!(r, Ok((200, _)))),
            "{results:?}"
        );
        assert_eq!(connections.load(SeqCst), 3);
    }

    #[test]
    fn untrustworthy_framing_is_refused() {
        for reply in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        ] {
            let replies: &'static [&'static str] = Box::leak(Box::new([reply]));
            let (port, _) = serve(replies);
            let result = exchange(port, 1).pop().unwrap();
            assert!(
                matches!(
                    result,
                    Err(SendError::Head(ResponseHeadError::AmbiguousFraming))
                ),
                "{reply:?}: {result:?}"
            );
        }
        let (port, _) = serve(&["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"]);
        let result = exchange(port, 1).pop().unwrap();
        assert!(matches!(result, Err(SendError::Truncated)), "{result:?}");
        let (port, _) = serve(&["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
        let result = exchange(port, 1).pop().unwrap();
        assert!(matches!(result, Err(SendError::Body(_))), "{result:?}");
    }

    #[test]
    fn heads_are_written_once_and_checked() {
        let head = RequestHead::post("/t?x=1").header("content-type", "application/json");
        let bytes = head.encode("example.com:8080", b"{}").unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /t?x=1 HTTP/1.1\r\nhost: example.com:8080\r\n"));
        assert!(text.contains("\r\ncontent-type: application/json\r\n"));
        assert!(text.ends_with("\r\ncontent-length: 2\r\n\r\n{}"), "{text}");
        for bad in [
            RequestHead::post("/").header("authorization", "Bearer a\r\nx-injected: 1"),
            RequestHead::post("/").header("x", "a\nb"),
            RequestHead::post("/").header("x", "a\0b"),
            RequestHead::post("/").header("bad name", "v"),
            RequestHead::post("no-slash"),
            RequestHead::post("/a b"),
        ] {
            assert!(
                matches!(bad.encode("h", b""), Err(SendError::InvalidHead(_))),
                "{bad:?}"
            );
        }
    }
}
