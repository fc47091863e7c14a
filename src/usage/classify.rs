//! Request classification: model, `stream`, and query evaluation vs inference, read from
//! a request body without building a tree.
//!
//! Only top-level members count, so a `model`, `stream` or `system` key inside a message
//! or a tool's input schema cannot fool it, and strings compare after unescaping
//! (`"sys\u0074em"` is `"system"`). As with serde_json, a repeated key replaces the
//! earlier value. A body that is not one valid JSON object is `Unclassified`.

use super::clip::{utf8_prefix, Clip};
use super::json::{Container, Seg, Token, Tokenizer, Visitor};
use super::{MODEL_CAP, USER_TEXT_CAP};

/// What a request's system prompts make it, as the seed counted them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Exactly one system prompt.
    QueryEvaluation,
    /// More than one system prompt.
    Inference,
    /// No system prompt.
    Neither,
    /// The body is not a JSON object.
    #[default]
    Unclassified,
}

/// What a request body says about the request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestClass {
    /// Top-level `model`, if a string (at most [`MODEL_CAP`] bytes).
    pub model: Option<String>,
    /// Top-level `stream`, if a boolean; false otherwise.
    pub stream: bool,
    /// `system` (a string counts 1, an array its length) plus `messages` with role "system".
    pub system_prompts: usize,
    /// The kind the count makes it.
    pub kind: RequestKind,
    /// Only when asked: the text of the last `messages` element with role "user" (its
    /// string content, or its text blocks joined with `\n`, leaving out blocks that start
    /// with `<system-reminder>`), at most [`USER_TEXT_CAP`] bytes; `None` if there is no
    /// user message, `Some("")` if it has no text.
    pub last_user_text: Option<String>,
    /// Top-level `metadata.user_id`, if a string (at most [`USER_ID_CAP`] bytes): Claude
    /// Code's session, for the ledger when the session header is absent.
    pub user_id: Option<String>,
}

/// Most bytes of `metadata.user_id` kept.
pub const USER_ID_CAP: usize = 256;

/// Text blocks Claude Code adds for the model, not written by the user.
const REMINDER: &[u8] = b"<system-reminder>";

/// Classifies a complete request body; `want_user_text` also extracts the last user
/// message's text (for Slack).
pub fn classify_request(body: &[u8], want_user_text: bool) -> RequestClass {
    let mut tokenizer = Tokenizer::new();
    let mut r = Request::new(want_user_text);
    tokenizer.feed(body, &mut r);
    if !tokenizer.finish(&mut r) || !r.is_object {
        return RequestClass::default();
    }
    let system_prompts = r.system.saturating_add(r.system_messages);
    RequestClass {
        model: r.model.text().map(str::to_owned),
        stream: r.stream,
        system_prompts,
        kind: match system_prompts {
            0 => RequestKind::Neither,
            1 => RequestKind::QueryEvaluation,
            _ => RequestKind::Inference,
        },
        last_user_text: r.has_user.then(|| utf8_prefix(&r.user_text).to_owned()),
        user_id: r.user_id.text().map(str::to_owned),
    }
}

/// The keys a request body is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Model,
    Stream,
    System,
    Messages,
    Role,
    Content,
    Type,
    Text,
    Metadata,
    UserId,
}

/// Longest role or block type recognised.
const TYPE_CAP: usize = 16;

/// What the body has said so far.
struct Request {
    want_text: bool,
    is_object: bool,
    model: Clip<MODEL_CAP>,
    user_id: Clip<USER_ID_CAP>,
    stream: bool,
    system: usize,
    system_messages: usize,
    /// The message being read: its role, and its text so far.
    role: Clip<TYPE_CAP>,
    text: Vec<u8>,
    /// Some text block of the message was kept, so the next one needs a separator.
    joined: bool,
    /// The content block being read: its type, where its text starts in `text`, and
    /// enough of that text to spot a reminder.
    block_type: Clip<TYPE_CAP>,
    block_mark: usize,
    block_has_text: bool,
    block_prefix: Clip<{ REMINDER.len() }>,
    /// The last user message's text.
    has_user: bool,
    user_text: Vec<u8>,
}

