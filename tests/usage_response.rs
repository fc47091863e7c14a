//! The non-streaming response scanner against serde_json: every fixture, cut at every
//! position, in random pieces, and mutated, must give the same facts.

mod usage_support;

use nexus::usage::{
    JsonResponseScanner, ResponseFacts, ToolCall, Usage, ERROR_TYPE_CAP, MAX_TOOLS, MODEL_CAP,
    TEXT_CAP, TOOL_INPUT_CAP, TOOL_NAME_CAP, UNKNOWN_ERROR,
};
use proptest::prelude::*;
use serde_json::Value;
use usage_support::cut;

const TOOL_USE: &[u8] = include_bytes!("fixtures/usage/message-tool-use.json");
const SERVER_TOOL_USE: &[u8] = include_bytes!("fixtures/usage/message-server-tool-use.json");
const ERROR: &[u8] = include_bytes!("fixtures/usage/message-error.json");
const CACHE_TTL: &[u8] = include_bytes!("fixtures/usage/message-cache-ttl.json");
const LONG_CONTEXT: &[u8] = include_bytes!("fixtures/usage/message-long-context.json");
const UNKNOWN_MODEL: &[u8] = include_bytes!("fixtures/usage/message-unknown-model.json");
const FIXTURES: &[&[u8]] = &[
    TOOL_USE,
    SERVER_TOOL_USE,
    ERROR,
    CACHE_TTL,
    LONG_CONTEXT,
    UNKNOWN_MODEL,
];

fn clip(s: &str, cap: usize) -> String {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The reference facts with tool inputs left empty (serde_json cannot give their raw
/// text); `None` for a body serde_json refuses; skips (`Err`) a float beyond f64, which
/// the tokenizer accepts by design.
fn reference(body: &[u8], collect: bool) -> Result<Option<(ResponseFacts, Vec<Value>)>, ()> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("number out of range") => return Err(()),
        Err(_) => return Ok(None),
    };
    let mut f = ResponseFacts {
        complete: true,
        ..ResponseFacts::default()
    };
    let u = &v["usage"];
    let figure = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let split = &u["cache_creation"];
    f.usage = Usage {
        input_tokens: figure(u, "input_tokens"),
        output_tokens: figure(u, "output_tokens"),
        cache_creation_input_tokens: figure(u, "cache_creation_input_tokens"),
        cache_read_input_tokens: figure(u, "cache_read_input_tokens"),
        cache_creation_5m_input_tokens: figure(split, "ephemeral_5m_input_tokens"),
        cache_creation_1h_input_tokens: figure(split, "ephemeral_1h_input_tokens"),
        web_search_requests: figure(&u["server_tool_use"], "web_search_requests"),
    };
    f.model = v["model"].as_str().map(|m| clip(m, MODEL_CAP));
    let mut inputs = Vec::new();
    for block in v["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("tool_use" | "server_tool_use") => {
                f.tool_calls += 1;
                if collect && f.tools.len() < MAX_TOOLS {
                    let name = clip(block["name"].as_str().unwrap_or(""), TOOL_NAME_CAP);
                    f.tools.push(ToolCall {
                        name,
                        input: String::new(),
                    });
                    inputs.push(block["input"].clone());
                }
            }
            Some("text") if collect => {
                if let Some(t) = block["text"].as_str() {
                    let room = TEXT_CAP.saturating_sub(f.text.len());
                    f.text.push_str(&clip(t, room));
                }
            }
            _ => {}
        }
    }
    if v["type"] == "error" {
        let t = v["error"]["type"].as_str().unwrap_or(UNKNOWN_ERROR);
        f.error_type = Some(clip(t, ERROR_TYPE_CAP));
    }
    Ok(Some((f, inputs)))
}

fn scan(pieces: &[&[u8]], collect: bool) -> Option<ResponseFacts> {
    let mut s = JsonResponseScanner::new(collect);
    for p in pieces {
        s.feed(p);
    }
    s.finish().then(|| s.take_facts())
}

