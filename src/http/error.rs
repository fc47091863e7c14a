//! Responses nexus writes itself: the Anthropic error shape, so SDKs show our errors the
//! way they show the API's, and small JSON bodies for the local routes.

use std::io::Write;

/// An error nexus answers itself: HTTP status plus a human message (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    pub status: u16,
    pub message: String,
    /// Seconds for a `retry-after` header (a 429 that knows when to come back).
    pub retry_after: Option<u64>,
}

impl ErrorReply {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ErrorReply {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same reply with `retry-after: <secs>`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// The Anthropic error `type` the API uses for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The standard reason phrase for the statuses nexus produces.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The JSON body `{"type":"error","error":{"type":…,"message":…}}`.
pub fn error_body(reply: &ErrorReply) -> Vec<u8> {
    // Written by hand to keep the API's key order ("type" first); the message is escaped.
    let message = serde_json::to_string(&reply.message).expect("a string always serializes");
    format!(
        r#"{{"type":"error","error":{{"type":"{}","message":{message}}}}}"#,
        error_type(reply.status)
    )
    .into_bytes()
}

/// Writes a complete response with a body into `out` (cleared first).
// Each argument is one part of the response head; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    request_id: &str,
    extra_headers: &[(&str, &str)],
    close: bool,
    head_only: bool,
) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n",
        reason(status)
    );
    let _ = write!(
        out,
        "content-length: {}\r\nx-nexus-request-id: {request_id}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes an Anthropic-shaped error response into `out`; to a HEAD request (`head_only`)
/// without its body, which a kept-alive client would read as the next response.
pub fn write_error(
    out: &mut Vec<u8>,
    reply: &ErrorReply,
    request_id: &str,
    close: bool,
    head_only: bool,
) {
    let secs = reply.retry_after.map(|s| s.to_string());
    let extra: &[(&str, &str)] = match (reply.status, secs.as_deref()) {
        (405, _) => &[("allow", "GET, HEAD")],
        (_, Some(secs)) => &[("retry-after", secs)],
        _ => &[],
    };
    write_response(
        out,
        reply.status,
        "application/json",
        &error_body(reply),
        request_id,
        extra,
        close,
        head_only,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_api() {
        let cases = [
            (400, "invalid_request_error"),
            (405, "invalid_request_error"),
            (408, "invalid_request_error"),
            (431, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "api_error"),
            (504, "timeout_error"),
        ];
        for (status, kind) in cases {
            assert_eq!(error_type(status), kind, "{status}");
        }
    }

    #[test]
    fn error_response_is_complete_http() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            &ErrorReply::new(502, "upstream \"x\" down"),
            "rid",
            true,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("connection: close"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "api_error");
        assert_eq!(json["error"]["message"], "upstream \"x\" down");
    }
}
