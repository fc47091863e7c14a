//! A telemetry endpoint and a Slack webhook that take 9 s to answer, or never answer: no
//! request waits for them. A proxy that awaited either before finishing a response would
//! take 9 s (or forever) per request; nexus's stay in milliseconds, its small outbox fills
//! and the drops are counted in `/metrics`.

mod common;
mod notify_support;

use std::thread;
use std::time::{Duration, Instant};

use common::oauth::wait_for;
use common::*;
use notify_support::*;

const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 25;
/// How long the slow webhook takes: under nexus's 10 s bound on one delivery attempt, so
/// its posts do succeed, late.
const WEBHOOK_DELAY: Duration = Duration::from_secs(9);
/// Well under [`WEBHOOK_DELAY`], and seconds of room for a loaded 2-core machine and a
/// debug build (a request takes milliseconds).
const LATENCY_BOUND: Duration = Duration::from_secs(6);

fn requests_stay_fast_while_webhooks_stall(webhook_reply: MockReply) {
    let reply = webhook_reply.clone();
    let telemetry = MockUpstream::start(move |_| reply.clone());
    let slack = MockUpstream::start(move |_| webhook_reply.clone());
    let rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t"))
            .env("SLACK_WEBHOOK_URL", hook_url(&slack, "/services/T0/B0/X"))
            .env("NEXUS_NOTIFY_QUEUE", "4")
    });

    let started = Instant::now();
    let latencies: Vec<Duration> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let nexus = &rig.nexus;
                s.spawn(move || {
                    let mut client = nexus.client();
                    (0..REQUESTS_PER_CLIENT)
                        .map(|i| {
                            let tag = if i % 2 == 0 { "stream" } else { "json" };
                            let text = format!("client {c} request {i}");
                            let request =
                                messages_request(tagged_body(tag, i % 2 == 0, None, &text));
                            let sent = Instant::now();
                            let response = client.request(&request);
                            let took = sent.elapsed();
                            assert_eq!(response.status, 200, "{}", response.text());
                            took
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert_eq!(latencies.len(), CLIENTS * REQUESTS_PER_CLIENT);
    assert!(
        slowest < LATENCY_BOUND,
        "the slowest of {} requests took {slowest:?} (all took {:?})",
        latencies.len(),
        started.elapsed()
    );

    // The webhooks were tried (delivery runs) but could not keep up: most events dropped.
    telemetry.wait_for_requests(1);
    slack.wait_for_requests(1);
    let (t, s) = wait_for(Duration::from_secs(10), "drops in /metrics", || {
        let counts = (
            dropped(&rig.nexus, "telemetry"),
            dropped(&rig.nexus, "slack"),
        );
        (counts.0 > 0 && counts.1 > 0).then_some(counts)
    });
    // Each worker holds at most 4 queued events and a few in flight per sink; the rest
    // (the bulk of them) must have been dropped.
    let total = (CLIENTS * REQUESTS_PER_CLIENT) as u64;
    assert!(
        t >= total / 2 && t <= total,
        "telemetry drops {t} of {total}"
    );
    assert!(s >= total / 2 && s <= total, "slack drops {s} of {total}");
    let logs = rig.nexus.logs();
    assert!(
        logs.matches("telemetry: dropped").count() == 1
            && logs.matches("slack: dropped").count() == 1,
        "drops are logged once a minute per sink:\n{logs}"
    );
}

#[test]
fn webhooks_that_take_nine_seconds_never_slow_a_request() {
    requests_stay_fast_while_webhooks_stall(MockReply::json(200, "ok").delay(WEBHOOK_DELAY));
}

#[test]
fn webhooks_that_never_answer_never_slow_a_request() {
    requests_stay_fast_while_webhooks_stall(MockReply::never());
}
