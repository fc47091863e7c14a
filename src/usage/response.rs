//! Usage, model, tool calls and error type from a non-streaming Messages response body.
//!
//! The body is fed in pieces and never held: only the top-level `usage`, `model`,
//! `type`, `error.type` and `content[*]` members are looked at, whatever else the body
//! nests. The facts are taken when [`JsonResponseScanner::finish`] confirms the body was
//! one complete JSON value; a truncated or malformed body yields none, as it would with
//! serde_json. Like serde_json, a repeated key replaces the earlier value.

use super::clip::{push_bounded, Capped, Clip, Sink};
use super::json::{Container, Seg, Token, Tokenizer, Visitor};
use super::{
    is_tool_block, Figures, ResponseFacts, ToolCall, UsageKey, UsagePart, ERROR_TYPE_CAP,
    MAX_TOOLS, MODEL_CAP, TEXT_CAP, TOOL_INPUT_CAP, TOOL_NAME_CAP, UNKNOWN_ERROR,
};

/// The keys a response body is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Type,
    Model,
    Usage,
    Figure(u8),
    CacheCreation,
    ServerToolUse,
    Content,
    Text,
    Name,
    Input,
    Error,
}

/// Longest body or block type recognised.
const TYPE_CAP: usize = 24;

/// Reads a non-streaming Messages response incrementally, holding a bounded state.
#[derive(Debug, Clone)]
pub struct JsonResponseScanner {
    json: Tokenizer<Key>,
    body: Body,
    facts: ResponseFacts,
}

/// What the body has said so far.
#[derive(Debug, Clone)]
struct Body {
    collect: bool,
    kind: Clip<TYPE_CAP>,
    model: Clip<MODEL_CAP>,
    usage: Figures,
    error_type: Clip<ERROR_TYPE_CAP>,
    tool_calls: u32,
    text: String,
    tools: Vec<ToolCall>,
    /// The content block being read.
    block: Block,
}

/// One element of `content`, applied when it closes (its `type` may come last).
#[derive(Debug, Clone)]
struct Block {
    kind: Clip<TYPE_CAP>,
    text: Capped,
    name: Clip<TOOL_NAME_CAP>,
    input: Capped,
}

impl JsonResponseScanner {
    /// A scanner at the start of a body; `collect_text` also keeps the text blocks and
    /// tool names and inputs (bounded, for Slack).
    pub fn new(collect_text: bool) -> Self {
        JsonResponseScanner {
            json: Tokenizer::new(),
            body: Body {
                collect: collect_text,
                kind: Clip::new(),
                model: Clip::new(),
                usage: Figures::default(),
                error_type: Clip::new(),
                tool_calls: 0,
                text: String::new(),
                tools: Vec::new(),
                block: Block {
                    kind: Clip::new(),
                    text: Capped::new(TEXT_CAP),
                    name: Clip::new(),
                    input: Capped::new(TOOL_INPUT_CAP),
                },
            },
            facts: ResponseFacts::default(),
        }
    }

    /// Takes the next bytes of the (de-chunked) body, split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.json.feed(chunk, &mut self.body);
    }

    /// Ends the body: true, and the facts filled in, if it was one complete JSON value.
    pub fn finish(&mut self) -> bool {
        if self.facts.complete {
            return true;
        }
        if !self.json.finish(&mut self.body) {
            return false;
        }
        let b = &mut self.body;
        let f = &mut self.facts;
        f.usage.replace_with(&b.usage);
        f.model = b.model.text().map(str::to_owned);
        f.tool_calls = b.tool_calls;
        if b.kind.get() == Some(b"error") {
            f.error_type = Some(b.error_type.text().unwrap_or(UNKNOWN_ERROR).to_owned());
        }
        f.complete = true;
        f.text = std::mem::take(&mut b.text);
        f.tools = std::mem::take(&mut b.tools);
        true
    }

    /// The facts, filled in once [`Self::finish`] has returned true.
    pub fn facts(&self) -> &ResponseFacts {
        &self.facts
    }

    /// Takes the facts out, keeping no copy (the scanner is reset before it is used again).
    pub fn take_facts(&mut self) -> ResponseFacts {
        std::mem::take(&mut self.facts)
    }
}

use Seg::Key as K;

