//! The incremental SSE scanner: usage, model, tool calls and errors from a streamed
//! Messages response, read off the exact chunks relayed to the client.
//!
//! Lines are framed by the WHATWG EventSource rules: `\n`, `\r\n` and `\r` all end a
//! line (a `\r\n` split across chunks is one ending), a leading `:` makes a comment, one
//! space after the colon is dropped, `data:` lines of one event are joined with `\n`, a
//! blank line dispatches the event, and an event still open when the stream ends is
//! dropped (the API ends every event with a blank line).
//!
//! Nothing is buffered. An event's data goes straight through the JSON tokenizer when
//! it can matter, and is skipped at memory speed when it cannot. Which is which is
//! decided at the event's first `data:` line by the `event:` name seen so far:
//! `message_start`, `message_delta`, `message_stop`, `content_block_start` and `error`
//! are read (and `content_block_delta` when collecting text); so is an event with no
//! name (or the default name `message`), since then only its data's `type` can tell.
//! Any other name (`ping`, `content_block_stop`, names the API adds later) is skipped.
//! What a read event means is then decided by its data's own `type`.
//!
//! There is no `finish`: the facts are current after every dispatched event, and
//! `complete` says whether `message_stop` arrived, which tells a whole stream from one
//! cut short.

use super::event::{EventFacts, Key};
use super::json::Tokenizer;
use super::{clip::Clip, ResponseFacts};
use crate::scan;

/// Longest event name recognised; longer names are skipped like any unknown one.
const EVENT_NAME_CAP: usize = 32;

/// Where in a line the scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing of the line read yet.
    Start,
    /// Reading the field name.
    Name,
    /// Just after the colon, where one space is dropped.
    Space(Field),
    /// Reading the value.
    Value(Field),
}

/// The fields that matter; `id`, `retry`, comments and unknown fields are ignored alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Ignore,
}

/// Reads a streamed (SSE) Messages response incrementally; see the module docs.
#[derive(Debug, Clone)]
pub struct SseScanner {
    collect: bool,
    facts: ResponseFacts,
    /// Content-block index of each tool call in `facts.tools`.
    tool_blocks: Vec<Option<u64>>,
    line: Line,
    /// The last line ended in `\r`: a `\n` next is part of that ending.
    after_cr: bool,
    field: Clip<8>,
    event_name: Clip<EVENT_NAME_CAP>,
    /// The current event has had a `data` line.
    has_data: bool,
    /// The current event's data goes through the tokenizer.
    reading: bool,
    json: Tokenizer<Key>,
    event: EventFacts,
}

impl SseScanner {
    /// A scanner at the start of a stream; `collect_text` also keeps assistant text and
    /// tool names and inputs (bounded, for Slack), which costs allocation.
    pub fn new(collect_text: bool) -> Self {
        SseScanner {
            collect: collect_text,
            facts: ResponseFacts::default(),
            tool_blocks: Vec::new(),
            line: Line::Start,
            after_cr: false,
            field: Clip::new(),
            event_name: Clip::new(),
            has_data: false,
            reading: false,
            json: Tokenizer::new(),
            event: EventFacts::new(collect_text),
        }
    }

