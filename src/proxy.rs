//! The `/v1/*` pipeline: credential → request body → upstream → streamed response.
//!
//! Bytes are relayed as they arrive. The request body reaches the upstream as the client
//! sent it; the response body reaches the client from the same buffer it was read into.
//! nexus owns the framing toward the client, so it always knows where a response ends.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};

use crate::credentials::domain::Domain;
use crate::credentials::{self, CredentialError};
use crate::http::chunked::{ChunkError, ChunkedDecoder};
use crate::http::digits::{push_content_length, push_hex};
use crate::http::error::ErrorReply;
use crate::http::event_stream::{upstream_lost_event, EventReframer, Frame, HEADROOM};
use crate::http::request::{BodyFraming, Method, RequestHead};
use crate::http::response::{
    parse_response, FinalHead, ResponseFraming, ResponseHead, ResponseHeadError,
};
use crate::notify::{trace, Report};
use crate::request_id::RequestId;
use crate::server::connection::ClientConn;
use crate::server::worker::{Worker, RELAY_BUFFER};
use crate::stats::{registry, BodyScanner, Meter};
use crate::upstream::{ConnectError, UpstreamConn};
use crate::usage::classify_request;

/// The API's own request size limit; these bodies are held whole (they are classified).
const BUFFERED_BODY_LIMIT: u64 = 32 * 1024 * 1024;
/// Other `/v1/*` bodies (batches, files) stream through up to this size.
const STREAMED_BODY_LIMIT: u64 = 512 * 1024 * 1024;
/// Body bytes small enough to copy behind a head and send in one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// How a forwarded request ended, when it ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The client connection must close (HTTP/1.0, `Connection: close`, …).
    pub close: bool,
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ProxyError {
    Credential(CredentialError),
    BodyTooLarge(u64),
    BadRequestBody(ChunkError),
    /// The client closed or broke its connection.
    ClientGone,
    /// The client paused sending its body for longer than the body timeout.
    ClientBodyTimeout,
    Connect(ConnectError),
    UpstreamWrite(std::io::Error),
    /// The upstream closed or failed before a complete response head.
    UpstreamRead(String),
    UpstreamTimeout(u64),
    UpstreamHead(ResponseHeadError),
    UpstreamBody(ChunkError),
    /// The upstream failed after the response had started.
    UpstreamBroke(String),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Credential(CredentialError::Missing) => f.write_str("no credential"),
            ProxyError::Credential(e) => write!(f, "{e}"),
            ProxyError::BodyTooLarge(limit) => write!(f, "request body over {limit} bytes"),
            ProxyError::BadRequestBody(e) => write!(f, "request body: {e}"),
            ProxyError::ClientGone => f.write_str("client went away"),
            ProxyError::ClientBodyTimeout => f.write_str("client stopped sending its body"),
            ProxyError::Connect(e) => write!(f, "upstream {e}"),
            ProxyError::UpstreamWrite(e) => write!(f, "sending to upstream failed: {e}"),
            ProxyError::UpstreamRead(e) => write!(f, "upstream {e}"),
            ProxyError::UpstreamTimeout(secs) => write!(f, "no upstream response within {secs}s"),
            ProxyError::UpstreamHead(e) => write!(f, "upstream response head: {e:?}"),
            ProxyError::UpstreamBody(e) => write!(f, "upstream response body: {e}"),
            ProxyError::UpstreamBroke(e) => write!(f, "upstream failed mid-response: {e}"),
        }
    }
}

