//! The OAuth token endpoint client: one blocking HTTP/1.1 POST over std sockets (and
//! rustls for https), run on a refresh thread so no worker ever blocks on it.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;
use serde_json::Value;

use super::file::NewTokens;
use crate::config::UpstreamUrl;
use crate::http::chunked::ChunkedDecoder;

/// Claude's public OAuth client id (the one Claude Code uses).
pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// Token responses are small; anything larger is not one.
const MAX_RESPONSE: usize = 256 * 1024;
/// Lifetime assumed when a response carries no `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// Where and how token requests go.
pub struct TokenEndpoint {
    pub url: UpstreamUrl,
    pub tls: Option<Arc<ClientConfig>>,
    /// Bound on one whole request: connect, send, response.
    pub timeout: Duration,
}

/// Why a refresh did not produce tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The endpoint said `invalid_grant`: this refresh token is dead for good.
    InvalidGrant,
    /// Anything that may go away: timeout, connection failure, 5xx, a malformed reply.
    /// The text names what happened and never contains a token.
    Transient(String),
}

impl TokenEndpoint {
    /// Checks the URL and builds TLS settings for https (`tls` is the shared client config).
    pub fn new(
        url: &str,
        tls: impl FnOnce() -> Result<Arc<ClientConfig>, String>,
        timeout: Duration,
    ) -> Result<TokenEndpoint, String> {
        let url = crate::config::parse_upstream_url(url.trim())
            .map_err(|why| format!("invalid OAUTH_TOKEN_URL {url:?}: expected {why}"))?;
        let tls = if url.tls { Some(tls()?) } else { None };
        Ok(TokenEndpoint { url, tls, timeout })
    }

    /// Trades a refresh token for new tokens.
    pub fn refresh(&self, refresh_token: &str) -> Result<NewTokens, RefreshError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
        })
        .to_string();
        let (status, body) = self
            .post(body.as_bytes())
            .map_err(RefreshError::Transient)?;
        interpret(status, &body, now_ms())
    }

    /// POSTs `body` as JSON; returns the status and the decoded response body.
    fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = || format!("no response within {}s", self.timeout.as_secs());
        let url = &self.url;
        let addrs: Vec<_> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .collect();
        let mut last_error = format!("{} resolved to no address", url.host);
        let mut tcp = None;
        for addr in addrs {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(timed_out)?;
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last_error)?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = crate::client::tls::server_name(&url.host)?;
                let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| format!("TLS setup failed: {e}"))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        let path = if url.base_path.is_empty() {
            "/"
        } else {
            url.base_path.as_str()
        };
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             accept: application/json\r\nuser-agent: nexus/{}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            url.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        let io_error = |e: io::Error| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                timed_out()
            } else {
                format!("token endpoint connection failed: {e}")
            }
        };
        stream.set_timeout(deadline).ok_or_else(timed_out)?;
        stream.write_all(&request).map_err(io_error)?;
        stream.flush().map_err(io_error)?;
        read_response(&mut stream, deadline).map_err(|e| match e {
            ReadError::Io(e) => io_error(e),
            ReadError::Invalid(why) => format!("invalid response from the token endpoint: {why}"),
            ReadError::TimedOut => timed_out(),
        })
    }
}

/// Turns the endpoint's answer into tokens or a [`RefreshError`].
fn interpret(status: u16, body: &[u8], now_ms: u64) -> Result<NewTokens, RefreshError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let code = json.as_ref().and_then(error_code);
        if code.as_deref() == Some("invalid_grant") && (400..500).contains(&status) {
            return Err(RefreshError::InvalidGrant);
        }
        return Err(RefreshError::Transient(match code {
            Some(code) => format!("token endpoint answered {status} ({code})"),
            None => format!("token endpoint answered {status}"),
        }));
    }
    let json = json.ok_or_else(|| {
        RefreshError::Transient("token endpoint answered 200 without a JSON body".into())
    })?;
    let text = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let access_token = text("access_token").ok_or_else(|| {
        RefreshError::Transient("token endpoint answered 200 without an access_token".into())
    })?;
    let expires_in = json
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_EXPIRES_IN);
    Ok(NewTokens {
        access_token,
        refresh_token: text("refresh_token"),
        expires_at: now_ms.saturating_add(expires_in.saturating_mul(1000)),
        scope: text("scope"),
    })
}

