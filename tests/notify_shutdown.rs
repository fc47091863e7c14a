//! SIGTERM gives the outbox a short grace to deliver what is queued before nexus exits.

mod common;
mod notify_support;

use std::time::Duration;

use common::oauth::{wait_for, Latch};
use common::*;
use notify_support::*;

/// Whether process `pid` has exited (gone, or a zombie waiting to be reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn queued_events_are_delivered_before_exit() {
    // No delivery can finish before nexus starts its flush: the endpoint answers only once
    // the test opens the latch, after nexus has said it is delivering the queued events.
    // A worker delivers 4 at once, so 8 of the 12 are queued and 4 in flight until then,
    // however slow or fast the machine.
    let answer = Latch::new();
    let held = answer.clone();
    let telemetry = MockUpstream::start(move |_| {
        held.wait(Duration::from_secs(30));
        MockReply::json(200, "{}")
    });
    let mut rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.workers(1)
            .env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t"))
    });
    const N: usize = 12;
    let mut last_id = String::new();
    {
        let mut client = rig.nexus.client();
        for _ in 0..N {
            let response =
                client.request(&messages_request(tagged_body("json", false, None, "hi")));
            assert_eq!(response.status, 200);
            last_id = id_of(&response);
        }
    }
    // A request's events are queued where its access-log line is written (Report::finish):
    // once the last one's line is out, all 12 events are in the outbox.
    wait_for_log_line(&rig.nexus, &[&last_id]);
    let pid = rig.nexus.pid();
    // SAFETY: signalling the child process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    wait_for_log_line(&rig.nexus, &[&format!("delivering {N} queued")]);
    answer.open();

    telemetry.wait_for_requests(N);
    wait_for(Duration::from_secs(10), "nexus to exit", || {
        exited(pid).then_some(())
    });
    let logs = rig.nexus.logs();
    assert!(!logs.contains("not delivered"), "{logs}");
}
