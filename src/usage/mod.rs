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

use json::Seg;

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
    /// Input tokens written to the prompt cache (both lifetimes).
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Of the cache writes, those with the 5-minute lifetime
    /// (`usage.cache_creation.ephemeral_5m_input_tokens`).
    pub cache_creation_5m_input_tokens: u64,
    /// Of the cache writes, those with the 1-hour lifetime
    /// (`usage.cache_creation.ephemeral_1h_input_tokens`).
    pub cache_creation_1h_input_tokens: u64,
    /// Web searches the server ran (`usage.server_tool_use.web_search_requests`).
    pub web_search_requests: u64,
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

/// The usage figures one `usage` object carried, in [`Usage`] field order; `None` where a
/// figure was absent, null, or not an integer that fits a u64.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures(pub(crate) [Option<u64>; FIGURES]);

/// Figures in a `usage` object: four at its top, two under `cache_creation`, one under
/// `server_tool_use`.
pub(crate) const FIGURES: usize = 7;
/// The figures under `usage.cache_creation` (5-minute and 1-hour cache writes).
const CACHE_CREATION: std::ops::Range<u8> = 4..6;
/// The figure under `usage.server_tool_use` (web searches).
const WEB_SEARCH: u8 = 6;

/// What a key means inside a `usage` object; each visitor maps its own keys to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsagePart {
    /// A figure's name, its index in [`Usage`] field order (wherever it stands).
    Figure(u8),
    /// `cache_creation`, the object holding the split by cache lifetime.
    CacheCreation,
    /// `server_tool_use`, the object counting server tool calls.
    ServerToolUse,
}

/// A visitor key that may name a part of a `usage` object.
pub(crate) trait UsageKey: Copy {
    /// The part of `usage` this key names, if any.
    fn usage_part(self) -> Option<UsagePart>;
}

impl Figures {
    /// The position of a figure's key in [`Usage`] field order. Only the place a key
    /// stands at decides whether it counts ([`Self::figure_at`]).
    pub(crate) fn index_of(key: &[u8]) -> Option<u8> {
        // Each length has one or two keys: one length test, then a few word compares
        // (a match on the byte strings compared them a byte at a time).
        let (index, name): (u8, &[u8]) = match key.len() {
            12 => (0, b"input_tokens"),
            13 => (1, b"output_tokens"),
            27 => (2, b"cache_creation_input_tokens"),
            23 => (3, b"cache_read_input_tokens"),
            25 if key[10] == b'5' => (4, b"ephemeral_5m_input_tokens"),
            25 => (5, b"ephemeral_1h_input_tokens"),
            19 => (WEB_SEARCH, b"web_search_requests"),
            _ => return None,
        };
        crate::scan::same(key, name).then_some(index)
    }

    /// The figure a number at `below` (its path under a `usage` object) is, if any:
    /// `input_tokens` counts at the top of `usage`, `ephemeral_1h_input_tokens` only
    /// under `cache_creation`, and so on.
    pub(crate) fn figure_at<K: UsageKey>(below: &[Seg<K>]) -> Option<u8> {
        match below {
            [Seg::Key(k)] => match k.usage_part()? {
                UsagePart::Figure(f) if f < CACHE_CREATION.start => Some(f),
                _ => None,
            },
            [Seg::Key(parent), Seg::Key(k)] => match (parent.usage_part()?, k.usage_part()?) {
                (UsagePart::CacheCreation, UsagePart::Figure(f)) if CACHE_CREATION.contains(&f) => {
                    Some(f)
                }
                (UsagePart::ServerToolUse, UsagePart::Figure(WEB_SEARCH)) => Some(WEB_SEARCH),
                _ => None,
            },
            _ => None,
        }
    }

