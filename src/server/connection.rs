//! One client connection: read request heads (keep-alive, pipelining), route each request,
//! and turn any error into an Anthropic-shaped answer at this one place.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::tls_accept::{self, Accepted};
use super::worker::Worker;
use crate::conn::deadline::Deadline;
use crate::conn::{ClientConn, ClientStream};
use crate::http::error::{write_error, write_response, ErrorReply};
use crate::http::request::{HeadError, Method, RequestHead};
use crate::notify;
use crate::proxy::{self, ProxyError};
use crate::request_id::RequestId;
use crate::routes::{self, Route};
use crate::tls::Failure;

/// Serves one client connection until it closes, errs, idles out or shutdown ends it.
pub fn serve(stream: TcpStream, worker: Rc<Worker>) -> impl Future<Output = ()> {
    let _ = stream.set_nodelay(true);
    // The connection is built here and lent to `serve_conn`, rather than `stream` being
    // passed to an async fn: an async fn keeps its arguments twice in its future (2 × 80 B
    // for the stream), and this future is held for as long as the connection is open.
    let mut conn = client_conn(
        ClientStream::Plain(stream),
        &worker,
        worker.ticks.deadline(),
    );
    async move { serve_conn(&mut conn, &worker).await }
}

fn client_conn(stream: ClientStream, worker: &Worker, deadline: Rc<Deadline>) -> ClientConn {
    ClientConn::new(
        stream,
        Arc::clone(&worker.shared.config),
        deadline,
        Rc::clone(&worker.body_buffers),
    )
}

/// Serves one connection to the TLS port: handshake first (or a 400 to plain HTTP), then
/// the same request loop as plain connections.
pub async fn serve_tls(stream: TcpStream, worker: Rc<Worker>) {
    let _ = stream.set_nodelay(true);
    let (Some(acceptor), Some(tls)) = (&worker.tls, &worker.shared.tls) else {
        return;
    };
    let deadline = worker.ticks.deadline();
    let accepted = {
        // A handshake holds a descriptor too: it counts against the connection budget.
        let _open = OpenConnection::count(&worker.shared.stats.proxy.open_connections);
        // And shutdown serves a connection it accepted, as it does a plain one (whose
        // request loop counts it busy until its first answer, as it does after this).
        let _busy = worker.shared.lifecycle.busy_guard();
        let limit = worker.shared.config.header_timeout;
        tls_accept::accept(stream, acceptor, &deadline, limit).await
    };
    match accepted {
        Ok(Accepted::Tls(stream, server_name)) => {
            tls.counters.handshake();
            let mut conn = client_conn(ClientStream::from(stream), &worker, deadline);
            conn.set_server_name(server_name);
            serve_conn(&mut conn, &worker).await;
            conn.close().await;
        }
        Ok(Accepted::PlainHttp(stream)) => {
            let mut conn = client_conn(ClientStream::Plain(stream), &worker, deadline);
            refuse_plain_http(&mut conn, &worker).await;
            tls.counters.failed(Failure::PlainHttp);
        }
        Err(why) => {
            log::debug!(
                "TLS client dropped before its first request: {}",
                why.label()
            );
            tls.counters.failed(why);
        }
    }
}

/// Answers plain HTTP on the TLS port with a 400 the client can read. The head is read
/// first: closing with it unread would reset the connection and lose the answer.
async fn refuse_plain_http(conn: &mut ClientConn, worker: &Worker) {
    let mut head = RequestHead::default();
    if let Ok(false) = conn.read_head(true, &mut head).await {
        return;
    }
    let reply = ErrorReply::new(
        400,
        "this port speaks HTTPS: plain HTTP was sent to a TLS listener; use https://",
    );
    let id = worker.request_ids.next();
    log::debug!("{id} plain HTTP on the TLS port");
    write_error(conn.out(), &reply, id.as_str(), true, false);
    let _ = conn.write_out().await;
}

