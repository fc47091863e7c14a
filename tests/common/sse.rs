//! Server-sent events: splitting a stream text into events, and reading events one at a
//! time from a response body as they arrive.

use std::io;

use super::client::BodyStream;

/// One event as it appeared on the wire, including its terminating blank line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: String,
}

impl SseEvent {
    /// The `event:` field, if any.
    pub fn name(&self) -> Option<&str> {
        self.field("event").next()
    }

    /// The `data:` lines joined with newlines.
    pub fn data(&self) -> String {
        self.field("data").collect::<Vec<_>>().join("\n")
    }

    fn field<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.raw.lines().filter_map(move |line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            Some(value.strip_prefix(' ').unwrap_or(value))
        })
    }
}

/// Splits an SSE text into events, each keeping its `\n\n` terminator.
pub fn split_events(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("\n\n") {
        events.push(rest[..end + 2].to_string());
        rest = &rest[end + 2..];
    }
    assert!(
        rest.trim().is_empty(),
        "SSE text ends with an unterminated event: {rest:?}"
    );
    events
}

/// Yields events from a streamed body as soon as each one is complete.
pub struct SseReader<'a> {
    body: BodyStream<'a>,
    pending: Vec<u8>,
}

impl<'a> SseReader<'a> {
    /// Reads events from `body`.
    pub fn new(body: BodyStream<'a>) -> SseReader<'a> {
        SseReader {
            body,
            pending: Vec::new(),
        }
    }

    /// The next complete event; `None` when the body ended cleanly between events.
    pub fn next_event(&mut self) -> io::Result<Option<SseEvent>> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.pending.drain(..end + 2).collect();
                return Ok(Some(SseEvent {
                    raw: String::from_utf8_lossy(&raw).into_owned(),
                }));
            }
            match self.body.next_bytes()? {
                Some(bytes) => self.pending.extend_from_slice(&bytes),
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "stream ended inside an event: {:?}",
                            String::from_utf8_lossy(&self.pending)
                        ),
                    ))
                }
            }
        }
    }
}