use Seg::{Elem, Key as K};

impl Request {
    fn new(want_text: bool) -> Self {
        Request {
            want_text,
            is_object: false,
            model: Clip::new(),
            user_id: Clip::new(),
            stream: false,
            system: 0,
            system_messages: 0,
            role: Clip::new(),
            text: Vec::new(),
            joined: false,
            block_type: Clip::new(),
            block_mark: 0,
            block_has_text: false,
            block_prefix: Clip::new(),
            has_user: false,
            user_text: Vec::new(),
        }
    }

    fn clear_text(&mut self) {
        self.text.clear();
        self.joined = false;
    }

    fn push_text(&mut self, piece: &[u8]) {
        let take = piece
            .len()
            .min(USER_TEXT_CAP.saturating_sub(self.text.len()));
        self.text.extend_from_slice(&piece[..take]);
    }

    /// A key at `path` is about to get a (new) value: forget the old one.
    fn forget(&mut self, path: &[Seg<Key>]) {
        match path {
            [K(Key::Model)] => self.model.clear(),
            [K(Key::Metadata)] | [K(Key::Metadata), K(Key::UserId)] => self.user_id.clear(),
            [K(Key::Stream)] => self.stream = false,
            [K(Key::System)] => self.system = 0,
            [K(Key::Messages)] => {
                self.system_messages = 0;
                self.has_user = false;
            }
            [K(Key::Messages), Elem, K(Key::Role)] => self.role.clear(),
            [K(Key::Messages), Elem, K(Key::Content)] => self.clear_text(),
            [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Type)] => {
                self.block_type.clear()
            }
            [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Text)] => {
                self.text.truncate(self.block_mark);
                self.block_has_text = false;
            }
            _ => {}
        }
    }

    /// A value (of any kind) begins at `path`.
    fn value(&mut self, path: &[Seg<Key>]) {
        if let [K(Key::System), Elem] = path {
            self.system = self.system.saturating_add(1);
        }
    }

    fn end_message(&mut self) {
        if self.role.get() == Some(b"system") {
            self.system_messages = self.system_messages.saturating_add(1);
        } else if self.role.get() == Some(b"user") && self.want_text {
            // Swap rather than copy: the old buffer is reused for the next message.
            std::mem::swap(&mut self.user_text, &mut self.text);
            self.has_user = true;
        }
    }

    fn end_block(&mut self) {
        let keep = self.block_has_text
            && self.block_type.get() == Some(b"text")
            && !self.block_prefix.kept().starts_with(REMINDER);
        if keep {
            self.joined = true;
        } else {
            self.text.truncate(self.block_mark);
        }
    }
}

impl Visitor for Request {
    type Key = Key;

    fn key(&self, name: &[u8]) -> Option<Key> {
        Some(match name {
            b"model" => Key::Model,
            b"stream" => Key::Stream,
            b"system" => Key::System,
            b"messages" => Key::Messages,
            b"role" => Key::Role,
            b"metadata" => Key::Metadata,
            b"user_id" => Key::UserId,
            // Message content is read only for Slack's user text: otherwise it goes
            // unreported (no calls for the bulk of a Claude Code body).
            b"content" if self.want_text => Key::Content,
            b"type" if self.want_text => Key::Type,
            b"text" if self.want_text => Key::Text,
            _ => return None,
        })
    }

