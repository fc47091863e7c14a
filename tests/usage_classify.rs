//! Request classification on Claude-Code-shaped bodies, checked against a serde_json
//! reference that applies the same rules to a parsed tree.

use nexus::usage::classify::USER_ID_CAP;
use nexus::usage::{classify_request, RequestClass, RequestKind, MODEL_CAP, USER_TEXT_CAP};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A Claude Code request: 3 cached system blocks, 24 tools whose schemas nest `system`,
/// `model`, `stream` and `messages` keys, a `role: system` message, system reminders.
const CLAUDE_CODE: &[u8] = include_bytes!("fixtures/usage/request-claude-code.json");

fn clip(s: &str, cap: usize) -> String {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The rules of the issue, applied to a serde_json tree; `None` to skip a body with a
/// float beyond f64 (accepted by the tokenizer by design, refused by serde_json).
fn reference(body: &[u8], want_text: bool) -> Option<RequestClass> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("number out of range") => return None,
        Err(_) => return Some(RequestClass::default()),
    };
    if !v.is_object() {
        return Some(RequestClass::default());
    }
    let messages = v["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let system = match &v["system"] {
        Value::String(_) => 1,
        Value::Array(a) => a.len(),
        _ => 0,
    } + messages.iter().filter(|m| m["role"] == "system").count();
    let last_user_text = want_text
        .then(|| messages.iter().rev().find(|m| m["role"] == "user"))
        .flatten()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .filter(|t| !t.starts_with("<system-reminder>"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => String::new(),
            };
            clip(&text, USER_TEXT_CAP)
        });
    Some(RequestClass {
        model: v["model"].as_str().map(|m| clip(m, MODEL_CAP)),
        stream: v["stream"].as_bool().unwrap_or(false),
        system_prompts: system,
        kind: match system {
            0 => RequestKind::Neither,
            1 => RequestKind::QueryEvaluation,
            _ => RequestKind::Inference,
        },
        last_user_text,
        user_id: v["metadata"]["user_id"]
            .as_str()
            .map(|id| clip(id, USER_ID_CAP)),
    })
}

fn agrees(body: &[u8]) {
    for want_text in [false, true] {
        assert_eq!(
            Some(classify_request(body, want_text)),
            reference(body, want_text)
        );
    }
}

#[test]
fn claude_code_body_is_an_inference_with_four_system_prompts() {
    let c = classify_request(CLAUDE_CODE, true);
    assert_eq!(c.system_prompts, 4);
    assert_eq!(c.kind, RequestKind::Inference);
    assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert!(c.stream);
    assert_eq!(
        c.last_user_text.as_deref(),
        Some("Now make the scanner faster,\nkeeping the \"tests\" green.")
    );
    agrees(CLAUDE_CODE);
    // The decoys are really there.
    let v: Value = serde_json::from_slice(CLAUDE_CODE).unwrap();
    assert_eq!(v["system"].as_array().unwrap().len(), 3);
    assert!(v["system"][0]["cache_control"].is_object());
    assert_eq!(v["tools"].as_array().unwrap().len(), 24);
    let schemas = v["tools"].to_string();
    for decoy in ["\"system\":", "\"model\":", "\"stream\":", "\"messages\":"] {
        assert!(schemas.contains(decoy), "{decoy}");
    }
}

#[test]
fn nested_stream_true_does_not_make_the_request_streaming() {
    let mut v: Value = serde_json::from_slice(CLAUDE_CODE).unwrap();
    v["stream"] = json!(false);
    let body = serde_json::to_vec(&v).unwrap();
    assert!(!classify_request(&body, false).stream);
    v.as_object_mut().unwrap().remove("stream");
    let body = serde_json::to_vec(&v).unwrap();
    let c = classify_request(&body, false);
    assert!(!c.stream);
    assert_eq!(c.kind, RequestKind::Inference);
    let small = br#"{"model":"m","tools":[{"name":"t","input_schema":{"stream":true}}],
        "messages":[{"role":"user","content":"hi","stream":true}]}"#;
    assert!(!classify_request(small, false).stream);
}

#[test]
fn a_two_megabyte_body_is_classified() {
    let mut v: Value = serde_json::from_slice(CLAUDE_CODE).unwrap();
    let turns: Vec<Value> = v["messages"].as_array().unwrap()[..12].to_vec();
    let last = v["messages"].as_array_mut().unwrap().pop().unwrap();
    while serde_json::to_vec(&v).unwrap().len() < 2 * 1024 * 1024 {
        v["messages"]
            .as_array_mut()
            .unwrap()
            .extend(turns.iter().cloned());
    }
    v["messages"].as_array_mut().unwrap().push(last);
    let body = serde_json::to_vec(&v).unwrap();
    assert!(body.len() >= 2 * 1024 * 1024);
    let c = classify_request(&body, true);
    let system_messages = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .count();
    assert!(system_messages > 1);
    assert_eq!(c.system_prompts, 3 + system_messages);
    assert_eq!(c.kind, RequestKind::Inference);
    assert!(c.stream);
    assert_eq!(
        c.last_user_text.as_deref(),
        Some("Now make the scanner faster,\nkeeping the \"tests\" green.")
    );
    agrees(&body);
}

