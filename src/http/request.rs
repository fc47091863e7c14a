//! Client request heads: parse with httparse, validate framing (RFC 9112 §6), and
//! write the upstream request head in the same pass so no header is copied twice.

use super::headers::{self, Known};
use crate::http::url::UpstreamUrl;

/// Largest request head we read before answering 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one head; more is 431 too.
const MAX_HEADERS: usize = 128;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFraming {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// The request method, where nexus cares which one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Other,
}

/// What nexus needs from a client request head once the bytes are gone. A connection
/// keeps one and parses each of its requests into it, so its strings are reused.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: Method,
    /// The request target as sent (origin-form: path and query).
    pub target: String,
    /// Where the path ends in `target` (at the `?`, or its length).
    pub(crate) path_len: usize,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The client allows another request on this connection afterwards.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    pub framing: BodyFraming,
    /// The Host header, as sent.
    pub host: Option<String>,
    /// The client's own `x-api-key`.
    pub x_api_key: Option<String>,
    /// The client's own `Authorization`.
    pub authorization: Option<String>,
    /// The client's `anthropic-beta` values, joined with ", ".
    pub anthropic_beta: Option<String>,
    /// The client's `Accept-Encoding`; the proxy decides what the upstream is asked for.
    pub accept_encoding: Option<String>,
    /// `x-claude-code-session-id` (the first, if valid UTF-8), trimmed.
    pub session_id: Option<String>,
    /// Length of the head in bytes, including the blank line.
    pub head_len: usize,
}

impl RequestHead {
    /// The path without the query string.
    pub fn path(&self) -> &str {
        // Found once at parse time: routing, metering and forwarding each ask.
        &self.target[..self.path_len]
    }
}

/// Why a request head was refused; the connection answers and closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// 431: head or header count over the limit.
    TooLarge,
    /// 400 with this message.
    Invalid(&'static str),
    /// 408: the head did not arrive in time.
    Timeout,
}

/// Parses a request head from `buf`. `Ok(None)` means more bytes are needed.
///
/// On success `upstream_head` holds the start of the request for the upstream: request
/// line, `Host`, and every end-to-end header in the client's order and spelling. The
/// caller appends credentials, `anthropic-beta`, framing and the blank line.
pub fn parse_request(
    buf: &[u8],
    upstream: &UpstreamUrl,
    upstream_head: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut head = RequestHead::default();
    Ok(parse_request_into(buf, upstream, upstream_head, &mut head)?.then_some(head))
}