impl ProxyError {
    /// Maps a failed client body read: a stall is answered (408), anything else means
    /// the client is gone.
    pub fn from_client_read(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::TimedOut => ProxyError::ClientBodyTimeout,
            _ => ProxyError::ClientGone,
        }
    }

    /// The answer the client gets, if the response has not started. `None`: just close.
    pub fn reply(&self, upstream: &str) -> Option<ErrorReply> {
        Some(match self {
            ProxyError::Credential(CredentialError::Missing) => ErrorReply::new(
                401,
                "no API credential: send x-api-key or Authorization, set CLAUDE_API_KEY, \
                 or add <domain>.credentials.json to CREDENTIALS_DIR",
            ),
            ProxyError::Credential(CredentialError::InvalidFile(why)) => {
                ErrorReply::new(500, why.clone())
            }
            // Client key refused (401), credential to renew (401), refresh failed (503).
            ProxyError::Credential(e) => ErrorReply::new(e.status(), e.to_string()),
            ProxyError::BodyTooLarge(limit) => ErrorReply::new(
                413,
                format!("request body is larger than {} MiB", limit / (1024 * 1024)),
            ),
            ProxyError::BadRequestBody(e) => {
                ErrorReply::new(400, format!("malformed request body: {e}"))
            }
            ProxyError::Connect(e) => {
                ErrorReply::new(502, format!("cannot reach upstream {upstream}: {e}"))
            }
            ProxyError::UpstreamWrite(_) | ProxyError::UpstreamRead(_) => ErrorReply::new(
                502,
                format!("upstream {upstream} closed the connection without a response"),
            ),
            ProxyError::UpstreamTimeout(secs) => ErrorReply::new(
                504,
                format!("upstream {upstream} sent no response within {secs}s"),
            ),
            ProxyError::UpstreamHead(_) | ProxyError::UpstreamBody(_) => {
                ErrorReply::new(502, format!("upstream {upstream} sent an invalid response"))
            }
            ProxyError::ClientBodyTimeout => ErrorReply::new(
                408,
                "the request body stopped arriving before it was complete",
            ),
            ProxyError::ClientGone | ProxyError::UpstreamBroke(_) => return None,
        })
    }
}

/// A request body read whole before forwarding.
enum WholeBody {
    /// Still where it was read, in the connection buffer.
    InConnection(Range<usize>),
    /// Decoded from chunked framing.
    Decoded(Vec<u8>),
}

/// Forwards one `/v1/*` request and relays the response. However it ends, the request is
/// metered and its side-channel events (access log, telemetry, Slack) are queued.
pub async fn forward(
    conn: &mut ClientConn,
    worker: &Worker,
    head: &RequestHead,
    request_id: &RequestId,
) -> Result<Outcome, ProxyError> {
    let shared = &worker.shared;
    let domain = head.host.as_deref().map(|host| conn.hosts.domain(host));
    let stats_domain = match domain.as_deref() {
        None => registry::NO_HOST,
        Some(None) => registry::INVALID_HOST,
        Some(Some(d)) => d.name.as_str(),
    };
    let is_messages = head.method == Method::Post && head.path() == "/v1/messages";
    let counters = worker.counters.get(&shared.stats.registry, stats_domain);
    let mut meter = Meter::start(counters, &shared.stats.proxy, is_messages);
    let raw_head = &conn.buf[conn.pos - head.head_len..conn.pos];
    let mut report = Report::start(&worker.outbox, head, raw_head, meter.started());
    if report.trace {
        trace::incoming(request_id, raw_head);
    }
    // A Host that is not a host name never names a file: the request falls through to
    // the client's own key or CLAUDE_API_KEY, and is counted under "invalid-host".
    let domain = domain.as_deref().and_then(Option::as_ref);
    let result = forward_metered(
        conn,
        worker,
        head,
        request_id,
        domain,
        &mut meter,
        &mut report,
    )
    .await;
    report.finish(
        &worker.outbox,
        request_id,
        head,
        stats_domain,
        &meter.record,
        &result,
        &shared.upstream.display,
    );
    result
}

