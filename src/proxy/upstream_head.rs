//! The upstream request head, finished in one place. The request line, `Host` and the
//! client's end-to-end headers were written while the head was parsed
//! (`http::request::parse_request_into`); this adds the credential, `Accept-Encoding`,
//! the body's framing and the blank line; and, for a pool's next member, swaps the
//! credential in place.

use super::COALESCE_LIMIT;
use crate::conn::{ClientConn, HeldBody};
use crate::credentials::{self, UpstreamAuth};
use crate::http::digits::push_content_length;
use crate::http::headers::push_header;
use crate::http::request::{BodyFraming, Method, RequestHead};

/// Where the credential headers sit in `conn.upstream_head`.
#[derive(Debug, Clone, Copy)]
pub struct AuthSpan {
    start: usize,
    end: usize,
}

/// Completes `conn.upstream_head`; a small held body is moved behind it, so that head and
/// body go in one write.
pub fn finish(
    conn: &mut ClientConn,
    head: &RequestHead,
    auth: &UpstreamAuth<'_>,
    body: Option<&mut HeldBody>,
    metered: bool,
) -> AuthSpan {
    let mut out = std::mem::take(conn.upstream_head());
    let start = out.len();
    credentials::write_auth_headers(&mut out, auth, head.anthropic_beta.as_deref());
    let span = AuthSpan {
        start,
        end: out.len(),
    };
    // Messages responses are metered, so the upstream is asked for identity encoding: the
    // scanner then reads the very bytes the client gets. SSE events are small and flushed
    // one by one, so compression would save little on the wire and cost CPU at both ends.
    match head.accept_encoding.as_deref() {
        _ if metered => out.extend_from_slice(b"accept-encoding: identity\r\n"),
        Some(value) => push_header(&mut out, b"accept-encoding", value.as_bytes()),
        None => {}
    }
    match (&body, head.framing) {
        (Some(held), _) => push_content_length(&mut out, held.len() as u64),
        (None, BodyFraming::Length(n)) => push_content_length(&mut out, n),
        (None, BodyFraming::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (None, BodyFraming::None) if !matches!(head.method, Method::Get | Method::Head) => {
            push_content_length(&mut out, 0)
        }
        (None, BodyFraming::None) => {}
    }
    out.extend_from_slice(b"\r\n");
    if let Some(held) = body.filter(|held| held.len() <= COALESCE_LIMIT) {
        conn.append_held(held, &mut out);
    }
    *conn.upstream_head() = out;
    span
}

/// Puts `auth` in place of the credential headers at `span`: the same request, byte for
/// byte, for another pool member (the rare path of a failover).
pub fn replace_auth(
    conn: &mut ClientConn,
    span: AuthSpan,
    head: &RequestHead,
    auth: &UpstreamAuth<'_>,
) -> AuthSpan {
    let mut headers = Vec::with_capacity(span.end - span.start + 64);
    credentials::write_auth_headers(&mut headers, auth, head.anthropic_beta.as_deref());
    let end = span.start + headers.len();
    conn.upstream_head().splice(span.start..span.end, headers);
    AuthSpan {
        start: span.start,
        end,
    }
}