impl Body {
    /// The buffer a string at `path` is decoded into, if it is one we keep.
    fn sink(&mut self, path: &[Seg<Key>]) -> Option<&mut dyn Sink> {
        Some(match path {
            [K(Key::Type)] => &mut self.kind,
            [K(Key::Model)] => &mut self.model,
            [K(Key::Error), K(Key::Type)] => &mut self.error_type,
            [K(Key::Content), Seg::Elem, K(Key::Type)] => &mut self.block.kind,
            [K(Key::Content), Seg::Elem, K(Key::Text)] if self.collect => &mut self.block.text,
            [K(Key::Content), Seg::Elem, K(Key::Name)] if self.collect => &mut self.block.name,
            _ => return None,
        })
    }

    /// A key at `path` is about to get a (new) value: forget the old one and all below it.
    fn forget(&mut self, path: &[Seg<Key>]) {
        match path {
            [K(Key::Usage), below @ ..] => self.usage.forget_at(below),
            [K(Key::Error)] => self.error_type.clear(),
            [K(Key::Content)] => {
                self.tool_calls = 0;
                self.text.clear();
                self.tools.clear();
            }
            [K(Key::Content), Seg::Elem, K(Key::Input)] => self.block.input.clear(),
            _ => {
                if let Some(sink) = self.sink(path) {
                    sink.clear();
                }
            }
        }
    }

    fn begin_block(&mut self) {
        self.block.kind.clear();
        self.block.text.clear();
        self.block.name.clear();
        self.block.input.clear();
    }

    fn end_block(&mut self) {
        let Some(kind) = self.block.kind.get() else {
            return;
        };
        if is_tool_block(kind) {
            self.tool_calls = self.tool_calls.saturating_add(1);
            if self.collect && self.tools.len() < MAX_TOOLS {
                self.block.input.finish();
                self.tools.push(ToolCall {
                    name: self.block.name.text().unwrap_or_default().to_owned(),
                    input: self.block.input.text().unwrap_or_default().to_owned(),
                });
            }
        } else if kind == b"text" {
            if let Some(text) = self.block.text.text() {
                push_bounded(&mut self.text, text, TEXT_CAP);
            }
        }
    }
}

impl UsageKey for Key {
    fn usage_part(self) -> Option<UsagePart> {
        match self {
            Key::Figure(f) => Some(UsagePart::Figure(f)),
            Key::CacheCreation => Some(UsagePart::CacheCreation),
            Key::ServerToolUse => Some(UsagePart::ServerToolUse),
            _ => None,
        }
    }
}

impl Visitor for Body {
    type Key = Key;

    fn key(&self, name: &[u8]) -> Option<Key> {
        Some(match name {
            b"type" => Key::Type,
            b"model" => Key::Model,
            b"usage" => Key::Usage,
            b"content" => Key::Content,
            // Read only for Slack: otherwise these values go unreported (no calls).
            b"text" if self.collect => Key::Text,
            b"name" if self.collect => Key::Name,
            b"input" if self.collect => Key::Input,
            b"error" => Key::Error,
            b"cache_creation" => Key::CacheCreation,
            b"server_tool_use" => Key::ServerToolUse,
            _ => Key::Figure(Figures::index_of(name)?),
        })
    }

    fn token(&mut self, path: &[Seg<Key>], token: Token<'_>) {
        match (token, path) {
            (Token::Key, _) => self.forget(path),
            (Token::Begin(Container::Object), [K(Key::Content), Seg::Elem]) => self.begin_block(),
            (Token::End(Container::Object), [K(Key::Content), Seg::Elem]) => self.end_block(),
            (Token::Str(piece), _) => {
                if let Some(sink) = self.sink(path) {
                    sink.push(piece);
                }
            }
            (Token::StrEnd, _) => {
                if let Some(sink) = self.sink(path) {
                    sink.finish();
                }
            }
            (Token::Num(n), [K(Key::Usage), below @ ..]) => {
                if let Some(f) = Figures::figure_at(below) {
                    self.usage.set(f, n);
                }
            }
            _ => {}
        }
    }

    fn wants_string(&mut self, path: &[Seg<Key>]) -> bool {
        self.sink(path).is_some()
    }

    fn whole_string(&mut self, path: &[Seg<Key>], text: &[u8]) {
        if let Some(sink) = self.sink(path) {
            sink.push(text);
            sink.finish();
        }
    }

