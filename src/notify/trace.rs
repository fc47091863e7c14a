//! The `DEBUG=true` trace, as in the seed: the incoming request, the credential type, the
//! headers forwarded upstream, the response status and headers, and the start of a
//! non-streaming body. Every header and body passes through [`super::redact`] first.

use std::fmt::Write;

use super::redact::{redact, redact_header};
use crate::credentials::UpstreamAuth;
use crate::request_id::RequestId;

/// Characters of a body shown.
pub const BODY_CHARS: usize = 1000;
const MAX_HEADERS: usize = 128;

/// `=== Incoming Request ===`: method, URL and headers of the client's request head.
pub fn incoming(id: &RequestId, head: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(head).is_err() {
        return;
    }
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .unwrap_or_default();
    let url = format!("http://{host}{}", request.path.unwrap_or(""));
    log::debug!(
        "=== Incoming Request ===\nRequest ID: {id}\nMethod: {}\nURL: {}\nHeaders: {}",
        request.method.unwrap_or(""),
        redact(&url),
        header_block(request.headers)
    );
}

/// The request body, first [`BODY_CHARS`] characters.
pub fn request_body(id: &RequestId, body: &[u8]) {
    log::debug!(
        "{id} request body: {}",
        body_excerpt(body, body.len() as u64)
    );
}

/// `Authentication type` and `Forwarding headers`: the head as it goes upstream.
pub fn forwarded(id: &RequestId, auth: &UpstreamAuth<'_>, upstream_head: &[u8]) {
    let kind = match auth {
        UpstreamAuth::ApiKey(_) => "API key",
        UpstreamAuth::OAuthBearer(_) => "OAuth",
        UpstreamAuth::ClientAuthorization(_) => "client Authorization header",
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(upstream_head).is_err() {
        return;
    }
    log::debug!(
        "{id} Authentication type: {kind}\n{id} Forwarding headers: {}",
        header_block(request.headers)
    );
}

/// `=== Response ===`: status and headers as the client gets them.
pub fn response(id: &RequestId, client_head: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if response.parse(client_head).is_err() {
        return;
    }
    log::debug!(
        "=== Response ===\nRequest ID: {id}\nStatus: {} {}\nHeaders: {}",
        response.code.unwrap_or(0),
        response.reason.unwrap_or(""),
        header_block(response.headers)
    );
}

/// The start of a non-streaming response body; `total` is its whole length.
pub fn response_body(id: &RequestId, body: &[u8], total: u64) {
    log::debug!("{id} response body: {}", body_excerpt(body, total));
}

/// Headers as the seed printed them: a JSON-looking object, one header a line, masked.
fn header_block(headers: &[httparse::Header<'_>]) -> String {
    let mut out = String::from("{");
    for (i, h) in headers.iter().enumerate() {
        let value = String::from_utf8_lossy(h.value);
        let shown = redact_header(h.name, &value);
        let name = serde_json::to_string(&h.name.to_ascii_lowercase()).unwrap_or_default();
        let shown = serde_json::to_string(&*shown).unwrap_or_default();
        let comma = if i + 1 < headers.len() { "," } else { "" };
        let _ = write!(out, "\n  {name}: {shown}{comma}");
    }
    out.push_str(if headers.is_empty() { "}" } else { "\n}" });
    out
}

/// The first [`BODY_CHARS`] characters of `body` (lossy UTF-8), masked, marked when cut.
pub fn body_excerpt(body: &[u8], total: u64) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_CHARS * 4)]);
    let cut = text.char_indices().nth(BODY_CHARS).map(|(at, _)| at);
    let shown = redact(&text[..cut.unwrap_or(text.len())]).into_owned();
    if cut.is_some() || total > body.len() as u64 {
        format!("{shown}... (truncated, {total} bytes)")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_masked_and_listed() {
        let head = b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nX-Api-Key: sk-ant-api03-abcdefghijklmnopqrstuvwxyz\r\nAuthorization: Bearer tokentokentokentoken123\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head).unwrap();
        let block = header_block(request.headers);
        assert_eq!(
            block,
            "{\n  \"host\": \"a\",\n  \"x-api-key\": \"****qrstuvwxyz\",\n  \"authorization\": \"****entoken123\"\n}"
        );
    }

    #[test]
    fn body_excerpts_are_cut_and_masked() {
        let body = format!(r#"{{"refresh_token":"abc","text":"{}"}}"#, "é".repeat(2000));
        let shown = body_excerpt(body.as_bytes(), body.len() as u64);
        assert!(
            shown.starts_with(r#"{"refresh_token":"****","text":"ééé"#),
            "{shown}"
        );
        assert!(shown.ends_with(&format!("... (truncated, {} bytes)", body.len())));
        assert_eq!(shown.chars().filter(|&c| c == 'é').count(), BODY_CHARS - 31);
        assert_eq!(body_excerpt(b"{}", 2), "{}");
    }
}
