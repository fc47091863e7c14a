//! Request bodies: held whole (read completely, charged to the body budget, kept for a
//! re-send), or streamed to a writer as they arrive, in the client's own framing.

use std::io;
use std::ops::Range;

use monoio::buf::IoBuf;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use super::body_budget::BodyShare;
use super::ClientConn;
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::request::{BodyFraming, RequestHead};

/// Room made at once for a body held whole; a larger one grows as it arrives.
const LARGEST_UP_FRONT: usize = 2 * 1024 * 1024;

/// Why a request body could not be read or passed on.
#[derive(Debug)]
pub enum BodyError {
    /// The client closed or broke its connection.
    Gone,
    /// The client paused longer than the body timeout.
    Stalled,
    /// Longer than this many bytes.
    TooLarge(u64),
    /// Holding it would take bodies past the body budget (its limit in bytes).
    OverBudget(u64),
    /// Bad chunked framing.
    Malformed(ChunkError),
    /// The writer failed.
    Write(io::Error),
}

impl BodyError {
    fn from_read(e: io::Error) -> BodyError {
        match e.kind() {
            io::ErrorKind::TimedOut => BodyError::Stalled,
            _ => BodyError::Gone,
        }
    }
}

/// A request body read whole before forwarding.
pub struct HeldBody(Held);

enum Held {
    /// Still where it was read, in the connection buffer.
    InConnection(Range<usize>),
    /// Decoded from chunked framing (or moved behind a head: then empty).
    Decoded(Vec<u8>),
}

impl HeldBody {
    /// Its length.
    pub fn len(&self) -> usize {
        match &self.0 {
            Held::InConnection(range) => range.len(),
            Held::Decoded(bytes) => bytes.len(),
        }
    }

    /// Whether it has no bytes (left to send).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClientConn {
    /// Readies the connection for the request whose head was just parsed into `head`.
    pub fn begin_request(&mut self, head: &RequestHead) {
        self.pos += head.head_len;
        self.body_pending = head.framing != BodyFraming::None;
        self.response_started = false;
    }

    /// Whether the current request's body has not been read to its end (the connection
    /// cannot carry another request then).
    pub fn body_pending(&self) -> bool {
        self.body_pending
    }

    /// The bytes of a held body.
    pub fn held<'a>(&'a self, body: &'a HeldBody) -> &'a [u8] {
        match &body.0 {
            Held::InConnection(range) => &self.buf[range.clone()],
            Held::Decoded(bytes) => bytes,
        }
    }

    /// Moves a held body behind `out` (a request head), so that both go in one write.
    pub fn append_held(&self, body: &mut HeldBody, out: &mut Vec<u8>) {
        out.extend_from_slice(self.held(body));
        body.0 = Held::Decoded(Vec::new());
    }

    /// Writes a held body to `to`; the bytes stay for a re-send.
    pub async fn send_held<W: AsyncWriteRent>(
        &mut self,
        body: &mut HeldBody,
        to: &mut W,
    ) -> Result<(), BodyError> {
        if body.is_empty() {
            return Ok(());
        }
        let res = match &mut body.0 {
            Held::InConnection(range) => {
                let buf = std::mem::take(&mut self.buf);
                let (res, slice) = to.write_all(buf.slice(range.clone())).await;
                self.buf = slice.into_inner();
                res
            }
            Held::Decoded(bytes) => {
                let (res, back) = to.write_all(std::mem::take(bytes)).await;
                *bytes = back;
                res
            }
        };
        res.map(|_| ()).map_err(BodyError::Write)
    }

    /// Reads the body completely, charging `share` as its bytes arrive. A chunked body
    /// over `limit` bytes is refused as it grows; a declared length is the caller's to
    /// check before anything is sent anywhere.
    pub async fn read_held(
        &mut self,
        head: &RequestHead,
        limit: u64,
        share: &mut BodyShare<'_>,
    ) -> Result<HeldBody, BodyError> {
        let held = match head.framing {
            BodyFraming::None => Held::InConnection(self.pos..self.pos),
            BodyFraming::Length(n) => self.read_held_length(head, n as usize, share).await?,
            BodyFraming::Chunked => self.read_held_chunked(head, limit, share).await?,
        };
        Ok(HeldBody(held))
    }

