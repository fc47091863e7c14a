//! A pool member's stream may be refused after its `200`: the API can open an event
//! stream and say `overloaded_error` in its first event. Before any byte of a pooled
//! stream goes to the client, its first event is read ahead and looked at, so that such
//! an answer is sent on to the next member like a `529`. Only pooled streams wait for
//! their first event; the client gets it a moment later, with the head, as it would have.

use super::exchange::{read_append, Answer};
use super::{Proxy, ProxyError, RELAY_BUFFER};
use crate::conn::ClientConn;
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::ResponseFraming;
use crate::scan;

/// Most body bytes read ahead for the first event (`message_start` is a few hundred).
const PEEK_LIMIT: usize = 16 * 1024;
/// Raw bytes of a chunked body decoded at a time while its first event is looked for.
const DECODE_PIECE: usize = 512;

/// Reads the answer's body into `answer.buf` until its first event is complete (or the
/// body ends, or [`PEEK_LIMIT`]) and says whether that event is an `overloaded_error`.
/// What was read stays in `answer.buf` for the relay.
pub async fn overloaded(
    conn: &ClientConn,
    proxy: &Proxy,
    answer: &mut Answer,
) -> Result<bool, ProxyError> {
    let timeout = proxy.shared.config.upstream_timeout;
    let deadline = conn.deadline();
    let start = answer.head.head_len;
    loop {
        let body = &answer.buf[start..];
        match first_event(body, answer.head.framing) {
            Peek::Event(event) => return Ok(is_overloaded(&event)),
            Peek::More if body.len() < PEEK_LIMIT => {}
            _ => return Ok(false),
        }
        let mut buf = std::mem::take(&mut answer.buf);
        if buf.len() == buf.capacity() {
            buf.reserve(RELAY_BUFFER);
        }
        let read = deadline
            .within(timeout, read_append(&mut answer.upstream, buf))
            .await;
        let Ok((read, buf)) = read else {
            return Err(ProxyError::UpstreamTimeout(timeout.as_secs()));
        };
        answer.buf = buf;
        // The end of the body, or a failure: the relay meets it again and handles it.
        if !matches!(read, Ok(n) if n > 0) {
            return Ok(false);
        }
    }
}

/// How far the body's first event has arrived.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Complete: its bytes without the blank line that ends it.
    Event(Vec<u8>),
    /// Not yet.
    More,
    /// The body ended, or its framing is broken, before an event did.
    Never,
}

/// The first event of `body` (transfer framing as `framing` says). Only the bytes up to
/// its end are decoded and kept: the rest of a stream that came in one read (all of it,
/// often) is no concern of this look.
fn first_event(body: &[u8], framing: ResponseFraming) -> Peek {
    let mut event = EventStart::default();
    let ended = match framing {
        ResponseFraming::Chunked => {
            // Piece by piece, so that decoding stops soon after the event's end.
            let mut decoder = ChunkedDecoder::new();
            let mut done = false;
            for piece in body.chunks(DECODE_PIECE) {
                match decoder.feed(piece, &mut |bytes| event.take(bytes)) {
                    Ok(progress) => done = progress.done,
                    Err(_) if event.end.is_some() => break,
                    Err(_) => return Peek::Never,
                }
                if done || event.end.is_some() {
                    break;
                }
            }
            done
        }
        ResponseFraming::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            event.take(&body[..body.len().min(n)]);
            body.len() >= n
        }
        ResponseFraming::UntilClose => {
            event.take(body);
            false
        }
        ResponseFraming::Empty => return Peek::Never,
    };
    match (event.end, ended) {
        (Some(end), _) => {
            event.data.truncate(end);
            Peek::Event(event.data)
        }
        (None, true) => Peek::Never,
        (None, false) => Peek::More,
    }
}

/// A body's decoded bytes, taken piece by piece until its first blank line.
#[derive(Default)]
struct EventStart {
    data: Vec<u8>,
    /// Where the first event ends in `data`, once it has.
    end: Option<usize>,
}

impl EventStart {
    fn take(&mut self, bytes: &[u8]) {
        if self.end.is_some() {
            return;
        }
        // The blank line may have begun in the piece before: look from 3 bytes back.
        let from = self.data.len().saturating_sub(3);
        self.data.extend_from_slice(bytes);
        self.end = blank_line(&self.data[from..]).map(|at| from + at);
    }
}

