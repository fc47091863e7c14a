//! One exchange with the upstream: the request on a pooled or new connection, then the
//! final response head.
//!
//! A request is sent again, on a new connection, only when the upstream provably never
//! read it — a POST may already be billing, so "probably" is not enough:
//! - the connection came from the pool, and
//! - writing to it failed with a reset or a broken pipe, or it was reset before a single
//!   response byte came back (a reset answers bytes that reached a socket its owner had
//!   already closed, or closed with them unread: an upstream closing an idle connection
//!   just as the request arrived), and
//! - the body is still at hand (held whole, or none).
//!
//! A pooled connection idle for a moment is probed before reuse (see `client::pool`);
//! the rule above covers the race that a probe cannot see, the close that crosses the
//! request on the wire. An upstream that just closes (FIN) after reading a request is not
//! retried: it may have acted on it.

use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use monoio::buf::IoBufMut;

use super::{Proxy, ProxyError, RELAY_BUFFER};
use crate::client::Connection as UpstreamConn;
use crate::conn::{ClientConn, HeldBody};
use crate::credentials::verdict::ResponseNotes;
use crate::http::request::{BodyFraming, Method, RequestHead};
use crate::http::response::{parse_response, FinalHead, ResponseHead};
use crate::stats::Meter;

/// The upstream's answer, its head parsed; `buf[head.head_len..]` is the body's start.
pub struct Answer {
    pub upstream: UpstreamConn,
    pub head: FinalHead,
    pub buf: Vec<u8>,
}

/// Sends the request (`conn.upstream_head`, then `body` or the streamed body) and reads
/// the final response head, re-sending only as the module's rule allows. `notes`: a pool
/// member's request, whose response head is also read for what it says of the member.
pub async fn exchange(
    conn: &mut ClientConn,
    proxy: &Proxy,
    head: &RequestHead,
    limit: u64,
    body: &mut Option<HeldBody>,
    meter: &mut Meter<'_>,
    mut notes: Option<&mut ResponseNotes>,
) -> Result<Answer, ProxyError> {
    let mut pooled = proxy.pool.checkout();
    loop {
        let reused = pooled.is_some();
        let mut upstream = connection(pooled.take(), proxy, meter).await?;
        let result = match send(conn, &mut upstream, head, limit, body).await {
            Ok(()) => {
                read_head(
                    conn,
                    proxy,
                    &mut upstream,
                    head,
                    meter,
                    notes.as_deref_mut(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((response, buf)) => {
                return Ok(Answer {
                    upstream,
                    head: response,
                    buf,
                })
            }
            Err(e)
                if reused
                    && never_read(&e)
                    && (body.is_some() || head.framing == BodyFraming::None) =>
            {
                log::debug!("pooled upstream connection was closed ({e}); sending on a new one");
                proxy
                    .shared
                    .stats
                    .proxy
                    .upstream_retries
                    .fetch_add(1, Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the failure shows the upstream never read the request (the module's rule).
fn never_read(e: &ProxyError) -> bool {
    match e {
        ProxyError::UpstreamReset => true,
        ProxyError::UpstreamWrite(e) => {
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
        }
        _ => false,
    }
}

/// The pooled connection, or a new one.
async fn connection(
    pooled: Option<UpstreamConn>,
    proxy: &Proxy,
    meter: &mut Meter<'_>,
) -> Result<UpstreamConn, ProxyError> {
    let metrics = &proxy.shared.stats.proxy;
    if let Some(conn) = pooled {
        metrics.upstream_connections_reused.fetch_add(1, Relaxed);
        return Ok(conn);
    }
    let since = Instant::now();
    // Boxed: the connect future (TLS handshake, timeout) is 2.9 KiB and would otherwise
    // size every connection's task, held for as long as it streams.
    let opened = Box::pin(proxy.pool.connect()).await;
    meter.waited_on_upstream(since);
    metrics.upstream_connections_opened.fetch_add(1, Relaxed);
    opened.map_err(ProxyError::Connect)
}

/// Writes the head and the body.
async fn send(
    conn: &mut ClientConn,
    upstream: &mut UpstreamConn,
    head: &RequestHead,
    limit: u64,
    body: &mut Option<HeldBody>,
) -> Result<(), ProxyError> {
    let (res, written) = upstream
        .write_all(std::mem::take(conn.upstream_head()))
        .await;
    *conn.upstream_head() = written;
    res.map_err(ProxyError::UpstreamWrite)?;
    let sent = match body {
        Some(held) => conn.send_held(held, upstream).await,
        None => conn.stream_body(head, limit, upstream).await,
    };
    Ok(sent?)
}

/// Reads the final response head within the upstream timeout, noting rate-limit headers
/// and writing the client's response head into `conn.out` as it parses.
async fn read_head(
    conn: &mut ClientConn,
    proxy: &Proxy,
    upstream: &mut UpstreamConn,
    head: &RequestHead,
    meter: &mut Meter<'_>,
    mut notes: Option<&mut ResponseNotes>,
) -> Result<(FinalHead, Vec<u8>), ProxyError> {
    let timeout = proxy.shared.config.upstream_timeout;
    let deadline = conn.deadline();
    let rate_limit = &meter.counters().rate_limit;
    let mut now = None;
    let mut on_header = |name: &str, value: &[u8]| {
        rate_limit.observe(name, value, || {
            *now.get_or_insert_with(crate::stats::now_ms)
        });
        if let Some(notes) = notes.as_deref_mut() {
            notes.header(name, value);
        }
    };
    let read = read_final_head(
        upstream,
        proxy.take_buffer(),
        head.method == Method::Head,
        conn.out(),
        &mut on_header,
    );
    let since = Instant::now();
    let read = deadline.within(timeout, read).await;
    meter.waited_on_upstream(since);
    match read {
        Ok(result) => result,
        Err(_) => Err(ProxyError::UpstreamTimeout(timeout.as_secs())),
    }
}

/// Reads more upstream bytes after those already in `buf`.
pub(super) async fn read_append(
    upstream: &mut UpstreamConn,
    buf: Vec<u8>,
) -> (std::io::Result<usize>, Vec<u8>) {
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = upstream.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}

/// Reads the final response head, skipping 1xx interim responses.
async fn read_final_head(
    upstream: &mut UpstreamConn,
    mut buf: Vec<u8>,
    request_was_head: bool,
    client_head: &mut Vec<u8>,
    on_header: &mut dyn FnMut(&str, &[u8]),
) -> Result<(FinalHead, Vec<u8>), ProxyError> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            match parse_response(&buf, request_was_head, client_head, on_header)
                .map_err(ProxyError::UpstreamHead)?
            {
                Some(ResponseHead::Final(head)) => return Ok((head, buf)),
                Some(ResponseHead::Interim(len)) => {
                    buf.drain(..len);
                    continue;
                }
                None => {}
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(RELAY_BUFFER);
        }
        let (res, b) = read_append(upstream, buf).await;
        buf = b;
        let reset = match &res {
            Ok(0) => upstream.reset_by_peer(),
            Err(e) => e.kind() == ErrorKind::ConnectionReset,
            Ok(_) => continue,
        };
        if reset && !answered {
            return Err(ProxyError::UpstreamReset);
        }
        return Err(ProxyError::UpstreamRead(match res {
            Err(e) => e.to_string(),
            _ => "closed the connection before responding".into(),
        }));
    }
}
