//! What the ledger keeps of a forwarded request: the notes a [`super::Report`] takes for
//! it on the way, and the [`Row`] they make when the request ends.

use std::time::{Duration, Instant};

use crate::http::request::{BodyFraming, RequestHead};
use crate::ledger::row::{Bodies, Row, RowText, Texts};
use crate::request_id::RequestId;
use crate::stats::RequestRecord;
use crate::usage::{RequestClass, RequestKind};

/// Most bytes of a session id kept.
const SESSION_CAP: usize = 256;

/// What only the ledger needs, gathered while the request runs.
#[derive(Default)]
pub struct LedgerNotes {
    /// Keep the bodies (`NEXUS_STORE_BODIES=true`).
    pub bodies: bool,
    /// When the request began.
    pub started: Option<Instant>,
    pub session: Option<String>,
    /// Since the start, when the upstream's response head arrived.
    pub first_byte: Option<Duration>,
    /// The held request body's length, and the body itself when kept.
    pub request_len: Option<u64>,
    pub request_body: Option<Vec<u8>>,
    /// The response body's length as relayed, and its start when kept.
    pub response_len: u64,
    pub response_body: Option<Vec<u8>>,
}

impl LedgerNotes {
    /// Notes for a request with this `x-claude-code-session-id`.
    pub fn new(session_id: Option<&str>, bodies: bool, started: Instant) -> LedgerNotes {
        LedgerNotes {
            bodies,
            started: Some(started),
            session: session_id.map(|s| clip(s, SESSION_CAP).to_string()),
            ..LedgerNotes::default()
        }
    }
}

/// `text` cut to at most `cap` bytes, at a character boundary.
fn clip(text: &str, cap: usize) -> &str {
    let mut end = text.len().min(cap);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Everything the row is made of.
pub struct Ended<'a> {
    pub request_id: &'a RequestId,
    pub head: &'a RequestHead,
    pub method: &'a str,
    pub domain: &'a str,
    pub record: &'a RequestRecord,
    pub class: Option<&'a RequestClass>,
    pub model: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub error: Option<&'a str>,
    /// The pool member that served it, if a domain file's credential went upstream.
    pub credential: Option<&'a str>,
    /// The named client the request came from.
    pub client: Option<&'a str>,
}

/// The ledger's row.
pub fn row(notes: LedgerNotes, e: Ended<'_>) -> Row {
    // The time in the request's id: the ledger finds a row by its id through it.
    let at_ms = e.request_id.unix_ms();
    let bytes_in = match e.head.framing {
        BodyFraming::None => Some(0),
        BodyFraming::Length(n) => Some(n),
        BodyFraming::Chunked => notes.request_len,
    };
    let r = e.record;
    let bodies = notes.bodies.then(|| Bodies {
        request: notes.request_body.unwrap_or_default(),
        response: notes.response_body.unwrap_or_default(),
    });
    let session_id = notes.session.as_deref().filter(|s| !s.is_empty());
    Row {
        text: RowText::new(Texts {
            id: e.request_id.as_str(),
            domain: e.domain,
            client: e.client,
            // A request without a domain file went with one credential of its own.
            credential: e
                .credential
                .unwrap_or(crate::credentials::file::DEFAULT_MEMBER),
            method: e.method,
            path: e.head.path(),
            model: e.model,
            session_id: session_id.or_else(|| e.class.and_then(|c| c.user_id.as_deref())),
            error: e.error,
        }),
        at_ms,
        stream: e.class.is_some_and(|c| c.stream),
        status: e.status,
        duration_ms: e.duration.as_millis() as u64,
        ttfb_ms: notes.first_byte.map(|d| d.as_millis() as u64),
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cache_creation_input_tokens: r.cache_creation_input_tokens,
        cache_read_input_tokens: r.cache_read_input_tokens,
        tool_calls: r.tool_calls,
        cost: r.cost(),
        request_class: e.class.and_then(|c| match c.kind {
            RequestKind::QueryEvaluation => Some("query_evaluation"),
            RequestKind::Inference => Some("inference"),
            RequestKind::Neither => Some("none"),
            RequestKind::Unclassified => None,
        }),
        bytes_in,
        bytes_out: notes.response_len,
        bodies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_is_kept_up_to_its_cap_at_a_character_boundary() {
        let notes = |id: &str| LedgerNotes::new(Some(id), false, Instant::now()).session;
        assert_eq!(notes("s-123").as_deref(), Some("s-123"));
        let long = "é".repeat(200); // 400 bytes
        let kept = notes(&long).unwrap();
        assert_eq!(kept.len(), SESSION_CAP);
        assert!(long.starts_with(&kept));
        assert_eq!(LedgerNotes::new(None, false, Instant::now()).session, None);
    }
}
