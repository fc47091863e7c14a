//! The scanners' per-chunk path must not allocate once a stream is under way: a counting
//! global allocator watches this thread only, so tests running in parallel on other
//! threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use nexus::usage::{JsonResponseScanner, SseScanner};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

/// A 1 000-event response as the API streams it: mostly text deltas, a tool call with
/// input deltas, pings, and usage at both ends. (An `error` event would allocate its
/// type's string, once per stream: that is not steady state, so it is not in here.)
fn stream() -> (Vec<u8>, usize) {
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":9000,\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":200},\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    let warm_up = s.len();
    let mut events = 3;
    let words = [
        "Rust ",
        "keeps ",
        "memory ",
        "safe ",
        "without ",
        "a garbage collector, ",
        "and \\\"io_uring\\\" ",
        "avoids ",
        "syscalls.\\n",
    ];
    while events < 960 {
        let text: String = (0..1 + events % 7)
            .map(|i| words[(events + i) % words.len()])
            .collect();
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"));
        events += 1;
        if events % 100 == 0 {
            s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
            events += 1;
        }
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"Edit\",\"input\":{}}}\n\n");
    events += 2;
    while events < 997 {
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"file_path\\\": \\\"/src/main.rs\\\", \"}}\n\n");
        events += 1;
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2040,\"server_tool_use\":{\"web_search_requests\":3}}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    (s.into_bytes(), warm_up)
}

/// Chunk sizes like a relay sees: small TCP reads, odd splits, full buffers.
fn chunk_sizes() -> impl Iterator<Item = usize> {
    [1, 7, 100, 1460, 3, 4096, 16384, 250, 2, 999, 65536]
        .into_iter()
        .cycle()
}

#[test]
fn sse_scanning_does_not_allocate_after_warm_up() {
    let (body, warm_up) = stream();
    assert_eq!(body.windows(7).filter(|w| w == b"event: ").count(), 1000);
    let mut scanner = SseScanner::new(false);
    scanner.feed(&body[..warm_up]);
    let mut rest = &body[warm_up..];
    let count = allocations_in(|| {
        for size in chunk_sizes() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            scanner.feed(chunk);
            rest = tail;
        }
    });
    assert_eq!(count, 0, "allocations while scanning");
    // The facts were really extracted, so the measured path did the work.
    let f = scanner.facts();
    assert_eq!(f.usage.output_tokens, 2040);
    assert_eq!(f.usage.cache_read_input_tokens, 9000);
    assert_eq!(f.usage.cache_creation_1h_input_tokens, 200);
    assert_eq!(f.usage.web_search_requests, 3);
    assert_eq!(f.tool_calls, 1);
    assert!(f.complete);
}

#[test]
fn a_five_megabyte_text_delta_is_skipped_without_allocating() {
    let mut scanner = SseScanner::new(false);
    scanner.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5}}}\n\n");
    let huge = vec![b'x'; 5 << 20];
    let count = allocations_in(|| {
        scanner.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        for chunk in huge.chunks(32 * 1024) {
            scanner.feed(chunk);
        }
        scanner.feed(b"\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n");
    });
    assert_eq!(count, 0);
    assert_eq!(scanner.facts().usage.output_tokens, 9);
    assert_eq!(scanner.facts().usage.input_tokens, 5);
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let count = allocations_in(|| {
        let mut s = SseScanner::new(true);
        s.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n");
        assert_eq!(s.facts().text, "hi");
    });
    assert!(count > 0);
}

#[test]
fn json_response_scanning_does_not_allocate() {
    let body = include_bytes!("fixtures/usage/message-server-tool-use.json");
    let mut scanner = JsonResponseScanner::new(false);
    let count = allocations_in(|| {
        for chunk in body.chunks(37) {
            scanner.feed(chunk);
        }
    });
    assert_eq!(count, 0);
    assert!(scanner.finish());
    assert_eq!(scanner.facts().usage.output_tokens, 188);
    assert_eq!(scanner.facts().usage.web_search_requests, 1);
}
