//! Checks shared by several test files.

use super::client::Response;
use super::http::Headers;
use super::metrics;
use super::mock::MockUpstream;

/// Response headers a proxy legitimately owns: framing, connection management, its own id
/// and the origin-server headers it may add.
const PROXY_OWNED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-nexus-request-id",
    "date",
    "server",
];

/// Asserts the Anthropic error shape nexus uses for errors it makes itself.
pub fn assert_anthropic_error(response: &Response, status: u16, error_type: &str) {
    assert_eq!(response.status, status, "status; body: {}", response.text());
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}; body: {}",
        response.text()
    );
    let body = response.json();
    assert_eq!(body["type"], "error", "body {body}");
    assert_eq!(body["error"]["type"], error_type, "body {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        !message.is_empty(),
        "error.message must be a non-empty string: {body}"
    );
    assert_has_request_id(response);
}

/// Asserts the response carries a non-empty `x-nexus-request-id`.
pub fn assert_has_request_id(response: &Response) {
    let id = response.header("x-nexus-request-id").unwrap_or("");
    assert!(
        !id.trim().is_empty(),
        "missing x-nexus-request-id in {:?}",
        response.headers
    );
}

/// End-to-end headers: proxy-owned ones removed unless `sent` (what the origin sent) has
/// them, names lowercased, grouped by name with same-name order kept.
pub fn end_to_end(headers: &Headers, sent: &Headers) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .filter(|(n, _)| {
            !PROXY_OWNED.contains(&n.as_str()) || (is_origin_header(n) && sent.contains(n))
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

/// Headers in [`PROXY_OWNED`] that still belong to the origin when it sent them.
fn is_origin_header(name: &str) -> bool {
    matches!(name, "date" | "server")
}

/// Asserts the client received exactly the end-to-end headers the mock sent.
pub fn assert_same_end_to_end_headers(sent: &Headers, received: &Headers) {
    assert_eq!(
        end_to_end(received, sent),
        end_to_end(sent, sent),
        "end-to-end response headers differ\nmock sent: {sent:#?}\nclient got: {received:#?}"
    );
}

/// Asserts nexus never connected to the mock, asking the nexus in front of it (recorded by
/// [`super::Rig`]): call it after the client has read nexus's answers. Nexus counts an
/// upstream connection (`nexus_upstream_connections_opened_total`, attempts included) before
/// it writes a byte upstream, so a request it forwarded or tried to forward was counted
/// before its answer left nexus; no waiting is needed, and none would prove anything.
pub fn assert_no_upstream_contact(mock: &MockUpstream) {
    let nexus = mock.fronted_by().expect(
        "assert_no_upstream_contact needs the nexus in front of this mock: start both with Rig",
    );
    let opened = metrics::read(nexus, "nexus_upstream_connections_opened_total");
    let reused = metrics::read(nexus, "nexus_upstream_connections_reused_total");
    assert_eq!(
        (opened, reused),
        (0.0, 0.0),
        "nexus opened {opened} and reused {reused} upstream connections; the mock accepted {} \
         and recorded: {:#?}",
        mock.connections(),
        mock.requests()
    );
    // The mock's own count can only lag nexus's, never lead it: a second witness.
    assert_eq!(
        mock.connections(),
        0,
        "the mock accepted a connection nexus did not count; requests: {:#?}",
        mock.requests()
    );
}

/// The credential headers that reached the upstream: `x-api-key` and `authorization` values.
pub fn credential_headers(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| {
            n.eq_ignore_ascii_case("x-api-key") || n.eq_ignore_ascii_case("authorization")
        })
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect()
}

/// Asserts two byte strings are equal; on failure shows lengths and the first difference
/// instead of dumping both (bodies in these tests can be hundreds of KiB).
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let window = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(20)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {at}\n  got:      {:?}\n  expected: {:?}",
        actual.len(),
        expected.len(),
        window(actual),
        window(expected)
    );
}
