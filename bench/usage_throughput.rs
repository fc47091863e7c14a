//! Throughput of the usage parsers on one core, on realistic inputs.
//!
//! `cargo run --release --example usage_throughput` (bench/run.sh runs it too)

use std::hint::black_box;
use std::time::{Duration, Instant};

use nexus::usage::{classify_request, JsonResponseScanner, SseScanner};
use serde_json::Value;

/// The relay reads into buffers of this size (src/server/worker.rs).
const CHUNK: usize = 32 * 1024;

/// A streamed response of about `size` bytes, mostly text deltas of 1 to 8 words, as
/// the API sends them; `names` false drops the `event:` lines (some gateways do).
fn stream(size: usize, names: bool) -> Vec<u8> {
    let words = [
        "The ",
        "proxy ",
        "counts ",
        "tokens ",
        "while ",
        "bytes ",
        "flow; ",
        "\\\"quoted\\\" ",
        "code:\\n",
        "    let x = 1;\\n",
        "naïve ",
        "café ",
    ];
    let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":9000,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    let mut i = 0;
    while s.len() < size {
        let text: String = (0..1 + i % 8)
            .map(|j| words[(i * 7 + j) % words.len()])
            .collect();
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"));
        if i % 200 == 0 {
            s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
        i += 1;
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    if !names {
        s = s
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    s.into_bytes()
}

/// The Claude Code request fixture (112 KB), grown to about `size` bytes with more turns.
fn request(size: usize) -> Vec<u8> {
    let fixture = include_bytes!("../tests/fixtures/usage/request-claude-code.json");
    let mut v: Value = serde_json::from_slice(fixture).expect("fixture is JSON");
    // Four turns after the fixture's one `role: system` message, so the count stays 4.
    let turns: Vec<Value> = v["messages"].as_array().expect("messages")[4..8].to_vec();
    let mut body = serde_json::to_vec(&v).expect("serialises");
    while body.len() < size {
        v["messages"]
            .as_array_mut()
            .expect("messages")
            .extend(turns.iter().cloned());
        body = serde_json::to_vec(&v).expect("serialises");
    }
    body
}

/// A non-streaming response with one long text block.
fn response(size: usize) -> Vec<u8> {
    let text = "The proxy counts tokens while bytes flow; \\\"quoted\\\" code:\\n    let x = 1;\\n naïve café. ".repeat(size / 80);
    format!("{{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}},{{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"Read\",\"input\":{{\"file_path\":\"/a\"}}}}],\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{{\"input_tokens\":901,\"cache_creation_input_tokens\":120,\"cache_read_input_tokens\":3000,\"output_tokens\":72}}}}").into_bytes()
}

/// Runs `f` over `bytes` repeatedly for about a second; reports the best pass in GB/s.
fn measure(label: &str, bytes: usize, mut f: impl FnMut()) {
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut passes = 0;
    while start.elapsed() < Duration::from_secs(1) || passes < 5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        passes += 1;
    }
    let gbps = bytes as f64 / best.as_secs_f64() / 1e9;
    println!(
        "{label:<58} {:>8.1} KiB  {gbps:>6.2} GB/s",
        bytes as f64 / 1024.0
    );
}

fn main() {
    for (label, body, collect) in [
        (
            "SSE, text deltas, 32 KiB chunks",
            stream(8 << 20, true),
            false,
        ),
        (
            "SSE, text deltas, 32 KiB chunks, collecting text",
            stream(8 << 20, true),
            true,
        ),
        (
            "SSE, text deltas without event: names, 32 KiB chunks",
            stream(8 << 20, false),
            false,
        ),
    ] {
        measure(label, body.len(), || {
            let mut s = SseScanner::new(collect);
            for chunk in body.chunks(CHUNK) {
                s.feed(black_box(chunk));
            }
            assert_eq!(black_box(s.facts()).usage.output_tokens, 5000);
        });
    }
    for size in [256 << 10, 2 << 20] {
        let body = request(size);
        for want_text in [false, true] {
            let label = format!("classify Claude Code body, user text {want_text}");
            measure(&label, body.len(), || {
                let c = classify_request(black_box(&body), want_text);
                assert_eq!(c.system_prompts, 4);
            });
        }
    }
    let body = response(4 << 20);
    measure("non-streaming response, 32 KiB chunks", body.len(), || {
        let mut s = JsonResponseScanner::new(false);
        for chunk in body.chunks(CHUNK) {
            s.feed(black_box(chunk));
        }
        assert!(s.finish());
    });

    // Per request, the bench's own bodies: here fixed costs count, not bytes per second.
    let small = response(300);
    measure_each("W1 response (non-streaming)", small.len(), || {
        let mut s = JsonResponseScanner::new(false);
        s.feed(black_box(&small));
        assert!(s.finish());
    });
    let w2 = stream(6 << 10, true);
    measure_each("W2 response (SSE)", w2.len(), || {
        let mut s = SseScanner::new(false);
        s.feed(black_box(&w2));
        assert_eq!(black_box(s.facts()).usage.output_tokens, 5000);
    });
    let chat = br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are a concise assistant.","messages":[{"role":"user","content":"Please look at src/proxy.rs and explain how the response is relayed. Please look at src/proxy.rs and explain"}]}"#;
    measure_each("W1 request (classify)", chat.len(), || {
        black_box(classify_request(black_box(chat), false));
    });
}

/// Runs `f` repeatedly for about half a second; reports the best mean over batches of
/// 1000 calls, in nanoseconds per call.
fn measure_each(label: &str, bytes: usize, mut f: impl FnMut()) {
    let mut best = Duration::MAX;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        for _ in 0..1000 {
            f();
        }
        best = best.min(t.elapsed() / 1000);
    }
    println!("{label:<58} {bytes:>8} B    {:>6} ns each", best.as_nanos());
}
