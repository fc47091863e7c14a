//! Per-request accounting that records itself when the request ends, however it ends.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::Latency;
use super::now_ms;
use super::registry::{DomainCounters, RequestRecord};
use crate::cost::{self, Pricing};
use crate::usage::{JsonResponseScanner, RequestKind, ResponseFacts, SseScanner};

/// Accumulates what one request cost; recorded on drop, so an error return, a client
/// leaving or a broken upstream are all counted with what was seen so far.
pub struct Meter<'a> {
    counters: Arc<DomainCounters>,
    latency: &'a Latency,
    started: Instant,
    upstream_wait: Duration,
    /// How long the request took, once [`Meter::stop`] said it ended.
    total: Option<Duration>,
    /// Starts as an error; the success path clears it.
    pub record: RequestRecord,
}

impl<'a> Meter<'a> {
    /// Starts metering a request for the domain `counters` belong to.
    pub fn start(counters: Arc<DomainCounters>, latency: &'a Latency, is_messages: bool) -> Self {
        Meter {
            counters,
            latency,
            started: Instant::now(),
            upstream_wait: Duration::ZERO,
            total: None,
            record: RequestRecord {
                is_messages,
                error: true,
                ..Default::default()
            },
        }
    }

    /// When the request began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The request has ended: how long it took (one clock read for every record of it).
    pub fn stop(&mut self) -> Duration {
        *self.total.get_or_insert_with(|| self.started.elapsed())
    }

    /// The domain's counters.
    pub fn counters(&self) -> &Arc<DomainCounters> {
        &self.counters
    }

    /// Adds time spent waiting on the upstream (connect, response head, body reads).
    pub fn waited_on_upstream(&mut self, since: Instant) {
        self.upstream_wait += since.elapsed();
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        let total = self.total.unwrap_or_else(|| self.started.elapsed());
        self.latency.request_duration.observe(total);
        self.latency
            .proxy_overhead
            .observe(total.saturating_sub(self.upstream_wait));
        self.counters.record(&self.record, now_ms());
    }
}

impl Meter<'_> {
    /// Counts the request's kind (query evaluation / inference) from its classification.
    pub fn classify(&mut self, kind: RequestKind) {
        self.record.query_evaluation = kind == RequestKind::QueryEvaluation;
        self.record.inference = kind == RequestKind::Inference;
    }

    /// Takes the figures seen so far; called as the body streams, so a request that breaks
    /// off is recorded with what it had cost until then.
    pub fn absorb(&mut self, facts: &ResponseFacts) {
        let r = &mut self.record;
        r.input_tokens = facts.usage.input_tokens;
        r.output_tokens = facts.usage.output_tokens;
        r.cache_creation_input_tokens = facts.usage.cache_creation_input_tokens;
        r.cache_read_input_tokens = facts.usage.cache_read_input_tokens;
        r.cache_creation_5m_input_tokens = facts.usage.cache_creation_5m_input_tokens;
        r.cache_creation_1h_input_tokens = facts.usage.cache_creation_1h_input_tokens;
        r.web_search_requests = facts.usage.web_search_requests;
        r.tool_calls = facts.tool_calls as u64;
    }

    /// Prices the request once it has ended, from the model that answered (else the one
    /// the request asked for): what it cost, or that its model has no price. Called before
    /// the side channels read the record and before it is counted (on drop).
    pub fn price(&mut self, pricing: &Pricing, model: Option<&str>) {
        let r = &mut self.record;
        if !r.is_messages {
            return;
        }
        let usage = r.usage();
        match model.and_then(|m| pricing.price(m, &usage)) {
            Some(picos) => {
                r.cost_picos = picos;
                r.unpriced = false;
            }
            None => {
                r.cost_picos = 0;
                r.unpriced = cost::billable(&usage);
            }
        }
    }
}

/// Reads usage off a metered response body as it is relayed, streaming or not.
pub struct BodyScanner {
    scan: Scan,
    /// The start of the body, kept for the `DEBUG=true` trace.
    capture: Option<Capture>,
}

enum Scan {
    /// Not a metered response.
    Off,
    Sse(Box<SseScanner>),
    Json(Box<JsonResponseScanner>),
}

struct Capture {
    bytes: Vec<u8>,
    limit: usize,
    total: u64,
}

