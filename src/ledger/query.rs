//! The query thread: `/api/*` reads run here, on a connection of their own, so a slow
//! query never holds up a worker. The worker polls for the answer with short async
//! sleeps (as a request waiting for an OAuth refresh does), serving its other
//! connections meanwhile.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::row::Row;
use super::store::{RequestFilter, Store, UsageLine, UsageQuery};
use super::warn::Warner;
use super::writer::unpack;
use crate::config::DbTarget;

/// A question for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Requests(RequestFilter),
    Request(String),
    Usage(UsageQuery),
}

/// Its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Requests(Vec<Row>),
    /// The row and, when kept, its bodies as text.
    Request(Option<Box<Found>>),
    Usage(Vec<UsageLine>),
}

/// One stored request: its row and, when kept, its request and response bodies as text.
pub type Found = (Row, Option<(String, String)>);

/// A query and where its answer goes.
pub struct Job {
    pub query: Query,
    pub reply: Sender<Result<Answer, String>>,
}

/// An answer still to come.
pub struct Pending {
    rx: Receiver<Result<Answer, String>>,
}

/// First poll interval; doubles up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_micros(500);
const POLL_MAX: Duration = Duration::from_millis(20);

impl Pending {
    /// A reply channel and the pending answer it will fill.
    pub fn new() -> (Sender<Result<Answer, String>>, Pending) {
        let (tx, rx) = mpsc::channel();
        (tx, Pending { rx })
    }

    /// Waits (async: the worker serves other connections) up to `within`.
    pub async fn wait(self, within: Duration) -> Result<Answer, String> {
        let deadline = Instant::now() + within;
        let mut poll = POLL_MIN;
        loop {
            match self.rx.try_recv() {
                Ok(answer) => return answer,
                Err(TryRecvError::Disconnected) => {
                    return Err("the ledger's query thread has stopped".into())
                }
                Err(TryRecvError::Empty) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the ledger did not answer within {}s",
                        within.as_secs()
                    ))
                }
                Err(TryRecvError::Empty) => {
                    monoio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_MAX);
                }
            }
        }
    }
}

/// Starts the query thread.
pub fn spawn(target: DbTarget, jobs: Receiver<Job>, warn: Arc<Warner>) {
    std::thread::Builder::new()
        .name("nexus-ledger-query".into())
        .spawn(move || {
            super::yield_to_workers();
            let mut store: Option<Box<dyn Store>> = None;
            for job in jobs {
                if store.is_none() {
                    match super::connect(&target, super::QUERY_PATIENCE) {
                        Ok(s) => store = Some(s),
                        Err(why) => {
                            let target = target.describe();
                            warn.warn(|| {
                                format!("ledger: database {target} unavailable for queries ({why})")
                            });
                            let _ = job
                                .reply
                                .send(Err(format!("ledger database unavailable: {why}")));
                            continue;
                        }
                    }
                }
                let s = store.as_mut().expect("connected above");
                let answer = run(s.as_mut(), &job.query);
                if answer.is_err() {
                    // Reconnect for the next query: the connection may be what failed.
                    store = None;
                }
                let _ = job.reply.send(answer);
            }
        })
        .expect("spawn ledger query thread");
}

fn run(store: &mut dyn Store, query: &Query) -> Result<Answer, String> {
    Ok(match query {
        Query::Requests(filter) => Answer::Requests(store.requests(filter)?),
        Query::Request(id) => Answer::Request(store.request(id)?.map(|(row, bodies)| {
            let text = bodies.map(|b| (unpack(&b.request), unpack(&b.response)));
            Box::new((row, text))
        })),
        Query::Usage(q) => Answer::Usage(store.usage(q)?),
    })
}