/// Compares with the reference; tool inputs are checked by parsing them back.
fn check(pieces: &[&[u8]], body: &[u8], collect: bool) -> Result<(), TestCaseError> {
    let Ok(want) = reference(body, collect) else {
        return Ok(());
    };
    let got = scan(pieces, collect);
    match (got, want) {
        (None, None) => {}
        (Some(mut got), Some((want, inputs))) => {
            for (tool, input) in got.tools.iter_mut().zip(&inputs) {
                let raw = std::mem::take(&mut tool.input);
                if input.is_object() || input.is_array() {
                    if raw.len() < TOOL_INPUT_CAP {
                        let parsed: Value = serde_json::from_str(&raw).unwrap();
                        prop_assert_eq!(&parsed, input);
                    }
                } else {
                    prop_assert_eq!(raw, "");
                }
            }
            prop_assert_eq!(got, want);
        }
        (got, want) => prop_assert!(false, "scanner {:?} vs serde {:?}", got, want),
    }
    Ok(())
}

#[test]
fn fixtures_yield_their_expected_figures() {
    let f = scan(&[TOOL_USE], false).unwrap();
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
    assert_eq!(f.tool_calls, 1);
    assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5"));

    let f = scan(&[SERVER_TOOL_USE], true).unwrap();
    assert_eq!(
        f.usage,
        Usage {
            input_tokens: 5321,
            output_tokens: 188,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 24000,
            web_search_requests: 1,
            ..Usage::default()
        }
    );
    assert_eq!(f.tool_calls, 2);
    assert_eq!(f.text, "Let me search.Found it: “io_uring” is a Linux API.");
    assert_eq!(f.tools[0].name, "web_search");
    assert_eq!(f.tools[1].name, "Write");

    let f = scan(&[ERROR], false).unwrap();
    assert_eq!(f.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(f.usage, Usage::default());

    let f = scan(&[CACHE_TTL], false).unwrap();
    assert_eq!(
        f.usage,
        Usage {
            input_tokens: 3100,
            output_tokens: 412,
            cache_creation_input_tokens: 25000,
            cache_read_input_tokens: 60000,
            cache_creation_5m_input_tokens: 5000,
            cache_creation_1h_input_tokens: 20000,
            web_search_requests: 2,
        }
    );
    assert_eq!(f.tool_calls, 2);
    assert_eq!(f.model.as_deref(), Some("claude-haiku-4-5-20251001"));

    let f = scan(&[LONG_CONTEXT], false).unwrap();
    assert_eq!(
        (f.usage.input_tokens, f.usage.cache_read_input_tokens),
        (60000, 40001)
    );
    assert_eq!(f.model.as_deref(), Some("claude-haiku-5-5"));

    let f = scan(&[UNKNOWN_MODEL], false).unwrap();
    assert_eq!(f.model.as_deref(), Some("claude-nova-9-20270101"));
    assert_eq!((f.usage.input_tokens, f.usage.output_tokens), (10, 3));
}

#[test]
fn every_two_piece_split_agrees_with_serde() {
    for body in FIXTURES {
        for collect in [false, true] {
            for at in 0..=body.len() {
                let (a, b) = body.split_at(at);
                check(&[a, b], body, collect).unwrap();
            }
        }
    }
}

proptest! {
    #[test]
    fn random_chunkings_agree(
        which in 0..FIXTURES.len(),
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        collect in any::<bool>(),
    ) {
        let body = FIXTURES[which];
        check(&cut(body, &at), body, collect)?;
    }

    #[test]
    fn mutated_fixtures_still_agree(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(
                b"{}[]\":,\\ \n0123456789-.eEtrunlfa_xyz\x00\x1f\x7f\xc3\xa9\xff".to_vec())),
            1..4),
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        collect in any::<bool>(),
    ) {
        let mut body = FIXTURES[which].to_vec();
        for (pos, op, byte) in edits {
            let i = pos.index(body.len() + 1);
            match op {
                0 if i < body.len() => body[i] = byte,
                1 if i < body.len() => { body.remove(i); }
                _ => body.insert(i, byte),
            }
        }
        check(&cut(&body, &at), &body, collect)?;
    }
}
