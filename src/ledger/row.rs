//! One proxied request as the ledger keeps it, and its JSON form in `/api/requests`.

use serde_json::{json, Map, Value};

use crate::cost::Usd;

/// One request that reached the proxy path, however it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The text fields, in one allocation (see [`RowText`]).
    pub text: RowText,
    /// When the request began, ms since the Unix epoch.
    pub at_ms: u64,
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
    /// The exact cost; none when the model has no price — never a guess. Stored as
    /// integer picodollars, so that sums over the ledger are exact.
    pub cost: Option<Usd>,
    /// `query_evaluation`, `inference`, `none` (Messages requests), or none.
    pub request_class: Option<&'static str>,
    /// Request body bytes, when known (a declared length or a held body).
    pub bytes_in: Option<u64>,
    /// Response body bytes relayed (after transfer decoding).
    pub bytes_out: u64,
    /// The bodies, with `NEXUS_STORE_BODIES=true` (raw here; masked and compressed by
    /// the writer thread, off the workers).
    pub bodies: Option<Bodies>,
}

/// A row's text fields, borrowed: what a [`RowText`] is made from and read as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Texts<'a> {
    /// The `x-nexus-request-id`.
    pub id: &'a str,
    pub domain: &'a str,
    /// The named client (none until named clients exist).
    pub client: Option<&'a str>,
    /// The credential member used (`default` until pools exist).
    pub credential: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub model: Option<&'a str>,
    /// `x-claude-code-session-id`, else the body's `metadata.user_id`.
    pub session_id: Option<&'a str>,
    /// What went wrong, if anything (the proxy's reason or the API's error type).
    pub error: Option<&'a str>,
}

/// How many text fields a row has.
const TEXTS: usize = 9;

/// A row's text fields in one string. A row is built on a worker and freed on the writer
/// thread; nine strings made nine allocations that went back to another thread's
/// allocator, which pushed the worker's own allocations off their fast path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowText {
    all: String,
    /// Where each field ends in `all`, in [`Texts`] order.
    ends: [u32; TEXTS],
    /// Bit `i` set: field `i` is present (the optional ones may not be).
    present: u16,
}

impl RowText {
    pub fn new(t: Texts<'_>) -> RowText {
        let fields = [
            Some(t.id),
            Some(t.domain),
            t.client,
            Some(t.credential),
            Some(t.method),
            Some(t.path),
            t.model,
            t.session_id,
            t.error,
        ];
        let len = fields.iter().flatten().map(|f| f.len()).sum();
        let mut text = RowText {
            all: String::with_capacity(len),
            ..RowText::default()
        };
        for (i, field) in fields.iter().enumerate() {
            if let Some(f) = field {
                text.all.push_str(f);
                text.present |= 1 << i;
            }
            text.ends[i] = text.all.len() as u32;
        }
        text
    }

    /// The fields, borrowed.
    pub fn get(&self) -> Texts<'_> {
        let field = |i: usize| -> Option<&str> {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            (self.present & (1 << i) != 0).then(|| &self.all[start..self.ends[i] as usize])
        };
        Texts {
            id: field(0).unwrap_or(""),
            domain: field(1).unwrap_or(""),
            client: field(2),
            credential: field(3).unwrap_or(""),
            method: field(4).unwrap_or(""),
            path: field(5).unwrap_or(""),
            model: field(6),
            session_id: field(7),
            error: field(8),
        }
    }
}

impl Row {
    /// The text fields.
    pub fn texts(&self) -> Texts<'_> {
        self.text.get()
    }
}

/// A request's bodies as relayed, each cut at [`super::BODY_CAP`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bodies {
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

/// An exact cost as the API's `costUsd`: the JSON number nearest to it (read from its
/// exact decimal form, so it is rounded once), null when unpriced.
pub fn usd_json(cost: Option<Usd>) -> Value {
    cost.and_then(|usd| usd.to_string().parse::<f64>().ok())
        .map_or(Value::Null, Value::from)
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
        let t = self.texts();
        let v = json!({
            "id": t.id,
            "timestamp": iso(self.at_ms),
            "domain": t.domain,
            "client": t.client,
            "credential": t.credential,
            "method": t.method,
            "path": t.path,
            "model": t.model,
            "stream": self.stream,
            "status": self.status,
            "durationMs": self.duration_ms,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cacheCreationInputTokens": self.cache_creation_input_tokens,
            "cacheReadInputTokens": self.cache_read_input_tokens,
            "toolCallCount": self.tool_calls,
            "costUsd": usd_json(self.cost),
            "sessionId": t.session_id,
            "timeToFirstByteMs": self.ttfb_ms,
            "requestClass": self.request_class,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "error": t.error,
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
            text: RowText::new(Texts {
                id: "x",
                credential: "default",
                ..Texts::default()
            }),
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
        assert_eq!(json["id"], "x");
    }

    #[test]
    fn text_fields_come_back_as_given() {
        let given = Texts {
            id: "0193-id",
            domain: "a.example",
            client: None,
            credential: "default",
            method: "POST",
            path: "/v1/messages?beta=true",
            model: Some(""),
            session_id: Some("s-1"),
            error: None,
        };
        let text = RowText::new(given);
        assert_eq!(text.get(), given);
        assert_eq!(text.all.capacity(), text.all.len(), "one exact allocation");
        assert_eq!(RowText::default().get(), Texts::default());
    }
}
