//! The SSE scanner against a whole-body reference built on serde_json: every fixture, cut
//! at every position, in random pieces, and mutated, must give the same facts.

mod usage_support;

use nexus::usage::{
    ResponseFacts, SseScanner, ToolCall, Usage, ERROR_TYPE_CAP, MAX_TOOLS, MODEL_CAP, TEXT_CAP,
    TOOL_INPUT_CAP, TOOL_NAME_CAP, UNKNOWN_ERROR,
};
use proptest::prelude::*;
use serde_json::Value;
use usage_support::cut;

/// A fixture and what it must yield, beyond agreeing with the reference.
struct Fixture {
    name: &'static str,
    bytes: &'static [u8],
    usage: [u64; 4],
    /// 5-minute and 1-hour cache writes, web searches.
    extra: [u64; 3],
    model: &'static str,
    tool_calls: u32,
    error: Option<&'static str>,
    complete: bool,
}

macro_rules! fixture {
    ($file:literal, $usage:expr, $model:literal, $tools:expr, $error:expr, $complete:expr) => {
        fixture!($file, $usage, [0, 0, 0], $model, $tools, $error, $complete)
    };
    ($file:literal, $usage:expr, $extra:expr, $model:literal, $tools:expr, $error:expr, $complete:expr) => {
        Fixture {
            name: $file,
            bytes: include_bytes!(concat!("fixtures/usage/", $file)),
            usage: $usage,
            extra: $extra,
            model: $model,
            tool_calls: $tools,
            error: $error,
            complete: $complete,
        }
    };
}

/// Usage figures are listed as [input, cache creation, cache read, output].
const FIXTURES: &[Fixture] = &[
    fixture!(
        "stream-text.sse",
        [25, 0, 0, 58],
        "claude-opus-4-1-20250805",
        0,
        None,
        true
    ),
    fixture!(
        "stream-text-tool-use.sse",
        [472, 0, 2048, 89],
        "claude-sonnet-4-5",
        1,
        None,
        true
    ),
    fixture!(
        "stream-thinking.sse",
        [86, 0, 0, 212],
        "claude-sonnet-4-5-20250929",
        0,
        None,
        true
    ),
    fixture!(
        "stream-cache.sse",
        [3, 1542, 18231, 17],
        [1542, 0, 0],
        "claude-sonnet-4-5-20250929",
        0,
        None,
        true
    ),
    fixture!(
        "stream-error.sse",
        [1210, 0, 512, 1],
        "claude-opus-4-1-20250805",
        0,
        Some("overloaded_error"),
        false
    ),
    fixture!(
        "stream-crlf.sse",
        [640, 0, 4096, 61],
        "claude-haiku-4-5-20251001",
        1,
        None,
        true
    ),
    fixture!(
        "stream-cr.sse",
        [640, 0, 4096, 61],
        "claude-haiku-4-5-20251001",
        1,
        None,
        true
    ),
    fixture!(
        "stream-server-tool-use.sse",
        [10682, 0, 0, 510],
        [0, 0, 1],
        "claude-opus-4-1-20250805",
        1,
        None,
        true
    ),
    fixture!(
        "stream-cache-ttl.sse",
        [12, 48000, 150000, 640],
        [8000, 40000, 0],
        "claude-sonnet-4-5-20250929",
        0,
        None,
        true
    ),
    fixture!(
        "stream-long-context.sse",
        [2000, 50000, 150000, 1500],
        [10000, 40000, 0],
        "claude-sonnet-4-5-20250929",
        1,
        None,
        true
    ),
    fixture!(
        "stream-no-event-names.sse",
        [12, 0, 0, 20],
        "claude-3-5-haiku-20241022",
        1,
        None,
        true
    ),
];

// ---- the reference: whole body, WHATWG line rules, serde_json per event ----

