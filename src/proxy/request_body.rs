//! The request body: held whole (`/v1/messages`, `count_tokens`: classified before it is
//! forwarded, and kept for a re-send), or streamed to the upstream as it arrives.

use monoio::buf::IoBuf;

use super::ProxyError;
use crate::client::Connection as UpstreamConn;
use crate::conn::body_budget::BodyShare;
use crate::conn::ClientConn;
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{BodyFraming, RequestHead};

/// The API's own request size limit; these bodies are held whole.
pub const HELD_BODY_LIMIT: u64 = 32 * 1024 * 1024;
/// Other `/v1/*` bodies (batches, files) stream through up to this size.
pub const STREAMED_BODY_LIMIT: u64 = 512 * 1024 * 1024;
/// Room made at once for a body held whole; a larger one grows as it arrives.
const LARGEST_UP_FRONT: usize = 2 * 1024 * 1024;

/// A request body read whole before forwarding.
pub enum HeldBody {
    /// Still where it was read, in the connection buffer.
    InConnection(std::ops::Range<usize>),
    /// Decoded from chunked framing (or moved behind the head: then empty).
    Decoded(Vec<u8>),
}

impl HeldBody {
    /// The body's bytes.
    pub fn bytes<'a>(&'a self, conn: &'a ClientConn) -> &'a [u8] {
        match self {
            HeldBody::InConnection(range) => &conn.buf[range.clone()],
            HeldBody::Decoded(bytes) => bytes,
        }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        match self {
            HeldBody::InConnection(range) => range.len(),
            HeldBody::Decoded(bytes) => bytes.len(),
        }
    }

    /// Whether it has no bytes (left to send).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the body behind the upstream head in `out`, so both go in one write.
    pub fn append_to(&mut self, conn: &ClientConn, out: &mut Vec<u8>) {
        out.extend_from_slice(self.bytes(conn));
        *self = HeldBody::Decoded(Vec::new());
    }

    /// Writes the body to the upstream; the bytes stay for a re-send.
    pub async fn send(
        &mut self,
        conn: &mut ClientConn,
        upstream: &mut UpstreamConn,
    ) -> Result<(), ProxyError> {
        if self.is_empty() {
            return Ok(());
        }
        let res = match self {
            HeldBody::InConnection(range) => {
                let buf = std::mem::take(&mut conn.buf);
                let (res, slice) = upstream.write_all(buf.slice(range.clone())).await;
                conn.buf = slice.into_inner();
                res
            }
            HeldBody::Decoded(bytes) => {
                let (res, back) = upstream.write_all(std::mem::take(bytes)).await;
                *bytes = back;
                res
            }
        };
        res.map(|_| ()).map_err(ProxyError::UpstreamWrite)
    }
}

/// Reads a body completely, charging the process's body budget as its bytes arrive.
pub async fn read_held(
    conn: &mut ClientConn,
    head: &RequestHead,
    share: &mut BodyShare<'_>,
) -> Result<HeldBody, ProxyError> {
    match head.framing {
        BodyFraming::None => Ok(HeldBody::InConnection(conn.pos..conn.pos)),
        BodyFraming::Length(n) => read_held_length(conn, head, n as usize, share).await,
        BodyFraming::Chunked => read_held_chunked(conn, head, share).await,
    }
}

async fn read_held_length(
    conn: &mut ClientConn,
    head: &RequestHead,
    n: usize,
    share: &mut BodyShare<'_>,
) -> Result<HeldBody, ProxyError> {
    if conn.available() < n {
        if head.expect_continue {
            conn.send_continue()
                .await
                .map_err(|_| ProxyError::ClientGone)?;
        }
        // Room for a body up to the largest kept buffer at once (address space only until
        // bytes arrive); a larger one grows as it arrives.
        conn.make_room(n.min(LARGEST_UP_FRONT));
        while conn.available() < n {
            if !share.cover(conn.available() as u64) {
                return Err(ProxyError::BodyBudget(share.limit()));
            }
            conn.read_body_more(n - conn.available())
                .await
                .map_err(ProxyError::from_client_read)?;
        }
    }
    if !share.cover(n as u64) {
        return Err(ProxyError::BodyBudget(share.limit()));
    }
    let range = conn.pos..conn.pos + n;
    conn.pos += n;
    conn.body_pending = false;
    Ok(HeldBody::InConnection(range))
}

async fn read_held_chunked(
    conn: &mut ClientConn,
    head: &RequestHead,
    share: &mut BodyShare<'_>,
) -> Result<HeldBody, ProxyError> {
    if head.expect_continue && conn.available() == 0 {
        conn.send_continue()
            .await
            .map_err(|_| ProxyError::ClientGone)?;
    }
    let mut body = Vec::new();
    let mut decoder = ChunkedDecoder::new();
    loop {
        let progress = decoder
            .feed(&conn.buf[conn.pos..], &mut |data| {
                body.extend_from_slice(data)
            })
            .map_err(ProxyError::BadRequestBody)?;
        conn.pos += progress.consumed;
        if body.len() as u64 > HELD_BODY_LIMIT {
            return Err(ProxyError::BodyTooLarge(HELD_BODY_LIMIT));
        }
        if !share.cover((body.capacity() + conn.buf.len()) as u64) {
            return Err(ProxyError::BodyBudget(share.limit()));
        }
        if progress.done {
            conn.body_pending = false;
            return Ok(HeldBody::Decoded(body));
        }
        conn.discard_consumed();
        conn.read_body_more(usize::MAX)
            .await
            .map_err(ProxyError::from_client_read)?;
    }
}

/// Streams a body that is not held whole (files, batches) to the upstream as it arrives,
/// in the client's own framing.
pub async fn stream(
    conn: &mut ClientConn,
    upstream: &mut UpstreamConn,
    head: &RequestHead,
) -> Result<(), ProxyError> {
    let mut decoder = match head.framing {
        BodyFraming::None => return Ok(()),
        BodyFraming::Length(_) => None,
        BodyFraming::Chunked => Some(ChunkedDecoder::new()),
    };
    let mut remaining = match head.framing {
        BodyFraming::Length(n) => n,
        _ => u64::MAX,
    };
    if head.expect_continue && conn.available() == 0 {
        conn.send_continue()
            .await
            .map_err(|_| ProxyError::ClientGone)?;
    }
    let mut decoded: u64 = 0;
    loop {
        let available = &conn.buf[conn.pos..];
        let (take, done) = match decoder.as_mut() {
            None => {
                let take = (available.len() as u64).min(remaining) as usize;
                remaining -= take as u64;
                (take, remaining == 0)
            }
            Some(decoder) => {
                let progress = decoder
                    .feed(available, &mut |data| decoded += data.len() as u64)
                    .map_err(ProxyError::BadRequestBody)?;
                if decoded > STREAMED_BODY_LIMIT {
                    return Err(ProxyError::BodyTooLarge(STREAMED_BODY_LIMIT));
                }
                (progress.consumed, progress.done)
            }
        };
        if take > 0 {
            let range = conn.pos..conn.pos + take;
            let (res, slice) = upstream
                .write_all(std::mem::take(&mut conn.buf).slice(range))
                .await;
            conn.buf = slice.into_inner();
            res.map_err(ProxyError::UpstreamWrite)?;
            conn.pos += take;
        }
        if done {
            conn.body_pending = false;
            return Ok(());
        }
        conn.discard_consumed();
        // (Unknown for a chunked body: `remaining` is then u64::MAX.)
        conn.read_body_more(usize::try_from(remaining).unwrap_or(usize::MAX))
            .await
            .map_err(ProxyError::from_client_read)?;
    }
}