async fn forward_metered(
    conn: &mut ClientConn,
    worker: &Worker,
    head: &RequestHead,
    request_id: &RequestId,
    domain: Option<&Domain>,
    meter: &mut Meter<'_>,
    report: &mut Report,
) -> Result<Outcome, ProxyError> {
    let shared = &worker.shared;
    let is_messages = meter.record.is_messages;
    let config = &shared.config;
    let file_domain = domain.filter(|d| d.may_have_file).map(|d| d.name.as_str());
    let client = credentials::ClientCredentials {
        x_api_key: head.x_api_key.as_deref(),
        authorization: head.authorization.as_deref(),
    };
    // Lock-free lookup; only an OAuth token about to expire waits (async) for its refresh.
    let entry = credentials::ready_entry(
        &shared.credentials,
        &worker.credentials,
        file_domain,
        client,
        &config.client_api_keys,
    )
    .await
    .map_err(ProxyError::Credential)?;
    if is_messages {
        report.choose_slack(&worker.outbox, entry.as_ref());
    }
    let auth = credentials::choose(
        entry.as_ref(),
        client,
        config.claude_api_key.as_deref(),
        &config.client_api_keys,
    )
    .map_err(ProxyError::Credential)?;
    log::debug!("{request_id} credential: {auth}");
    report.credential(&auth);
    credentials::write_auth_headers(
        &mut conn.upstream_head,
        &auth,
        head.anthropic_beta.as_deref(),
    );

    // Messages responses are metered, so the upstream is asked for identity encoding: the
    // scanner then reads the very bytes the client gets. SSE events are small and flushed
    // one by one, so compression would save little on the wire and cost CPU at both ends.
    match head.accept_encoding.as_deref() {
        _ if is_messages => conn
            .upstream_head
            .extend_from_slice(b"accept-encoding: identity\r\n"),
        Some(value) => crate::http::headers::push_header(
            &mut conn.upstream_head,
            b"accept-encoding",
            value.as_bytes(),
        ),
        None => {}
    }
    let path = head.path();
    let buffered = path == "/v1/messages" || path == "/v1/messages/count_tokens";
    let limit = if buffered {
        BUFFERED_BODY_LIMIT
    } else {
        STREAMED_BODY_LIMIT
    };
    if let BodyFraming::Length(n) = head.framing {
        if n > limit {
            return Err(ProxyError::BodyTooLarge(limit));
        }
    }
    let body = if buffered {
        Some(read_whole_body(conn, worker, head, limit).await?)
    } else {
        None
    };
    if is_messages {
        let bytes: &[u8] = match &body {
            Some(WholeBody::InConnection(range)) => &conn.buf[range.clone()],
            Some(WholeBody::Decoded(bytes)) => bytes,
            None => &[],
        };
        if report.trace && !bytes.is_empty() {
            trace::request_body(request_id, bytes);
        }
        let class = classify_request(bytes, report.wants_text());
        meter.classify(class.kind);
        report.class = Some(class);
    }

    let framing_header = &mut conn.upstream_head;
    match (&body, head.framing) {
        (Some(WholeBody::InConnection(range)), _) => {
            push_content_length(framing_header, range.len() as u64)
        }
        (Some(WholeBody::Decoded(bytes)), _) => {
            push_content_length(framing_header, bytes.len() as u64)
        }
        (None, BodyFraming::Length(n)) => push_content_length(framing_header, n),
        (None, BodyFraming::Chunked) => {
            framing_header.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
        (None, BodyFraming::None) if !matches!(head.method, Method::Get | Method::Head) => {
            push_content_length(framing_header, 0)
        }
        (None, BodyFraming::None) => {}
    }
    conn.upstream_head.extend_from_slice(b"\r\n");

    // A small body rides in the same write as the head: one syscall instead of two.
    let body = match body {
        Some(WholeBody::InConnection(range)) if range.len() <= COALESCE_LIMIT => {
            conn.upstream_head.extend_from_slice(&conn.buf[range]);
            Some(WholeBody::Decoded(Vec::new()))
        }
        Some(WholeBody::Decoded(bytes)) if bytes.len() <= COALESCE_LIMIT => {
            conn.upstream_head.extend_from_slice(&bytes);
            Some(WholeBody::Decoded(Vec::new()))
        }
        other => other,
    };
    if report.trace {
        trace::forwarded(request_id, &auth, &conn.upstream_head);
    }

    let mut upstream = send_head(conn, worker, meter).await?;
    match body {
        Some(WholeBody::InConnection(range)) if !range.is_empty() => {
            let (res, slice) = upstream
                .write_all(std::mem::take(&mut conn.buf).slice(range))
                .await;
            conn.buf = slice.into_inner();
            res.map_err(ProxyError::UpstreamWrite)?;
        }
        Some(WholeBody::Decoded(bytes)) if !bytes.is_empty() => {
            upstream
                .write_all(bytes)
                .await
                .0
                .map_err(ProxyError::UpstreamWrite)?;
        }
        Some(_) => {}
        None => relay_request_body(conn, &mut upstream, head, limit).await?,
    }
    // Borrowed, not moved in: an argument moved into an async fn is stored twice in its
    // future (2 × 88 B here), and that future lives as long as the stream does.
    let (outcome, reusable) =
        relay_response(conn, worker, &mut upstream, head, request_id, meter, report).await?;
    if reusable {
        worker.pool.checkin(upstream);
    }
    Ok(outcome)
}

/// Writes the request head on a pooled or new connection. A pooled connection that fails
/// the very first write never delivered a byte, so the request moves to a fresh one;
/// after any byte was accepted nothing is ever re-sent (a POST may already be billing).
async fn send_head(
    conn: &mut ClientConn,
    worker: &Worker,
    meter: &mut Meter<'_>,
) -> Result<UpstreamConn, ProxyError> {
    let proxy_metrics = &worker.shared.stats.proxy;
    let mut pooled = worker.pool.checkout();
    loop {
        let (mut upstream, reused) = match pooled.take() {
            Some(conn) => {
                proxy_metrics
                    .upstream_connections_reused
                    .fetch_add(1, Relaxed);
                (conn, true)
            }
            None => {
                let since = Instant::now();
                // Boxed: the connect future (TLS handshake, timeout) is 2.9 KiB and would
                // otherwise size every connection's task, held for as long as it streams
                // (0.4 KiB less RSS per open stream on W4).
                let opened = Box::pin(worker.pool.connect()).await;
                meter.waited_on_upstream(since);
                proxy_metrics
                    .upstream_connections_opened
                    .fetch_add(1, Relaxed);
                (opened.map_err(ProxyError::Connect)?, false)
            }
        };
        let (res, head) = upstream
            .write(std::mem::take(&mut conn.upstream_head))
            .await;
        match res {
            Ok(n) if n == head.len() => {
                conn.upstream_head = head;
                return Ok(upstream);
            }
            Ok(n) => {
                let (res, rest) = upstream.write_all(head.slice(n..)).await;
                conn.upstream_head = rest.into_inner();
                res.map_err(ProxyError::UpstreamWrite)?;
                return Ok(upstream);
            }
            Err(e) if reused => {
                log::debug!("pooled upstream connection was dead ({e}); using a new one");
                conn.upstream_head = head;
            }
            Err(e) => {
                conn.upstream_head = head;
                return Err(ProxyError::UpstreamWrite(e));
            }
        }
    }
}

/// Reads a `/v1/messages`-style body completely (it is classified before forwarding).
async fn read_whole_body(
    conn: &mut ClientConn,
    worker: &Worker,
    head: &RequestHead,
    limit: u64,
) -> Result<WholeBody, ProxyError> {
    match head.framing {
        BodyFraming::None => Ok(WholeBody::InConnection(conn.pos..conn.pos)),
        BodyFraming::Length(n) => {
            let n = n as usize;
            if conn.available() < n {
                if head.expect_continue {
                    conn.send_continue()
                        .await
                        .map_err(|_| ProxyError::ClientGone)?;
                }
                worker.body_buffers.make_room(&mut conn.buf, conn.pos + n);
                while conn.available() < n {
                    conn.read_body_more(n - conn.available())
                        .await
                        .map_err(ProxyError::from_client_read)?;
                }
            }
            let range = conn.pos..conn.pos + n;
            conn.pos += n;
            conn.body_pending = false;
            Ok(WholeBody::InConnection(range))
        }
        BodyFraming::Chunked => {
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
                if body.len() as u64 > limit {
                    return Err(ProxyError::BodyTooLarge(limit));
                }
                if progress.done {
                    conn.body_pending = false;
                    return Ok(WholeBody::Decoded(body));
                }
                conn.discard_consumed();
                conn.read_body_more(usize::MAX)
                    .await
                    .map_err(ProxyError::from_client_read)?;
            }
        }
    }
}

