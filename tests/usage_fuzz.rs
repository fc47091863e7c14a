//! Arbitrary bytes into all three parsers: no panic, bounded output, and the same facts
//! however the bytes are cut.

mod usage_support;

use nexus::usage::{
    classify_request, JsonResponseScanner, ResponseFacts, SseScanner, MAX_TOOLS, MODEL_CAP,
    TEXT_CAP, TOOL_INPUT_CAP, USER_TEXT_CAP,
};
use proptest::prelude::*;
use usage_support::cut;

/// Bytes that steer the parsers into their interesting states more often than uniform
/// noise would.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        prop::sample::select(vec![
            &b"event: "[..],
            b"data: ",
            b"data:",
            b"\n",
            b"\r",
            b"\r\n",
            b"\n\n",
            b":",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b",",
            b"\\",
            b"\\u",
            b"d83d",
            b"\\ude00",
            b"0",
            b"-1",
            b"1e5",
            b"18446744073709551616",
            b"true",
            b"null",
            b"\"type\":",
            b"\"message_start\"",
            b"\"message_delta\"",
            b"\"content_block_start\"",
            b"\"content_block_delta\"",
            b"\"error\"",
            b"\"message\":",
            b"\"usage\":",
            b"\"input_tokens\":",
            b"\"output_tokens\":",
            b"\"cache_creation\":",
            b"\"ephemeral_5m_input_tokens\":",
            b"\"ephemeral_1h_input_tokens\":",
            b"\"server_tool_use\":",
            b"\"web_search_requests\":",
            b"\"model\":",
            b"\"content_block\":",
            b"\"tool_use\"",
            b"\"delta\":",
            b"\"text_delta\"",
            b"\"text\":",
            b"\"index\":",
            b"\"messages\":",
            b"\"role\":",
            b"\"system\"",
            b"\"user\"",
            b"\"content\":",
            b"\"stream\":",
            b"message_start",
            b"content_block_delta",
            b"\xc3\xa9",
            b"\xf0\x9f",
            b"\xff",
            b"<system-reminder>",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(token, 0..200).prop_map(|t| t.concat())
}

fn bounded(f: &ResponseFacts) -> bool {
    f.text.len() <= TEXT_CAP
        && f.tools.len() <= MAX_TOOLS
        && f.tools.iter().all(|t| t.input.len() <= TOOL_INPUT_CAP)
        && f.model.as_ref().is_none_or(|m| m.len() <= MODEL_CAP)
}

fn sse(pieces: &[&[u8]], collect: bool) -> ResponseFacts {
    let mut s = SseScanner::new(collect);
    for p in pieces {
        s.feed(p);
    }
    s.take_facts()
}

fn json(pieces: &[&[u8]], collect: bool) -> Option<ResponseFacts> {
    let mut s = JsonResponseScanner::new(collect);
    for p in pieces {
        s.feed(p);
    }
    s.finish().then(|| s.take_facts())
}

proptest! {
    #[test]
    fn sse_scanner_takes_anything_in_any_pieces(
        body in prop_oneof![input(), prop::collection::vec(any::<u8>(), 0..512)],
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        collect in any::<bool>(),
    ) {
        let whole = sse(&[&body], collect);
        prop_assert!(bounded(&whole));
        prop_assert_eq!(sse(&cut(&body, &at), collect), whole);
    }

    #[test]
    fn json_response_scanner_takes_anything_in_any_pieces(
        body in prop_oneof![input(), prop::collection::vec(any::<u8>(), 0..512)],
        at in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        collect in any::<bool>(),
    ) {
        let whole = json(&[&body], collect);
        prop_assert!(whole.as_ref().is_none_or(bounded));
        prop_assert_eq!(json(&cut(&body, &at), collect), whole);
    }

    #[test]
    fn classifier_takes_anything(
        body in prop_oneof![input(), prop::collection::vec(any::<u8>(), 0..512)],
        want_text in any::<bool>(),
    ) {
        let c = classify_request(&body, want_text);
        prop_assert!(c.last_user_text.as_ref().is_none_or(|t| t.len() <= USER_TEXT_CAP));
        prop_assert!(want_text || c.last_user_text.is_none());
    }
}

#[test]
fn deep_nesting_everywhere_is_refused_without_recursion() {
    let deep = vec![b'['; 100_000];
    let mut objects = b"{\"a\":".repeat(100_000);
    objects.extend_from_slice(b"1");
    for body in [&deep, &objects] {
        assert_eq!(json(&[body], true), None);
        assert_eq!(
            classify_request(body, true).kind,
            nexus::usage::RequestKind::Unclassified
        );
        let mut event = b"data: ".to_vec();
        event.extend_from_slice(body);
        event.extend_from_slice(b"\n\n");
        assert_eq!(sse(&[&event], true), ResponseFacts::default());
    }
}