/// [`parse_request`] into a head kept from the previous request: its strings keep their
/// allocations (a fresh head cost two or more mallocs per request). `Ok(false)` means
/// more bytes are needed.
pub fn parse_request_into(
    buf: &[u8],
    upstream: &UpstreamUrl,
    upstream_head: &mut Vec<u8>,
    head: &mut RequestHead,
) -> Result<bool, HeadError> {
    // Uninitialised slots: filling 128 empty headers (4 KiB) cost more than parsing a
    // small head does.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Invalid("unsupported HTTP version"))
        }
        Err(_) => return Err(HeadError::Invalid("malformed request head")),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let method_text = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    if !target.starts_with('/') {
        return Err(HeadError::Invalid(
            "request target must be a path starting with /",
        ));
    }
    if has_dot_segment(target) {
        return Err(HeadError::Invalid(
            "request path must not contain . or .. segments",
        ));
    }

    let mut connection: [&[u8]; 8] = [b""; 8];
    let mut connection_count = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut host: Option<&[u8]> = None;
    head.method = match method_text {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    head.target.clear();
    head.target.push_str(target);
    head.path_len = path_len(target);
    head.http10 = http10;
    head.keep_alive = !http10;
    head.expect_continue = false;
    head.framing = BodyFraming::None;
    head.head_len = head_len;
    let mut x_api_key = None;
    let mut authorization = None;
    let mut accept_encoding = None;
    let mut session_id = None;
    let mut anthropic_beta_seen = false;

    for h in req.headers.iter() {
        let value = h.value;
        match Known::of(h.name) {
            Known::ContentLength => {
                let n = headers::parse_content_length(value)
                    .ok_or(HeadError::Invalid("invalid Content-Length"))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(HeadError::Invalid("conflicting Content-Length headers"));
                }
                content_length = Some(n);
            }
            Known::TransferEncoding => {
                // Only plain `chunked` is a framing we can read; anything else is unsafe to guess.
                if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::Invalid(
                        "unsupported Transfer-Encoding (only chunked is accepted)",
                    ));
                }
                chunked = true;
            }
            Known::Host => {
                if host.is_some() {
                    return Err(HeadError::Invalid("more than one Host header"));
                }
                host = Some(value);
            }
            Known::Connection => {
                if connection_count == connection.len() {
                    return Err(HeadError::Invalid("too many Connection headers"));
                }
                connection[connection_count] = value;
                connection_count += 1;
            }
            Known::Expect => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    head.expect_continue = true;
                }
            }
            Known::XApiKey => x_api_key = Some(text(value)?),
            Known::Authorization => authorization = Some(text(value)?),
            Known::AcceptEncoding => accept_encoding = Some(text(value)?),
            // Not a header nexus must understand: one it cannot read is passed over.
            Known::SessionId if session_id.is_none() => session_id = text(value).ok(),
            Known::AnthropicBeta => {
                // Repeated headers are joined with ", " (one list, as RFC 9110 §5.3 reads them).
                let value = text(value)?;
                let joined = head.anthropic_beta.get_or_insert_with(String::new);
                if anthropic_beta_seen {
                    joined.push_str(", ");
                } else {
                    joined.clear();
                }
                joined.push_str(value);
                anthropic_beta_seen = true;
            }
            Known::ContentType | Known::SessionId | Known::OtherHopByHop | Known::Unknown => {}
        }
    }
    put(&mut head.x_api_key, x_api_key);
    put(&mut head.authorization, authorization);
    put(&mut head.accept_encoding, accept_encoding);
    put(&mut head.session_id, session_id);
    if !anthropic_beta_seen {
        head.anthropic_beta = None;
    }
    let connection = &connection[..connection_count];

    if chunked && content_length.is_some() {
        return Err(HeadError::Invalid(
            "both Content-Length and Transfer-Encoding sent",
        ));
    }
    if host.is_none() && !http10 {
        return Err(HeadError::Invalid("missing Host header"));
    }
    // Lossy: a non-UTF-8 Host is simply not a host name (it falls through, never a file).
    put(
        &mut head.host,
        host.map(|h| String::from_utf8_lossy(h))
            .as_deref()
            .map(str::trim),
    );
    head.framing = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    if headers::connection_close(connection) {
        head.keep_alive = false;
    }

    upstream_head.clear();
    upstream_head.extend_from_slice(method_text.as_bytes());
    upstream_head.push(b' ');
    upstream_head.extend_from_slice(upstream.base_path.as_bytes());
    upstream_head.extend_from_slice(target.as_bytes());
    upstream_head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    upstream_head.extend_from_slice(upstream.authority.as_bytes());
    upstream_head.extend_from_slice(b"\r\n");
    for h in req.headers.iter() {
        if is_forwarded(h.name, connection) {
            headers::push_header(upstream_head, h.name.as_bytes(), h.value);
        }
    }
    Ok(true)
}

/// Sets an optional string field, reusing the allocation it already has.
fn put(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(kept), Some(value)) => {
            kept.clear();
            kept.push_str(value);
        }
        (None, Some(value)) => *slot = Some(value.to_owned()),
        (_, None) => *slot = None,
    }
}

/// Headers that go upstream as the client sent them. Framing, Host, credentials and
/// `anthropic-beta` are rewritten by nexus, hop-by-hop ones never leave this hop.
fn is_forwarded(name: &str, connection: &[&[u8]]) -> bool {
    let rewritten = match Known::of(name) {
        Known::Host
        | Known::ContentLength
        | Known::Expect
        | Known::AcceptEncoding
        | Known::XApiKey
        | Known::Authorization
        | Known::AnthropicBeta => true,
        known => known.is_hop_by_hop(),
    };
    !rewritten && !headers::named_by_connection(connection, name)
}

/// A header value as text, without the whitespace around it (only SP and HTAB may be
/// there). Values are ASCII but for rare ones: checked as such first, which costs a
/// fraction of a UTF-8 validation.
fn text(value: &[u8]) -> Result<&str, HeadError> {
    let value = value.trim_ascii();
    if value.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(value) });
    }
    std::str::from_utf8(value).map_err(|_| HeadError::Invalid("header value is not valid UTF-8"))
}

/// True when a path has a `.` or `..` segment, also percent-encoded: such paths could
/// reach upstream endpoints outside /v1 with nexus's credentials.
fn has_dot_segment(target: &str) -> bool {
    let path = &target.as_bytes()[..path_len(target)];
    // Paths without a dot or a percent sign (nearly all) take one pass over their bytes
    // and no splitting: the splits cost ~500 instructions per request (2% of W1's).
    path.iter().any(|&b| b == b'.' || b == b'%') && path.split(|&b| b == b'/').any(is_dot_segment)
}

/// Length of the path part of a request target (up to any `?`).
fn path_len(target: &str) -> usize {
    target
        .bytes()
        .position(|b| b == b'?')
        .unwrap_or(target.len())
}