    async fn read_held_length(
        &mut self,
        head: &RequestHead,
        n: usize,
        share: &mut BodyShare<'_>,
    ) -> Result<Held, BodyError> {
        if self.available() < n {
            self.continue_if_expected(head).await?;
            // Room for a body up to the largest kept buffer at once (address space only
            // until bytes arrive); a larger one grows as it arrives.
            self.make_room(n.min(LARGEST_UP_FRONT));
            while self.available() < n {
                if !share.cover(self.available() as u64) {
                    return Err(BodyError::OverBudget(share.limit()));
                }
                self.read_body_more(n - self.available())
                    .await
                    .map_err(BodyError::from_read)?;
            }
        }
        if !share.cover(n as u64) {
            return Err(BodyError::OverBudget(share.limit()));
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        self.body_pending = false;
        Ok(Held::InConnection(range))
    }

    async fn read_held_chunked(
        &mut self,
        head: &RequestHead,
        limit: u64,
        share: &mut BodyShare<'_>,
    ) -> Result<Held, BodyError> {
        if self.available() == 0 {
            self.continue_if_expected(head).await?;
        }
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::new();
        loop {
            let progress = decoder
                .feed(&self.buf[self.pos..], &mut |data| {
                    body.extend_from_slice(data)
                })
                .map_err(BodyError::Malformed)?;
            self.pos += progress.consumed;
            if body.len() as u64 > limit {
                return Err(BodyError::TooLarge(limit));
            }
            if !share.cover((body.capacity() + self.buf.len()) as u64) {
                return Err(BodyError::OverBudget(share.limit()));
            }
            if progress.done {
                self.body_pending = false;
                return Ok(Held::Decoded(body));
            }
            self.discard_consumed();
            self.read_body_more(usize::MAX)
                .await
                .map_err(BodyError::from_read)?;
        }
    }

    /// Streams the body to `to` as it arrives, in the client's own framing; a chunked body
    /// over `limit` bytes is cut off (a declared length is the caller's to check).
    pub async fn stream_body<W: AsyncWriteRent>(
        &mut self,
        head: &RequestHead,
        limit: u64,
        to: &mut W,
    ) -> Result<(), BodyError> {
        let (mut decoder, mut remaining) = match head.framing {
            BodyFraming::None => return Ok(()),
            BodyFraming::Length(n) => (None, n),
            BodyFraming::Chunked => (Some(ChunkedDecoder::new()), u64::MAX),
        };
        if self.available() == 0 {
            self.continue_if_expected(head).await?;
        }
        let mut decoded: u64 = 0;
        loop {
            let available = &self.buf[self.pos..];
            let (take, done) = match decoder.as_mut() {
                None => {
                    let take = (available.len() as u64).min(remaining) as usize;
                    remaining -= take as u64;
                    (take, remaining == 0)
                }
                Some(decoder) => {
                    let progress = decoder
                        .feed(available, &mut |data| decoded += data.len() as u64)
                        .map_err(BodyError::Malformed)?;
                    if decoded > limit {
                        return Err(BodyError::TooLarge(limit));
                    }
                    (progress.consumed, progress.done)
                }
            };
            if take > 0 {
                let range = self.pos..self.pos + take;
                let (res, slice) = to
                    .write_all(std::mem::take(&mut self.buf).slice(range))
                    .await;
                self.buf = slice.into_inner();
                res.map_err(BodyError::Write)?;
                self.pos += take;
            }
            if done {
                self.body_pending = false;
                return Ok(());
            }
            self.discard_consumed();
            // (Unknown for a chunked body: `remaining` is then u64::MAX.)
            self.read_body_more(usize::try_from(remaining).unwrap_or(usize::MAX))
                .await
                .map_err(BodyError::from_read)?;
        }
    }

    /// Answers `Expect: 100-continue` before the body is read.
    async fn continue_if_expected(&mut self, head: &RequestHead) -> Result<(), BodyError> {
        if !head.expect_continue {
            return Ok(());
        }
        self.send_continue().await.map_err(|_| BodyError::Gone)
    }
}