/// The OAuth `error` code (`{"error":"invalid_grant"}` or `{"error":{"type":…}}`), only if
/// it looks like a code: an endpoint's free text is never repeated into a log.
fn error_code(json: &Value) -> Option<String> {
    let error = json.get("error")?;
    let code = error
        .as_str()
        .or_else(|| error.get("type").and_then(Value::as_str))?;
    (code.len() <= 40 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then(|| code.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// Bounds the next socket operation by what is left until `deadline`; `None` if nothing is.
    fn set_timeout(&self, deadline: Instant) -> Option<()> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let tcp = match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        };
        tcp.set_read_timeout(Some(left)).ok()?;
        tcp.set_write_timeout(Some(left)).ok()?;
        Some(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

enum ReadError {
    Io(io::Error),
    Invalid(&'static str),
    TimedOut,
}

/// How the response body ends.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one response: head, then the body by its framing.
fn read_response(stream: &mut Stream, deadline: Instant) -> Result<(u16, Vec<u8>), ReadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut eof = false;
    // Head (skipping 1xx interim responses).
    let (status, framing, head_len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    buf.drain(..len);
                    continue;
                }
                break (status, framing_of(response.headers)?, len);
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(ReadError::Invalid("malformed response head")),
        }
        if eof {
            return Err(ReadError::Invalid("connection closed before a response"));
        }
        eof = fill(stream, &mut buf, &mut chunk, deadline)?;
    };
    buf.drain(..head_len);
    match framing {
        Framing::Length(n) => {
            while buf.len() < n {
                if fill(stream, &mut buf, &mut chunk, deadline)? {
                    return Err(ReadError::Invalid("body ended early"));
                }
            }
            buf.truncate(n);
            Ok((status, buf))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let progress = decoder
                    .feed(&buf[at..], &mut |data| body.extend_from_slice(data))
                    .map_err(|_| ReadError::Invalid("malformed chunked body"))?;
                at += progress.consumed;
                if progress.done {
                    return Ok((status, body));
                }
                if body.len() > MAX_RESPONSE {
                    return Err(ReadError::Invalid("response too large"));
                }
                if fill(stream, &mut buf, &mut chunk, deadline)? {
                    return Err(ReadError::Invalid("body ended early"));
                }
            }
        }
        Framing::UntilClose => {
            while !eof {
                eof = fill(stream, &mut buf, &mut chunk, deadline)?;
            }
            Ok((status, buf))
        }
    }
}

fn framing_of(headers: &[httparse::Header<'_>]) -> Result<Framing, ReadError> {
    let mut framing = Framing::UntilClose;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n = crate::http::headers::parse_content_length(header.value)
                .ok_or(ReadError::Invalid("bad content-length"))?;
            if n as usize > MAX_RESPONSE {
                return Err(ReadError::Invalid("response too large"));
            }
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(n as usize);
            }
        }
    }
    Ok(framing)
}

/// Reads more bytes into `buf`; true at end of stream.
fn fill(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
) -> Result<bool, ReadError> {
    if buf.len() > MAX_RESPONSE {
        return Err(ReadError::Invalid("response too large"));
    }
    loop {
        stream.set_timeout(deadline).ok_or(ReadError::TimedOut)?;
        match stream.read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A TLS peer that closes without close_notify: treat as end of stream; the
            // framing check decides whether the body was complete.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_answer_becomes_tokens() {
        let body = br#"{"token_type":"Bearer","access_token":"at-new","refresh_token":"rt-new","expires_in":28800,"scope":"user:inference user:profile"}"#;
        let tokens = interpret(200, body, 1_000).unwrap();
        assert_eq!(tokens.access_token, "at-new");
        assert_eq!(tokens.refresh_token.as_deref(), Some("rt-new"));
        assert_eq!(tokens.expires_at, 1_000 + 28_800_000);
        assert_eq!(tokens.scope.as_deref(), Some("user:inference user:profile"));
        let tokens = interpret(200, br#"{"access_token":"a","expires_in":60}"#, 0).unwrap();
        assert_eq!(tokens.refresh_token, None, "not rotated: the old one stays");
    }

    #[test]
    fn invalid_grant_is_final_and_everything_else_is_transient() {
        let dead = br#"{"error":"invalid_grant","error_description":"Invalid 'refresh_token' sk-ant-ort01-secret"}"#;
        assert_eq!(interpret(400, dead, 0), Err(RefreshError::InvalidGrant));
        assert_eq!(
            interpret(400, br#"{"error":{"type":"invalid_grant"}}"#, 0),
            Err(RefreshError::InvalidGrant)
        );
        for (status, body) in [
            (500, &b"{\"error\":\"invalid_grant\"}"[..]),
            (503, b"oops"),
            (429, b"{\"error\":\"rate_limited\"}"),
            (200, b"not json"),
            (200, b"{\"refresh_token\":\"x\"}"),
        ] {
            match interpret(status, body, 0) {
                Err(RefreshError::Transient(why)) => assert!(!why.contains("secret"), "{why}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        match interpret(400, br#"{"error":"Bad token sk-ant-ort01-secret"}"#, 0) {
            Err(RefreshError::Transient(why)) => assert!(!why.contains("secret"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
