//! How many rows a second the ledger's SQLite engine writes on this machine, and its CPU
//! per row: batches of the writer's size, rows shaped like W1's (a small JSON request).
//!
//! `cargo run --release --example ledger_writer [ROWS]` (bench/run.sh runs it too)

use std::time::Instant;

use nexus::ledger::sqlite::Sqlite;
use nexus::ledger::store::{Pace, Store};
use nexus::ledger::{Row, RowText, Texts, BATCH};
use nexus::request_id::RequestIds;

/// CPU time the process has used, in seconds: the writer thread and the checkpoints it
/// hands to a thread of their own.
fn process_cpu() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time this thread has used, in seconds.
fn thread_cpu() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn row(ids: &RequestIds, n: u64, at_ms: u64) -> Row {
    Row {
        text: RowText::new(Texts {
            id: ids.next().as_str(),
            domain: "bench.local",
            credential: "default",
            method: "POST",
            path: "/v1/messages",
            model: Some("claude-sonnet-4-5-20250929"),
            session_id: Some("5f1c9d2e-7a41-4b8e-9c3f-2d6e8a1b0c47"),
            ..Texts::default()
        }),
        at_ms,
        status: 200,
        duration_ms: 1,
        ttfb_ms: Some(1),
        input_tokens: 1200 + n % 7,
        output_tokens: 85,
        cache_read_input_tokens: 9000,
        cost: Some(nexus::cost::Usd(4_200_000_000)),
        request_class: Some("inference"),
        bytes_in: Some(412),
        bytes_out: 626,
        ..Row::default()
    }
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(400_000);
    let dir = std::env::temp_dir().join(format!("nexus-ledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench.db");
    let mut db = Sqlite::open(&path).expect("open");
    let ids = RequestIds::new();
    let start_ms = nexus::stats::now_ms();
    let mut rows: Vec<Row> = Vec::with_capacity(BATCH);
    let (mut wall, mut making) = (0.0, 0.0);
    let cpu_at_start = process_cpu();
    let mut written = 0;
    while written < total {
        let m = thread_cpu();
        rows.clear();
        rows.extend(
            (0..BATCH as u64).map(|i| row(&ids, written + i, start_ms + (written + i) / 40)),
        );
        making += thread_cpu() - m;
        let w = Instant::now();
        db.insert(&rows, Pace::Behind).expect("insert");
        wall += w.elapsed().as_secs_f64();
        written += BATCH as u64;
    }
    // Closing checkpoints what is left in the WAL: part of the cost, and of the file.
    drop(db);
    let cpu = process_cpu() - cpu_at_start - making;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "{written} rows in batches of {BATCH}: {:.0} rows/s, {:.2} µs CPU per row (checkpoints \
         included), {} bytes on disk per row",
        written as f64 / wall,
        cpu * 1e6 / written as f64,
        size / written
    );
    let _ = std::fs::remove_dir_all(&dir);
}
