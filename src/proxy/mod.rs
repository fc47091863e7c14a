//! The `/v1/*` pipeline, top to bottom: credential → upstream head → request body →
//! exchange with the upstream → streamed response.
//!
//! Bytes are relayed as they arrive. The request body reaches the upstream as the client
//! sent it; the response body reaches the client from the same buffer it was read into.
//! nexus owns the framing toward the client, so it always knows where a response ends.

mod error;
mod exchange;
mod failover;
mod first_event;
mod relay;
mod upstream_head;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

pub use error::ProxyError;
use failover::Served;

use crate::client::Pool;
use crate::clients::client::{Admitted, Used};
use crate::clients::watch::LocalClients;
use crate::conn::{ClientConn, HeldBody};
use crate::credentials::affinity::ConversationKey;
use crate::credentials::{self, domain::Domain, LocalView, Source};
use crate::http::request::{BodyFraming, Method, RequestHead};
use crate::notify::{trace, Outbox, Report};
use crate::request_id::RequestId;
use crate::shared::Shared;
use crate::stats::{registry, LocalCounters, Meter, SpareScanners};
use crate::usage::classify_request;

/// Size of the buffers responses are relayed through.
pub const RELAY_BUFFER: usize = 32 * 1024;
/// Relay buffers a worker keeps for reuse (64 × 32 KiB, at most 2 MiB): with 16, a worker
/// serving 64 connections allocated a fresh buffer for most responses.
const SPARE_BUFFERS: usize = 64;
/// The API's own request size limit; these bodies are held whole.
const HELD_BODY_LIMIT: u64 = 32 * 1024 * 1024;
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

/// The proxy on one worker: what all workers share, and this worker's own upstream pool,
/// caches and buffers (single thread: `Rc`, `RefCell`).
pub struct Proxy {
    /// This worker's index (its shard of the latency histograms).
    worker: usize,
    pub shared: Arc<Shared>,
    pub pool: Rc<Pool>,
    /// Telemetry and Slack events waiting for delivery (drained by tasks on this worker).
    pub outbox: Rc<Outbox>,
    credentials: LocalView,
    clients: LocalClients,
    counters: LocalCounters,
    /// Usage scanners kept for the next metered response.
    scanners: SpareScanners,
    spare_buffers: RefCell<Vec<Vec<u8>>>,
}

impl Proxy {
    /// The proxy of worker `worker`, sending upstream through `pool`.
    pub fn new(worker: usize, shared: Arc<Shared>, pool: Rc<Pool>, outbox: Rc<Outbox>) -> Proxy {
        Proxy {
            worker,
            shared,
            pool,
            outbox,
            credentials: LocalView::default(),
            clients: LocalClients::default(),
            counters: LocalCounters::default(),
            scanners: SpareScanners::default(),
            spare_buffers: RefCell::new(Vec::new()),
        }
    }

    /// An empty relay buffer of [`RELAY_BUFFER`] capacity, reused when possible.
    fn take_buffer(&self) -> Vec<u8> {
        self.spare_buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RELAY_BUFFER))
    }

    /// Hands a relay buffer back for the next request.
    fn give_buffer(&self, mut buf: Vec<u8>) {
        let mut spare = self.spare_buffers.borrow_mut();
        if buf.capacity() == RELAY_BUFFER && spare.len() < SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
    }
}

/// Forwards one `/v1/*` request and relays the response. However it ends, the request is
/// metered and its side-channel events (access log, telemetry, Slack) are queued. `close`:
/// the connection closes after this response (the server is shutting down).
pub async fn forward(
    conn: &mut ClientConn,
    proxy: &Proxy,
    head: &RequestHead,
    request_id: &RequestId,
    close: bool,
) -> Result<Outcome, ProxyError> {
    let shared = &proxy.shared;
    let domain = head.host.as_deref().map(|host| conn.domain(host));
    let stats_domain = match domain.as_deref() {
        None => registry::NO_HOST,
        Some(None) => registry::INVALID_HOST,
        Some(Some(d)) => d.name.as_str(),
    };
    let is_messages = head.method == Method::Post && head.path() == "/v1/messages";
    let counters = proxy.counters.get(&shared.stats.registry, stats_domain);
    let latency = shared.stats.proxy.latency(proxy.worker);
    let mut meter = Meter::start(counters, latency, is_messages);
    let raw_head = conn.raw_head(head);
    let mut report = Report::start(&proxy.outbox, head, raw_head, meter.started());
    if report.trace {
        trace::incoming(request_id, raw_head);
    }
    // A Host that is not a host name never names a file: the request falls through to
    // the client's own key or CLAUDE_API_KEY, and is counted under "invalid-host".
    let domain = domain.as_deref().and_then(Option::as_ref);
    let request = relay::Request {
        id: request_id,
        http10: head.http10,
        close: close || !head.keep_alive || head.http10,
    };
    let mut served = None;
    let mut admitted = None;
    let result = forward_metered(
        conn,
        proxy,
        head,
        &request,
        domain,
        &mut meter,
        &mut report,
        (&mut served, &mut admitted),
    )
    .await;
    let why = result.as_ref().err().map(ToString::to_string);
    let ending = ProxyError::ending(&result, &why, &shared.upstream.display);
    meter.price(&shared.config.pricing, report.model());
    if let Some(served) = &served {
        let r = &meter.record;
        served
            .live()
            .served(r.input_tokens, r.output_tokens, r.cost_picos);
    }
    if let Some(admitted) = admitted {
        admitted.finish(&used(&meter.record), crate::stats::now_ms());
    }
    let duration = meter.stop();
    report.finish(
        &proxy.outbox,
        request_id,
        head,
        stats_domain,
        served.as_ref().map(|served| &served.member().id),
        &meter.record,
        ending,
        duration,
    );
    result
}