/// `.` or `..`, each dot possibly written `%2e` or `%2E`.
fn is_dot_segment(segment: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = segment;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::url::parse_upstream_url;

    fn parse(raw: &str) -> (Result<Option<RequestHead>, HeadError>, String) {
        let upstream = parse_upstream_url("https://api.anthropic.com").unwrap();
        let mut out = Vec::new();
        let result = parse_request(raw.as_bytes(), &upstream, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_session_header_is_read_whatever_its_case_and_only_if_readable() {
        let session = |headers: &[u8]| {
            let mut raw = b"POST /v1/messages HTTP/1.1\r\nHost: a\r\n".to_vec();
            raw.extend_from_slice(headers);
            raw.extend_from_slice(b"\r\n");
            let mut out = Vec::new();
            let upstream = parse_upstream_url("http://127.0.0.1:1").unwrap();
            parse_request(&raw, &upstream, &mut out)
                .expect("a valid head")
                .expect("complete")
                .session_id
        };
        assert_eq!(
            session(b"X-Claude-Code-Session-Id:  s-123 \r\nx-claude-code-session-id: s-2\r\n")
                .as_deref(),
            Some("s-123"),
            "the first, trimmed"
        );
        assert_eq!(session(b"x-claude-code-session-idx: no\r\n"), None);
        assert_eq!(
            session(b"x-claude-code-session-id: \xff\xfe\r\n"),
            None,
            "not UTF-8: passed over"
        );
    }

    #[test]
    fn forwards_end_to_end_headers_and_rewrites_host() {
        let raw = "POST /v1/messages?beta=true HTTP/1.1\r\nHost: team.example.com:3000\r\n\
                   Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n\
                   TE: trailers\r\nanthropic-version: 2023-06-01\r\nX-Custom: Kept As Is\r\n\
                   x-api-key: sk-client\r\nanthropic-beta: a\r\nAnthropic-Beta: b\r\n\
                   Content-Length: 2\r\n\r\n{}";
        let (head, upstream) = parse(raw);
        let head = head.unwrap().unwrap();
        assert_eq!(head.path(), "/v1/messages");
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert_eq!(head.host.as_deref(), Some("team.example.com:3000"));
        assert_eq!(head.x_api_key.as_deref(), Some("sk-client"));
        assert_eq!(head.anthropic_beta.as_deref(), Some("a, b"));
        assert_eq!(head.head_len, raw.len() - 2);
        assert_eq!(
            upstream,
            "POST /v1/messages?beta=true HTTP/1.1\r\nHost: api.anthropic.com\r\n\
             anthropic-version: 2023-06-01\r\nX-Custom: Kept As Is\r\n"
        );
    }

    #[test]
    fn partial_heads_wait_and_huge_heads_are_refused() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a\r\n").0, Ok(None)));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&huge).0.unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn framing_errors_are_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET /v1/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/%2E%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nX : y\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        ];
        for raw in bad {
            assert!(
                matches!(parse(raw).0, Err(HeadError::Invalid(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_reused_head_keeps_nothing_from_the_previous_request() {
        let upstream = parse_upstream_url("https://api.anthropic.com").unwrap();
        let mut out = Vec::new();
        let mut head = RequestHead::default();
        let first = "POST /v1/messages HTTP/1.1\r\nHost: a.example\r\nx-api-key: k1\r\n\
                     Authorization: Bearer t\r\nanthropic-beta: x\r\nAnthropic-Beta: y\r\n\
                     Accept-Encoding: gzip\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}";
        assert!(parse_request_into(first.as_bytes(), &upstream, &mut out, &mut head).unwrap());
        assert_eq!(head.anthropic_beta.as_deref(), Some("x, y"));
        let second = "GET /v1/models HTTP/1.0\r\n\r\n";
        assert!(parse_request_into(second.as_bytes(), &upstream, &mut out, &mut head).unwrap());
        let fresh = parse_request(second.as_bytes(), &upstream, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(format!("{head:?}"), format!("{fresh:?}"));
    }

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for target in [
            "/.",
            "/..",
            "/v1/./x",
            "/v1/../x",
            "/%2e",
            "/%2E%2e/x",
            "/.%2e",
            "/%2e.",
            "/v1/..?q=1",
        ] {
            assert!(has_dot_segment(target), "{target}");
        }
        for target in [
            "/",
            "/v1/messages",
            "/...",
            "/.x",
            "/%2e%2e%2e",
            "/%2ex",
            "/%2",
            "/%2f",
            "/v1?x=/../",
            "/a..b",
            "//",
        ] {
            assert!(!has_dot_segment(target), "{target}");
        }
    }

    #[test]
    fn http10_and_connection_close() {
        let (head, _) = parse("GET / HTTP/1.0\r\n\r\n");
        let head = head.unwrap().unwrap();
        assert!(head.http10 && !head.keep_alive && head.host.is_none());
        let (head, _) = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(!head.unwrap().unwrap().keep_alive);
    }
}