    /// Takes the next bytes of the (de-chunked) response body, split anywhere.
    pub fn feed(&mut self, mut s: &[u8]) {
        while let Some(&b) = s.first() {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    s = &s[1..];
                    continue;
                }
            }
            match self.line {
                Line::Start => {
                    if !self.has_data {
                        if let Some(len) = self.whole_event(s) {
                            s = &s[len..];
                            continue;
                        }
                    }
                    // Whole field names are the common case; a name split across chunks
                    // takes the slower path through `Line::Name`.
                    if let Some(rest) = s.strip_prefix(b"data:") {
                        self.begin_field(Field::Data);
                        self.line = Line::Space(Field::Data);
                        s = rest;
                    } else if let Some(rest) = s.strip_prefix(b"event:") {
                        self.begin_field(Field::Event);
                        self.line = Line::Space(Field::Event);
                        s = rest;
                    } else if b == b'\n' || b == b'\r' {
                        self.dispatch();
                        self.end_line(b);
                        s = &s[1..];
                    } else if b == b':' {
                        self.line = Line::Value(Field::Ignore);
                        s = &s[1..];
                    } else {
                        self.field.clear();
                        self.line = Line::Name;
                    }
                }
                Line::Name => {
                    let n = s
                        .iter()
                        .position(|&c| matches!(c, b':' | b'\n' | b'\r'))
                        .unwrap_or(s.len());
                    self.field.push(&s[..n]);
                    s = &s[n..];
                    if let Some(&c) = s.first() {
                        let field = if self.field.holds(b"data") {
                            Field::Data
                        } else if self.field.holds(b"event") {
                            Field::Event
                        } else {
                            Field::Ignore
                        };
                        self.begin_field(field);
                        // A line without a colon is a field with an empty value.
                        if c == b':' {
                            s = &s[1..];
                            self.line = Line::Space(field);
                        } else {
                            self.line = Line::Value(field);
                        }
                    }
                }
                Line::Space(field) => {
                    if b == b' ' {
                        s = &s[1..];
                    }
                    self.line = Line::Value(field);
                }
                Line::Value(field) => {
                    let n = scan::find_eol(s).unwrap_or(s.len());
                    match field {
                        Field::Data if self.reading => self.json.feed(&s[..n], &mut self.event),
                        Field::Event => self.event_name.push(&s[..n]),
                        _ => {}
                    }
                    s = &s[n..];
                    if let Some(&eol) = s.first() {
                        self.end_line(eol);
                        s = &s[1..];
                    }
                }
            }
        }
    }

    /// Reads the event at the start of `s` in one pass if it has the shape the API
    /// sends, `event: NAME\ndata: DATA\n\n`, and lies whole in `s`; returns its length.
    /// Anything else (other line endings, several data lines, comments, other fields, an
    /// event cut by the end of the piece) returns `None` with nothing changed, for the
    /// line-by-line path. Measured on W2 (30 events per response): the line-by-line path
    /// cost ~430 instructions per event, a fifth of nexus's user-space instructions.
    fn whole_event(&mut self, s: &[u8]) -> Option<usize> {
        const NAME_FIELD: &[u8] = b"event: ";
        const DATA_FIELD: &[u8] = b"data: ";
        let named = s.strip_prefix(NAME_FIELD)?;
        let name_len = scan::find_eol(named)?;
        let after_name = named[name_len..].strip_prefix(b"\n")?;
        let data = after_name.strip_prefix(DATA_FIELD)?;
        let data_len = scan::find_eol(data)?;
        if data.get(data_len..data_len + 2)? != b"\n\n" {
            return None;
        }
        // What the line-by-line path does for these three lines (the name is only
        // needed to decide, so it is not kept).
        self.has_data = true;
        if self.wanted(&named[..name_len]) {
            self.json.reset();
            self.event.clear();
            self.json.feed(&data[..data_len], &mut self.event);
            self.reading = true;
        }
        self.dispatch();
        Some(NAME_FIELD.len() + name_len + 1 + DATA_FIELD.len() + data_len + 2)
    }

    /// The facts of every event dispatched so far.
    pub fn facts(&self) -> &ResponseFacts {
        &self.facts
    }

    /// Takes the facts out, keeping no copy (the scanner is reset before it is used again).
    pub fn take_facts(&mut self) -> ResponseFacts {
        std::mem::take(&mut self.facts)
    }

    fn end_line(&mut self, eol: u8) {
        self.after_cr = eol == b'\r';
        self.line = Line::Start;
    }

    fn begin_field(&mut self, field: Field) {
        match field {
            Field::Data if !self.has_data => {
                self.has_data = true;
                self.reading = !self.event_name.cut() && self.wanted(self.event_name.kept());
                if self.reading {
                    self.json.reset();
                    self.event.clear();
                }
            }
            // The line break that joins this data line to the previous one.
            Field::Data if self.reading => self.json.feed(b"\n", &mut self.event),
            Field::Event => self.event_name.clear(),
            _ => {}
        }
    }

    /// Whether an event of this name can change the facts.
    fn wanted(&self, name: &[u8]) -> bool {
        // By length, then eight bytes a compare: a match on the byte strings compared a
        // byte at a time, ~43 instructions per event (3% of W2's user-space instructions).
        match name.len() {
            0 => true,
            5 => scan::same(name, b"error"),
            7 => scan::same(name, b"message"),
            12 => scan::same(name, b"message_stop"),
            13 => scan::same(name, b"message_start") || scan::same(name, b"message_delta"),
            19 => {
                scan::same(name, b"content_block_start")
                    || (self.collect && scan::same(name, b"content_block_delta"))
            }
            _ => false,
        }
    }

    /// A blank line: the event is complete.
    fn dispatch(&mut self) {
        if self.reading && self.json.finish(&mut self.event) {
            self.event.apply(&mut self.facts, &mut self.tool_blocks);
        }
        self.has_data = false;
        self.reading = false;
        self.event_name.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{ToolCall, Usage};

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/usage/stream-text-tool-use.sse");

    #[test]
    fn event_names_are_compared_whole() {
        let scanner = SseScanner::new(false);
        let wanted: [&[u8]; 7] = [
            b"",
            b"error",
            b"message",
            b"message_stop",
            b"message_start",
            b"message_delta",
            b"content_block_start",
        ];
        for name in wanted {
            assert!(scanner.wanted(name), "{}", String::from_utf8_lossy(name));
            // Any one byte changed, or one byte fewer, is another name.
            for at in 0..name.len() {
                let mut other = name.to_vec();
                other[at] ^= 0x20;
                assert!(
                    !scanner.wanted(&other),
                    "{}",
                    String::from_utf8_lossy(&other)
                );
            }
            if let Some((_, shorter)) = name.split_last() {
                assert!(!scanner.wanted(shorter) || shorter.is_empty());
            }
        }
        assert!(!scanner.wanted(b"content_block_delta"));
        assert!(SseScanner::new(true).wanted(b"content_block_delta"));
        assert!(!scanner.wanted(b"ping"));
        assert!(!scanner.wanted(b"content_block_stop"));
    }

    fn scan(chunks: &[&[u8]], collect: bool) -> ResponseFacts {
        let mut s = SseScanner::new(collect);
        for c in chunks {
            s.feed(c);
        }
        s.take_facts()
    }

    fn whole(body: &str) -> ResponseFacts {
        scan(&[body.as_bytes()], false)
    }

    #[test]
    fn reads_the_shared_fixture() {
        let f = scan(&[FIXTURE], true);
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 472,
                output_tokens: 89,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 2048,
                ..Usage::default()
            }
        );
        assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(f.tool_calls, 1);
        assert!(f.complete);
        assert_eq!(f.error_type, None);
        assert_eq!(
            f.text,
            "Okay, let's check the weather for San Francisco, CA:"
        );
        assert_eq!(
            f.tools,
            vec![ToolCall {
                name: "get_weather".into(),
                input: r#"{"location": "San Francisco, CA"}"#.into()
            }]
        );
    }

    #[test]
    fn without_collection_no_text_is_kept() {
        let f = scan(&[FIXTURE], false);
        assert_eq!(f.tool_calls, 1);
        assert!(f.text.is_empty());
        assert!(f.tools.is_empty());
    }

    #[test]
    fn every_two_piece_split_of_the_fixture_agrees() {
        let reference = scan(&[FIXTURE], true);
        for at in 0..=FIXTURE.len() {
            let (a, b) = FIXTURE.split_at(at);
            assert_eq!(scan(&[a, b], true), reference, "split at {at}");
        }
    }

    #[test]
    fn byte_at_a_time_agrees() {
        let chunks: Vec<&[u8]> = FIXTURE.chunks(1).collect();
        assert_eq!(scan(&chunks, true), scan(&[FIXTURE], true));
    }

    #[test]
    fn later_usage_replaces_earlier_and_is_never_summed() {
        let f = whole(concat!(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":10}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":25,\"input_tokens\":null}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{}}\n\n",
        ));
        assert_eq!(f.usage.output_tokens, 25);
        assert_eq!(f.usage.input_tokens, 0);
    }

    #[test]
    fn message_delta_may_update_input_and_cache_figures() {
        let f = whole(concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":7}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":6,\"cache_creation_input_tokens\":3,\"output_tokens\":4}}\n\n",
        ));
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 6,
                output_tokens: 4,
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 7,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn cache_lifetimes_and_web_searches_are_read_where_the_api_puts_them() {
        let f = whole(concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,",
            "\"cache_creation_input_tokens\":300,\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,",
            "\"ephemeral_1h_input_tokens\":200},\"server_tool_use\":{\"web_search_requests\":0}}}}\n\n",
            // A later null or absent figure keeps the last value; a later number replaces it.
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4,",
            "\"cache_creation\":{\"ephemeral_5m_input_tokens\":null},\"server_tool_use\":{\"web_search_requests\":3}}}\n\n",
            // Misplaced figures count for nothing.
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"ephemeral_1h_input_tokens\":9,",
            "\"web_search_requests\":9,\"cache_creation\":{\"input_tokens\":9,\"web_search_requests\":9},",
            "\"server_tool_use\":{\"ephemeral_5m_input_tokens\":9}},",
            "\"cache_creation\":{\"ephemeral_1h_input_tokens\":9}}\n\n",
        ));
        assert_eq!(
            f.usage,
            Usage {
                input_tokens: 5,
                output_tokens: 4,
                cache_creation_input_tokens: 300,
                cache_read_input_tokens: 0,
                cache_creation_5m_input_tokens: 100,
                cache_creation_1h_input_tokens: 200,
                web_search_requests: 3,
            }
        );
        // A repeated key replaces the whole object it held, as serde_json would.
        let f = whole(concat!(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{",
            "\"cache_creation\":{\"ephemeral_5m_input_tokens\":1,\"ephemeral_1h_input_tokens\":2},",
            "\"cache_creation\":{\"ephemeral_1h_input_tokens\":3}}}\n\n",
        ));
        assert_eq!(
            (
                f.usage.cache_creation_5m_input_tokens,
                f.usage.cache_creation_1h_input_tokens
            ),
            (0, 3)
        );
    }

    #[test]
    fn crlf_and_cr_endings_and_a_crlf_split_across_chunks() {
        let lf = std::str::from_utf8(FIXTURE).unwrap();
        let reference = whole(lf);
        for ending in ["\r\n", "\r"] {
            let body = lf.replace('\n', ending);
            assert_eq!(whole(&body), reference, "{ending:?}");
            // Split inside every \r\n: the \n must not start a second, blank line.
            for (at, _) in body.match_indices(ending) {
                let (a, b) = body.as_bytes().split_at(at + 1);
                assert_eq!(scan(&[a, b], false), reference);
            }
        }
    }

    #[test]
    fn a_lone_cr_then_lf_in_the_next_chunk_is_one_line_ending() {
        // "data: …\r" | "\nevent…": had the \n been a second ending, the event would be
        // dispatched early without its name and still be read (no name = read), so use a
        // name-only event to tell: a blank line between `event:` and `data:` splits them.
        let f = scan(
            &[
                b"event: message_start\r",
                b"\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\r",
                b"\n\r",
                b"\n",
            ],
            false,
        );
        assert_eq!(f.model.as_deref(), Some("m"));
    }

    #[test]
    fn blank_line_after_event_name_resets_it() {
        // The `ping` name is forgotten at the blank line, so the data after it is read.
        let f = whole(
            "event: ping\n\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n",
        );
        assert_eq!(f.model.as_deref(), Some("m"));
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let f = whole(concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\n",
            "data:  \"message\":{\"model\":\"claude\",\n",
            "data:\"usage\":{\"input_tokens\":3}}}\n",
            "\n",
        ));
        assert_eq!(f.model.as_deref(), Some("claude"));
        assert_eq!(f.usage.input_tokens, 3);
    }

    #[test]
    fn a_newline_joining_data_lines_inside_a_string_makes_invalid_json() {
        let f = whole(concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"clau\n",
            "data: de\"}}\n\n",
        ));
        assert_eq!(f.model, None);
    }

    #[test]
    fn comments_pings_ids_retries_and_unknown_fields_are_ignored() {
        let f = whole(concat!(
            ": keep-alive\n",
            ":\n",
            "id: 7\nretry: 100\nfoo: bar\nfoo\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: message_start\n: a comment between fields\n",
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":9}}}\n\n",
        ));
        assert_eq!(f.model.as_deref(), Some("m"));
        assert_eq!(f.usage.input_tokens, 9);
    }

    #[test]
    fn field_names_must_match_exactly() {
        let f = whole(concat!(
            "Data: {\"type\":\"message_start\",\"message\":{\"model\":\"a\"}}\n\n",
            "data : {\"type\":\"message_start\",\"message\":{\"model\":\"b\"}}\n\n",
            " data: {\"type\":\"message_start\",\"message\":{\"model\":\"c\"}}\n\n",
        ));
        assert_eq!(f.model, None);
    }

    #[test]
    fn only_one_space_after_the_colon_is_dropped() {
        // "event:  message_start" names the event " message_start": unknown, skipped.
        let f = whole("event:  message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n");
        assert_eq!(f.model, None);
        let f = whole("event:message_start\ndata:{\"type\":\"message_start\",\"message\":{\"model\":\"m\"}}\n\n");
        assert_eq!(f.model.as_deref(), Some("m"));
    }

    #[test]
    fn the_data_type_decides_what_an_event_means() {
        // Named message_delta, but the data is a message_start.
        let f = whole("event: message_delta\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4}},\"usage\":{\"input_tokens\":99}}\n\n");
        assert_eq!(f.usage.input_tokens, 4);
        // The type may come last.
        let f = whole("data: {\"usage\":{\"output_tokens\":8},\"type\":\"message_delta\"}\n\n");
        assert_eq!(f.usage.output_tokens, 8);
    }

    #[test]
    fn unknown_and_skipped_event_names_are_not_read() {
        let f = whole(concat!(
            "event: brand_new_event\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n",
            "event: an_event_name_longer_than_thirty_two_bytes\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n",
        ));
        assert_eq!(f.usage.output_tokens, 0);
    }

    #[test]
    fn events_without_a_name_are_read_by_their_type() {
        let f = whole(concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":2}}}\n\n",
            "event: message\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"name\":\"web_search\"}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        ));
        assert_eq!(f.usage.input_tokens, 2);
        assert_eq!(f.tool_calls, 1);
        assert!(f.complete);
    }

    #[test]
    fn an_event_without_a_closing_blank_line_does_not_count() {
        let f = whole("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n");
        assert_eq!(f.usage.output_tokens, 0);
        let f = whole("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n");
        assert_eq!(f.usage.output_tokens, 5);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let f = whole("event: message_stop\n\n");
        assert!(!f.complete);
    }

    #[test]
    fn error_events_record_their_type() {
        let f = whole(concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1}}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ));
        assert_eq!(f.error_type.as_deref(), Some("overloaded_error"));
        assert_eq!(f.usage.input_tokens, 1);
        let f = whole("event: error\ndata: {\"type\":\"error\",\"error\":{\"message\":\"?\"}}\n\n");
        assert_eq!(f.error_type.as_deref(), Some(crate::usage::UNKNOWN_ERROR));
    }

    #[test]
    fn invalid_event_json_changes_nothing() {
        for data in [
            "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}",
            "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}}",
            "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}} x",
            "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":05}}",
        ] {
            let f = whole(&format!("event: message_delta\ndata: {data}\n\n"));
            assert_eq!(f.usage.output_tokens, 0, "{data}");
        }
        // …and the stream goes on.
        let f = whole(concat!(
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n\n",
        ));
        assert_eq!(f.usage.output_tokens, 6);
    }

    #[test]
    fn invalid_utf8_in_a_string_makes_the_event_invalid() {
        let mut body =
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"a"
                .to_vec();
        body.extend_from_slice(b"\xff\"}}\n\n");
        assert_eq!(scan(&[&body], false).model, None);
        // Invalid UTF-8 in a skipped event does not matter.
        let f = scan(&[b"event: ping\ndata: \xff\xfe\n\n"], false);
        assert_eq!(f, ResponseFacts::default());
    }

    #[test]
    fn escaped_values_are_decoded() {
        let f = whole("data: {\"t\\u0079pe\":\"message_st\\u0061rt\",\"message\":{\"model\":\"claude-\\u00e9\\ud83d\\ude00\"}}\n\n");
        assert_eq!(f.model.as_deref(), Some("claude-é😀"));
    }

    #[test]
    fn out_of_range_negative_and_fractional_figures_are_ignored() {
        for value in [
            "-1",
            "18446744073709551616",
            "1.5",
            "1e3",
            "\"12\"",
            "true",
            "{}",
            "[]",
        ] {
            let f = whole(&format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":7}}}}\n\n\
                 event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{value}}}}}\n\n"
            ));
            assert_eq!(f.usage.output_tokens, 7, "{value}");
        }
        let f = whole("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":18446744073709551615}}\n\n");
        assert_eq!(f.usage.output_tokens, u64::MAX);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let f = whole(concat!(
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3,\"output_tokens\":4}}\n\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}},\"message\":{\"model\":\"m\"}}\n\n",
        ));
        assert_eq!(f.usage.output_tokens, 4);
        assert_eq!(f.usage.input_tokens, 0, "the second message has no usage");
        let f = whole("data: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"type\":\"text\"}}\n\n");
        assert_eq!(f.tool_calls, 0);
        let f = whole("data: {\"type\":\"ping\",\"type\":\"message_stop\"}\n\n");
        assert!(f.complete);
    }

    #[test]
    fn nested_lookalikes_do_not_count() {
        let f = whole(concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"content\":[{\"usage\":{\"input_tokens\":9}}],\"extra\":{\"usage\":{\"input_tokens\":9}}}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"usage\":{\"output_tokens\":9}}}\n\n",
            "data: [{\"type\":\"message_stop\"}]\n\n",
        ));
        assert_eq!(f.usage, Usage::default());
        assert!(!f.complete);
    }

    #[test]
    fn huge_skipped_lines_are_skipped_and_the_stream_resyncs() {
        // 5 MB of one text delta, in 1 MiB pieces; tests/usage_alloc.rs shows that
        // skipping it allocates nothing.
        let mut s = SseScanner::new(false);
        s.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..5 {
            s.feed(&chunk);
        }
        s.feed(b"\"}}\n\n");
        assert_eq!(s.facts(), &ResponseFacts::default());
        s.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":3}}\n\n");
        assert_eq!(s.facts().usage.output_tokens, 3);
    }

    #[test]
    fn huge_read_events_stream_through_the_tokenizer() {
        // A 5 MB message_start (no name: it has to be read) still yields its figures.
        let mut s = SseScanner::new(false);
        s.feed(b"data: {\"type\":\"message_start\",\"message\":{\"pad\":\"");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..5 {
            s.feed(&chunk);
        }
        s.feed(b"\",\"usage\":{\"input_tokens\":42},\"model\":\"m\"}}\n\n");
        assert_eq!(s.facts().usage.input_tokens, 42);
        assert_eq!(s.facts().model.as_deref(), Some("m"));
    }

    #[test]
    fn collected_text_is_bounded() {
        let mut s = SseScanner::new(true);
        let piece = "é".repeat(1000); // 2000 bytes
        let event = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{piece}\"}}}}\n\n"
        );
        for _ in 0..100 {
            s.feed(event.as_bytes());
        }
        let text = &s.facts().text;
        assert!(text.len() <= crate::usage::TEXT_CAP);
        assert!(text.len() > crate::usage::TEXT_CAP - 2);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn tool_inputs_go_to_their_block_and_are_bounded() {
        let mut body = String::from(concat!(
            "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"name\":\"a\"}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"name\":\"b\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"[\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"lost\"}}\n\n",
        ));
        let long = "z".repeat(3000);
        for _ in 0..3 {
            body.push_str(&format!("data: {{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{long}\"}}}}\n\n"));
        }
        let f = scan(&[body.as_bytes()], true);
        assert_eq!(f.tools.len(), 2);
        assert_eq!(
            f.tools[0],
            ToolCall {
                name: "a".into(),
                input: "{\"x\":1}".into()
            }
        );
        assert_eq!(f.tools[1].name, "b");
        assert_eq!(f.tools[1].input.len(), crate::usage::TOOL_INPUT_CAP);
    }

    #[test]
    fn tools_past_the_limit_are_counted_not_kept() {
        let event = "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"name\":\"t\"}}\n\n";
        let f = scan(&[event.repeat(100).as_bytes()], true);
        assert_eq!(f.tool_calls, 100);
        assert_eq!(f.tools.len(), crate::usage::MAX_TOOLS);
    }

    #[test]
    fn deep_nesting_in_event_data_is_refused_without_recursion() {
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));
        body.extend_from_slice(b"\n\ndata: {\"type\":\"message_stop\"}\n\n");
        let f = scan(&[&body], false);
        assert!(f.complete, "the event after the deep one is still read");
    }
}