/// Where the first blank line (`\n\n` or `\r\n\r\n`) in `bytes` starts.
fn blank_line(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = scan::find_eol(&bytes[i..]) {
        let n = i + at;
        let blank = match bytes[n] {
            b'\n' => bytes.get(n + 1) == Some(&b'\n'),
            _ => bytes.get(n + 1..n + 4) == Some(b"\n\r\n"),
        };
        if blank {
            return Some(n);
        }
        i = n + 1;
    }
    None
}

/// The lines of an event, without their line ends (`\n`, `\r\n` or `\r`).
fn lines(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = scan::find_eol(rest).unwrap_or(rest.len());
        let line = &rest[..end];
        let skip = match &rest[end..] {
            [b'\r', b'\n', ..] => 2,
            [] => 0,
            _ => 1,
        };
        rest = &rest[end + skip..];
        Some(line)
    })
}

/// Whether an event is `event: error` whose data names `overloaded_error`. The data is
/// searched only in an error event (a `message_start` is the common first event).
fn is_overloaded(event: &[u8]) -> bool {
    const NAME: &[u8] = b"\"overloaded_error\"";
    let error = lines(event).any(|line| {
        line.strip_prefix(b"event:")
            .is_some_and(|name| name.trim_ascii() == b"error")
    });
    error
        && lines(event)
            .filter_map(|line| line.strip_prefix(b"data:"))
            .any(|data| data.windows(NAME.len()).any(|w| w == NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";

    fn chunked(pieces: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
        }
        out
    }

    #[test]
    fn the_first_event_is_found_at_every_split() {
        let mut body = chunked(&[OVERLOADED, START]);
        body.extend_from_slice(b"0\r\n\r\n");
        let whole = first_event(&body, ResponseFraming::Chunked);
        let Peek::Event(event) = &whole else {
            panic!("{whole:?}")
        };
        assert!(is_overloaded(event));
        let first_end = body
            .windows(4)
            .position(|w| w == b"\n\n\r\n")
            .expect("the event's end");
        for split in 0..body.len() {
            let peek = first_event(&body[..split], ResponseFraming::Chunked);
            if split < first_end + 2 {
                assert_eq!(peek, Peek::More, "split {split}");
            } else {
                assert_eq!(peek, whole, "split {split}");
            }
        }
    }

    #[test]
    fn a_blank_line_is_found_in_either_line_ending_whichever_comes_first() {
        assert_eq!(blank_line(b"a\n\nb"), Some(1));
        assert_eq!(blank_line(b"a\r\n\r\nb\n\n"), Some(1));
        assert_eq!(blank_line(b"a\nb\r\n\r\n"), Some(3));
        assert_eq!(blank_line(b"\r\n\r"), None);
        assert_eq!(blank_line(b"a\n"), None);
        assert_eq!(blank_line(b""), None);
    }

    #[test]
    fn only_an_overloaded_error_event_counts() {
        let event = |text: &str| match first_event(text.as_bytes(), ResponseFraming::UntilClose) {
            Peek::Event(event) => is_overloaded(&event),
            other => panic!("{other:?}"),
        };
        assert!(event(OVERLOADED));
        assert!(event(&OVERLOADED.replace('\n', "\r\n")));
        assert!(!event(START));
        assert!(!event(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n"
        ));
        assert!(!event(
            "event: content_block_delta\ndata: {\"text\":\"\\\"overloaded_error\\\"\"}\n\n"
        ));
    }

    #[test]
    fn a_body_that_ends_or_breaks_first_has_no_event() {
        assert_eq!(
            first_event(b"0\r\n\r\n", ResponseFraming::Chunked),
            Peek::Never
        );
        assert_eq!(
            first_event(b"zz\r\n", ResponseFraming::Chunked),
            Peek::Never
        );
        assert_eq!(
            first_event(b"event: a\n", ResponseFraming::Length(9)),
            Peek::Never
        );
        assert_eq!(first_event(b"", ResponseFraming::Empty), Peek::Never);
    }
}
