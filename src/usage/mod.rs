//! Usage accounting: what each request cost, read off the bytes nexus relays.
//!
//! Three pure parsers, none of which builds a JSON tree or holds a body:
//! - [`SseScanner`] reads a streamed Messages response from the exact chunks relayed to
//!   the client, whatever their boundaries;
//! - [`JsonResponseScanner`] reads the same facts from a non-streaming response body;
//! - [`classify_request`] reads a request body: model, `stream`, and the system-prompt
//!   count that makes it a query evaluation or an inference.
//!
//! All three sit on [`json::Tokenizer`], an incremental tokenizer with a fixed-size
//! state. Memory per stream is bounded by the constants below whatever the input, and
//! with text collection off the scanners do not allocate per chunk.
//!
//! The scanners take the body as the client sees it after transfer decoding: HTTP
//! chunk framing removed and no `Content-Encoding` (a gzip body reads as garbage and
//! yields no facts). Pick the scanner by the response's `Content-Type`, not by the
//! request's `stream` flag: an error answer to a streaming request is plain JSON.

pub mod classify;
mod clip;
mod event;
pub mod json;
pub mod response;
pub mod sse;

pub use classify::{classify_request, RequestClass, RequestKind};
pub use response::JsonResponseScanner;
pub use sse::SseScanner;

/// Most assistant text kept per response when text is collected (bytes).
pub const TEXT_CAP: usize = 64 * 1024;
/// Most input JSON kept per tool call when text is collected (bytes).
pub const TOOL_INPUT_CAP: usize = 4 * 1024;
/// Most bytes of a tool name kept.
pub const TOOL_NAME_CAP: usize = 128;
/// Most tool calls whose name and input are kept; later ones are still counted.
pub const MAX_TOOLS: usize = 64;
/// Most bytes of a model name kept.
pub const MODEL_CAP: usize = 256;
/// Most bytes of an error type kept.
pub const ERROR_TYPE_CAP: usize = 64;
/// Most bytes of the last user message's text kept by [`classify_request`].
pub const USER_TEXT_CAP: usize = 64 * 1024;

/// The error type recorded when an error carries no `error.type` string.
pub const UNKNOWN_ERROR: &str = "unknown";

/// Token counts of one response, as the API reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// One tool call's name and the start of its input JSON (kept only when collecting text).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The tool's name, at most [`TOOL_NAME_CAP`] bytes.
    pub name: String,
    /// The input JSON as the model wrote it, at most [`TOOL_INPUT_CAP`] bytes.
    pub input: String,
}

/// What a response told us: usage, model, tool calls, error, and optionally its text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseFacts {
    /// Latest usage figures (each figure is cumulative: later values replace earlier).
    pub usage: Usage,
    /// The model that answered, at most [`MODEL_CAP`] bytes.
    pub model: Option<String>,
    /// Number of `tool_use` and `server_tool_use` content blocks.
    pub tool_calls: u32,
    /// `error.type` of an error event or error body ([`UNKNOWN_ERROR`] if it had none).
    pub error_type: Option<String>,
    /// The response ended properly: a `message_stop` event (streaming), or a complete
    /// JSON body (non-streaming).
    pub complete: bool,
    /// Assistant text (`text_delta`s or text blocks), only when collecting; at most
    /// [`TEXT_CAP`] bytes.
    pub text: String,
    /// The first [`MAX_TOOLS`] tool calls, only when collecting.
    pub tools: Vec<ToolCall>,
}

/// The four usage figures one `usage` object carried, in [`Usage`] field order; `None`
/// where a figure was absent, null, or not an integer that fits a u64.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures(pub(crate) [Option<u64>; 4]);

impl Figures {
    /// The position of a usage key in [`Usage`] field order.
    pub(crate) fn index_of(key: &[u8]) -> Option<u8> {
        // Each key has a length of its own: one length test, then a few word compares
        // (a match on the byte strings compared them a byte at a time).
        let (index, name): (u8, &[u8]) = match key.len() {
            12 => (0, b"input_tokens"),
            13 => (1, b"output_tokens"),
            27 => (2, b"cache_creation_input_tokens"),
            23 => (3, b"cache_read_input_tokens"),
            _ => return None,
        };
        crate::scan::same(key, name).then_some(index)
    }

    /// Records (or forgets, with `None`) one figure.
    pub(crate) fn set(&mut self, index: u8, value: Option<u64>) {
        if let Some(slot) = self.0.get_mut(usize::from(index)) {
            *slot = value;
        }
    }
}

impl Usage {
    /// Takes every figure present in `f`: the API's figures are running totals, so a
    /// new value replaces the old one and a missing one leaves it alone.
    pub(crate) fn replace_with(&mut self, f: &Figures) {
        let [input, output, creation, read] = f.0;
        let fields = [
            (&mut self.input_tokens, input),
            (&mut self.output_tokens, output),
            (&mut self.cache_creation_input_tokens, creation),
            (&mut self.cache_read_input_tokens, read),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                *field = v;
            }
        }
    }
}

/// Whether a content block of this type counts as a tool call.
pub(crate) fn is_tool_block(block_type: &[u8]) -> bool {
    matches!(block_type, b"tool_use" | b"server_tool_use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_keys_are_recognised_whole() {
        let keys: [&[u8]; 4] = [
            b"input_tokens",
            b"output_tokens",
            b"cache_creation_input_tokens",
            b"cache_read_input_tokens",
        ];
        for (index, key) in keys.iter().enumerate() {
            assert_eq!(Figures::index_of(key), Some(index as u8));
            for at in 0..key.len() {
                let mut other = key.to_vec();
                other[at] ^= 0x20;
                assert_eq!(Figures::index_of(&other), None);
            }
            assert_eq!(Figures::index_of(&key[1..]), None);
        }
    }

    #[test]
    fn later_figures_replace_and_missing_ones_keep() {
        let mut u = Usage::default();
        u.replace_with(&Figures([Some(10), Some(1), Some(0), Some(2048)]));
        u.replace_with(&Figures([None, Some(89), None, None]));
        assert_eq!(
            u,
            Usage {
                input_tokens: 10,
                output_tokens: 89,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 2048
            }
        );
    }

    #[test]
    fn usage_keys_map_to_field_order() {
        let mut f = Figures::default();
        for (i, k) in [
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .enumerate()
        {
            let idx = Figures::index_of(k.as_bytes()).unwrap();
            assert_eq!(usize::from(idx), i);
            f.set(idx, Some(i as u64 + 1));
        }
        assert_eq!(f.0, [Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(Figures::index_of(b"server_tool_use"), None);
    }
}