/// Scanners kept for reuse by one worker. A scanner is ~1.2 KiB, past the allocator's
/// per-thread cache, and one was allocated and freed per metered response (~0.9% of
/// nexus's CPU on W1, with the allocator's consolidation runs).
#[derive(Default)]
// Boxed on purpose: a scanner moves between this list and a response's BodyScanner as a
// pointer, not as 1.2 KiB copied each way.
#[allow(clippy::vec_box)]
pub struct SpareScanners {
    sse: RefCell<Vec<Box<SseScanner>>>,
    json: RefCell<Vec<Box<JsonResponseScanner>>>,
}

/// Puts a scanner on its spare list, unless the list is full.
#[allow(clippy::vec_box)]
fn keep_spare<T>(spare: &RefCell<Vec<Box<T>>>, scanner: Box<T>) {
    let mut spare = spare.borrow_mut();
    if spare.len() < SPARE_SCANNERS {
        spare.push(scanner);
    }
}

/// Scanners of each kind a worker keeps (at most ~80 KiB each): as many as relay buffers.
const SPARE_SCANNERS: usize = 64;

impl BodyScanner {
    /// The scanner a response needs: only `POST /v1/messages` responses are metered.
    /// `collect_text` also keeps the assistant text and tool inputs (for Slack).
    pub fn for_response(
        spares: &SpareScanners,
        metered: bool,
        event_stream: bool,
        collect_text: bool,
    ) -> Self {
        let scan = match (metered, event_stream) {
            (false, _) => Scan::Off,
            (true, true) => Scan::Sse(match spares.sse.borrow_mut().pop() {
                Some(mut s) => {
                    *s = SseScanner::new(collect_text);
                    s
                }
                None => Box::new(SseScanner::new(collect_text)),
            }),
            (true, false) => Scan::Json(match spares.json.borrow_mut().pop() {
                Some(mut s) => {
                    *s = JsonResponseScanner::new(collect_text);
                    s
                }
                None => Box::new(JsonResponseScanner::new(collect_text)),
            }),
        };
        BodyScanner {
            scan,
            capture: None,
        }
    }

    /// Also keeps the first `limit` bytes of the body (the debug trace shows them).
    pub fn capture(&mut self, limit: usize) {
        self.capture = Some(Capture {
            bytes: Vec::with_capacity(limit.min(4096)),
            limit,
            total: 0,
        });
    }

    /// Feeds body bytes (without transfer framing), in order.
    #[inline]
    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.scan {
            Scan::Off => {}
            Scan::Sse(s) => s.feed(bytes),
            Scan::Json(s) => s.feed(bytes),
        }
        if let Some(c) = &mut self.capture {
            let room = c.limit.saturating_sub(c.bytes.len());
            c.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
            c.total += bytes.len() as u64;
        }
    }

    /// Marks the end of the body (a JSON body is only complete once it has ended).
    pub fn finish(&mut self) {
        if let Scan::Json(s) = &mut self.scan {
            s.finish();
        }
    }

    /// The figures so far.
    pub fn facts(&self) -> Option<&ResponseFacts> {
        match &self.scan {
            Scan::Off => None,
            Scan::Sse(s) => Some(s.facts()),
            Scan::Json(s) => Some(s.facts()),
        }
    }

    /// Takes the facts out and hands the scanner back to `spares`.
    pub fn take_facts(self, spares: &SpareScanners) -> Option<ResponseFacts> {
        match self.scan {
            Scan::Off => None,
            Scan::Sse(mut s) => {
                let facts = s.take_facts();
                keep_spare(&spares.sse, s);
                Some(facts)
            }
            Scan::Json(mut s) => {
                let facts = s.take_facts();
                keep_spare(&spares.json, s);
                Some(facts)
            }
        }
    }

    /// The captured start of the body and the body's whole length so far.
    pub fn captured(&self) -> Option<(&[u8], u64)> {
        self.capture.as_ref().map(|c| (c.bytes.as_slice(), c.total))
    }

    /// Takes the captured start of the body and the body's whole length.
    pub fn take_captured(&mut self) -> Option<(Vec<u8>, u64)> {
        self.capture.take().map(|c| (c.bytes, c.total))
    }
}