#[allow(clippy::too_many_arguments)]
async fn forward_metered(
    conn: &mut ClientConn,
    proxy: &Proxy,
    head: &RequestHead,
    request: &relay::Request<'_>,
    domain: Option<&Domain>,
    meter: &mut Meter<'_>,
    report: &mut Report,
    (served, admitted): (&mut Option<Served>, &mut Option<Admitted>),
) -> Result<Outcome, ProxyError> {
    let shared = &proxy.shared;
    let config = &shared.config;
    let file_domain = domain.filter(|d| d.may_have_file).map(|d| d.name.as_str());
    let client = credentials::ClientCredentials {
        x_api_key: head.x_api_key.as_deref(),
        authorization: head.authorization.as_deref(),
    };
    // A named client's key says who the request is; it is checked, never forwarded.
    let (named_clients, named) = shared
        .clients
        .identify(&proxy.clients, credentials::client_keys::presented(client));
    if let Some(named) = &named {
        report.client = Some(Arc::clone(named.name()));
    }
    let global_keys = credentials::GlobalKeys {
        keys: &config.client_api_keys,
        named_clients,
        named_key: named.is_some(),
    };
    // Lock-free lookup: an atomic load and a hash lookup in this worker's snapshot.
    let entry = file_domain.and_then(|d| shared.credentials.lookup(&proxy.credentials, d));
    if meter.record.is_messages {
        report.choose_slack(&proxy.outbox, entry.as_ref());
    }
    // The client key guard is checked here, before any body is read or anyone waits.
    let source = credentials::choose(entry, client, config.claude_api_key.as_deref(), global_keys)
        .map_err(ProxyError::Credential)?;

    // A conversation's key matters only when there is a member to choose; its header is
    // read now, while the head's bytes are still where they were parsed.
    let session = match &source {
        Source::Pool(entry) if entry.members.len() > 1 => {
            (head.session_id.as_deref().map(str::as_bytes)).and_then(ConversationKey::session)
        }
        _ => None,
    };

    // Messages and count_tokens bodies are held whole: classified, and kept for a re-send.
    let path = head.path();
    let held = path == "/v1/messages" || path == "/v1/messages/count_tokens";
    let limit = if held {
        HELD_BODY_LIMIT
    } else {
        STREAMED_BODY_LIMIT
    };
    if let BodyFraming::Length(n) = head.framing {
        if n > limit {
            return Err(ProxyError::BodyTooLarge(limit));
        }
    }
    let mut share = shared.body_budget.share();
    let mut body = match held {
        true => Some(conn.read_held(head, limit, &mut share).await?),
        false => None,
    };
    if meter.record.is_messages {
        classify(conn, body.as_ref(), request.id, meter, report);
    }
    // A named client's lists and limits, before anything goes upstream.
    if let Some(named) = &named {
        let domain = domain.map_or(registry::INVALID_HOST, |d| d.name.as_str());
        let model = report.class.as_ref().and_then(|c| c.model.as_deref());
        // As of the request's start (its id's time): no clock read of its own.
        *admitted = Some(
            named
                .admit(domain, model, request.id.unix_ms())
                .map_err(ProxyError::Client)?,
        );
    }

    let metered = meter.record.is_messages;
    let mut answer = match source {
        Source::Direct(auth) => {
            log::debug!("{} credential: {auth}", request.id);
            report.credential(&auth);
            upstream_head::finish(conn, head, &auth, body.as_mut(), metered);
            if report.trace {
                trace::forwarded(request.id, &auth, conn.upstream_head());
            }
            exchange::exchange(conn, proxy, head, limit, &mut body, meter, None).await?
        }
        Source::Pool(entry) => {
            let key = session.or_else(|| {
                let user_id = report.class.as_ref()?.user_id.as_deref()?;
                (entry.members.len() > 1).then(|| ConversationKey::user(user_id))?
            });
            let pool = failover::PoolRequest {
                id: request.id,
                domain: file_domain.unwrap_or_default(),
                entry,
                key,
                metered,
            };
            failover::exchange(
                conn, proxy, head, limit, &mut body, meter, report, pool, served,
            )
            .await?
        }
    };
    drop(body);
    let (outcome, reusable) =
        relay::relay(conn, proxy, &mut answer, request, meter, report).await?;
    if reusable {
        proxy.pool.checkin(answer.upstream);
    }
    Ok(outcome)
}

/// What a finished request used, as a named client's budgets count it.
fn used(record: &crate::stats::RequestRecord) -> Used {
    Used {
        input_tokens: record.input_tokens,
        output_tokens: record.output_tokens,
        cache_creation_input_tokens: record.cache_creation_input_tokens,
        cache_read_input_tokens: record.cache_read_input_tokens,
        cost: record.cost(),
    }
}

/// Classifies a Messages request from its body (query evaluation, inference, …).
fn classify(
    conn: &ClientConn,
    body: Option<&HeldBody>,
    request_id: &RequestId,
    meter: &mut Meter<'_>,
    report: &mut Report,
) {
    let bytes = body.map_or(&[][..], |b| conn.held(b));
    if report.trace && !bytes.is_empty() {
        trace::request_body(request_id, bytes);
    }
    report.request_body(bytes);
    let class = classify_request(bytes, report.wants_text());
    meter.classify(class.kind);
    report.class = Some(class);
}
