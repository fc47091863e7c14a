//! Canned Claude API payloads: files under tests/fixtures plus generated request bodies.

use super::sse::split_events;

/// A non-streaming Messages response with one text block.
pub const MESSAGE_TEXT_JSON: &str = include_str!("../fixtures/message-text.json");

/// A streamed Messages response in SSE wire format: a text block, then a tool_use block
/// built from input_json_delta fragments; usage in message_start and message_delta.
pub const STREAM_TEXT_TOOL_USE_SSE: &str = include_str!("../fixtures/stream-text-tool-use.sse");

/// The text of [`MESSAGE_TEXT_JSON`]'s only content block.
pub const MESSAGE_TEXT: &str = "Nexus relayed this reply intact: ünïcödé ✓.";

/// The concatenated text deltas of [`STREAM_TEXT_TOOL_USE_SSE`].
pub const STREAM_TEXT: &str = "Streamed through nexus, event by event.";

/// The tool input [`STREAM_TEXT_TOOL_USE_SSE`]'s fragments add up to.
pub const STREAM_TOOL_INPUT: &str = r#"{"location": "Paris, FR", "unit": "celsius"}"#;

/// The events of [`STREAM_TEXT_TOOL_USE_SSE`], each with its terminating blank line.
pub fn stream_events() -> Vec<String> {
    split_events(STREAM_TEXT_TOOL_USE_SSE)
}

/// A Messages request body of at least `min_len` bytes; `tag` makes it unique. Multi-byte
/// characters and JSON escapes are included so any re-encoding shows.
pub fn messages_request_body(tag: &str, min_len: usize) -> Vec<u8> {
    let unit = "Grüße, 世界! \\\"quoted\\\" \\n tab\\t — ";
    let filler = unit.repeat(min_len / unit.len() + 1);
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":1024,"metadata":{{"user_id":"{tag}"}},"messages":[{{"role":"user","content":"{filler}"}}]}}"#
    )
    .into_bytes()
}
