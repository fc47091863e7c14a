//! SIGTERM gives the outbox a short grace to deliver what is queued before nexus exits.

mod common;
mod notify_support;

use std::time::Duration;

use common::oauth::wait_for;
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
    // Each event takes 300 ms to deliver and a worker delivers 4 at once, so 12 events
    // are still queued when the signal comes; without the grace most would be lost.
    let telemetry =
        MockUpstream::start(|_| MockReply::json(200, "{}").delay(Duration::from_millis(300)));
    let mut rig = Rig::start(Upstream::Plain, upstream_reply, |n| {
        n.workers(1)
            .env("TELEMETRY_ENDPOINT", hook_url(&telemetry, "/t"))
    });
    const N: usize = 12;
    {
        let mut client = rig.nexus.client();
        for _ in 0..N {
            let response =
                client.request(&messages_request(tagged_body("json", false, None, "hi")));
            assert_eq!(response.status, 200);
        }
    }
    let pid = rig.nexus.pid();
    // SAFETY: signalling the child process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);

    telemetry.wait_for_requests(N);
    wait_for(Duration::from_secs(10), "nexus to exit", || {
        exited(pid).then_some(())
    });
    let logs = rig.nexus.logs();
    assert!(logs.contains("delivering"), "{logs}");
    assert!(!logs.contains("not delivered"), "{logs}");
}
