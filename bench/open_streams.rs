//! Load client for many long-lived SSE streams at once (benchmark W4). wrk cannot tell
//! whether each stream reached its end; this client can.
//!
//! ```text
//! cargo run --release --example open_streams -- --addr 127.0.0.1:PORT --streams 10000 \
//!     [--path '/v1/messages?events=300&size=200&delay_ms=100'] [--threads 2] \
//!     [--ramp-ms 3000] [--timeout-secs 120] [--body-bytes 300]
//! ```
//!
//! Opens `--streams` connections (spread evenly over `--ramp-ms`), sends one streaming
//! POST on each, reads each response to its end and decodes its chunked framing. A stream
//! is *completed* when the status was 200, the chunked body ended with its terminating
//! chunk and a `message_stop` event was seen; anything else is *failed*, by reason.
//! The last line is machine-readable: `RESULT streams=… completed=… failed=… …`.
//! Exits 0 when every stream completed, 3 otherwise.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

struct Options {
    addr: SocketAddr,
    streams: usize,
    threads: usize,
    path: String,
    ramp: Duration,
    timeout: Duration,
    body_bytes: usize,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("open_streams: {msg}");
    eprintln!(
        "usage: open_streams --addr HOST:PORT --streams N [--path P] [--threads T] [--ramp-ms MS] \
         [--timeout-secs S] [--body-bytes B]"
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut addr = None;
    let mut opts = Options {
        addr: "127.0.0.1:1".parse().expect("literal address"),
        streams: 1000,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        path: "/v1/messages?events=300&size=200&delay_ms=100".into(),
        ramp: Duration::from_millis(3000),
        timeout: Duration::from_secs(120),
        body_bytes: 300,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage_exit(&format!("{flag} needs a value")))
        };
        let mut number = |what: &str| -> u64 {
            value()
                .parse()
                .unwrap_or_else(|_| usage_exit(&format!("bad {what}")))
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage_exit("bad --addr (want IP:PORT)")),
                )
            }
            "--streams" => opts.streams = number("--streams") as usize,
            "--threads" => opts.threads = number("--threads").max(1) as usize,
            "--path" => opts.path = value(),
            "--ramp-ms" => opts.ramp = Duration::from_millis(number("--ramp-ms")),
            "--timeout-secs" => opts.timeout = Duration::from_secs(number("--timeout-secs")),
            "--body-bytes" => opts.body_bytes = number("--body-bytes") as usize,
            "--help" | "-h" => usage_exit("help"),
            other => usage_exit(&format!("unknown argument {other}")),
        }
    }
    opts.addr = addr.unwrap_or_else(|| usage_exit("--addr is required"));
    opts
}

/// Counters every thread updates, for progress lines and the peak of open streams.
#[derive(Default)]
struct Live {
    open: AtomicUsize,
    peak_open: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    threads_done: AtomicUsize,
}

/// How one stream ended.
#[derive(Debug)]
enum Failure {
    Connect(io::Error),
    Write(io::Error),
    Read(io::Error),
    /// The peer closed before the body ended.
    Eof,
    Status(u16),
    Framing(&'static str),
    /// The body ended but carried no message_stop event.
    NoMessageStop,
    Timeout,
}

impl Failure {
    fn kind(&self) -> String {
        match self {
            Failure::Connect(_) => "connect".into(),
            Failure::Write(_) => "write".into(),
            Failure::Read(_) => "read".into(),
            Failure::Eof => "eof_before_end".into(),
            Failure::Status(code) => format!("status_{code}"),
            Failure::Framing(_) => "bad_framing".into(),
            Failure::NoMessageStop => "no_message_stop".into(),
            Failure::Timeout => "timeout".into(),
        }
    }

