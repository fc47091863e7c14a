//! The response body, from the upstream's framing to the client's, scanned for usage on
//! the way. Bytes go to the client from the buffer they were read into; only framing that
//! must change is rewritten (`conn.out`).

use std::io::Write;
use std::ops::Range;
use std::time::Instant;

use super::exchange::{read_append, Answer};
use super::{Outcome, Proxy, ProxyError, COALESCE_LIMIT, RELAY_BUFFER};
use crate::client::Connection as UpstreamConn;
use crate::conn::ClientConn;
use crate::http::chunked::ChunkedDecoder;
use crate::http::digits::{push_content_length, push_hex};
use crate::http::event_stream::{upstream_lost_event, EventReframer, Frame, HEADROOM};
use crate::http::response::ResponseFraming;
use crate::notify::{trace, Report};
use crate::request_id::RequestId;
use crate::stats::{BodyScanner, Meter};

/// How the response body travels: upstream framing (decoder) × client framing (encoder).
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

/// What one round of the relay writes.
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

/// What the relay knows of the request it answers.
pub struct Request<'a> {
    pub id: &'a RequestId,
    pub http10: bool,
    /// The connection closes after this response.
    pub close: bool,
}

/// Relays the response; on success also says whether the upstream connection may carry
/// another request.
pub async fn relay(
    conn: &mut ClientConn,
    proxy: &Proxy,
    answer: &mut Answer,
    request: &Request<'_>,
    meter: &mut Meter<'_>,
    report: &mut Report,
) -> Result<(Outcome, bool), ProxyError> {
    let response = &answer.head;
    report.response_head(response.status);
    let (mut relay, close) = start(
        conn,
        response.framing,
        response.event_stream,
        response.head_len,
        request,
    );
    if report.trace {
        trace::response(request.id, conn.out());
    }
    let mut scanner = scanner(proxy, meter, report, response.event_stream);
    let mut reusable = response.reusable;
    let mut buf = std::mem::take(&mut answer.buf);
    let mut start = response.head_len;
    let mut head_pending = true;
    // The last read filled all the room it had: more is likely waiting upstream.
    let mut read_filled = buf.len() == buf.capacity();
    loop {
        let (emit, done) = relay.step(
            conn,
            &mut buf,
            start,
            &mut scanner,
            &mut reusable,
            head_pending,
        )?;
        if let Some(facts) = scanner.facts() {
            meter.absorb(facts);
        }
        let frame = write(conn, &mut buf, emit, head_pending).await?;
        head_pending = false;
        if done {
            break;
        }
        start = relay.next_read(&mut buf, frame);
        let caught_up =
            matches!(&relay, Relay::Events(events) if events.holds_nothing()) && !read_filled;
        let since = Instant::now();
        let (read, b) = read_more(conn, proxy, &mut answer.upstream, buf, caught_up).await;
        meter.waited_on_upstream(since);
        buf = b;
        let ended = match read {
            Ok(0) => None,
            Ok(_) => {
                read_filled = buf.len() == buf.capacity();
                continue;
            }
            Err(why) => Some(why),
        };
        match stopped(conn, &relay, ended, request.id).await {
            Ok(Stopped::Complete) => break,
            Ok(Stopped::WithErrorEvent) => {
                meter.record.error = true;
                report.response_scanned(scanner, &proxy.scanners);
                proxy.give_buffer(buf);
                return Ok((Outcome { close }, false));
            }
            Err(e) => {
                report.response_scanned(scanner, &proxy.scanners);
                return Err(e);
            }
        }
    }
    proxy.give_buffer(buf);
    finish(
        proxy,
        scanner,
        answer.head.status,
        request.id,
        meter,
        report,
    );
    Ok((Outcome { close }, reusable))
}

/// The usage scanner for this response, capturing its start for the debug trace (and
/// counting or keeping it for the ledger).
fn scanner(
    proxy: &Proxy,
    meter: &Meter<'_>,
    report: &mut Report,
    event_stream: bool,
) -> BodyScanner {
    let mut scanner = BodyScanner::for_response(
        &proxy.scanners,
        meter.record.is_messages,
        event_stream,
        report.wants_text(),
    );
    let trace = (report.trace && !event_stream).then_some(trace::BODY_CHARS * 4);
    report.watch_response(&mut scanner, trace);
    scanner
}