    fn wants_raw(&mut self, path: &[Seg<Key>]) -> bool {
        self.collect && matches!(path, [K(Key::Content), Seg::Elem, K(Key::Input)])
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.block.input.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Usage;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/usage/message-tool-use.json");

    fn scan(chunks: &[&[u8]], collect: bool) -> Option<ResponseFacts> {
        let mut s = JsonResponseScanner::new(collect);
        for c in chunks {
            s.feed(c);
        }
        s.finish().then(|| s.take_facts())
    }

    fn whole(body: &str) -> Option<ResponseFacts> {
        scan(&[body.as_bytes()], false)
    }

    #[test]
    fn reads_the_shared_fixture() {
        let f = scan(&[FIXTURE], true).unwrap();
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 901,
                output_tokens: 72,
                cache_creation_input_tokens: 120,
                cache_read_input_tokens: 3000,
                ..Usage::default()
            }
        );
        assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(f.tool_calls, 1);
        assert!(f.complete);
        assert_eq!(f.text, "I'll read the file.");
        assert_eq!(f.tools.len(), 1);
        assert_eq!(f.tools[0].name, "Read");
        let input: serde_json::Value = serde_json::from_str(&f.tools[0].input).unwrap();
        assert_eq!(input["file_path"], "/repo/src/main.rs");
        assert_eq!(input["limit"], 40);
    }

    #[test]
    fn every_two_piece_split_agrees() {
        let reference = scan(&[FIXTURE], true).unwrap();
        for at in 0..=FIXTURE.len() {
            let (a, b) = FIXTURE.split_at(at);
            assert_eq!(
                scan(&[a, b], true).as_ref(),
                Some(&reference),
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = FIXTURE.chunks(1).collect();
        assert_eq!(scan(&bytes, true), Some(reference));
    }

    #[test]
    fn error_bodies_record_their_type() {
        let f =
            whole(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
                .unwrap();
        assert_eq!(f.error_type.as_deref(), Some("overloaded_error"));
        assert_eq!(f.usage, Usage::default());
        let f = whole(r#"{"error":{"type":"api_error"},"type":"error"}"#).unwrap();
        assert_eq!(f.error_type.as_deref(), Some("api_error"));
        let f = whole(r#"{"type":"error"}"#).unwrap();
        assert_eq!(f.error_type.as_deref(), Some(UNKNOWN_ERROR));
        let f = whole(r#"{"type":"message","error":{"type":"api_error"}}"#).unwrap();
        assert_eq!(f.error_type, None);
    }

    #[test]
    fn only_top_level_members_count() {
        let f = whole(
            r#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":5},"model":"x",
               "content":[{"type":"tool_use"}]}},{"type":"text","text":"{\"model\":\"y\"}"}],
               "metadata":{"usage":{"output_tokens":9},"model":"z"},
               "usage":{"output_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(f.tool_calls, 1);
        assert_eq!(f.model, None);
        assert_eq!(
            f.usage,
            Usage {
                output_tokens: 3,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn server_tool_use_blocks_count_and_order_inside_a_block_does_not_matter() {
        let f = whole(
            r#"{"content":[{"name":"web_search","type":"server_tool_use"},{"type":"web_search_tool_result"},
               {"type":"tool_use"},"odd",5,null]}"#,
        )
        .unwrap();
        assert_eq!(f.tool_calls, 2);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let f = whole(
            r#"{"usage":{"input_tokens":1,"output_tokens":2},"usage":{"input_tokens":7},
               "model":"a","model":"b","content":[{"type":"tool_use"}],"content":[],
               "type":"error","type":"message","error":{"type":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 7,
                ..Usage::default()
            }
        );
        assert_eq!(f.model.as_deref(), Some("b"));
        assert_eq!(f.tool_calls, 0);
        assert_eq!(f.error_type, None);
        let f =
            whole(r#"{"model":"a","model":null,"usage":{"input_tokens":1,"input_tokens":null}}"#)
                .unwrap();
        assert_eq!(f.model, None);
        assert_eq!(f.usage.input_tokens, 0);
    }

    #[test]
    fn cache_lifetimes_and_web_searches_count_only_in_place() {
        let f = whole(
            r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":30,
               "cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20,"input_tokens":9},
               "server_tool_use":{"web_search_requests":2,"ephemeral_1h_input_tokens":9},
               "ephemeral_5m_input_tokens":9,"web_search_requests":9},
               "cache_creation":{"ephemeral_5m_input_tokens":9},
               "server_tool_use":{"web_search_requests":9}}"#,
        )
        .unwrap();
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 1,
                cache_creation_input_tokens: 30,
                cache_creation_5m_input_tokens: 10,
                cache_creation_1h_input_tokens: 20,
                web_search_requests: 2,
                ..Usage::default()
            }
        );
        let f = whole(
            r#"{"usage":{"cache_creation":{"ephemeral_1h_input_tokens":20},"cache_creation":null,
               "server_tool_use":{"web_search_requests":2},"server_tool_use":{}}}"#,
        )
        .unwrap();
        assert_eq!(f.usage, Usage::default());
    }

    #[test]
    fn bad_figures_read_as_absent() {
        let f = whole(
            r#"{"usage":{"input_tokens":-5,"output_tokens":1e2,"cache_read_input_tokens":99999999999999999999,
               "cache_creation_input_tokens":2.0}}"#,
        )
        .unwrap();
        assert_eq!(f.usage, Usage::default());
    }

    #[test]
    fn malformed_bodies_yield_nothing() {
        let cases: &[&[u8]] = &[
            b"",
            b"   ",
            b"{\"usage\":{\"input_tokens\":5}",
            b"{\"usage\":{\"input_tokens\":5}} {}",
            b"{\"usage\":{\"input_tokens\":5},}",
            b"{\"model\":\"a\xc3\"}",
            b"{\"model\":\"a\x01\"}",
            b"{\"model\":\"\\ud800\"}",
            b"{\"model\":\"\\x\"}",
            b"{\"usage\":{\"input_tokens\":01}}",
            b"{\"usage\":{\"input_tokens\":1.}}",
            b"{\"usage\":{\"input_tokens\":-}}",
            b"{'model':'a'}",
            b"{\"a\":tru}",
            b"{\"a\" 1}",
            b"[1,2",
            b"nul",
        ];
        for body in cases {
            assert_eq!(
                scan(&[body], false),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let body = "[".repeat(100_000);
        assert_eq!(whole(&body), None);
        let mut body = String::from("{\"usage\":{\"input_tokens\":1},\"x\":");
        body.push_str(&"[".repeat(100_000));
        body.push_str(&"]".repeat(100_000));
        body.push('}');
        assert_eq!(whole(&body), None);
    }

    #[test]
    fn a_large_body_streams_through_in_pieces() {
        let mut s = JsonResponseScanner::new(true);
        s.feed(br#"{"type":"message","model":"m","content":[{"type":"text","text":""#);
        let chunk = "lorem ipsum \\\"dolor\\\" ".repeat(1 << 14);
        for _ in 0..16 {
            s.feed(chunk.as_bytes());
        }
        s.feed(br#""}],"usage":{"input_tokens":4,"output_tokens":5}}"#);
        assert!(s.finish());
        let f = s.facts();
        assert_eq!(f.usage.output_tokens, 5);
        assert_eq!(f.text.len(), TEXT_CAP);
        assert!(f.text.starts_with("lorem ipsum \"dolor\" lorem"));
    }

    #[test]
    fn tool_input_is_kept_raw_and_bounded() {
        let big = "q".repeat(10_000);
        let body = format!(
            r#"{{"content":[{{"type":"tool_use","name":"Big","input":{{"s":"{big}"}}}},
               {{"input":[1, 2],"type":"tool_use","name":"Arr"}},{{"type":"tool_use","input":"str"}}]}}"#
        );
        let f = scan(&[body.as_bytes()], true).unwrap();
        assert_eq!(f.tool_calls, 3);
        assert_eq!(f.tools[0].name, "Big");
        assert_eq!(f.tools[0].input.len(), TOOL_INPUT_CAP);
        assert!(f.tools[0].input.starts_with("{\"s\":\"qqq"));
        assert_eq!(f.tools[1].input, "[1, 2]");
        assert_eq!(f.tools[2].input, "");
    }

    #[test]
    fn facts_are_empty_until_finish() {
        let mut s = JsonResponseScanner::new(false);
        s.feed(FIXTURE);
        assert_eq!(s.facts(), &ResponseFacts::default());
        assert!(s.finish());
        assert_eq!(s.facts().usage.input_tokens, 901);
    }
}