    /// The key at `below` (a path under a `usage` object; empty: `usage` itself) is
    /// about to get a new value: forgets every figure it held.
    pub(crate) fn forget_at<K: UsageKey>(&mut self, below: &[Seg<K>]) {
        let parts = match below {
            [] => 0..FIGURES as u8,
            [Seg::Key(k)] => match k.usage_part() {
                Some(UsagePart::CacheCreation) => CACHE_CREATION,
                Some(UsagePart::ServerToolUse) => WEB_SEARCH..WEB_SEARCH + 1,
                _ => match Self::figure_at(below) {
                    Some(f) => f..f + 1,
                    None => return,
                },
            },
            _ => match Self::figure_at(below) {
                Some(f) => f..f + 1,
                None => return,
            },
        };
        for f in parts {
            self.set(f, None);
        }
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
        let [input, output, creation, read, creation_5m, creation_1h, web_search] = f.0;
        let fields = [
            (&mut self.input_tokens, input),
            (&mut self.output_tokens, output),
            (&mut self.cache_creation_input_tokens, creation),
            (&mut self.cache_read_input_tokens, read),
            (&mut self.cache_creation_5m_input_tokens, creation_5m),
            (&mut self.cache_creation_1h_input_tokens, creation_1h),
            (&mut self.web_search_requests, web_search),
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

    const KEYS: [&str; FIGURES] = [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "web_search_requests",
    ];

    #[test]
    fn usage_keys_are_recognised_whole() {
        for (index, key) in KEYS.iter().map(|k| k.as_bytes()).enumerate() {
            assert_eq!(Figures::index_of(key), Some(index as u8));
            for at in 0..key.len() {
                let mut other = key.to_vec();
                other[at] ^= 0x20;
                assert_eq!(Figures::index_of(&other), None);
            }
            assert_eq!(Figures::index_of(&key[1..]), None);
        }
        assert_eq!(Figures::index_of(b"ephemeral_5h_input_tokens"), None);
        assert_eq!(Figures::index_of(b"server_tool_use"), None);
    }

    #[test]
    fn later_figures_replace_and_missing_ones_keep() {
        let mut u = Usage::default();
        u.replace_with(&Figures([
            Some(10),
            Some(1),
            Some(0),
            Some(2048),
            Some(7),
            Some(8),
            None,
        ]));
        u.replace_with(&Figures([
            None,
            Some(89),
            None,
            None,
            None,
            Some(9),
            Some(2),
        ]));
        assert_eq!(
            u,
            Usage {
                input_tokens: 10,
                output_tokens: 89,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 2048,
                cache_creation_5m_input_tokens: 7,
                cache_creation_1h_input_tokens: 9,
                web_search_requests: 2,
            }
        );
    }

    /// A visitor key for the placement tests.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum K {
        Part(UsagePart),
        Other,
    }

    impl UsageKey for K {
        fn usage_part(self) -> Option<UsagePart> {
            match self {
                K::Part(p) => Some(p),
                K::Other => None,
            }
        }
    }

    fn fig(name: &str) -> Seg<K> {
        Seg::Key(K::Part(UsagePart::Figure(
            Figures::index_of(name.as_bytes()).unwrap(),
        )))
    }

    const CC: Seg<K> = Seg::Key(K::Part(UsagePart::CacheCreation));
    const STU: Seg<K> = Seg::Key(K::Part(UsagePart::ServerToolUse));

    #[test]
    fn figures_count_only_where_they_belong() {
        for (i, key) in KEYS.iter().enumerate() {
            let top = Figures::figure_at(&[fig(key)]);
            let in_cc = Figures::figure_at(&[CC, fig(key)]);
            let in_stu = Figures::figure_at(&[STU, fig(key)]);
            let i = Some(i as u8);
            match *key {
                "ephemeral_5m_input_tokens" | "ephemeral_1h_input_tokens" => {
                    assert_eq!((top, in_cc, in_stu), (None, i, None), "{key}")
                }
                "web_search_requests" => assert_eq!((top, in_cc, in_stu), (None, None, i)),
                _ => assert_eq!((top, in_cc, in_stu), (i, None, None), "{key}"),
            }
            assert_eq!(Figures::figure_at(&[Seg::Key(K::Other), fig(key)]), None);
            assert_eq!(Figures::figure_at(&[CC, CC, fig(key)]), None);
            assert_eq!(Figures::figure_at(&[Seg::Elem, fig(key)]), None);
        }
        assert_eq!(Figures::figure_at::<K>(&[CC]), None);
    }

    #[test]
    fn forgetting_a_key_forgets_what_it_held() {
        let all = Figures([Some(1); FIGURES]);
        let forget = |below: &[Seg<K>]| {
            let mut f = all;
            f.forget_at(below);
            f.0.map(|v| v.is_some())
        };
        let t = true;
        assert_eq!(forget(&[]), [false; FIGURES]);
        assert_eq!(forget(&[CC]), [t, t, t, t, false, false, t]);
        assert_eq!(forget(&[STU]), [t, t, t, t, t, t, false]);
        assert_eq!(forget(&[fig("output_tokens")]), [t, false, t, t, t, t, t]);
        assert_eq!(
            forget(&[CC, fig("ephemeral_1h_input_tokens")]),
            [t, t, t, t, t, false, t]
        );
        // Misplaced figures were never recorded, so they forget nothing.
        assert_eq!(forget(&[fig("ephemeral_1h_input_tokens")]), [t; FIGURES]);
        assert_eq!(forget(&[CC, fig("input_tokens")]), [t; FIGURES]);
        assert_eq!(forget(&[Seg::Key(K::Other)]), [t; FIGURES]);
    }
}
