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

/// Most body bytes read ahead for the first event (`message_start` is a few hundred).
const PEEK_LIMIT: usize = 16 * 1024;

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

/// The first event of `body` (transfer framing as `framing` says).
fn first_event(body: &[u8], framing: ResponseFraming) -> Peek {
    let mut data = Vec::new();
    let ended = match framing {
        ResponseFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            match decoder.feed(body, &mut |bytes| data.extend_from_slice(bytes)) {
                Ok(progress) => progress.done,
                Err(_) => return Peek::Never,
            }
        }
        ResponseFraming::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            data.extend_from_slice(&body[..body.len().min(n)]);
            body.len() >= n
        }
        ResponseFraming::UntilClose => {
            data.extend_from_slice(body);
            false
        }
        ResponseFraming::Empty => return Peek::Never,
    };
    let end = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| data.windows(4).position(|w| w == b"\r\n\r\n"));
    match (end, ended) {
        (Some(end), _) => {
            data.truncate(end);
            Peek::Event(data)
        }
        (None, true) => Peek::Never,
        (None, false) => Peek::More,
    }
}

/// Whether an event is `event: error` whose data names `overloaded_error`.
fn is_overloaded(event: &[u8]) -> bool {
    let mut error = false;
    let mut overloaded = false;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(name) = line.strip_prefix(b"event:") {
            error = name.trim_ascii() == b"error";
        } else if let Some(data) = line.strip_prefix(b"data:") {
            overloaded |= data
                .windows(b"\"overloaded_error\"".len())
                .any(|w| w == b"\"overloaded_error\"");
        }
    }
    error && overloaded
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
