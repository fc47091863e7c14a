//! The facts one SSE event's JSON carries, and how they change a stream's totals.
//!
//! The tokenizer reports values as they stream past; this visitor keeps the few it
//! needs for whichever event type the data turns out to be (`type` comes first in the
//! API's JSON, but nothing here relies on that). Nothing is applied until the event's
//! data has ended and proved to be valid JSON, so a broken event changes nothing.
//! Like serde_json, a repeated key replaces the earlier value, nested values included.

use super::clip::{push_bounded, Capped, Clip, Sink};
use super::json::{Seg, Token, Visitor};
use super::{
    is_tool_block, Figures, ResponseFacts, ToolCall, UsageKey, UsagePart, ERROR_TYPE_CAP,
    MAX_TOOLS, MODEL_CAP, TEXT_CAP, TOOL_INPUT_CAP, TOOL_NAME_CAP, UNKNOWN_ERROR,
};

/// The keys an event's JSON is read by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Type,
    Message,
    Model,
    Usage,
    Figure(u8),
    CacheCreation,
    ServerToolUse,
    ContentBlock,
    Name,
    Delta,
    Text,
    PartialJson,
    Index,
    Error,
}

/// Longest event, block or delta type recognised.
const TYPE_CAP: usize = 24;

/// What one event's data said, held until the event ends.
#[derive(Debug, Clone)]
pub(crate) struct EventFacts {
    collect: bool,
    kind: Clip<TYPE_CAP>,
    model: Clip<MODEL_CAP>,
    message_usage: Figures,
    usage: Figures,
    block_type: Clip<TYPE_CAP>,
    block_name: Clip<TOOL_NAME_CAP>,
    delta_type: Clip<TYPE_CAP>,
    text: Capped,
    partial_json: Capped,
    index: Option<u64>,
    error_type: Clip<ERROR_TYPE_CAP>,
}

use Seg::Key as K;

impl EventFacts {
    /// Empty facts; `collect` also keeps text and tool details.
    pub(crate) fn new(collect: bool) -> Self {
        EventFacts {
            collect,
            kind: Clip::new(),
            model: Clip::new(),
            message_usage: Figures::default(),
            usage: Figures::default(),
            block_type: Clip::new(),
            block_name: Clip::new(),
            delta_type: Clip::new(),
            text: Capped::new(TEXT_CAP),
            partial_json: Capped::new(TOOL_INPUT_CAP),
            index: None,
            error_type: Clip::new(),
        }
    }

    /// Forgets everything, for the next event.
    pub(crate) fn clear(&mut self) {
        self.kind.clear();
        self.forget_message();
        self.usage = Figures::default();
        self.block_type.clear();
        self.block_name.clear();
        self.forget_delta();
        self.index = None;
        self.error_type.clear();
    }

    fn forget_message(&mut self) {
        self.model.clear();
        self.message_usage = Figures::default();
    }

    fn forget_delta(&mut self) {
        self.delta_type.clear();
        self.text.clear();
        self.partial_json.clear();
    }

    /// The buffer a string at `path` is decoded into, if it is one we keep.
    fn sink(&mut self, path: &[Seg<Key>]) -> Option<&mut dyn Sink> {
        Some(match path {
            [K(Key::Type)] => &mut self.kind,
            [K(Key::Message), K(Key::Model)] => &mut self.model,
            [K(Key::ContentBlock), K(Key::Type)] => &mut self.block_type,
            [K(Key::Delta), K(Key::Type)] => &mut self.delta_type,
            [K(Key::Error), K(Key::Type)] => &mut self.error_type,
            [K(Key::ContentBlock), K(Key::Name)] if self.collect => &mut self.block_name,
            [K(Key::Delta), K(Key::Text)] if self.collect => &mut self.text,
            [K(Key::Delta), K(Key::PartialJson)] if self.collect => &mut self.partial_json,
            _ => return None,
        })
    }

