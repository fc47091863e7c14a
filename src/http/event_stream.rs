//! Relaying a chunked `text/event-stream` on event boundaries.
//!
//! The upstream's chunks need not line up with SSE events, so nexus decodes them in place
//! in its relay buffer and writes whole events to the client as chunks of its own. A
//! client therefore never holds half an event, and when the upstream breaks off nexus can
//! still end the response with an API-shaped error event and a valid last chunk.
//! The body is never copied to another buffer: data moves down over the framing it
//! replaces, and the client's chunk header is written into the space in front of it.

use std::ops::Range;

use super::chunked::{ChunkError, ChunkedDecoder};

/// Space kept in front of the data for the client chunk header (`{len:x}\r\n`).
pub const HEADROOM: usize = 16;
/// Most bytes of one unfinished event held back; past this, they are forwarded anyway.
const MAX_HELD_BYTES: usize = 1024 * 1024;
/// Room needed after the data for `\r\n` and, at the end, `0\r\n\r\n`.
const TRAILER_ROOM: usize = 7;

/// The error event sent when the upstream stream breaks off (the API's own shape).
pub fn upstream_lost_event(message: &str) -> String {
    let message = serde_json::to_string(message).expect("a string always serializes");
    format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":{message}}}}}\n\n"
    )
}

/// Finds event boundaries (a line terminator right after another: `\n`, `\r` or `\r\n`
/// in any mix) in bytes fed piece by piece.
#[derive(Debug, Default, Clone, Copy)]
struct EventCutter {
    /// The previous byte was a CR (a following LF belongs to the same terminator).
    after_cr: bool,
    /// Line terminators in a row so far (capped at 2).
    terminators: u8,
}

impl EventCutter {
    /// Scans `data`; returns the offset just past the last event boundary in it.
    ///
    /// Boundaries lie only in runs of CR/LF bytes, and once a run holds two line
    /// terminators each further byte of it ends a boundary; so the last boundary is the
    /// end of the last run that reaches two. Searching for it from the back touches a few
    /// bytes, since upstreams flush whole events: measured on W2 (30 events of ~220 B per
    /// response), a forward byte loop here took 14% of nexus's CPU.
    fn scan(&mut self, data: &[u8]) -> Option<usize> {
        let is_eol = |b: &u8| *b == b'\n' || *b == b'\r';
        let mut state_at_end = None;
        let mut end = data.len();
        let mut last = None;
        while let Some(p) = data[..end].iter().rposition(is_eol) {
            let run_end = p + 1;
            let run_start = data[..run_end]
                .iter()
                .rposition(|b| !is_eol(b))
                .map_or(0, |q| q + 1);
            // Only a run at the very start continues the previous piece's run.
            let mut run = if run_start == 0 {
                *self
            } else {
                EventCutter::default()
            };
            for &b in &data[run_start..run_end] {
                run.step(b);
            }
            if state_at_end.is_none() {
                state_at_end = Some(if run_end == data.len() {
                    run
                } else {
                    EventCutter::default()
                });
            }
            if run.terminators >= 2 {
                last = Some(run_end);
                break;
            }
            end = run_start;
        }
        match state_at_end {
            Some(state) => *self = state,
            // No CR or LF at all: a non-empty piece ends inside a line.
            None if !data.is_empty() => *self = EventCutter::default(),
            None => {}
        }
        last
    }

    /// Takes one byte; true when it ends an event boundary.
    fn step(&mut self, b: u8) -> bool {
        match b {
            b'\n' if self.after_cr => {
                self.after_cr = false;
                // The LF of a CRLF blank line: cut after it rather than between.
                self.terminators >= 2
            }
            b'\n' | b'\r' => {
                self.after_cr = b == b'\r';
                self.terminators = (self.terminators + 1).min(2);
                self.terminators >= 2
            }
            _ => {
                self.after_cr = false;
                self.terminators = 0;
                false
            }
        }
    }
}

/// State of one re-framed event stream over a relay buffer `buf`:
/// `buf[data_start..data_end]` is decoded data not yet forwarded, raw upstream bytes
/// follow it.
#[derive(Debug)]
pub struct EventReframer {
    decoder: ChunkedDecoder,
    cutter: EventCutter,
    data_start: usize,
    data_end: usize,
    /// Where the held data will sit after the next forward.
    cut: usize,
    done: bool,
    /// The upstream sent bytes after its last chunk.
    pub trailing_garbage: bool,
}

/// A frame ready to write: `buf[range]`; `saved` must be put back with [`EventReframer::forwarded`].
pub struct Frame {
    pub range: Range<usize>,
    saved: [u8; TRAILER_ROOM],
    saved_len: usize,
    /// This frame ends the response.
    pub last: bool,
}

