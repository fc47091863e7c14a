//! The ledger on PostgreSQL, against a real server (a throwaway cluster per test, see
//! tests/common/postgres.rs): the same rows and sums as on SQLite, kept across a restart;
//! two processes sharing one history; a database that never answers or is stopped mid-run
//! delays no request, and gets its rows once it is back.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::ledger::*;
use common::postgres::Cluster;
use common::*;

fn start(mock: &MockUpstream, db: &str) -> Nexus {
    Nexus::builder()
        .upstream(&mock.url())
        .env("NEXUS_DB", db)
        .start()
}

#[test]
fn every_request_leaves_a_row_that_survives_a_restart() {
    let cluster = Cluster::start();
    let mock = mock();
    let mut nexus = start(&mock, &cluster.url());
    let since = now_ms();
    let sent = traffic(&nexus, "one");
    let waited = wait_for_rows(&nexus, sent.len() as u64, Duration::from_secs(2));
    eprintln!("rows readable {waited:?} after the last response");
    assert_rows(&nexus, &sent, since);
    assert_usage(&nexus, 1);
    assert_split_and_range(&nexus, 1, &sent);

    let sent_two = traffic(&nexus, "two");
    nexus.terminate(Duration::from_secs(15));
    let nexus = start(&mock, &cluster.url());
    assert_rows(&nexus, &sent, since);
    assert_rows(&nexus, &sent_two, since);
    assert_usage(&nexus, 2);

    // The schema is versioned: each migration ran once.
    let versions: Vec<i32> = cluster
        .connect()
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

#[test]
fn two_processes_share_one_history() {
    let cluster = Cluster::start();
    let mock = mock();
    let first = start(&mock, &cluster.url());
    let second = start(&mock, &cluster.url());
    let one = traffic(&first, "first");
    let two = traffic(&second, "second");
    wait_for_rows(&first, one.len() as u64, Duration::from_secs(5));
    wait_for_rows(&second, two.len() as u64, Duration::from_secs(5));
    for nexus in [&first, &second] {
        assert_usage(nexus, 2);
        assert_rows(nexus, &one, 0);
        assert_rows(nexus, &two, 0);
    }
}

/// 200 requests, one connection, timed.
fn timed_requests(nexus: &Nexus, n: usize, tag: &str) -> Duration {
    let mut client = nexus.client();
    let started = Instant::now();
    for i in 0..n {
        let body = format!(
            r#"{{"model":"m","max_tokens":1,"metadata":{{"user_id":"json/{tag}-{i}"}},"messages":[]}}"#
        );
        let response = client.request(&messages_request(body).host(DOMAIN_B));
        assert_eq!(response.status, 200);
    }
    started.elapsed()
}

/// A generous bound: the same requests with the ledger off, three times over, plus half a
/// second. A design that waited on the database would take connect timeouts (seconds)
/// per request here.
fn assert_not_slower(with_db: Duration, baseline: Duration, what: &str) {
    eprintln!("200 requests: {baseline:?} with NEXUS_DB=off, {with_db:?} with {what}");
    assert!(
        with_db < baseline * 3 + Duration::from_millis(500),
        "{what}: {with_db:?} vs {baseline:?} with the ledger off"
    );
}

#[test]
fn a_database_that_never_answers_delays_nothing() {
    let mock = mock();
    let baseline = timed_requests(&start(&mock, "off"), 200, "off");
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://nexus@127.0.0.1:{}/postgres",
        silent.local_addr().unwrap().port()
    );
    let nexus = start(&mock, &url);
    let with_db = timed_requests(&nexus, 200, "silent");
    assert_not_slower(with_db, baseline, "a database that never answers");
    assert_eq!(nexus.metric("nexus_ledger_rows_total"), 0.0);
    assert_eq!(nexus.metric("nexus_ledger_up"), 0.0);
    // The API says so at once rather than hanging a worker.
    let started = Instant::now();
    let (status, _) = api(&nexus, "/api/requests", None);
    assert!(status == 503 || status == 504, "{status}");
    assert!(started.elapsed() < Duration::from_secs(12));
}

#[test]
fn a_database_stopped_mid_run_gets_its_rows_once_back() {
    let mut cluster = Cluster::start();
    let mock = mock();
    let baseline = timed_requests(&start(&mock, "off"), 200, "off");
    let nexus = start(&mock, &cluster.url());
    timed_requests(&nexus, 20, "before");
    wait_for_rows(&nexus, 20, Duration::from_secs(5));

    cluster.stop();
    let with_db = timed_requests(&nexus, 200, "while-stopped");
    assert_not_slower(with_db, baseline, "the database stopped");
    cluster.resume();
    // Held while it was away, written once it is back (reconnect backoff ≤ 5 s).
    wait_for_rows(&nexus, 220, Duration::from_secs(20));
    assert_eq!(nexus.metric("nexus_ledger_dropped_total"), 0.0);
    let count: i64 = cluster
        .connect()
        .query_one("SELECT COUNT(*) FROM requests", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 220);
    assert!(
        nexus.logs().contains("ledger: database"),
        "{}",
        nexus.logs()
    );
}
