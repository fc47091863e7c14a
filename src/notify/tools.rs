//! One Slack line per tool call: `🔧 Name - what it touches`.
//!
//! File tools show the last two segments of their path plus what they do to it; TodoWrite
//! counts its todos by status; any other tool shows the start of its input JSON. The input
//! is read with the usage tokenizer, so an input cut off at the collection cap still
//! yields every field that arrived before the cut.

use crate::usage::json::{Container, Seg, Token, Tokenizer, Visitor};
use crate::usage::ToolCall;

use super::redact::redact;

/// Characters of a generic tool's input shown.
const GENERIC_INPUT_CHARS: usize = 100;
/// Longest path or label kept from an input.
const LABEL_CAP: usize = 1024;

/// The lines for a response's tool calls; `count` is how many there were in all (only
/// the first [`crate::usage::MAX_TOOLS`] are kept in detail).
pub fn tool_lines(tools: &[ToolCall], count: u32) -> Vec<String> {
    let mut lines: Vec<String> = tools.iter().map(describe).collect();
    let more = (count as usize).saturating_sub(tools.len());
    if more > 0 {
        lines.push(format!("🔧 … and {more} more tool call{}", plural(more)));
    }
    lines
}

/// One tool call as a line.
pub fn describe(tool: &ToolCall) -> String {
    let name = tool.name.as_str();
    let input = Input::read(tool.input.as_bytes());
    let detail = match (name, &input.path) {
        ("Read", Some(path)) => Some(format!("{}{}", short_path(path), read_range(&input))),
        ("Edit", Some(path)) => Some(format!("{}{}", short_path(path), edit_info(&input))),
        ("MultiEdit", Some(path)) => Some(match input.edits {
            Some(n) => format!("{} ({n} edit{})", short_path(path), plural(n)),
            None => short_path(path),
        }),
        ("Write", Some(path)) => Some(match input.content_lines {
            Some(n) => format!("{} ({n} line{})", short_path(path), plural(n)),
            None => short_path(path),
        }),
        ("NotebookEdit", Some(path)) => {
            let mode = input.edit_mode.as_deref().unwrap_or("replace");
            Some(match input.cell() {
                Some(cell) => format!("{} (cell {cell}, {mode})", short_path(path)),
                None => format!("{} ({mode})", short_path(path)),
            })
        }
        ("NotebookRead", Some(path)) => Some(match input.cell() {
            Some(cell) => format!("{} (cell {cell})", short_path(path)),
            None => short_path(path),
        }),
        ("TodoWrite", _) if input.todos_seen => Some(todo_counts(&input.todos)),
        _ => None,
    };
    match detail {
        Some(detail) => format!("🔧 {name} - {detail}"),
        None => generic(name, &tool.input),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The last two segments of a path: enough to recognise a file, short enough for a line.
fn short_path(path: &str) -> String {
    let segments: Vec<&str> = path.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    let from = segments.len().saturating_sub(2);
    segments[from..].join("/")
}

fn read_range(input: &Input) -> String {
    match (input.offset, input.limit) {
        (Some(from), Some(n)) if n > 0 => format!(" (lines {from}-{})", from + n - 1),
        (Some(from), _) => format!(" (from line {from})"),
        (None, Some(n)) => format!(" (first {n} line{})", plural(n as usize)),
        (None, None) => String::new(),
    }
}

fn edit_info(input: &Input) -> String {
    let all = if input.replace_all {
        ", all occurrences"
    } else {
        ""
    };
    match (input.old_lines, input.new_lines) {
        (Some(old), Some(new)) => format!(" ({old} → {new} line{}{all})", plural(new)),
        _ if input.replace_all => " (all occurrences)".to_string(),
        _ => String::new(),
    }
}

fn todo_counts(todos: &[usize; 3]) -> String {
    let parts: Vec<String> = [
        (todos[0], "pending"),
        (todos[1], "in progress"),
        (todos[2], "completed"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "no todos".to_string()
    } else {
        parts.join(", ")
    }
}

/// `🔧 Name - ` and the first 100 characters of the (masked) input JSON.
fn generic(name: &str, input: &str) -> String {
    let input = redact(input.trim());
    if input.is_empty() {
        return format!("🔧 {name}");
    }
    let mut shown: String = input.chars().take(GENERIC_INPUT_CHARS).collect();
    if shown.len() < input.len() {
        shown.push_str("...");
    }
    format!("🔧 {name} - {shown}")
}

/// The input fields the lines need.
#[derive(Debug, Default)]
struct Input {
    path: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
    old_lines: Option<usize>,
    new_lines: Option<usize>,
    content_lines: Option<usize>,
    replace_all: bool,
    edits: Option<usize>,
    todos_seen: bool,
    /// pending, in progress, completed.
    todos: [usize; 3],
    cell_id: Option<String>,
    cell_number: Option<u64>,
    edit_mode: Option<String>,
    /// The string being read: its kept bytes, or its line count so far.
    text: Vec<u8>,
    newlines: usize,
    last: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    FilePath,
    NotebookPath,
    Offset,
    Limit,
    OldString,
    NewString,
    NewSource,
    Content,
    ReplaceAll,
    Edits,
    Todos,
    Status,
    CellId,
    CellNumber,
    EditMode,
}

use Seg::{Elem, Key as K};

/// Where a string is kept (true) or only has its lines counted (false).
fn string_role(path: &[Seg<Key>]) -> Option<bool> {
    match path {
        [K(Key::FilePath | Key::NotebookPath | Key::CellId | Key::EditMode)] => Some(true),
        [K(Key::Todos), Elem, K(Key::Status)] => Some(true),
        [K(Key::OldString | Key::NewString | Key::NewSource | Key::Content)] => Some(false),
        _ => None,
    }
}

impl Input {
    fn read(json: &[u8]) -> Input {
        let mut input = Input::default();
        let mut tokenizer = Tokenizer::new();
        tokenizer.feed(json, &mut input);
        input
    }

    fn cell(&self) -> Option<String> {
        self.cell_id
            .clone()
            .or_else(|| self.cell_number.map(|n| n.to_string()))
    }

    fn lines(&self) -> usize {
        self.newlines + usize::from(self.last != b'\n' && self.last != 0)
    }
}

impl Visitor for Input {
    type Key = Key;

    fn key(&self, name: &[u8]) -> Option<Key> {
        Some(match name {
            b"file_path" => Key::FilePath,
            b"notebook_path" => Key::NotebookPath,
            b"offset" => Key::Offset,
            b"limit" => Key::Limit,
            b"old_string" => Key::OldString,
            b"new_string" => Key::NewString,
            b"new_source" => Key::NewSource,
            b"content" => Key::Content,
            b"replace_all" => Key::ReplaceAll,
            b"edits" => Key::Edits,
            b"todos" => Key::Todos,
            b"status" => Key::Status,
            b"cell_id" => Key::CellId,
            b"cell_number" => Key::CellNumber,
            b"edit_mode" => Key::EditMode,
            _ => return None,
        })
    }

    fn wants_string(&mut self, path: &[Seg<Key>]) -> bool {
        string_role(path).is_some()
    }

    fn token(&mut self, path: &[Seg<Key>], token: Token<'_>) {
        match token {
            Token::StrBegin => {
                self.text.clear();
                self.newlines = 0;
                self.last = 0;
            }
            Token::Str(piece) => match string_role(path) {
                Some(true) => {
                    let room = LABEL_CAP.saturating_sub(self.text.len());
                    self.text.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                Some(false) => {
                    self.newlines += piece.iter().filter(|&&b| b == b'\n').count();
                    if let Some(&last) = piece.last() {
                        self.last = last;
                    }
                }
                None => {}
            },
            Token::StrEnd => {
                let text = || String::from_utf8_lossy(&self.text).into_owned();
                match path {
                    [K(Key::FilePath | Key::NotebookPath)] => self.path = Some(text()),
                    [K(Key::CellId)] => self.cell_id = Some(text()),
                    [K(Key::EditMode)] => self.edit_mode = Some(text()),
                    [K(Key::OldString)] => self.old_lines = Some(self.lines()),
                    [K(Key::NewString | Key::NewSource)] => self.new_lines = Some(self.lines()),
                    [K(Key::Content)] => self.content_lines = Some(self.lines()),
                    [K(Key::Todos), Elem, K(Key::Status)] => {
                        let slot = match self.text.as_slice() {
                            b"pending" => Some(0),
                            b"in_progress" => Some(1),
                            b"completed" => Some(2),
                            _ => None,
                        };
                        if let Some(slot) = slot {
                            self.todos[slot] += 1;
                        }
                    }
                    _ => {}
                }
            }
            Token::Num(Some(n)) => match path {
                [K(Key::Offset)] => self.offset = Some(n),
                [K(Key::Limit)] => self.limit = Some(n),
                [K(Key::CellNumber)] => self.cell_number = Some(n),
                _ => {}
            },
            Token::Bool(b) if path == [K(Key::ReplaceAll)] => self.replace_all = b,
            Token::Begin(Container::Array) => match path {
                [K(Key::Edits)] => self.edits = Some(0),
                [K(Key::Todos)] => self.todos_seen = true,
                _ => {}
            },
            Token::Begin(Container::Object) if path == [K(Key::Edits), Elem] => {
                self.edits = Some(self.edits.unwrap_or(0) + 1);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, input: &str) -> ToolCall {
        ToolCall {
            name: name.into(),
            input: input.into(),
        }
    }

    fn line(name: &str, input: &str) -> String {
        describe(&call(name, input))
    }

    #[test]
    fn file_tools_show_the_last_two_path_segments_and_what_they_do() {
        assert_eq!(
            line("Read", r#"{"file_path": "/home/me/project/src/main.rs"}"#),
            "🔧 Read - src/main.rs"
        );
        assert_eq!(
            line(
                "Read",
                r#"{"file_path":"/a/b/c.rs","offset":10,"limit":50}"#
            ),
            "🔧 Read - b/c.rs (lines 10-59)"
        );
        assert_eq!(
            line("Read", r#"{"file_path":"c.rs","offset":7}"#),
            "🔧 Read - c.rs (from line 7)"
        );
        assert_eq!(
            line(
                "Edit",
                r#"{"file_path":"/repo/src/lib.rs","old_string":"a\nb\nc","new_string":"a\nb\nc\nd\ne"}"#
            ),
            "🔧 Edit - src/lib.rs (3 → 5 lines)"
        );
        assert_eq!(
            line(
                "Edit",
                r#"{"file_path":"/x/y.rs","old_string":"foo","new_string":"bar","replace_all":true}"#
            ),
            "🔧 Edit - x/y.rs (1 → 1 line, all occurrences)"
        );
        assert_eq!(
            line(
                "MultiEdit",
                r#"{"file_path":"/r/a/b.ts","edits":[{"old_string":"x","new_string":"y"},{"old_string":"p","new_string":"q"}]}"#
            ),
            "🔧 MultiEdit - a/b.ts (2 edits)"
        );
        assert_eq!(
            line(
                "Write",
                r#"{"file_path":"/tmp/out/notes.md","content":"one\ntwo\nthree\n"}"#
            ),
            "🔧 Write - out/notes.md (3 lines)"
        );
        assert_eq!(
            line(
                "NotebookEdit",
                r#"{"notebook_path":"/w/nb/analysis.ipynb","cell_id":"c7","new_source":"x","edit_mode":"insert"}"#
            ),
            "🔧 NotebookEdit - nb/analysis.ipynb (cell c7, insert)"
        );
        assert_eq!(
            line(
                "NotebookRead",
                r#"{"notebook_path":"/w/nb/analysis.ipynb"}"#
            ),
            "🔧 NotebookRead - nb/analysis.ipynb"
        );
    }

    #[test]
    fn todo_write_counts_by_status() {
        let input = r#"{"todos":[{"content":"a","status":"completed","id":"1"},{"content":"b","status":"in_progress","id":"2"},{"content":"c","status":"pending","id":"3"},{"content":"d","status":"pending","id":"4"}]}"#;
        assert_eq!(
            line("TodoWrite", input),
            "🔧 TodoWrite - 2 pending, 1 in progress, 1 completed"
        );
        assert_eq!(
            line("TodoWrite", r#"{"todos":[]}"#),
            "🔧 TodoWrite - no todos"
        );
    }

    #[test]
    fn other_tools_show_the_start_of_their_input() {
        assert_eq!(
            line(
                "Bash",
                r#"{"command": "cargo test", "description": "Run tests"}"#
            ),
            r#"🔧 Bash - {"command": "cargo test", "description": "Run tests"}"#
        );
        let long = format!(r#"{{"pattern":"{}"}}"#, "x".repeat(200));
        let shown = line("Grep", &long);
        assert_eq!(shown, format!("🔧 Grep - {}...", &long[..100]));
        assert_eq!(line("get_weather", ""), "🔧 get_weather");
        assert_eq!(
            line("Login", r#"{"user":"me","password":"hunter2"}"#),
            r#"🔧 Login - {"user":"me","password":"****"}"#
        );
    }

    #[test]
    fn a_truncated_input_keeps_what_arrived() {
        // Write's content is cut off at the collection cap: the path still shows.
        let input = r#"{"file_path":"/src/big.rs","content":"line\nline\nli"#;
        assert_eq!(line("Write", input), "🔧 Write - src/big.rs");
        // A file tool without a path falls back to the generic line.
        assert_eq!(line("Read", r#"{"offset":3}"#), r#"🔧 Read - {"offset":3}"#);
    }

    #[test]
    fn calls_beyond_the_kept_ones_are_counted() {
        let tools = vec![call("Read", r#"{"file_path":"/a/b"}"#)];
        assert_eq!(
            tool_lines(&tools, 3),
            vec![
                "🔧 Read - a/b".to_string(),
                "🔧 … and 2 more tool calls".into()
            ]
        );
    }
}