/// Records what a completely relayed response said.
fn finish(
    proxy: &Proxy,
    mut scanner: BodyScanner,
    status: u16,
    request_id: &RequestId,
    meter: &mut Meter<'_>,
    report: &mut Report,
) {
    scanner.finish();
    meter.record.error = status >= 400;
    if let Some(facts) = scanner.facts() {
        meter.absorb(facts);
        // An error event after a 200, or a stream that ended without message_stop.
        meter.record.error |= facts.error_type.is_some() || !facts.complete;
    }
    if let Some((body, total)) = scanner.captured().filter(|_| report.traces_body()) {
        trace::response_body(request_id, body, total);
    }
    report.response_scanned(scanner, &proxy.scanners);
}

/// Chooses the relay for the response's framing and finishes the client's response head
/// in `conn.out` (framing, request id, `connection: close`, blank line).
fn start(
    conn: &mut ClientConn,
    framing: ResponseFraming,
    event_stream: bool,
    head_len: usize,
    request: &Request<'_>,
) -> (Relay, bool) {
    let out = conn.out();
    let relay = match (framing, request.http10) {
        (ResponseFraming::Empty, _) => Relay::Empty,
        (ResponseFraming::Length(n), _) => {
            push_content_length(out, n);
            Relay::Length(n)
        }
        (ResponseFraming::Chunked, false) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            if event_stream {
                Relay::Events(EventReframer::new(head_len))
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
    let close = request.close || matches!(relay, Relay::Dechunk(_) | Relay::UntilClose);
    out.extend_from_slice(b"x-nexus-request-id: ");
    out.extend_from_slice(request.id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (relay, close)
}

impl Relay {
    /// Makes `buf` ready for the next read and says where its fresh bytes will start: an
    /// event stream keeps its held (partial) event; the others start over.
    fn next_read(&mut self, buf: &mut Vec<u8>, written: Option<Frame>) -> usize {
        match (self, written) {
            (Relay::Events(events), Some(frame)) => events.forwarded(buf, &frame),
            (Relay::Events(_), None) => {}
            _ => buf.clear(),
        }
        if buf.capacity() - buf.len() < RELAY_BUFFER / 2 {
            buf.reserve(RELAY_BUFFER);
        }
        buf.len()
    }

    /// Takes the bytes read since `start`: feeds the scanner and says what to write and
    /// whether the body is complete. Clears `reusable` when the upstream sent more than
    /// its framing allows.
    fn step(
        &mut self,
        conn: &mut ClientConn,
        buf: &mut Vec<u8>,
        start: usize,
        scanner: &mut BodyScanner,
        reusable: &mut bool,
        head_pending: bool,
    ) -> Result<(Emit, bool), ProxyError> {
        let fresh = buf.len() - start;
        Ok(match self {
            Relay::Empty => {
                *reusable &= fresh == 0;
                (Emit::Relayed(start..start), true)
            }
            Relay::Length(remaining) => {
                let take = (fresh as u64).min(*remaining) as usize;
                *remaining -= take as u64;
                *reusable &= take == fresh;
                scanner.feed(&buf[start..start + take]);
                (Emit::Relayed(start..start + take), *remaining == 0)
            }
            Relay::Chunked(decoder) => {
                let progress = decoder
                    .feed(&buf[start..], &mut |data| scanner.feed(data))
                    .map_err(ProxyError::UpstreamBody)?;
                // Bytes after the last chunk: the upstream cannot be trusted with more.
                *reusable &= progress.consumed == fresh;
                (
                    Emit::Relayed(start..start + progress.consumed),
                    progress.done,
                )
            }
            Relay::Events(events) => {
                events
                    .absorb(buf, &mut |data| scanner.feed(data))
                    .map_err(ProxyError::UpstreamBody)?;
                *reusable &= !events.trailing_garbage;
                match events.frame(buf) {
                    Some(frame) => (Emit::Frame(frame), events.done()),
                    None => (Emit::Nothing, false),
                }
            }
            Relay::Dechunk(decoder) => {
                if !head_pending {
                    conn.out().clear();
                }
                let out = conn.out();
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
                    conn.out().clear();
                }
                scanner.feed(&buf[start..]);
                if fresh > 0 {
                    push_hex(conn.out(), fresh as u64);
                    conn.out().extend_from_slice(b"\r\n");
                    conn.out().extend_from_slice(&buf[start..]);
                    conn.out().extend_from_slice(b"\r\n");
                }
                (Emit::Rewritten, false)
            }
            Relay::UntilClose => {
                scanner.feed(&buf[start..]);
                (Emit::Relayed(start..buf.len()), false)
            }
        })
    }
}

/// Writes one round to the client; the client head goes out with the first bytes of body
/// (or alone, if none yet). Returns the frame written, for an event stream to move past.
async fn write(
    conn: &mut ClientConn,
    buf: &mut Vec<u8>,
    emit: Emit,
    head_pending: bool,
) -> Result<Option<Frame>, ProxyError> {
    let (range, frame) = match emit {
        Emit::Relayed(range) => (Some(range), None),
        Emit::Frame(frame) => (Some(frame.range.clone()), Some(frame)),
        Emit::Rewritten | Emit::Nothing => (None, None),
    };
    let written = match range {
        Some(range) if head_pending && range.len() <= COALESCE_LIMIT => {
            conn.out().extend_from_slice(&buf[range]);
            conn.write_out().await
        }
        Some(range) => {
            let mut res = if head_pending {
                conn.write_out().await
            } else {
                Ok(())
            };
            if res.is_ok() && !range.is_empty() {
                let (r, b) = conn.write_slice(std::mem::take(buf), range).await;
                *buf = b;
                res = r;
            }
            res
        }
        None if head_pending || !conn.out().is_empty() => conn.write_out().await,
        None => Ok(()),
    };
    written.map_err(|_| ProxyError::ClientGone)?;
    Ok(frame)
}

/// Reads the next upstream bytes after `buf`'s, within the stream idle timeout. `Err`
/// names why the upstream stopped; `Ok(0)` is EOF.
///
/// An event stream that has caught up with its upstream waits for its next event without
/// buffers: the connection's own are let go (`ClientConn::park`) and, over plain TCP, the
/// relay buffer goes back to the worker until the socket is readable, so thousands of
/// open streams share a few buffers. The price is one poll operation per read, and only
/// on streams whose last read came up short, i.e. that trickle.
async fn read_more(
    conn: &mut ClientConn,
    proxy: &Proxy,
    upstream: &mut UpstreamConn,
    buf: Vec<u8>,
    caught_up: bool,
) -> (Result<usize, String>, Vec<u8>) {
    let idle = proxy.shared.config.stream_idle_timeout;
    if caught_up {
        conn.park();
    }
    let deadline = conn.deadline();
    let read = if caught_up && upstream.waits_without_buffer() {
        proxy.give_buffer(buf);
        let wait_and_read = async move {
            if let Err(e) = upstream.readable().await {
                return (Err(e), Vec::new());
            }
            let mut buf = proxy.take_buffer();
            buf.resize(HEADROOM, 0);
            read_append(upstream, buf).await
        };
        deadline.within(idle, wait_and_read).await
    } else {
        deadline.within(idle, read_append(upstream, buf)).await
    };
    match read {
        Ok((res, buf)) => (res.map_err(|e| e.to_string()), buf),
        Err(_) => (
            Err(format!("no data for {}s", idle.as_secs())),
            proxy.take_buffer(),
        ),
    }
}

/// How a response ends when the upstream stopped sending.
enum Stopped {
    /// EOF was the end of a close-delimited body.
    Complete,
    /// An event stream broke off; it was ended with an error event.
    WithErrorEvent,
}

/// The upstream stopped sending (`why`: its error; `None`: EOF). EOF ends close-delimited
/// bodies; for any other framing the upstream broke off: an event stream is ended with
/// an error event, anything else by closing the connection.
async fn stopped(
    conn: &mut ClientConn,
    relay: &Relay,
    why: Option<String>,
    request_id: &RequestId,
) -> Result<Stopped, ProxyError> {
    match (relay, why) {
        (Relay::Rechunk, None) => {
            conn.out().clear();
            conn.out().extend_from_slice(b"0\r\n\r\n");
            conn.write_out().await.map_err(|_| ProxyError::ClientGone)?;
            Ok(Stopped::Complete)
        }
        (Relay::UntilClose, None) => Ok(Stopped::Complete),
        (Relay::Events(_), why) => {
            let why = why.unwrap_or_else(|| "connection closed".into());
            log::warn!(
                "{request_id} upstream stream broke off ({why}); ending it with an error event"
            );
            end_with_error_event(conn, "upstream connection lost").await?;
            Ok(Stopped::WithErrorEvent)
        }
        (_, why) => {
            Err(ProxyError::UpstreamBroke(why.unwrap_or_else(|| {
                "connection closed before the body ended".into()
            })))
        }
    }
}

/// Ends a chunked SSE response with the API-shaped error event and the last chunk.
async fn end_with_error_event(conn: &mut ClientConn, message: &str) -> Result<(), ProxyError> {
    let event = upstream_lost_event(message);
    conn.out().clear();
    let _ = write!(conn.out(), "{:x}\r\n{event}\r\n0\r\n\r\n", event.len());
    conn.write_out().await.map_err(|_| ProxyError::ClientGone)
}