async fn serve_conn(conn: &mut ClientConn, worker: &Worker) {
    let _open = OpenConnection::count(&worker.shared.stats.proxy.open_connections);
    let lifecycle = &worker.shared.lifecycle;
    // A new connection counts as busy until its first request is answered, so shutdown
    // serves connections it has accepted instead of dropping them.
    let mut first_request = Some(lifecycle.busy_guard());
    // One head per connection, refilled by each request (its strings are reused).
    let mut head = RequestHead::default();
    loop {
        match conn.read_head(first_request.is_some(), &mut head).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let reply = match e {
                    HeadError::TooLarge => {
                        ErrorReply::new(431, "request head is larger than 64 KiB")
                    }
                    HeadError::Invalid(why) => ErrorReply::new(400, why),
                    HeadError::Timeout => ErrorReply::new(
                        408,
                        format!(
                            "request head not received within {}s",
                            worker.shared.config.header_timeout.as_secs()
                        ),
                    ),
                };
                let id = worker.request_ids.next();
                log::info!("{id} rejected request head: {}", reply.message);
                write_error(conn.out(), &reply, id.as_str(), true, false);
                let _ = conn.write_out().await;
                return;
            }
        };
        let busy = first_request
            .take()
            .unwrap_or_else(|| lifecycle.busy_guard());
        let keep_alive = handle(conn, worker, &head).await;
        drop(busy);
        if !keep_alive || lifecycle.shutting_down() {
            return;
        }
        conn.recycle();
    }
}

/// Handles one request; returns whether the connection may carry another.
async fn handle(conn: &mut ClientConn, worker: &Worker, head: &RequestHead) -> bool {
    let request_id = worker.request_ids.next();
    conn.begin_request(head);
    if let Some(reply) = misdirected(conn, head) {
        log::info!("{request_id} {}", reply.message);
        let head_only = head.method == Method::Head;
        write_error(conn.out(), &reply, request_id.as_str(), true, head_only);
        let _ = conn.write_out().await;
        return false;
    }

    let result = match routes::route(head) {
        Route::Proxy => {
            let closing = worker.shared.lifecycle.shutting_down();
            proxy::forward(conn, &worker.proxy, head, &request_id, closing).await
        }
        local => answer_locally(conn, worker, head, local, &request_id).await,
    };
    let keep_alive = |conn: &ClientConn| {
        head.keep_alive && !conn.body_pending() && !worker.shared.lifecycle.shutting_down()
    };
    match result {
        Ok(proxy::Outcome { close }) => !close && keep_alive(conn),
        Err(err) => {
            log_failure(&request_id, head, &err);
            if conn.response_started() {
                return false;
            }
            let Some(reply) = err.reply(&worker.shared.upstream.display) else {
                return false;
            };
            let keep = keep_alive(conn);
            let head_only = head.method == Method::Head;
            write_error(conn.out(), &reply, request_id.as_str(), !keep, head_only);
            conn.write_out().await.is_ok() && keep
        }
    }
}

async fn answer_locally(
    conn: &mut ClientConn,
    worker: &Worker,
    head: &RequestHead,
    route: Route,
    request_id: &RequestId,
) -> Result<proxy::Outcome, ProxyError> {
    // Local routes take no body; one that was sent is not read, so the connection closes.
    let close = conn.body_pending() || !head.keep_alive;
    let started = Instant::now();
    let driver = worker.driver.to_string();
    let reply = match route {
        Route::Api => routes::answer_api(&worker.shared, head).await,
        _ => routes::answer(&worker.shared, &driver, head, route),
    };
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    write_response(
        conn.out(),
        reply.status,
        reply.content_type,
        &reply.body,
        request_id.as_str(),
        &headers,
        close,
        head.method == Method::Head,
    );
    let written = conn.write_out().await;
    let raw_head = conn.raw_head(head);
    notify::report::log_local(request_id, head, raw_head, reply.status, started.elapsed());
    written.map_err(|_| ProxyError::ClientGone)?;
    Ok(proxy::Outcome { close })
}

/// 421 when a TLS connection's request names a Host other than the SNI name its
/// handshake chose a certificate for: credentials follow the Host, so a request must not
/// ride another domain's TLS session.
fn misdirected(conn: &ClientConn, head: &RequestHead) -> Option<ErrorReply> {
    let sni = conn.server_name()?;
    // No Host (HTTP/1.0) names no other server: nothing disagrees with the SNI name.
    let host = head.host.as_deref()?;
    if crate::tls::host::host_matches(host, sni) {
        return None;
    }
    Some(ErrorReply::new(
        421,
        format!(
            "misdirected request: Host {host:?} is not the TLS server name {sni:?} this \
             connection was opened for"
        ),
    ))
}

/// Keeps the open-connections gauge right on every exit path.
struct OpenConnection<'a>(&'a AtomicI64);

impl<'a> OpenConnection<'a> {
    fn count(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Relaxed);
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn log_failure(request_id: &RequestId, head: &RequestHead, err: &ProxyError) {
    match err {
        ProxyError::ClientGone => log::debug!("{request_id} {} client went away", head.target),
        _ => log::warn!("{request_id} {} failed: {err}", head.target),
    }
}