    fn detail(&self) -> String {
        match self {
            Failure::Connect(e) | Failure::Write(e) | Failure::Read(e) => {
                format!("{}: {e}", self.kind())
            }
            Failure::Framing(why) => format!("bad_framing: {why}"),
            other => other.kind(),
        }
    }
}

/// What one stream measured.
struct StreamReport {
    result: Result<(), Failure>,
    events: u64,
    /// Request sent → first body byte.
    ttfb: Option<Duration>,
    /// Longest wait between two reads that brought body data (the first byte not counted).
    max_gap: Duration,
    duration: Duration,
}

fn main() {
    let opts = Arc::new(parse_options());
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let mut threads = Vec::new();
    for t in 0..opts.threads {
        let opts = Arc::clone(&opts);
        let live = Arc::clone(&live);
        threads.push(
            std::thread::Builder::new()
                .name(format!("streams-{t}"))
                .spawn(move || {
                    let reports = run_thread(t, &opts, &live, start);
                    live.threads_done.fetch_add(1, Ordering::SeqCst);
                    reports
                })
                .expect("spawning a client thread"),
        );
    }
    let mut next_progress = Duration::from_secs(5);
    while live.threads_done.load(Ordering::SeqCst) < opts.threads {
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() >= next_progress {
            eprintln!(
                "open_streams: t={:>3}s open={} completed={} failed={}",
                next_progress.as_secs(),
                live.open.load(Ordering::Relaxed),
                live.completed.load(Ordering::Relaxed),
                live.failed.load(Ordering::Relaxed)
            );
            next_progress += Duration::from_secs(5);
        }
    }
    let mut reports = Vec::with_capacity(opts.streams);
    for thread in threads {
        reports.extend(thread.join().expect("a client thread panicked"));
    }
    let elapsed = start.elapsed();
    summarize(&opts, &live, &reports, elapsed);
}

fn summarize(opts: &Options, live: &Live, reports: &[StreamReport], elapsed: Duration) {
    let completed = reports.iter().filter(|r| r.result.is_ok()).count();
    let failed = reports.len() - completed;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    for r in reports {
        if let Err(f) = &r.result {
            *by_kind.entry(f.kind()).or_default() += 1;
            examples.entry(f.kind()).or_insert_with(|| f.detail());
        }
    }
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut ttfb: Vec<f64> = reports.iter().filter_map(|r| r.ttfb.map(ms)).collect();
    let mut gaps: Vec<f64> = reports
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| ms(r.max_gap))
        .collect();
    let mut durations: Vec<f64> = reports
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| ms(r.duration))
        .collect();

    println!(
        "open_streams: {} streams to {}{} in {:.1}s: {completed} completed, {failed} failed, peak {} open at once",
        reports.len(),
        opts.addr,
        opts.path,
        elapsed.as_secs_f64(),
        live.peak_open.load(Ordering::SeqCst)
    );
    for (kind, n) in &by_kind {
        println!("  failed {kind}: {n} (e.g. {})", examples[kind]);
    }
    println!(
        "  first byte p50 {:.1} ms, p99 {:.1} ms; longest pause inside a stream p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; stream duration p50 {:.0} ms, max {:.0} ms",
        pct(&mut ttfb, 50.0),
        pct(&mut ttfb, 99.0),
        pct(&mut gaps, 50.0),
        pct(&mut gaps, 99.0),
        pct(&mut gaps, 100.0),
        pct(&mut durations, 50.0),
        pct(&mut durations, 100.0),
    );
    let failures: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    println!(
        "RESULT streams={} completed={completed} failed={failed} peak_open={} events={events} secs={:.2} ttfb_p50_ms={:.1} ttfb_p99_ms={:.1} gap_p50_ms={:.1} gap_p99_ms={:.1} gap_max_ms={:.1} dur_p50_ms={:.0} dur_max_ms={:.0} failures={}",
        reports.len(),
        live.peak_open.load(Ordering::SeqCst),
        elapsed.as_secs_f64(),
        pct(&mut ttfb, 50.0),
        pct(&mut ttfb, 99.0),
        pct(&mut gaps, 50.0),
        pct(&mut gaps, 99.0),
        pct(&mut gaps, 100.0),
        pct(&mut durations, 50.0),
        pct(&mut durations, 100.0),
        if failures.is_empty() { "none".to_string() } else { failures.join(",") },
    );
    if failed > 0 {
        std::process::exit(3);
    }
}