/// Long strings are scanned 64 bytes a step past their first 256 (with AVX2): an escape,
/// a UTF-8 character, a control byte or the closing quote anywhere around those
/// boundaries must read as it does at the start of a string.
#[test]
fn long_strings_read_the_same_whatever_falls_where() {
    // The last one ends the string there and starts another member.
    let specials = ["\\\"", "\\n", "\\u00e9", "é", "\u{1F600}", "\",\"x\":\""];
    for len in [250, 256, 300, 319, 320, 321, 383, 384, 385, 700, 4096] {
        for at in [
            0, 1, 255, 256, 257, 271, 272, 319, 320, 335, 383, 384, 500, 699,
        ] {
            if at > len {
                continue;
            }
            for special in specials {
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(len - at));
                let body = format!(
                    r#"{{"system":"{text}","model":"claude-{len}","messages":[{{"role":"user","content":"{text}"}}],"stream":true}}"#
                );
                agrees(body.as_bytes());
                let c = classify_request(body.as_bytes(), false);
                assert_eq!(c.model.as_deref(), Some(format!("claude-{len}").as_str()));
            }
            // A raw control byte is an error wherever it is.
            let text = format!("{}\u{1}{}", "a".repeat(at), "b".repeat(len - at));
            let body = format!(r#"{{"model":"m","system":"{text}"}}"#);
            assert_eq!(
                classify_request(body.as_bytes(), false),
                RequestClass::default()
            );
        }
    }
}

#[test]
fn non_json_and_damaged_bodies_are_unclassified() {
    let truncated = &CLAUDE_CODE[..CLAUDE_CODE.len() - 1];
    let mut bad_utf8 = CLAUDE_CODE.to_vec();
    let at = bad_utf8.len() / 2
        + bad_utf8[bad_utf8.len() / 2..]
            .iter()
            .position(|&b| b == b'a')
            .unwrap();
    bad_utf8[at] = 0xff;
    let mut trailing = CLAUDE_CODE.to_vec();
    trailing.extend_from_slice(b"{}");
    let cases: &[&[u8]] = &[
        b"",
        b"model=claude&stream=true",
        b"<html>",
        b"[{\"system\":\"x\"}]",
        b"\"just a string\"",
        truncated,
        &bad_utf8,
        &trailing,
    ];
    for body in cases {
        let c = classify_request(body, true);
        assert_eq!(
            c.kind,
            RequestKind::Unclassified,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        assert_eq!(c, RequestClass::default());
        agrees(body);
    }
}

#[test]
fn kinds_by_system_prompt_count() {
    for (body, count, kind) in [
        (
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            0,
            RequestKind::Neither,
        ),
        (
            r#"{"system":"You are a judge.","messages":[]}"#,
            1,
            RequestKind::QueryEvaluation,
        ),
        (
            r#"{"system":[{"type":"text","text":"a"}]}"#,
            1,
            RequestKind::QueryEvaluation,
        ),
        (
            r#"{"system":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
            2,
            RequestKind::Inference,
        ),
        (
            r#"{"messages":[{"role":"system","content":"a"},{"role":"system","content":"b"}]}"#,
            2,
            RequestKind::Inference,
        ),
    ] {
        let c = classify_request(body.as_bytes(), false);
        assert_eq!((c.system_prompts, c.kind), (count, kind), "{body}");
        agrees(body.as_bytes());
    }
}

/// A small request body whose shape varies, for mutation against the reference.
const SMALL: &[u8] = br#"{"model":"claude-haiku","stream":true,"system":[{"type":"text","text":"s"}],
"messages":[{"role":"system","content":"x"},{"role":"user","content":[{"type":"text","text":"<system-reminder>r"},
{"type":"text","text":"q1"},{"type":"text","text":"q2"}]},{"role":"assistant","content":"a"}],
"tools":[{"name":"t","input_schema":{"system":"d","stream":false,"model":"d"}}],"max_tokens":1024}"#;

proptest! {
    #[test]
    fn mutated_bodies_agree_with_the_reference(
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(
                b"{}[]\":,\\ 0123456789-.eEtrunlfasyemod_\x00\xc3\xa9\xff".to_vec())),
            1..4),
        want_text in any::<bool>(),
    ) {
        let mut body = SMALL.to_vec();
        for (pos, op, byte) in edits {
            let i = pos.index(body.len() + 1);
            match op {
                0 if i < body.len() => body[i] = byte,
                1 if i < body.len() => { body.remove(i); }
                _ => body.insert(i, byte),
            }
        }
        if let Some(want) = reference(&body, want_text) {
            prop_assert_eq!(classify_request(&body, want_text), want);
        }
    }

    #[test]
    fn generated_requests_agree_with_the_reference(
        system in prop_oneof![
            Just(Value::Null),
            "[a-z<>-]{0,20}".prop_map(Value::String),
            prop::collection::vec(Just(json!({"type":"text","text":"s"})), 0..4).prop_map(Value::Array),
            Just(json!(7)),
        ],
        roles in prop::collection::vec(prop::sample::select(vec!["user", "assistant", "system", "sys\\u0074em", "us\\u0065r"]), 0..6),
        texts in prop::collection::vec("(<system-reminder>)?[a-z \\n\"é]{0,12}", 0..4),
        stream in prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), Just(json!("true"))],
    ) {
        let blocks: Vec<Value> = texts.iter().map(|t| json!({"type":"text","text":t})).collect();
        let messages: Vec<String> = roles
            .iter()
            .map(|r| format!(r#"{{"role":"{r}","content":{}}}"#, json!(blocks)))
            .collect();
        let body = format!(
            r#"{{"system":{system},"messages":[{}],"stream":{stream},"model":"m"}}"#,
            messages.join(",")
        );
        prop_assert_eq!(Some(classify_request(body.as_bytes(), true)), reference(body.as_bytes(), true));
    }
}
