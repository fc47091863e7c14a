//! A worker's outbox: one bounded queue per sink, drained by tasks on the worker's own
//! runtime. Pushing never waits and never fails the request: a full queue drops the event
//! and counts it. Delivery is retried a bounded number of times with backoff, then the
//! event is dropped and counted too.
//!
//! Single-threaded (one outbox per worker), so a `RefCell` queue and a stored waker are
//! all the synchronisation it needs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::endpoint::Endpoint;
use super::slack;
use super::telemetry::TelemetryEvent;
use super::Hub;
use crate::client::{Client, RequestHead};
use crate::credentials::DomainEntry;
use crate::ledger::{self, Row, RowBatch};
use crate::request_id::RequestId;

/// Deliveries in flight at once per worker: telemetry in parallel, Slack one at a time so
/// a conversation's messages arrive in order (Slack allows a message a second anyway).
const TELEMETRY_PARALLEL: usize = 4;
const SLACK_PARALLEL: usize = 1;
/// Tries per event, the pauses between them, and the bound on each.
const ATTEMPTS: usize = 3;
const BACKOFF: [Duration; ATTEMPTS - 1] = [Duration::from_millis(500), Duration::from_secs(2)];
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Response bodies are read and forgotten; one longer than this closes the connection.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Where an event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Telemetry,
    Slack,
}