/// The `p`th percentile (nearest rank) of `values`; NaN when empty.
fn pct(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn run_thread(t: usize, opts: &Options, live: &Arc<Live>, start: Instant) -> Vec<StreamReport> {
    let mut ring = io_uring::IoUring::builder();
    ring.setup_single_issuer().setup_defer_taskrun();
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .uring_builder(ring)
        .build()
    {
        return rt.block_on(drive(t, opts, live, start));
    }
    if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .build()
    {
        return rt.block_on(drive(t, opts, live, start));
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("building an epoll runtime");
    rt.block_on(drive(t, opts, live, start))
}

fn request_bytes(opts: &Options) -> Vec<u8> {
    let prefix = r#"{"model":"claude-sonnet-4-5","max_tokens":4096,"stream":true,"system":"You are a patient assistant.","messages":[{"role":"user","content":""#;
    let suffix = r#""}]}"#;
    let pad = opts.body_bytes.saturating_sub(prefix.len() + suffix.len());
    let body = format!("{prefix}{}{suffix}", "x".repeat(pad));
    let mut out = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        opts.path,
        opts.addr,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Starts this thread's share of the streams on schedule and collects their reports.
async fn drive(t: usize, opts: &Options, live: &Arc<Live>, start: Instant) -> Vec<StreamReport> {
    let request = Rc::new(request_bytes(opts));
    let mut handles = Vec::new();
    let n = opts.streams;
    for i in (t..n).step_by(opts.threads) {
        let at = start + opts.ramp.mul_f64(i as f64 / n.max(1) as f64);
        if at > Instant::now() + Duration::from_millis(1) {
            monoio::time::sleep_until(at.into()).await;
        }
        let request = Rc::clone(&request);
        let live = Arc::clone(live);
        let (addr, timeout) = (opts.addr, opts.timeout);
        handles.push(monoio::spawn(async move {
            let began = Instant::now();
            let mut report = StreamReport {
                result: Ok(()),
                events: 0,
                ttfb: None,
                max_gap: Duration::ZERO,
                duration: Duration::ZERO,
            };
            let mut opened = false;
            let outcome = monoio::time::timeout(
                timeout,
                one_stream(addr, request, &live, &mut report, &mut opened),
            )
            .await;
            if opened {
                live.open.fetch_sub(1, Ordering::Relaxed);
            }
            report.result = outcome.unwrap_or(Err(Failure::Timeout));
            report.duration = began.elapsed();
            let counter = if report.result.is_ok() {
                &live.completed
            } else {
                &live.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            report
        }));
    }
    let mut reports = Vec::with_capacity(handles.len());
    for handle in handles {
        reports.push(handle.await);
    }
    reports
}

async fn one_stream(
    addr: SocketAddr,
    request: Rc<Vec<u8>>,
    live: &Live,
    report: &mut StreamReport,
    opened: &mut bool,
) -> Result<(), Failure> {
    let mut stream = TcpStream::connect_addr(addr)
        .await
        .map_err(Failure::Connect)?;
    *opened = true;
    let now_open = live.open.fetch_add(1, Ordering::Relaxed) + 1;
    live.peak_open.fetch_max(now_open, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    stream.write_all(request).await.0.map_err(Failure::Write)?;
    let sent = Instant::now();

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut pos = 0usize;
    let mut last_data: Option<Instant> = None;
    // Response head.
    let (status, framing) = loop {
        read_more(&mut stream, &mut buf, &mut pos).await?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut framing = Framing::UntilClose;
                for h in resp.headers.iter() {
                    let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && v.to_ascii_lowercase().contains("chunked")
                    {
                        framing = Framing::Chunked(Dechunk::default());
                    } else if h.name.eq_ignore_ascii_case("content-length")
                        && !matches!(framing, Framing::Chunked(_))
                    {
                        framing = Framing::Length(
                            v.parse()
                                .map_err(|_| Failure::Framing("bad content-length"))?,
                        );
                    }
                }
                pos = n;
                break (resp.code.unwrap_or(0), framing);
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
            _ => return Err(Failure::Framing("bad response head")),
        }
    };
    if status != 200 {
        return Err(Failure::Status(status));
    }
    let mut sse = SseCounter::default();
    let mut framing = framing;
    loop {
        if pos < buf.len() {
            let now = Instant::now();
            match last_data {
                None => report.ttfb = Some(now - sent),
                Some(last) => report.max_gap = report.max_gap.max(now - last),
            }
            last_data = Some(now);
            let data = &buf[pos..];
            let ended = match &mut framing {
                Framing::Chunked(d) => {
                    let used = d
                        .feed(data, &mut |bytes| sse.feed(bytes))
                        .map_err(Failure::Framing)?;
                    pos += used;
                    d.done()
                }
                Framing::Length(left) => {
                    let take = (*left).min(data.len() as u64) as usize;
                    sse.feed(&data[..take]);
                    *left -= take as u64;
                    pos += take;
                    *left == 0
                }
                Framing::UntilClose => {
                    sse.feed(data);
                    pos = buf.len();
                    false
                }
            };
            report.events = sse.events;
            if ended {
                return if sse.saw_stop {
                    Ok(())
                } else {
                    Err(Failure::NoMessageStop)
                };
            }
        }
        match read_more(&mut stream, &mut buf, &mut pos).await {
            Ok(()) => {}
            Err(Failure::Eof) if matches!(framing, Framing::UntilClose) => {
                return if sse.saw_stop {
                    Ok(())
                } else {
                    Err(Failure::NoMessageStop)
                };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Moves unconsumed bytes to the front and reads more after them.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    pos: &mut usize,
) -> Result<(), Failure> {
    if *pos > 0 {
        buf.drain(..*pos);
        *pos = 0;
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = stream.read(std::mem::take(buf).slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    match res {
        Ok(0) => Err(Failure::Eof),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::Read(e)),
    }
}

enum Framing {
    Chunked(Dechunk),
    Length(u64),
    UntilClose,
}

/// Incremental chunked-transfer decoder.
#[derive(Default)]
enum Dechunk {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl Dechunk {
    fn done(&self) -> bool {
        matches!(self, Dechunk::Done)
    }

    /// Decodes what it can of `data`, passing payload to `sink`; returns bytes consumed.
    fn feed(&mut self, data: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<usize, &'static str> {
        let mut at = 0;
        while at < data.len() {
            match self {
                Dechunk::Size => {
                    let Some(nl) = data[at..].iter().position(|&b| b == b'\n') else {
                        return if data.len() - at > 1024 {
                            Err("chunk size line too long")
                        } else {
                            Ok(at)
                        };
                    };
                    let line = std::str::from_utf8(&data[at..at + nl])
                        .map_err(|_| "chunk size not ASCII")?;
                    let hex = line
                        .trim_end_matches('\r')
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
                    at += nl + 1;
                    *self = if size == 0 {
                        Dechunk::Trailer
                    } else {
                        Dechunk::Data(size)
                    };
                }
                Dechunk::Data(left) => {
                    let take = (*left).min((data.len() - at) as u64) as usize;
                    sink(&data[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Dechunk::DataEnd;
                    }
                }
                Dechunk::DataEnd => {
                    let Some(nl) = data[at..].iter().position(|&b| b == b'\n') else {
                        return if data.len() - at > 2 {
                            Err("chunk not followed by CRLF")
                        } else {
                            Ok(at)
                        };
                    };
                    if nl > 1 || (nl == 1 && data[at] != b'\r') {
                        return Err("chunk not followed by CRLF");
                    }
                    at += nl + 1;
                    *self = Dechunk::Size;
                }
                Dechunk::Trailer => {
                    let Some(nl) = data[at..].iter().position(|&b| b == b'\n') else {
                        return Ok(at);
                    };
                    let empty = nl == 0 || (nl == 1 && data[at] == b'\r');
                    at += nl + 1;
                    if empty {
                        *self = Dechunk::Done;
                        return Ok(at);
                    }
                }
                Dechunk::Done => return Ok(at),
            }
        }
        Ok(at)
    }
}

/// Counts SSE events (blank-line terminated) and spots `message_stop`, across any split.
#[derive(Default)]
struct SseCounter {
    events: u64,
    prev: u8,
    matched: usize,
    saw_stop: bool,
}

const STOP: &[u8] = b"message_stop";

impl SseCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' && self.prev == b'\n' {
                self.events += 1;
            }
            if b != b'\r' {
                self.prev = b;
            }
            // "message_stop" has no border (no prefix that is also a suffix), so a
            // mismatch can only restart the match at its first byte.
            if b == STOP[self.matched] {
                self.matched += 1;
                if self.matched == STOP.len() {
                    self.saw_stop = true;
                    self.matched = 0;
                }
            } else {
                self.matched = usize::from(b == STOP[0]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_at_every_split() {
        let wire = b"5\r\nhello\r\n1c;ext=1\r\nevent: message_stop\ndata: x\n\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let mut buf = wire[..split].to_vec();
            let used = d.feed(&buf, &mut |b| out.extend_from_slice(b)).unwrap();
            buf.drain(..used);
            buf.extend_from_slice(&wire[split..]);
            let used = d.feed(&buf, &mut |b| out.extend_from_slice(b)).unwrap();
            assert_eq!(used, buf.len(), "split {split}");
            assert!(d.done(), "split {split}");
            assert_eq!(out, b"helloevent: message_stop\ndata: x\n");
        }
    }

    #[test]
    fn sse_counter_counts_events_and_stop_across_splits() {
        let text = b"event: a\ndata: 1\n\nevent: message_stop\r\ndata: {}\r\n\r\n";
        for split in 0..text.len() {
            let mut c = SseCounter::default();
            c.feed(&text[..split]);
            c.feed(&text[split..]);
            assert_eq!(c.events, 2, "split {split}");
            assert!(c.saw_stop, "split {split}");
        }
        let mut c = SseCounter::default();
        c.feed(b"message_sto message_stap mmessage_stop");
        assert!(c.saw_stop);
    }
}