impl EventReframer {
    /// Starts with the body's first raw bytes at `buf[body_start..]` (right after the
    /// upstream's response head, whose space becomes the headroom).
    pub fn new(body_start: usize) -> Self {
        debug_assert!(body_start >= HEADROOM);
        EventReframer {
            decoder: ChunkedDecoder::new(),
            cutter: EventCutter::default(),
            data_start: body_start,
            data_end: body_start,
            cut: body_start,
            done: false,
            trailing_garbage: false,
        }
    }

    /// Decodes the raw bytes after the held data, handing each new piece of body to
    /// `on_body`. Afterwards `buf` ends at the decoded data.
    pub fn absorb(
        &mut self,
        buf: &mut Vec<u8>,
        on_body: &mut impl FnMut(&[u8]),
    ) -> Result<(), ChunkError> {
        let before = self.data_end;
        let (end, progress) = self.decoder.decode_in_place(buf, before, before)?;
        self.trailing_garbage |= progress.done && before + progress.consumed < buf.len();
        self.done = progress.done;
        buf.truncate(end);
        self.data_end = end;
        let fresh = &buf[before..end];
        on_body(fresh);
        if let Some(offset) = self.cutter.scan(fresh) {
            self.cut = before + offset;
        }
        if self.data_end - self.data_start > MAX_HELD_BYTES {
            self.cut = self.data_end;
        }
        if self.done {
            self.cut = self.data_end;
        }
        Ok(())
    }

    /// The upstream's last chunk has been read.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Everything decoded has been forwarded and the buffer is back to its headroom: the
    /// next read may go into any buffer of [`HEADROOM`] bytes instead of this one.
    pub fn holds_nothing(&self) -> bool {
        self.data_start == HEADROOM && self.data_end == HEADROOM
    }

    /// Frames the whole events decoded so far as one client chunk (plus the last chunk
    /// when the stream is done); `None` when there is nothing to send yet.
    pub fn frame(&mut self, buf: &mut Vec<u8>) -> Option<Frame> {
        let len = self.cut - self.data_start;
        if len == 0 && !self.done {
            return None;
        }
        let mut header = [0u8; HEADROOM];
        let header_len = {
            let digits = super::digits::put_hex(&mut header, len as u64);
            header[digits..digits + 2].copy_from_slice(b"\r\n");
            digits + 2
        };
        let trailer: &[u8] = match (len, self.done) {
            (0, _) => b"0\r\n\r\n",
            (_, true) => b"\r\n0\r\n\r\n",
            (_, false) => b"\r\n",
        };
        let start = if len == 0 {
            self.cut
        } else {
            self.data_start - header_len
        };
        if len > 0 {
            buf[start..self.data_start].copy_from_slice(&header[..header_len]);
        }
        // The trailer overwrites the start of the held bytes (or runs past them): save them.
        let mut saved = [0u8; TRAILER_ROOM];
        let saved_len = (self.data_end - self.cut).min(trailer.len());
        saved[..saved_len].copy_from_slice(&buf[self.cut..self.cut + saved_len]);
        let end = self.cut + trailer.len();
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[self.cut..end].copy_from_slice(trailer);
        Some(Frame {
            range: start..end,
            saved,
            saved_len,
            last: self.done,
        })
    }

