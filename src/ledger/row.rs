//! One proxied request as the ledger keeps it, and its JSON form in `/api/requests`.

use serde_json::{json, Map, Value};

/// One request that reached the proxy path, however it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The `x-nexus-request-id`.
    pub id: String,
    /// When the request began, ms since the Unix epoch.
    pub at_ms: u64,
    pub domain: String,
    /// The named client (none until named clients exist).
    pub client: Option<String>,
    /// The credential member used (`default` until pools exist).
    pub credential: String,
    pub method: String,
    pub path: String,
    pub model: Option<String>,
    pub stream: bool,
    /// The status the client got (499: it left before any answer).
    pub status: u16,
    pub duration_ms: u64,
    /// Until the upstream's response head arrived; none if it never did.
    pub ttfb_ms: Option<u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub tool_calls: u64,
    /// USD; none when unpriced (see [`cost_usd`]).
    pub cost_usd: Option<f64>,
    /// `x-claude-code-session-id`, else the body's `metadata.user_id`.
    pub session_id: Option<String>,
    /// `query_evaluation`, `inference`, `none` (Messages requests), or none.
    pub request_class: Option<&'static str>,
    /// Request body bytes, when known (a declared length or a held body).
    pub bytes_in: Option<u64>,
    /// Response body bytes relayed (after transfer decoding).
    pub bytes_out: u64,
    /// What went wrong, if anything (the proxy's reason or the API's error type).
    pub error: Option<String>,
    /// The bodies, with `NEXUS_STORE_BODIES=true` (raw here; masked and compressed by
    /// the writer thread, off the workers).
    pub bodies: Option<Bodies>,
}

/// A request's bodies as relayed, each cut at [`super::BODY_CAP`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bodies {
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

/// A request's exact cost (`cost::Usd`, picodollars) as the ledger's USD column holds it;
/// none when the model has no price — never a guess.
pub fn cost_usd(cost: Option<crate::cost::Usd>) -> Option<f64> {
    cost.map(|usd| usd.0 as f64 / crate::cost::PICOS_PER_USD as f64)
}

/// Formats ms since the epoch as ISO 8601 with milliseconds, UTC.
pub fn iso(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an ISO 8601 time (`2026-01-02T03:04:05Z`, fractions and a date alone allowed).
pub fn parse_iso(text: &str) -> Option<u64> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    let t = humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

impl Row {
    /// The object `/api/requests` lists (DESIGN.md's fields, then the ledger's extras).
    pub fn to_json(&self) -> Map<String, Value> {
        let v = json!({
            "id": self.id,
            "timestamp": iso(self.at_ms),
            "domain": self.domain,
            "client": self.client,
            "credential": self.credential,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "durationMs": self.duration_ms,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheCreationInputTokens": self.cache_creation_input_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "toolCallCount": self.tool_calls,
            "costUsd": self.cost_usd,
            "sessionId": self.session_id,
            "timeToFirstByteMs": self.ttfb_ms,
            "requestClass": self.request_class,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "error": self.error,
        });
        match v {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object"),
        }
    }
}

/// The stored name of a request class, back to its `'static` form.
pub fn class_name(stored: Option<&str>) -> Option<&'static str> {
    match stored? {
        "query_evaluation" => Some("query_evaluation"),
        "inference" => Some("inference"),
        "none" => Some("none"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trips() {
        let ms = 1_795_603_409_987;
        let text = iso(ms);
        assert_eq!(text, "2026-11-25T10:43:29.987Z");
        assert_eq!(parse_iso(&text), Some(ms));
        assert_eq!(parse_iso("2026-11-25"), Some(1_795_564_800_000));
        assert_eq!(parse_iso("2026-11-25T00:00:00Z"), Some(1_795_564_800_000));
        assert_eq!(parse_iso("yesterday"), None);
    }

    #[test]
    fn json_has_the_design_fields() {
        let row = Row {
            id: "x".into(),
            credential: "default".into(),
            ..Row::default()
        };
        let json = row.to_json();
        for key in [
            "id",
            "timestamp",
            "domain",
            "client",
            "credential",
            "method",
            "path",
            "model",
            "stream",
            "status",
            "durationMs",
            "inputTokens",
            "outputTokens",
            "cacheCreationInputTokens",
            "cacheReadInputTokens",
            "toolCallCount",
            "costUsd",
            "sessionId",
        ] {
            assert!(json.contains_key(key), "{key}");
        }
        assert_eq!(json["costUsd"], Value::Null);
        assert_eq!(json["client"], Value::Null);
    }
}