    /// A key at `path` is about to get a (new) value: forget the old one and all below it.
    fn forget(&mut self, path: &[Seg<Key>]) {
        match path {
            [K(Key::Message)] => self.forget_message(),
            [K(Key::Message), K(Key::Usage), below @ ..] => self.message_usage.forget_at(below),
            [K(Key::Usage), below @ ..] => self.usage.forget_at(below),
            [K(Key::ContentBlock)] => {
                self.block_type.clear();
                self.block_name.clear();
            }
            [K(Key::Delta)] => self.forget_delta(),
            [K(Key::Index)] => self.index = None,
            [K(Key::Error)] => self.error_type.clear(),
            _ => {
                if let Some(sink) = self.sink(path) {
                    sink.clear();
                }
            }
        }
    }

    /// Applies a complete, valid event to the stream's facts. `tool_blocks` holds the
    /// content-block index of each kept tool call, to route its input deltas.
    pub(crate) fn apply(&self, facts: &mut ResponseFacts, tool_blocks: &mut Vec<Option<u64>>) {
        let Some(kind) = self.kind.get() else { return };
        match kind {
            b"message_start" => {
                facts.usage.replace_with(&self.message_usage);
                if let Some(model) = self.model.text() {
                    set_reusing(&mut facts.model, model);
                }
            }
            b"message_delta" => facts.usage.replace_with(&self.usage),
            b"message_stop" => facts.complete = true,
            b"content_block_start" => {
                if !self.block_type.get().is_some_and(is_tool_block) {
                    return;
                }
                facts.tool_calls = facts.tool_calls.saturating_add(1);
                if self.collect && facts.tools.len() < MAX_TOOLS {
                    facts.tools.push(ToolCall {
                        name: self.block_name.text().unwrap_or_default().to_owned(),
                        input: String::new(),
                    });
                    tool_blocks.push(self.index);
                }
            }
            b"content_block_delta" if self.collect => match self.delta_type.get() {
                Some(b"text_delta") => {
                    if let Some(text) = self.text.text() {
                        push_bounded(&mut facts.text, text, TEXT_CAP);
                    }
                }
                Some(b"input_json_delta") => {
                    let tool = tool_blocks.iter().rposition(|&i| i == self.index);
                    if let (Some(t), Some(json)) = (tool, self.partial_json.text()) {
                        push_bounded(&mut facts.tools[t].input, json, TOOL_INPUT_CAP);
                    }
                }
                _ => {}
            },
            b"error" => {
                let error = self.error_type.text().unwrap_or(UNKNOWN_ERROR);
                set_reusing(&mut facts.error_type, error);
            }
            _ => {}
        }
    }
}

/// Stores `value`, reusing the string already there: a repeated event costs no allocation.
fn set_reusing(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(value);
        }
        None => *slot = Some(value.to_owned()),
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

impl Visitor for EventFacts {
    type Key = Key;

    fn key(&self, name: &[u8]) -> Option<Key> {
        Some(match name {
            b"type" => Key::Type,
            b"message" => Key::Message,
            b"model" => Key::Model,
            b"usage" => Key::Usage,
            b"content_block" => Key::ContentBlock,
            b"delta" => Key::Delta,
            // Read only for Slack: otherwise these values go unreported (no calls).
            b"name" if self.collect => Key::Name,
            b"text" if self.collect => Key::Text,
            b"partial_json" if self.collect => Key::PartialJson,
            b"index" => Key::Index,
            b"error" => Key::Error,
            b"cache_creation" => Key::CacheCreation,
            b"server_tool_use" => Key::ServerToolUse,
            _ => Key::Figure(Figures::index_of(name)?),
        })
    }

    fn token(&mut self, path: &[Seg<Key>], token: Token<'_>) {
        match token {
            Token::Key => self.forget(path),
            Token::Str(piece) => {
                if let Some(sink) = self.sink(path) {
                    sink.push(piece);
                }
            }
            Token::StrEnd => {
                if let Some(sink) = self.sink(path) {
                    sink.finish();
                }
            }
            Token::Num(n) => match path {
                [K(Key::Message), K(Key::Usage), below @ ..] => {
                    if let Some(f) = Figures::figure_at(below) {
                        self.message_usage.set(f, n);
                    }
                }
                [K(Key::Usage), below @ ..] => {
                    if let Some(f) = Figures::figure_at(below) {
                        self.usage.set(f, n);
                    }
                }
                [K(Key::Index)] => self.index = n,
                _ => {}
            },
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
}