/// Streams a body that is not held whole (files, batches) to the upstream as it arrives,
/// in the client's own framing.
async fn relay_request_body(
    conn: &mut ClientConn,
    upstream: &mut UpstreamConn,
    head: &RequestHead,
    limit: u64,
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
                if decoded > limit {
                    return Err(ProxyError::BodyTooLarge(limit));
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

/// Reads more upstream bytes after those already in `buf`.
async fn read_append(
    upstream: &mut UpstreamConn,
    buf: Vec<u8>,
) -> (std::io::Result<usize>, Vec<u8>) {
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = upstream.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}

/// Reads the final response head, skipping 1xx interim responses.
async fn read_response_head(
    upstream: &mut UpstreamConn,
    mut buf: Vec<u8>,
    request_was_head: bool,
    client_head: &mut Vec<u8>,
    on_header: &mut dyn FnMut(&str, &[u8]),
) -> Result<(FinalHead, Vec<u8>), ProxyError> {
    loop {
        if !buf.is_empty() {
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
        match res {
            Ok(0) => {
                return Err(ProxyError::UpstreamRead(
                    "closed the connection before responding".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ProxyError::UpstreamRead(e.to_string())),
        }
    }
}

/// How the response body travels from upstream framing to client framing.
enum Relay {
    /// No body.
    Empty,
    /// Content-Length both sides; bytes left.
    Length(u64),
    /// Chunked both sides: the upstream's framing passes through untouched.
    Chunked(ChunkedDecoder),
    /// A chunked event stream to an HTTP/1.1 client: re-framed on event boundaries.
    Events(EventReframer),
    /// Chunked upstream, HTTP/1.0 client: decode, end by closing.
    Dechunk(ChunkedDecoder),
    /// Close-delimited upstream, HTTP/1.1 client: wrap each read in a chunk.
    Rechunk,
    /// Close-delimited both sides.
    UntilClose,
}

/// What one round of the relay loop writes.
enum Emit {
    /// `buf[range]`.
    Relayed(Range<usize>),
    /// A re-framed run of whole events in `buf`.
    Frame(Frame),
    /// `conn.out` (framing was rewritten).
    Rewritten,
    /// Nothing yet (an event is still incomplete).
    Nothing,
}

/// Relays the response; on success also says whether `upstream` may carry another request.
async fn relay_response(
    conn: &mut ClientConn,
    worker: &Worker,
    upstream: &mut UpstreamConn,
    head: &RequestHead,
    request_id: &RequestId,
    meter: &mut Meter<'_>,
    report: &mut Report,
) -> Result<(Outcome, bool), ProxyError> {
    let timeout = worker.shared.config.upstream_timeout;
    let rate_limit = &meter.counters().rate_limit;
    let mut now = None;
    let mut on_header = |name: &str, value: &[u8]| {
        rate_limit.observe(name, value, || {
            *now.get_or_insert_with(crate::stats::now_ms)
        });
    };
    let read_head = read_response_head(
        upstream,
        worker.take_buffer(),
        head.method == Method::Head,
        &mut conn.out,
        &mut on_header,
    );
    let since = Instant::now();
    let head_read = Rc::clone(&conn.deadline).within(timeout, read_head).await;
    meter.waited_on_upstream(since);
    let (response, mut buf) = match head_read {
        Ok(result) => result?,
        Err(_) => return Err(ProxyError::UpstreamTimeout(timeout.as_secs())),
    };
    report.status = Some(response.status);

    let mut close = !head.keep_alive || head.http10 || worker.shared.lifecycle.shutting_down();
    let out = &mut conn.out;
    let mut relay = match (response.framing, head.http10) {
        (ResponseFraming::Empty, _) => Relay::Empty,
        (ResponseFraming::Length(n), _) => {
            push_content_length(out, n);
            Relay::Length(n)
        }
        (ResponseFraming::Chunked, false) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            if response.event_stream {
                Relay::Events(EventReframer::new(response.head_len))
            } else {
                Relay::Chunked(ChunkedDecoder::new())
            }
        }
        (ResponseFraming::Chunked, true) => Relay::Dechunk(ChunkedDecoder::new()),
        (ResponseFraming::UntilClose, false) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Relay::Rechunk
        }
        (ResponseFraming::UntilClose, true) => Relay::UntilClose,
    };
    if matches!(relay, Relay::Dechunk(_) | Relay::UntilClose) {
        close = true;
    }
    out.extend_from_slice(b"x-nexus-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if report.trace {
        trace::response(request_id, &conn.out);
    }

    let mut scanner = BodyScanner::for_response(
        &worker.spare_scanners,
        meter.record.is_messages,
        response.event_stream,
        report.wants_text(),
    );
    if report.trace && !response.event_stream {
        scanner.capture(trace::BODY_CHARS * 4);
    }
    let config = &worker.shared.config;
    let mut reusable = response.reusable;
    let mut start = response.head_len;
    let mut head_pending = true;
    // The last read filled all the room it had: more is likely waiting upstream.
    let mut read_filled = buf.len() == buf.capacity();
    loop {
        let fresh = buf.len() - start;
        let (emit, done) = match &mut relay {
            Relay::Empty => {
                reusable &= fresh == 0;
                (Emit::Relayed(start..start), true)
            }
            Relay::Length(remaining) => {
                let take = (fresh as u64).min(*remaining) as usize;
                *remaining -= take as u64;
                reusable &= take == fresh;
                scanner.feed(&buf[start..start + take]);
                (Emit::Relayed(start..start + take), *remaining == 0)
            }
            Relay::Chunked(decoder) => {
                let progress = decoder
                    .feed(&buf[start..], &mut |data| scanner.feed(data))
                    .map_err(ProxyError::UpstreamBody)?;
                // Bytes after the last chunk: the upstream cannot be trusted with more.
                reusable &= progress.consumed == fresh;
                (
                    Emit::Relayed(start..start + progress.consumed),
                    progress.done,
                )
            }
            Relay::Events(events) => {
                events
                    .absorb(&mut buf, &mut |data| scanner.feed(data))
                    .map_err(ProxyError::UpstreamBody)?;
                reusable &= !events.trailing_garbage;
                match events.frame(&mut buf) {
                    Some(frame) => (Emit::Frame(frame), events.done()),
                    None => (Emit::Nothing, false),
                }
            }
            Relay::Dechunk(decoder) => {
                if !head_pending {
                    conn.out.clear();
                }
                let out = &mut conn.out;
                let progress = decoder
                    .feed(&buf[start..], &mut |data| {
                        out.extend_from_slice(data);
                        scanner.feed(data);
                    })
                    .map_err(ProxyError::UpstreamBody)?;
                (Emit::Rewritten, progress.done)
            }
            Relay::Rechunk => {
                if !head_pending {
                    conn.out.clear();
                }
                scanner.feed(&buf[start..]);
                if fresh > 0 {
                    push_hex(&mut conn.out, fresh as u64);
                    conn.out.extend_from_slice(b"\r\n");
                    conn.out.extend_from_slice(&buf[start..]);
                    conn.out.extend_from_slice(b"\r\n");
                }
                (Emit::Rewritten, false)
            }
            Relay::UntilClose => {
                scanner.feed(&buf[start..]);
                (Emit::Relayed(start..buf.len()), false)
            }
        };
        if let Some(facts) = scanner.facts() {
            meter.absorb(facts);
        }

        // The client head goes out with the first bytes of body (or alone, if none yet).
        let (range, frame) = match emit {
            Emit::Relayed(range) => (Some(range), None),
            Emit::Frame(frame) => (Some(frame.range.clone()), Some(frame)),
            Emit::Rewritten | Emit::Nothing => (None, None),
        };
        conn.response_started = true;
        let written = match range {
            Some(range) if head_pending && range.len() <= COALESCE_LIMIT => {
                conn.out.extend_from_slice(&buf[range]);
                conn.write_out().await
            }
            Some(range) => {
                let mut res = if head_pending {
                    conn.write_out().await
                } else {
                    Ok(())
                };
                if res.is_ok() && !range.is_empty() {
                    let (r, b) = conn.write_slice(buf, range).await;
                    buf = b;
                    res = r;
                }
                res
            }
            None if head_pending || !conn.out.is_empty() => conn.write_out().await,
            None => Ok(()),
        };
        written.map_err(|_| ProxyError::ClientGone)?;
        head_pending = false;
        if done {
            break;
        }

        // Next read: an event stream keeps its held (partial) event; the rest start over.
        match (&mut relay, frame) {
            (Relay::Events(events), Some(frame)) => events.forwarded(&mut buf, &frame),
            (Relay::Events(_), None) => {}
            _ => buf.clear(),
        }
        start = buf.len();
        if buf.capacity() - buf.len() < RELAY_BUFFER / 2 {
            buf.reserve(RELAY_BUFFER);
        }
        // An event stream that has caught up with its upstream waits for its next event
        // without buffers: the connection's own are let go (`ClientConn::park`) and, over
        // plain TCP, the relay buffer goes back to the worker until the socket is readable,
        // so thousands of open streams share a few buffers. Measured on W4 (3000 streams,
        // one 200 B event per 100 ms), these buffers held 11.2 of the 18.3 KiB of RSS per
        // stream: each is mostly empty, but the pages its first bytes sit on are resident.
        // The price is one poll operation per read (~3% more CPU on W4), and only on
        // streams whose last read came up short, i.e. that trickle.
        let caught_up =
            matches!(&relay, Relay::Events(events) if events.holds_nothing()) && !read_filled;
        if caught_up {
            conn.park(&worker.body_buffers);
        }
        let since = Instant::now();
        let deadline = Rc::clone(&conn.deadline);
        let read = if caught_up && upstream.waits_without_buffer() {
            worker.give_buffer(buf);
            let upstream = &mut *upstream;
            let wait_and_read = async move {
                if let Err(e) = upstream.readable().await {
                    return (Err(e), Vec::new());
                }
                let mut buf = worker.take_buffer();
                buf.resize(HEADROOM, 0);
                read_append(upstream, buf).await
            };
            deadline
                .within(config.stream_idle_timeout, wait_and_read)
                .await
        } else {
            deadline
                .within(config.stream_idle_timeout, read_append(upstream, buf))
                .await
        };
        meter.waited_on_upstream(since);
        let ended = match read {
            Ok((Ok(n), b)) if n > 0 => {
                read_filled = b.len() == b.capacity();
                buf = b;
                continue;
            }
            Ok((Ok(_), b)) => {
                buf = b;
                None
            }
            Ok((Err(e), b)) => {
                buf = b;
                Some(e.to_string())
            }
            Err(_) => {
                buf = worker.take_buffer();
                Some(format!(
                    "no data for {}s",
                    config.stream_idle_timeout.as_secs()
                ))
            }
        };
        // EOF ends close-delimited bodies; for any other framing the upstream broke off.
        match (&relay, ended) {
            (Relay::Rechunk, None) => {
                conn.out.clear();
                conn.out.extend_from_slice(b"0\r\n\r\n");
                conn.write_out().await.map_err(|_| ProxyError::ClientGone)?;
                break;
            }
            (Relay::UntilClose, None) => break,
            (Relay::Events(_), why) => {
                let why = why.unwrap_or_else(|| "connection closed".into());
                log::warn!(
                    "{request_id} upstream stream broke off ({why}); ending it with an error event"
                );
                meter.record.error = true;
                report.facts = scanner.take_facts(&worker.spare_scanners);
                end_with_error_event(conn, "upstream connection lost").await?;
                worker.give_buffer(buf);
                return Ok((Outcome { close }, false));
            }
            (_, why) => {
                let why = why.unwrap_or_else(|| "connection closed before the body ended".into());
                report.facts = scanner.take_facts(&worker.spare_scanners);
                return Err(ProxyError::UpstreamBroke(why));
            }
        }
    }
    worker.give_buffer(buf);
    scanner.finish();
    meter.record.error = response.status >= 400;
    if let Some(facts) = scanner.facts() {
        meter.absorb(facts);
        // An error event after a 200, or a stream that ended without message_stop.
        meter.record.error |= facts.error_type.is_some() || !facts.complete;
    }
    if let Some((body, total)) = scanner.captured() {
        trace::response_body(request_id, body, total);
    }
    report.facts = scanner.take_facts(&worker.spare_scanners);
    Ok((Outcome { close }, reusable))
}

/// Ends a chunked SSE response with the API-shaped error event and the last chunk.
async fn end_with_error_event(conn: &mut ClientConn, message: &str) -> Result<(), ProxyError> {
    let event = upstream_lost_event(message);
    conn.out.clear();
    let _ = write!(conn.out, "{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
    conn.write_out().await.map_err(|_| ProxyError::ClientGone)
}
