//! The `log` backend: one line per record on stderr — UTC timestamp, level, the thread it
//! came from (`w0`, `w1`, … for workers), message. Lines are formatted into a
//! thread-local buffer and written whole, so lines from different threads never
//! interleave.
//!
//! Worker threads batch their info and debug lines (the per-request access log): a
//! worker writes its buffer when it passes [`BATCH_BYTES`], on every housekeeping tick
//! ([`flush_thread`], 100 ms) and at once for warnings and errors — one `write` per
//! batch instead of a blocking `write` per request on the thread that serves traffic.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};

/// Turns on logging at `level` for nexus's own records; other crates' records (rustls, …)
/// only from `warn` up, unless `level` is `trace`.
pub fn init(level: LevelFilter) {
    let others = if level == LevelFilter::Trace {
        LevelFilter::Trace
    } else {
        level.min(LevelFilter::Warn)
    };
    let logger = Box::new(Logger { level, others });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Parses a level name (`off`, `error`, `warn`, `info`, `debug`, `trace`), or the most
/// verbose level named in an `env_logger`-style filter such as `nexus=debug,rustls=warn`.
pub fn parse_level(spec: &str) -> Option<LevelFilter> {
    spec.split(',')
        .filter_map(|part| {
            let level = part.rsplit('=').next()?.trim();
            level.parse::<LevelFilter>().ok()
        })
        .max()
}

struct Logger {
    level: LevelFilter,
    others: LevelFilter,
}

/// A batch stays within one pipe write (PIPE_BUF), which the kernel keeps whole.
const BATCH_BYTES: usize = 4096;

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    static TAG: String = thread_tag();
    /// Lines this thread formatted but has not written yet (batching threads only).
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
}

/// Makes the calling thread batch its info/debug lines; it must then call
/// [`flush_thread`] regularly.
/// Logs an info line whose message `message` appends as bytes: the access log's line per
/// request, written without the formatting machinery (which cost about a tenth of a
/// small request's user-space instructions).
pub fn info(message: impl FnOnce(&mut Vec<u8>)) {
    if log::log_enabled!(target: "nexus", log::Level::Info) {
        line(log::Level::Info, message);
    }
}

/// Builds one line (timestamp, level, thread, message) in the thread's line buffer and
/// hands it on: batched on a worker, written at once elsewhere or when urgent.
fn line(level: log::Level, message: impl FnOnce(&mut Vec<u8>)) {
    let write = |line: &mut Vec<u8>| {
        line.clear();
        push_timestamp(line);
        let name = level.as_str();
        line.push(b' ');
        line.extend_from_slice(name.as_bytes());
        line.extend_from_slice(&b"     "[..6 - name.len()]);
        TAG.with(|tag| line.extend_from_slice(tag.as_bytes()));
        line.push(b' ');
        message(line);
        line.push(b'\n');
        emit(line, level <= log::Level::Warn);
    };
    LINE.with(|line| match line.try_borrow_mut() {
        Ok(mut line) => write(&mut line),
        Err(_) => write(&mut Vec::new()),
    });
}

/// Queues a finished line on a batching thread (flushing at once when `urgent`), or
/// writes it.
fn emit(line: &[u8], urgent: bool) {
    if BATCHING.with(Cell::get) {
        let queued = PENDING.with(|pending| match pending.try_borrow_mut() {
            Ok(mut pending) => {
                if pending.len() + line.len() > BATCH_BYTES {
                    let _ = std::io::stderr().write_all(&pending);
                    pending.clear();
                }
                pending.extend_from_slice(line);
                true
            }
            Err(_) => false,
        });
        if queued {
            if urgent {
                flush_thread();
            }
            return;
        }
    }
    let _ = std::io::stderr().write_all(line);
}

/// Appends the time as RFC 3339 with milliseconds (`2026-12-07T08:59:15.728Z`); the date
/// and time of day are formatted once a second per thread.
fn push_timestamp(line: &mut Vec<u8>) {
    let now = SystemTime::now();
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs || second.1.is_empty() {
            second.0 = secs;
            second.1 = humantime::format_rfc3339_seconds(now)
                .to_string()
                .into_bytes();
            second.1.pop(); // the "Z"
        }
        line.extend_from_slice(&second.1);
    });
    let millis = since.subsec_millis();
    line.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

pub fn batch_this_thread() {
    BATCHING.with(|b| b.set(true));
}

/// Writes the calling thread's pending lines.
pub fn flush_thread() {
    PENDING.with(|pending| {
        if let Ok(mut pending) = pending.try_borrow_mut() {
            if !pending.is_empty() {
                let _ = std::io::stderr().write_all(&pending);
                pending.clear();
            }
        }
    });
}

/// `w3` for worker thread `nexus-w3`, the rest of the name for other `nexus-…` threads.
fn thread_tag() -> String {
    let current = std::thread::current();
    let name = current.name().unwrap_or("-");
    name.strip_prefix("nexus-").unwrap_or(name).to_string()
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let max = if metadata.target().starts_with("nexus") {
            self.level
        } else {
            self.others
        };
        metadata.level() <= max
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        line(record.level(), |line| {
            let _ = write!(line, "{}", record.args());
        });
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters() {
        assert_eq!(parse_level("info"), Some(LevelFilter::Info));
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(
            parse_level("nexus=debug,rustls=warn"),
            Some(LevelFilter::Debug)
        );
        assert_eq!(parse_level("nonsense"), None);
    }
}