    fn token(&mut self, path: &[Seg<Key>], token: Token<'_>) {
        const MESSAGE: &[Seg<Key>] = &[K(Key::Messages), Elem];
        const BLOCK: &[Seg<Key>] = &[K(Key::Messages), Elem, K(Key::Content), Elem];
        match token {
            Token::Key => self.forget(path),
            Token::Begin(kind) => {
                self.value(path);
                match (kind, path) {
                    (Container::Object, []) => self.is_object = true,
                    (Container::Object, MESSAGE) => {
                        self.role.clear();
                        self.clear_text();
                    }
                    (Container::Object, BLOCK) => {
                        self.block_type.clear();
                        self.block_mark = self.text.len();
                        self.block_has_text = false;
                        self.block_prefix.clear();
                    }
                    _ => {}
                }
            }
            Token::End(Container::Object) if path == MESSAGE => self.end_message(),
            Token::End(Container::Object) if path == BLOCK && self.want_text => self.end_block(),
            Token::StrBegin => {
                self.value(path);
                match path {
                    [K(Key::System)] => self.system = 1,
                    [K(Key::Messages), Elem, K(Key::Content)] => self.clear_text(),
                    [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Text)] => {
                        self.text.truncate(self.block_mark);
                        if self.joined {
                            self.push_text(b"\n");
                        }
                        self.block_prefix.clear();
                    }
                    _ => {}
                }
            }
            Token::Str(piece) => match path {
                [K(Key::Model)] => self.model.push(piece),
                [K(Key::Metadata), K(Key::UserId)] => self.user_id.push(piece),
                [K(Key::Messages), Elem, K(Key::Role)] => self.role.push(piece),
                [K(Key::Messages), Elem, K(Key::Content)] => self.push_text(piece),
                [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Type)] => {
                    self.block_type.push(piece)
                }
                [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Text)] => {
                    self.block_prefix.push(piece);
                    self.push_text(piece);
                }
                _ => {}
            },
            Token::StrEnd => match path {
                [K(Key::Model)] => self.model.finish(),
                [K(Key::Metadata), K(Key::UserId)] => self.user_id.finish(),
                [K(Key::Messages), Elem, K(Key::Role)] => self.role.finish(),
                [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Type)] => {
                    self.block_type.finish()
                }
                [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Text)] => {
                    self.block_has_text = true
                }
                _ => {}
            },
            Token::Bool(b) => {
                self.value(path);
                if let [K(Key::Stream)] = path {
                    self.stream = b;
                }
            }
            Token::Num(_) | Token::Null => self.value(path),
            Token::End(_) => {}
        }
    }

    fn wants_string(&mut self, path: &[Seg<Key>]) -> bool {
        match path {
            [K(Key::Model)]
            | [K(Key::Metadata), K(Key::UserId)]
            | [K(Key::Messages), Elem, K(Key::Role)] => true,
            [K(Key::Messages), Elem, K(Key::Content)]
            | [K(Key::Messages), Elem, K(Key::Content), Elem, K(Key::Type) | K(Key::Text)] => {
                self.want_text
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(body: &str) -> RequestClass {
        classify_request(body.as_bytes(), true)
    }

    fn kind(body: &str) -> (usize, RequestKind) {
        let c = class(body);
        (c.system_prompts, c.kind)
    }

    #[test]
    fn reads_the_top_level_metadata_user_id_only() {
        let id = |body: &str| classify_request(body.as_bytes(), false).user_id;
        assert_eq!(
            id(r#"{"metadata":{"user_id":"user_abc_session_1"},"messages":[]}"#).as_deref(),
            Some("user_abc_session_1")
        );
        assert_eq!(
            id(r#"{"metadata":{"user_id":"a\u0062"}}"#).as_deref(),
            Some("ab")
        );
        assert_eq!(id(r#"{"metadata":{"user_id":7}}"#), None);
        assert_eq!(id(r#"{"messages":[{"metadata":{"user_id":"x"}}]}"#), None);
        assert_eq!(id(r#"{"user_id":"x","metadata":{}}"#), None);
        assert_eq!(
            id(r#"{"metadata":{"user_id":"a"},"metadata":{"other":1}}"#),
            None,
            "a repeated key replaces the earlier value"
        );
        let long = format!(r#"{{"metadata":{{"user_id":"{}"}}}}"#, "u".repeat(1000));
        assert_eq!(id(&long).map(|s| s.len()), Some(USER_ID_CAP));
    }

    #[test]
    fn counts_system_prompts_like_the_seed() {
        assert_eq!(kind(r#"{"messages":[]}"#), (0, RequestKind::Neither));
        assert_eq!(kind(r#"{"system":null}"#), (0, RequestKind::Neither));
        assert_eq!(
            kind(r#"{"system":"be brief"}"#),
            (1, RequestKind::QueryEvaluation)
        );
        assert_eq!(kind(r#"{"system":""}"#), (1, RequestKind::QueryEvaluation));
        assert_eq!(kind(r#"{"system":[]}"#), (0, RequestKind::Neither));
        assert_eq!(
            kind(r#"{"system":[{"type":"text","text":"a"}]}"#),
            (1, RequestKind::QueryEvaluation)
        );
        assert_eq!(
            kind(r#"{"system":[{"text":"a"},"b",3,null,[]]}"#),
            (5, RequestKind::Inference)
        );
        assert_eq!(
            kind(r#"{"system":{"text":"a"}}"#),
            (0, RequestKind::Neither)
        );
        assert_eq!(kind(r#"{"system":7}"#), (0, RequestKind::Neither));
        assert_eq!(
            kind(r#"{"messages":[{"role":"system","content":"x"},{"role":"user","content":"y"}]}"#),
            (1, RequestKind::QueryEvaluation)
        );
        assert_eq!(
            kind(r#"{"system":"s","messages":[{"role":"system","content":"x"}]}"#),
            (2, RequestKind::Inference)
        );
    }

    #[test]
    fn reads_model_and_stream_from_the_top_level_only() {
        let c = class(
            r#"{"model":"claude-opus-4-1","stream":true,"messages":[{"role":"user","content":"hi",
               "model":"nested","stream":false}],"tools":[{"input_schema":{"model":"x","stream":false}}]}"#,
        );
        assert_eq!(c.model.as_deref(), Some("claude-opus-4-1"));
        assert!(c.stream);
        let c = class(r#"{"tools":[{"stream":true,"model":"m"}],"metadata":{"stream":true}}"#);
        assert_eq!(c.model, None);
        assert!(!c.stream);
    }

    #[test]
    fn non_boolean_stream_and_non_string_model_read_as_absent() {
        let c = class(r#"{"stream":"true","model":5}"#);
        assert!(!c.stream);
        assert_eq!(c.model, None);
        assert!(!class(r#"{"stream":1}"#).stream);
    }

    #[test]
    fn nested_system_keys_and_roles_do_not_count() {
        let body = r#"{"messages":[{"role":"user","content":[{"type":"tool_result","content":
            [{"role":"system"}],"system":"x"}]},{"role":"assistant","content":"ok",
            "meta":{"role":"system"}}],"tools":[{"name":"t","input_schema":{"properties":
            {"system":{"type":"string"},"messages":{"role":"system"}}}}],
            "metadata":{"system":"no"}}"#;
        assert_eq!(kind(body), (0, RequestKind::Neither));
    }

    #[test]
    fn escaped_strings_compare_decoded() {
        assert_eq!(
            kind(r#"{"messages":[{"r\u006fle":"sys\u0074em","content":"x"}]}"#),
            (1, RequestKind::QueryEvaluation)
        );
        assert_eq!(
            kind(r#"{"\u0073ystem":"x"}"#),
            (1, RequestKind::QueryEvaluation)
        );
        assert_eq!(
            class(r#"{"model":"claude\u002dsonnet"}"#).model.as_deref(),
            Some("claude-sonnet")
        );
        assert!(class(r#"{"str\u0065am":true}"#).stream);
        // A role that only looks like "system" before decoding does not count.
        assert_eq!(
            kind(r#"{"messages":[{"role":"system\u0000"}]}"#),
            (0, RequestKind::Neither)
        );
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let c = class(
            r#"{"model":"a","stream":true,"system":"x","model":"b","stream":false,"system":["y","z"]}"#,
        );
        assert_eq!(c.model.as_deref(), Some("b"));
        assert!(!c.stream);
        assert_eq!(c.system_prompts, 2);
        assert_eq!(
            kind(r#"{"system":["a","b"],"system":null}"#),
            (0, RequestKind::Neither)
        );
        assert_eq!(
            kind(r#"{"messages":[{"role":"system"}],"messages":[{"role":"user"}]}"#),
            (0, RequestKind::Neither)
        );
        assert_eq!(
            kind(r#"{"messages":[{"role":"system","role":"user"}]}"#),
            (0, RequestKind::Neither)
        );
        assert_eq!(
            kind(r#"{"messages":[{"role":"user","role":"system"}]}"#),
            (1, RequestKind::QueryEvaluation)
        );
    }

    #[test]
    fn anything_but_one_json_object_is_unclassified() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"[]",
            b"\"system\"",
            b"42",
            b"null",
            b"{\"system\":\"x\"",
            b"{\"system\":\"x\"}}",
            b"{\"system\":\"x\"} trailing",
            b"{\"system\":\"\xff\"}",
            b"{\"system\":\"x\",}",
            b"{\"max_tokens\":01}",
        ];
        for body in cases {
            let c = classify_request(body, true);
            assert_eq!(
                c,
                RequestClass::default(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(c.kind, RequestKind::Unclassified);
        }
    }

    #[test]
    fn deep_nesting_is_unclassified_without_recursion() {
        let body = format!("{{\"system\":\"x\",\"a\":{}", "[".repeat(100_000));
        assert_eq!(class(&body).kind, RequestKind::Unclassified);
    }

    #[test]
    fn last_user_text_from_a_string_content() {
        let c = class(
            r#"{"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"reply"},
               {"content":"second \"quoted\"\n","role":"user"},{"role":"assistant","content":"x"}]}"#,
        );
        assert_eq!(c.last_user_text.as_deref(), Some("second \"quoted\"\n"));
    }

    #[test]
    fn last_user_text_joins_text_blocks_and_skips_reminders() {
        let c = class(
            r#"{"messages":[{"role":"user","content":[
                {"type":"text","text":"<system-reminder>ignore me</system-reminder>"},
                {"type":"text","text":"fix the bug"},
                {"type":"image","source":{"type":"base64","data":"AAAA"}},
                {"text":"in main.rs","type":"text"},
                {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"nested"}]},
                {"type":"text","text":"<system-reminder>late</system-reminder>"}
            ]}]}"#,
        );
        assert_eq!(c.last_user_text.as_deref(), Some("fix the bug\nin main.rs"));
    }

    #[test]
    fn last_user_text_is_none_without_a_user_message_and_empty_without_text() {
        assert_eq!(
            class(r#"{"messages":[{"role":"assistant","content":"x"}]}"#).last_user_text,
            None
        );
        assert_eq!(class(r#"{"model":"m"}"#).last_user_text, None);
        let c = class(
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","content":"out"}]}]}"#,
        );
        assert_eq!(c.last_user_text.as_deref(), Some(""));
        let c = classify_request(br#"{"messages":[{"role":"user","content":"hi"}]}"#, false);
        assert_eq!(c.last_user_text, None, "not asked for");
    }

    #[test]
    fn last_user_text_is_bounded_on_a_character_boundary() {
        let long = "é".repeat(USER_TEXT_CAP);
        let body = format!(r#"{{"messages":[{{"role":"user","content":"{long}"}}]}}"#);
        let text = class(&body).last_user_text.unwrap();
        assert!(text.len() <= USER_TEXT_CAP && text.len() >= USER_TEXT_CAP - 1);
        assert!(text.chars().all(|c| c == 'é'));
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"{long}"}},{{"type":"text","text":"tail"}}]}}]}}"#
        );
        let text = class(&body).last_user_text.unwrap();
        assert!(text.len() <= USER_TEXT_CAP);
        assert!(!text.ends_with("tail"));
    }

    #[test]
    fn a_reminder_cut_by_the_text_ceiling_is_still_recognised() {
        let filler = "a".repeat(USER_TEXT_CAP - 3);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"{filler}"}},{{"type":"text","text":"<system-reminder>x"}}]}}]}}"#
        );
        assert_eq!(
            class(&body).last_user_text.as_deref(),
            Some(filler.as_str())
        );
    }

    #[test]
    fn duplicate_content_and_text_keys_last_wins() {
        let c = class(
            r#"{"messages":[{"role":"user","content":"a","content":[{"type":"text","text":"b","text":"c"}]}]}"#,
        );
        assert_eq!(c.last_user_text.as_deref(), Some("c"));
    }
}
