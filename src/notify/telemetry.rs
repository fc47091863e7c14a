//! The telemetry event: one JSON POST per forwarded request, the seed's fields plus
//! nexus's own. Built from values the request already had; serialized by the outbox.

use std::borrow::Cow;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::cost::Usd;
use crate::request_id::RequestId;
use crate::usage::RequestKind;

/// What one request did, as telemetry reports it.
#[derive(Clone)]
pub struct TelemetryEvent {
    /// When the request ended.
    pub at: SystemTime,
    pub request_id: RequestId,
    pub method: Cow<'static, str>,
    /// The path, without the query string.
    pub path: String,
    pub domain: String,
    /// The credential that went upstream, masked (last 10 characters at most).
    pub api_key: Option<String>,
    /// The id of the pool member that served it (`default` for a single-credential file);
    /// `None` for a request that went with the client's own key or `CLAUDE_API_KEY`.
    pub credential: Option<std::sync::Arc<str>>,
    /// The named client the request came from (`CLIENTS_FILE`): its name, never its key.
    pub client: Option<std::sync::Arc<str>>,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    /// What the request cost; `None` when its model has no price.
    pub cost: Option<Usd>,
    pub duration_ms: u64,
    pub status: u16,
    pub error: Option<String>,
    /// Only for `POST /v1/messages` with a JSON body.
    pub request_kind: Option<RequestKind>,
    pub tool_calls: u64,
    pub stream: bool,
}

impl TelemetryEvent {
    /// The POST body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut body = json!({
            "timestamp": humantime::format_rfc3339_millis(self.at).to_string(),
            "requestId": self.request_id.as_str(),
            "method": self.method,
            "path": self.path,
            "apiKey": self.api_key,
            "credential": self.credential.as_deref(),
            "client": self.client.as_deref(),
            "model": self.model,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "duration": self.duration_ms,
            "status": self.status,
            "domain": self.domain,
            "cacheCreationInputTokens": self.cache_creation_input_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "requestType": self.request_kind.and_then(request_type),
            "toolCallCount": self.tool_calls,
            "stream": self.stream,
        });
        if let Some(error) = &self.error {
            body["error"] = Value::String(error.clone());
        }
        let mut json = serde_json::to_vec(&body).expect("a JSON value always serializes");
        // `costUsd` is written from the integer, every digit kept (an f64 would not).
        json.pop(); // the object's closing brace
        let cost = self
            .cost
            .map_or_else(|| "null".to_string(), |c| c.to_string());
        json.extend_from_slice(format!(",\"costUsd\":{cost}}}").as_bytes());
        json
    }
}

/// `requestType` as the seed named the kinds.
fn request_type(kind: RequestKind) -> Option<&'static str> {
    match kind {
        RequestKind::QueryEvaluation => Some("query_evaluation"),
        RequestKind::Inference => Some("inference"),
        RequestKind::Neither => Some("none"),
        RequestKind::Unclassified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_id::RequestIds;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn fields_and_names() {
        let id = RequestIds::new().next();
        let event = TelemetryEvent {
            at: UNIX_EPOCH + Duration::from_millis(1_705_314_600_123),
            request_id: id,
            method: "POST".into(),
            path: "/v1/messages".into(),
            domain: "a.example.com".into(),
            api_key: Some("****0123456789".into()),
            credential: Some("max-1".into()),
            client: Some("alice".into()),
            model: Some("claude-sonnet-4-5".into()),
            input_tokens: 150,
            output_tokens: 200,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
            cost: Some(Usd(123_456_789_012_345)),
            duration_ms: 1250,
            status: 200,
            error: None,
            request_kind: Some(RequestKind::Inference),
            tool_calls: 2,
            stream: true,
        };
        let v: Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(v["timestamp"], "2024-01-15T10:30:00.123Z");
        assert_eq!(v["requestId"], id.as_str());
        assert_eq!(v["apiKey"], "****0123456789");
        assert_eq!(v["requestType"], "inference");
        assert_eq!(v["toolCallCount"], 2);
        assert_eq!(v["client"], "alice");
        assert_eq!(v["duration"], 1250);
        assert!(v.get("error").is_none(), "no error, no field: {v}");
        let text = String::from_utf8(event.to_json()).unwrap();
        assert!(text.ends_with(",\"costUsd\":123.456789012345}"), "{text}");
        let failed = TelemetryEvent {
            error: Some("rate_limit_error".into()),
            status: 429,
            request_kind: None,
            cost: None,
            client: None,
            ..event
        };
        let v: Value = serde_json::from_slice(&failed.to_json()).unwrap();
        assert_eq!(v["error"], "rate_limit_error");
        assert_eq!(v["requestType"], Value::Null);
        assert_eq!(v["costUsd"], Value::Null, "unpriced: null, never a guess");
        assert_eq!(v["client"], Value::Null, "no named client: null");
    }
}