impl Sink {
    /// The `sink` label in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Sink::Telemetry => "telemetry",
            Sink::Slack => "slack",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A Slack message: its text is composed when queued (a few KiB at most, however long the
/// reply was), its settings are read when it is sent.
pub struct SlackJob {
    pub request_id: RequestId,
    /// The domain's credential entry (its `slack` block), if it has a file.
    pub domain: Option<Arc<DomainEntry>>,
    /// The named client the request came from, named beside the request id.
    pub client: Option<Arc<str>>,
    pub text: String,
}

/// One queued event.
pub enum Job {
    Telemetry(Box<TelemetryEvent>),
    Slack(Box<SlackJob>),
}

impl Job {
    fn sink(&self) -> Sink {
        match self {
            Job::Telemetry(_) => Sink::Telemetry,
            Job::Slack(_) => Sink::Slack,
        }
    }
}

struct Queue {
    jobs: RefCell<VecDeque<Job>>,
    parallel: usize,
    in_flight: Cell<usize>,
    waker: Cell<Option<Waker>>,
}

impl Queue {
    fn new(parallel: usize) -> Queue {
        Queue {
            jobs: RefCell::new(VecDeque::new()),
            parallel,
            in_flight: Cell::new(0),
            waker: Cell::new(None),
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Ready when a job is queued and a delivery slot is free.
struct NextJob<'a>(&'a Queue);

impl Future for NextJob<'_> {
    type Output = Job;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Job> {
        let queue = self.0;
        if queue.in_flight.get() < queue.parallel {
            if let Some(job) = queue.jobs.borrow_mut().pop_front() {
                return Poll::Ready(job);
            }
        }
        queue.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// One worker's outbox.
pub struct Outbox {
    hub: Arc<Hub>,
    /// Webhook connections, kept alive per origin.
    client: Client,
    queues: [Queue; 2],
    /// Ledger rows on their way to the writer thread.
    rows: RowBatch,
}

impl Outbox {
    /// An outbox for the current worker; call [`Outbox::start`] on its runtime.
    pub fn new(hub: Arc<Hub>) -> Rc<Outbox> {
        Rc::new(Outbox {
            client: Client::new(Arc::clone(&hub.tls)),
            rows: RowBatch::new(Arc::clone(&hub.ledger)),
            hub,
            queues: [Queue::new(TELEMETRY_PARALLEL), Queue::new(SLACK_PARALLEL)],
        })
    }

    /// Spawns the drain tasks on the current runtime.
    pub fn start(self: &Rc<Self>) {
        for sink in [Sink::Telemetry, Sink::Slack] {
            monoio::spawn(Rc::clone(self).drain(sink));
        }
        if self.hub.ledger.enabled() {
            monoio::spawn(Rc::clone(self).hand_over_rows());
        }
    }

    /// Keeps a finished request's ledger row; it reaches the writer within
    /// [`ledger::HANDOFF_EVERY`].
    pub fn record_row(&self, row: Row) {
        self.rows.record(row);
    }

    async fn hand_over_rows(self: Rc<Self>) {
        loop {
            monoio::time::sleep(ledger::HANDOFF_EVERY).await;
            self.rows.hand_over();
        }
    }

    /// What all workers share.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Queues an event; never waits. A full queue drops it (counted, logged once a minute).
    pub fn push(&self, job: Job) {
        let sink = job.sink();
        let queue = &self.queues[sink.index()];
        {
            let mut jobs = queue.jobs.borrow_mut();
            if jobs.len() >= self.hub.queue_cap {
                drop(jobs);
                self.hub.dropped(
                    sink,
                    &format!(
                        "its queue is full (NEXUS_NOTIFY_QUEUE={} per worker)",
                        self.hub.queue_cap
                    ),
                );
                return;
            }
            jobs.push_back(job);
        }
        self.hub.pending_add();
        queue.wake();
    }

    async fn drain(self: Rc<Self>, sink: Sink) {
        loop {
            let job = NextJob(&self.queues[sink.index()]).await;
            let queue = &self.queues[sink.index()];
            queue.in_flight.set(queue.in_flight.get() + 1);
            monoio::spawn(Rc::clone(&self).deliver(job));
        }
    }

    async fn deliver(self: Rc<Self>, job: Job) {
        let sink = job.sink();
        if let Some((endpoint, body)) = self.request(job) {
            if let Err(why) = self.post_with_retries(&endpoint, &body).await {
                self.hub
                    .dropped(sink, &format!("delivery to {endpoint} failed: {why}"));
            }
        }
        let queue = &self.queues[sink.index()];
        queue.in_flight.set(queue.in_flight.get() - 1);
        self.hub.pending_done();
        queue.wake();
    }

    /// Where the job goes and what it says; `None` when there is nothing to send.
    fn request(&self, job: Job) -> Option<(Arc<Endpoint>, Vec<u8>)> {
        match job {
            Job::Telemetry(event) => {
                Some((Arc::clone(self.hub.telemetry.as_ref()?), event.to_json()))
            }
            Job::Slack(job) => {
                let domain = job.domain.as_ref().and_then(|d| d.file.slack.as_ref());
                // Settings are read now: a credential file may have changed meanwhile.
                let settings = slack::settings(domain, &self.hub.slack)?;
                let endpoint = match self.hub.slack_endpoint(settings.webhook_url) {
                    Ok(endpoint) => endpoint,
                    Err(why) => {
                        self.hub.dropped(
                            Sink::Slack,
                            &format!("the webhook URL is invalid: expected {why}"),
                        );
                        return None;
                    }
                };
                Some((
                    endpoint,
                    slack::payload(&job.text, &job.request_id, job.client.as_deref(), &settings),
                ))
            }
        }
    }

    async fn post_with_retries(&self, endpoint: &Endpoint, body: &[u8]) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                monoio::time::sleep(BACKOFF[attempt - 1]).await;
            }
            let posted = monoio::time::timeout(ATTEMPT_TIMEOUT, self.post(endpoint, body)).await;
            match posted {
                Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
                Ok(Ok(status)) => {
                    last = format!("HTTP {status}");
                    // Only overload and timeouts are worth a second try; a 4xx will be
                    // refused again.
                    if !(status >= 500 || status == 408 || status == 429) {
                        break;
                    }
                }
                Ok(Err(why)) => last = why,
                Err(_) => last = format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
            }
        }
        Err(last)
    }

    /// POSTs `body` as JSON; the answer's status, or why there was none. The answer's
    /// body is read to its end (so the connection can carry the next event) and ignored:
    /// once a status came back the event was delivered, whatever follows.
    async fn post(&self, endpoint: &Endpoint, body: &[u8]) -> Result<u16, String> {
        let head = RequestHead::post(&endpoint.target).header("content-type", "application/json");
        let (response, answer) = self
            .client
            .send(endpoint.server(), &head, body)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = answer.discard(MAX_ANSWER).await {
            log::debug!("{endpoint}: answered {} but {e}", response.status);
        }
        Ok(response.status)
    }
}
