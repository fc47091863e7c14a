//! Several nexus processes sharing one credentials directory: one refresh in total, and a
//! credential file that survives SIGKILL at any moment of a refresh.

mod common;

use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::credentials::{
    metric, wait_for_runs, REFRESH_ATTEMPTS, REFRESH_CHECKS, REFRESH_WAITING,
};
use common::oauth::*;
use common::*;
use serde_json::Value;

const DOMAIN: &str = "shared.example.com";

fn request() -> Request {
    Request::post("/v1/messages")
        .host(DOMAIN)
        .header("anthropic-version", "2023-06-01")
        .json("{}")
}

fn start_nexus(dir: &TempDir, upstream: &MockUpstream, token_url: &str) -> Nexus {
    Nexus::builder()
        .upstream(&upstream.url())
        .credentials_dir(dir.path())
        .env("OAUTH_TOKEN_URL", token_url)
        .start()
}

#[test]
fn two_processes_sharing_a_directory_refresh_once_and_both_use_the_new_token() {
    const PER_PROCESS: usize = 20;
    let release = Latch::new();
    let endpoint = {
        let release = release.clone();
        TokenEndpoint::start(move |_, _| {
            release.wait(Duration::from_secs(20));
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), 3600)
        })
    };
    let dir = TempDir::new("shared");
    let file = dir.path().join(format!("{DOMAIN}.credentials.json"));
    write_credential(
        &file,
        &oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 60_000),
    );
    let upstream = MockUpstream::start(|_| MockReply::json(200, "{}"));
    let first = start_nexus(&dir, &upstream, &endpoint.url());
    let second = start_nexus(&dir, &upstream, &endpoint.url());

    // One process holds the lock and its POST is held at the endpoint; the other waits on
    // the lock. Both are under load meanwhile.
    wait_for(Duration::from_secs(10), "one refresh request", || {
        (endpoint.calls() == 1).then_some(())
    });
    wait_for(Duration::from_secs(10), "the other process waiting", || {
        let waiting = [&first, &second]
            .iter()
            .filter(|n| n.logs().contains("another process is refreshing"))
            .count();
        (waiting == 1).then_some(())
    });
    let start = Arc::new(Barrier::new(2 * PER_PROCESS + 1));
    let clients: Vec<_> = [&first, &second]
        .iter()
        .flat_map(|nexus| (0..PER_PROCESS).map(|_| nexus.client()))
        .map(|mut client| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                client.request(&request()).status
            })
        })
        .collect();
    start.wait();
    // Every request has reached its nexus and waits there for the refresh.
    wait_for(Duration::from_secs(30), "every request waiting", || {
        let waiting: i64 = [&first, &second]
            .iter()
            .map(|n| metric(n, REFRESH_WAITING))
            .sum();
        (waiting == 2 * PER_PROCESS as i64).then_some(())
    });
    release.open();

    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let seen = upstream.wait_for_requests(2 * PER_PROCESS);
    assert!(
        seen.iter().all(|r| bearer_of(r) == NEW_ACCESS),
        "every request went with the new token"
    );
    // Both processes keep using it.
    for nexus in [&first, &second] {
        assert_eq!(nexus.request(&request()).status, 200);
        assert_eq!(bearer_of(&upstream.requests().pop().unwrap()), NEW_ACCESS);
    }
    // Whole scheduler passes in both processes, where a second refresh would start if one
    // were due.
    let attempts = [&first, &second].map(|n| metric(n, REFRESH_ATTEMPTS));
    for nexus in [&first, &second] {
        wait_for_runs(nexus, REFRESH_CHECKS, 2);
    }
    assert_eq!(
        [&first, &second].map(|n| metric(n, REFRESH_ATTEMPTS)),
        attempts,
        "no refresh started after the new token"
    );
    assert_eq!(
        endpoint.calls(),
        1,
        "one refresh in total across both processes"
    );
    let logs = format!("{}{}", first.logs(), second.logs());
    assert!(
        logs.contains("already refreshed (by another process)"),
        "the waiting process re-read the file under the lock:\n{logs}"
    );
    let saved = read_credential(&file);
    assert_eq!(saved["oauth"]["accessToken"], NEW_ACCESS);
    assert_eq!(saved["oauth"]["refreshToken"], NEW_REFRESH);
}

/// A small deterministic generator (xorshift), seeded from the clock; the seed is printed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("crash-safety seed: {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_of_a_refresh_never_leaves_a_partial_file() {
    const ROUNDS: usize = 50;
    let rng = Arc::new(Mutex::new(Rng::new()));
    // The endpoint answers after 50–200 ms, widening the window between the POST and the
    // write; the delay of each call is kept so the kill can aim around the write.
    let delays = Arc::new(Mutex::new(Vec::<u64>::new()));
    let endpoint = {
        let (rng, delays) = (Arc::clone(&rng), Arc::clone(&delays));
        TokenEndpoint::start(move |n, _| {
            let delay = 50 + rng.lock().unwrap().below(151);
            delays.lock().unwrap().push(delay);
            token_reply(
                &format!("sk-ant-oat01-new-access-{n:04}-0123456789abcdef"),
                Some(&format!("sk-ant-ort01-new-refresh-{n:04}-0123456789abcdef")),
                3600,
            )
            .delay(Duration::from_millis(delay))
        })
    };
    let upstream = MockUpstream::start(|_| MockReply::json(200, "{}"));
    let dir = TempDir::new("crash");
    let file = dir.path().join(format!("{DOMAIN}.credentials.json"));
    let original = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, now_ms() - 60_000);
    let (mut kept_old, mut took_new) = (0, 0);
    let started = Instant::now();

    for round in 0..ROUNDS {
        write_credential(&file, &original);
        let calls_before = endpoint.calls();
        let mut nexus = Nexus::builder()
            .workers(1)
            .upstream(&upstream.url())
            .credentials_dir(dir.path())
            .env("OAUTH_TOKEN_URL", endpoint.url())
            .start();
        // Spot the POST quickly, then kill somewhere from 20 ms before the answer to 60 ms
        // after it: before the write, during it, or after it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while endpoint.calls() == calls_before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no refresh request"
            );
            thread::sleep(Duration::from_millis(2));
        }
        let delay = *delays.lock().unwrap().last().unwrap();
        let offset = (delay + rng.lock().unwrap().below(81)).saturating_sub(20);
        thread::sleep(Duration::from_millis(offset));
        nexus.kill();

        let saved = read_credential(&file);
        let n = calls_before;
        let new_access = format!("sk-ant-oat01-new-access-{n:04}-0123456789abcdef");
        let new_refresh = format!("sk-ant-ort01-new-refresh-{n:04}-0123456789abcdef");
        if saved == original {
            kept_old += 1;
        } else {
            let expires_at = saved["oauth"]["expiresAt"].clone();
            let mut expected = with_tokens(&original, &new_access, &new_refresh, &expires_at);
            expected["oauth"]["scopes"] =
                Value::from(vec!["user:inference", "user:profile", "org:create_api_key"]);
            assert_eq!(
                saved, expected,
                "round {round}: neither the old nor the new complete credential"
            );
            assert!(expires_at.as_u64().unwrap() > now_ms(), "round {round}");
            took_new += 1;
        }
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: {kept_old} kept the old credential, {took_new} the new one",
        started.elapsed()
    );
    assert_eq!(kept_old + took_new, ROUNDS);
    assert!(kept_old > 0, "no kill landed before the write");
    assert!(took_new > 0, "no kill landed after the write");
}