    /// After a frame was written: restores the held bytes and moves them to the front,
    /// behind fresh headroom, ready for the next read.
    pub fn forwarded(&mut self, buf: &mut Vec<u8>, frame: &Frame) {
        buf[self.cut..self.cut + frame.saved_len].copy_from_slice(&frame.saved[..frame.saved_len]);
        buf.truncate(self.data_end);
        let held = self.data_end - self.cut;
        buf.copy_within(self.cut..self.data_end, HEADROOM);
        buf.truncate(HEADROOM + held);
        self.data_start = HEADROOM;
        self.data_end = HEADROOM + held;
        self.cut = HEADROOM;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::chunked::ChunkedDecoder;

    /// Runs a raw chunked body through the reframer in reads of `step` bytes and returns
    /// what the client would receive, decoded, with each frame's content.
    fn relay(raw: &[u8], step: usize) -> (Vec<u8>, Vec<String>) {
        relay_swapping(raw, step, false)
    }

    /// [`relay`], optionally reading into a new buffer (headroom of stale bytes) whenever
    /// the reframer holds nothing, as the relay does while a stream waits for its upstream.
    fn relay_swapping(raw: &[u8], step: usize, swap: bool) -> (Vec<u8>, Vec<String>) {
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut buf = head.to_vec();
        let mut r = EventReframer::new(head.len());
        let mut wire = Vec::new();
        let mut scanned = Vec::new();
        for piece in raw.chunks(step) {
            if swap && r.holds_nothing() {
                assert_eq!(buf.len(), HEADROOM);
                buf = vec![b'#'; HEADROOM];
            }
            buf.extend_from_slice(piece);
            r.absorb(&mut buf, &mut |b| scanned.extend_from_slice(b))
                .unwrap();
            if let Some(frame) = r.frame(&mut buf) {
                wire.extend_from_slice(&buf[frame.range.clone()]);
                r.forwarded(&mut buf, &frame);
            }
            if r.done() {
                break;
            }
        }
        assert_eq!(
            scanned,
            decode(raw).0,
            "the scanner sees the body exactly once, in order"
        );
        decode(&wire)
    }

    /// Decodes chunked bytes; returns (data, each chunk's text).
    fn decode(wire: &[u8]) -> (Vec<u8>, Vec<String>) {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut chunks = Vec::new();
        d.feed(wire, &mut |c| {
            data.extend_from_slice(c);
            chunks.push(String::from_utf8_lossy(c).into_owned());
        })
        .unwrap();
        (data, chunks)
    }

    fn chunked(pieces: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn whole_events_only_at_every_read_size() {
        let events =
            "event: a\ndata: {\"x\":1}\n\nevent: b\r\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n\n";
        // Upstream chunks that cut events anywhere.
        let raw = chunked(&[&events[..5], &events[5..30], &events[30..31], &events[31..]]);
        for step in 1..=raw.len() {
            let (data, frames) = relay(&raw, step);
            assert_eq!(String::from_utf8(data).unwrap(), events, "step {step}");
            let mut sent = String::new();
            for frame in &frames {
                sent.push_str(frame);
                // Two line terminators in a row; a lone CR is one (its LF may follow later).
                let ends_whole = ["\n\n", "\r\r", "\n\r", "\n\r\n", "\r\r\n"]
                    .iter()
                    .any(|end| sent.ends_with(end));
                assert!(ends_whole, "step {step}: cut mid-event after {sent:?}");
            }
        }
    }

    #[test]
    fn a_reframer_holding_nothing_reads_into_any_buffer() {
        let events = "event: a\ndata: {\"x\":1}\n\nevent: b\r\ndata: 2\r\n\r\ndata: 3\n\n";
        let raw = chunked(&[&events[..12], &events[12..20], &events[20..]]);
        for step in 1..=raw.len() {
            assert_eq!(
                relay_swapping(&raw, step, true),
                relay(&raw, step),
                "step {step}"
            );
        }
        // Whole events per read: the buffer is free after every one of them.
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut buf = head.to_vec();
        let mut r = EventReframer::new(head.len());
        assert!(!r.holds_nothing(), "the response head is not headroom yet");
        buf.extend_from_slice(&chunked(&["data: 1\n\n"])[..12]);
        r.absorb(&mut buf, &mut |_| {}).unwrap();
        let frame = r.frame(&mut buf).expect("a whole event");
        r.forwarded(&mut buf, &frame);
        assert!(r.holds_nothing());
        buf.extend_from_slice(b"\r\n7\r\ndata: 2");
        r.absorb(&mut buf, &mut |_| {}).unwrap();
        assert!(r.frame(&mut buf).is_none());
        assert!(!r.holds_nothing(), "half an event is held");
    }

    #[test]
    fn boundaries_found_across_pieces() {
        let mut c = EventCutter::default();
        assert_eq!(c.scan(b"data: x\r"), None);
        assert_eq!(c.scan(b"\n"), None);
        assert_eq!(c.scan(b"\r"), Some(1));
        assert_eq!(
            c.scan(b"\ndata"),
            Some(1),
            "cut after the LF of a CRLF blank line"
        );
        assert_eq!(c.scan(b"\n\n"), Some(2));
    }

    /// The byte-at-a-time reading the backward search must agree with.
    fn scan_forward(c: &mut EventCutter, data: &[u8]) -> Option<usize> {
        let mut last = None;
        for (i, &b) in data.iter().enumerate() {
            if c.step(b) {
                last = Some(i + 1);
            }
        }
        last
    }

    #[test]
    fn backward_search_agrees_with_a_forward_byte_loop() {
        // Every piece sequence over a small alphabet rich in terminators, cut everywhere.
        let alphabet = [b'\r', b'\n', b'x'];
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize
        };
        for _ in 0..20_000 {
            let text: Vec<u8> = (0..next() % 12).map(|_| alphabet[next() % 3]).collect();
            let cut = next() % (text.len() + 1);
            let (mut fast, mut slow) = (EventCutter::default(), EventCutter::default());
            for piece in [&text[..cut], &text[cut..]] {
                assert_eq!(
                    fast.scan(piece),
                    scan_forward(&mut slow, piece),
                    "{text:?} cut at {cut}"
                );
                assert_eq!(
                    (fast.after_cr, fast.terminators),
                    (slow.after_cr, slow.terminators)
                );
            }
        }
    }

    #[test]
    fn error_event_is_the_api_shape() {
        let event = upstream_lost_event("upstream connection lost");
        let data = event
            .strip_prefix("event: error\ndata: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(json["error"]["type"], "api_error");
        assert_eq!(json["error"]["message"], "upstream connection lost");
    }
}