/// Complete lines of `body` (a final line without its ending never counts).
fn lines(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\n' => {
                out.push(&body[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&body[start..i]);
                i += if body.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether an event with this name (as it stood at its first data line) is read.
fn read_event(name: &[u8], collect: bool) -> bool {
    matches!(
        name,
        b"" | b"message"
            | b"message_start"
            | b"message_delta"
            | b"message_stop"
            | b"content_block_start"
            | b"error"
    ) || (collect && name == b"content_block_delta")
}

fn clip(s: &str, cap: usize) -> String {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn append(dst: &mut String, s: &str, cap: usize) {
    let room = cap.saturating_sub(dst.len());
    dst.push_str(&clip(s, room));
}

const FIGURES: [&str; 4] = [
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
];

fn replace_usage(usage: &mut Usage, v: &Value) {
    let fields = [
        &mut usage.input_tokens,
        &mut usage.cache_creation_input_tokens,
        &mut usage.cache_read_input_tokens,
        &mut usage.output_tokens,
    ];
    for (field, key) in fields.into_iter().zip(FIGURES) {
        if let Some(n) = v[key].as_u64() {
            *field = n;
        }
    }
    let nested = [
        (
            &mut usage.cache_creation_5m_input_tokens,
            &v["cache_creation"]["ephemeral_5m_input_tokens"],
        ),
        (
            &mut usage.cache_creation_1h_input_tokens,
            &v["cache_creation"]["ephemeral_1h_input_tokens"],
        ),
        (
            &mut usage.web_search_requests,
            &v["server_tool_use"]["web_search_requests"],
        ),
    ];
    for (field, value) in nested {
        if let Some(n) = value.as_u64() {
            *field = n;
        }
    }
}

/// Applies one event's parsed data by the rules in the issue.
fn apply(v: &Value, collect: bool, f: &mut ResponseFacts, blocks: &mut Vec<Option<u64>>) {
    match v["type"].as_str() {
        Some("message_start") => {
            replace_usage(&mut f.usage, &v["message"]["usage"]);
            if let Some(m) = v["message"]["model"].as_str() {
                f.model = Some(clip(m, MODEL_CAP));
            }
        }
        Some("message_delta") => replace_usage(&mut f.usage, &v["usage"]),
        Some("message_stop") => f.complete = true,
        Some("content_block_start") => {
            let block = &v["content_block"];
            if matches!(block["type"].as_str(), Some("tool_use" | "server_tool_use")) {
                f.tool_calls += 1;
                if collect && f.tools.len() < MAX_TOOLS {
                    let name = clip(block["name"].as_str().unwrap_or(""), TOOL_NAME_CAP);
                    f.tools.push(ToolCall {
                        name,
                        input: String::new(),
                    });
                    blocks.push(v["index"].as_u64());
                }
            }
        }
        Some("content_block_delta") if collect => {
            let d = &v["delta"];
            match d["type"].as_str() {
                Some("text_delta") => {
                    if let Some(t) = d["text"].as_str() {
                        append(&mut f.text, t, TEXT_CAP);
                    }
                }
                Some("input_json_delta") => {
                    let index = v["index"].as_u64();
                    let tool = blocks.iter().rposition(|&i| i == index);
                    if let (Some(t), Some(j)) = (tool, d["partial_json"].as_str()) {
                        append(&mut f.tools[t].input, j, TOOL_INPUT_CAP);
                    }
                }
                _ => {}
            }
        }
        Some("error") => {
            let t = v["error"]["type"].as_str().unwrap_or(UNKNOWN_ERROR);
            f.error_type = Some(clip(t, ERROR_TYPE_CAP));
        }
        _ => {}
    }
}

/// The reference facts, or `None` when serde_json refuses a number the scanner accepts
/// (a float beyond f64, a documented difference of the tokenizer).
fn reference(body: &[u8], collect: bool) -> Option<ResponseFacts> {
    let mut f = ResponseFacts::default();
    let mut blocks = Vec::new();
    let mut name: Vec<u8> = Vec::new();
    let mut first_name: Option<Vec<u8>> = None;
    let mut data: Vec<u8> = Vec::new();
    for line in lines(body) {
        if line.is_empty() {
            if let Some(n) = first_name.take() {
                data.pop();
                if read_event(&n, collect) {
                    match serde_json::from_slice::<Value>(&data) {
                        Ok(v) => apply(&v, collect, &mut f, &mut blocks),
                        Err(e) if e.to_string().contains("number out of range") => return None,
                        Err(_) => {}
                    }
                }
            }
            data.clear();
            name.clear();
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = value.to_vec(),
            b"data" => {
                first_name.get_or_insert_with(|| name.clone());
                data.extend_from_slice(value);
                data.push(b'\n');
            }
            _ => {}
        }
    }
    Some(f)
}

// ---- the scanner under test ----

fn scan(pieces: &[&[u8]], collect: bool) -> ResponseFacts {
    let mut s = SseScanner::new(collect);
    for p in pieces {
        s.feed(p);
    }
    s.take_facts()
}

#[test]
fn fixtures_yield_their_expected_figures() {
    for fx in FIXTURES {
        let f = scan(&[fx.bytes], false);
        let [input, creation, read, output] = fx.usage;
        let [creation_5m, creation_1h, web_search] = fx.extra;
        let want = Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: creation,
            cache_read_input_tokens: read,
            cache_creation_5m_input_tokens: creation_5m,
            cache_creation_1h_input_tokens: creation_1h,
            web_search_requests: web_search,
        };
        assert_eq!(f.usage, want, "{}", fx.name);
        assert_eq!(f.model.as_deref(), Some(fx.model), "{}", fx.name);
        assert_eq!(f.tool_calls, fx.tool_calls, "{}", fx.name);
        assert_eq!(f.error_type.as_deref(), fx.error, "{}", fx.name);
        assert_eq!(f.complete, fx.complete, "{}", fx.name);
        assert_eq!(Some(f), reference(fx.bytes, false), "{}", fx.name);
    }
}

#[test]
fn collected_text_and_tools_match_the_reference() {
    for fx in FIXTURES {
        assert_eq!(
            Some(scan(&[fx.bytes], true)),
            reference(fx.bytes, true),
            "{}",
            fx.name
        );
    }
    let f = scan(&[FIXTURES[0].bytes], true);
    assert!(f.text.starts_with("Hello! Rust's ownership model"));
    assert!(f.text.ends_with("naïve café, 日本語, 🦀."));
    let f = scan(&[FIXTURES[5].bytes], true);
    assert_eq!(f.text, "Running the tests now.\r\n(escaped CR LF above)");
    assert_eq!(f.tools.len(), 1);
    assert_eq!(f.tools[0].name, "Bash");
    assert_eq!(
        f.tools[0].input,
        r#"{"command": "cargo test --lib", "description": "Run unit tests"}"#
    );
    let f = scan(&[FIXTURES[7].bytes], true);
    assert_eq!(f.tools[0].input, r#"{"query": "weather NYC today"}"#);
    assert!(f.text.ends_with("sunny, 24°C."));
}

#[test]
fn every_two_piece_split_of_every_fixture_agrees() {
    for fx in FIXTURES {
        for collect in [false, true] {
            let want = reference(fx.bytes, collect).unwrap();
            for at in 0..=fx.bytes.len() {
                let (a, b) = fx.bytes.split_at(at);
                assert_eq!(scan(&[a, b], collect), want, "{} split at {at}", fx.name);
            }
        }
    }
}

#[test]
fn one_byte_at_a_time_agrees() {
    for fx in FIXTURES {
        let bytes: Vec<&[u8]> = fx.bytes.chunks(1).collect();
        assert_eq!(
            Some(scan(&bytes, true)),
            reference(fx.bytes, true),
            "{}",
            fx.name
        );
    }
}

#[test]
fn concatenated_fixtures_agree() {
    // Several responses back to back exercise replacement across message_starts.
    let all: Vec<u8> = FIXTURES
        .iter()
        .filter(|f| !f.name.contains("cr"))
        .flat_map(|f| f.bytes.iter().copied())
        .collect();
    assert_eq!(Some(scan(&[&all], true)), reference(&all, true));
}

proptest! {
    #[test]
    fn random_chunkings_agree(
        which in 0..FIXTURES.len(),
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        collect in any::<bool>(),
    ) {
        let fx = &FIXTURES[which];
        let want = reference(fx.bytes, collect).unwrap();
        prop_assert_eq!(scan(&cut(fx.bytes, &at), collect), want, "{}", fx.name);
    }

    #[test]
    fn mutated_fixtures_still_agree(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(
                b"{}[]\":,\\ \n\r0123456789-.eEtrunlfa_xyz:\x00\x1f\x7f\xc3\xa9\xff".to_vec())),
            1..4),
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        collect in any::<bool>(),
    ) {
        let mut body = FIXTURES[which].bytes.to_vec();
        for (pos, op, byte) in edits {
            let i = pos.index(body.len() + 1);
            match op {
                0 if i < body.len() => body[i] = byte,
                1 if i < body.len() => { body.remove(i); }
                _ => body.insert(i, byte),
            }
        }
        if let Some(want) = reference(&body, collect) {
            prop_assert_eq!(scan(&cut(&body, &at), collect), want);
        }
    }
}
