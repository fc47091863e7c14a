//! The ledger on its default engine, SQLite: every proxied request leaves a row with exact
//! fields, readable through `/api/*` within 2 s, kept across a SIGTERM and a restart; the
//! admin key guards the API; a database that is not there at start delays nothing and
//! gets its rows once it appears.

mod common;

use std::time::{Duration, Instant};

use common::ledger::*;
use common::*;
use serde_json::json;

fn start(mock: &MockUpstream, db: &str, extra: &[(&str, &str)]) -> Nexus {
    let mut builder = Nexus::builder().upstream(&mock.url()).env("NEXUS_DB", db);
    for (name, value) in extra {
        builder = builder.env(name, value);
    }
    builder.start()
}

#[test]
fn every_request_leaves_a_row_that_survives_a_restart() {
    let mock = mock();
    let dir = TempDir::new("ledger-sqlite");
    let db = format!("sqlite:{}", dir.path().join("ledger.db").display());
    let mut nexus = start(&mock, &db, &[]);
    let since = now_ms();
    let sent = traffic(&nexus, "one");
    // Readable within 2 s of the last request's end.
    let waited = wait_for_rows(&nexus, sent.len() as u64, Duration::from_secs(2));
    eprintln!("rows readable {waited:?} after the last response");
    assert_rows(&nexus, &sent, since);
    assert_usage(&nexus, 1);
    assert_split_and_range(&nexus, 1, &sent);

    // Filters.
    let (_, a) = api(&nexus, &format!("/api/requests?domain={DOMAIN_A}"), None);
    assert_eq!(a["requests"].as_array().unwrap().len(), 3, "{a}");
    let (_, limited) = api(&nexus, "/api/requests?limit=2", None);
    let limited = limited["requests"].as_array().unwrap().clone();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0]["id"], sent[4].id.as_str(), "newest first");
    let (_, errors) = api(&nexus, "/api/requests?status=429", None);
    assert_eq!(errors["requests"][0]["id"], sent[2].id.as_str(), "{errors}");
    assert_eq!(errors["requests"].as_array().unwrap().len(), 1);
    let (_, by_model) = api(&nexus, &format!("/api/requests?model={MODEL}"), None);
    assert_eq!(
        by_model["requests"].as_array().unwrap().len(),
        3,
        "{by_model}"
    );
    let (status, missing) = api(&nexus, "/api/requests/no-such-id", None);
    assert_eq!(
        (status, &missing["error"]["type"]),
        (404, &json!("not_found_error"))
    );
    let (status, bad) = api(&nexus, "/api/usage?group=week", None);
    assert_eq!(
        (status, &bad["error"]["type"]),
        (400, &json!("invalid_request_error"))
    );

    // Usage by model and by day add up to the same figures.
    let (_, by_model) = api(&nexus, "/api/usage?group=model", None);
    let total: u64 = by_model["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["inputTokens"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 10 + 5 + 8, "{by_model}");
    let (_, by_day) = api(&nexus, "/api/usage?group=day", None);
    let today = &common::ledger::now_iso()[..10];
    assert_eq!(by_day["usage"][0]["key"], today, "{by_day}");
    assert_eq!(by_day["usage"][0]["requestCount"], 5, "{by_day}");

    // A second run, then SIGTERM straight after its last response: every row is written
    // before exit, and a new process on the same file has all of them.
    let sent_two = traffic(&nexus, "two");
    nexus.terminate(Duration::from_secs(15));
    let nexus = start(&mock, &db, &[]);
    assert_rows(&nexus, &sent, since);
    assert_rows(&nexus, &sent_two, since);
    assert_usage(&nexus, 2);
}

#[test]
fn the_admin_key_guards_the_api_the_dashboard_and_the_figures() {
    let mock = mock();
    let dir = TempDir::new("ledger-admin");
    let db = format!("sqlite:{}", dir.path().join("ledger.db").display());
    let key = "nx-admin-0123456789";
    let nexus = start(&mock, &db, &[("NEXUS_ADMIN_KEY", key)]);
    let sent = traffic(&nexus, "admin");
    wait_for_rows_with_key(&nexus, sent.len() as u64, key);
    for path in [
        "/api/requests",
        "/api/usage",
        "/token-stats",
        "/metrics",
        "/dashboard",
    ] {
        for presented in [
            None,
            Some("Bearer wrong".to_string()),
            Some("Bearer nx-admin-012345678".to_string()),
            Some(basic("admin", "nx-admin-012345678")),
            Some(basic(key, "")),
        ] {
            let mut request = Request::get(path);
            if let Some(value) = &presented {
                request = request.header("authorization", value);
            }
            let response = nexus.request(&request);
            assert_anthropic_error(&response, 401, "authentication_error");
            // A browser asks its user for the key, then sends it with every request.
            assert_eq!(
                response.header("www-authenticate"),
                Some(r#"Basic realm="nexus admin", charset="UTF-8""#),
                "{path} {presented:?}"
            );
        }
        let by_bearer =
            nexus.request(&Request::get(path).header("authorization", &format!("Bearer {key}")));
        assert_eq!(by_bearer.status, 200, "{path}: {}", by_bearer.text());
        let by_header = nexus.request(&Request::get(path).header("x-api-key", key));
        assert_eq!(by_header.status, 200, "{path}");
        // The key as a Basic password, whatever the user name (what a browser sends).
        for user in ["admin", ""] {
            let by_basic =
                nexus.request(&Request::get(path).header("authorization", &basic(user, key)));
            assert_eq!(by_basic.status, 200, "{path} as {user:?}");
        }
    }
    let (status, listed) = api(&nexus, "/api/requests", Some(key));
    assert_eq!(status, 200);
    assert_eq!(listed["requests"].as_array().unwrap().len(), sent.len());
    // Health and the proxy itself stay open.
    assert_eq!(nexus.request(&Request::get("/")).status, 200);
}

/// `Authorization: Basic` for `user:password`.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char,
                false => '=',
            });
        }
    }
    out
}

fn wait_for_rows_with_key(nexus: &Nexus, rows: u64, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = nexus
            .request(&Request::get("/metrics").header("x-api-key", key))
            .text();
        let written = common::metrics::value(&text, "nexus_ledger_rows_total").unwrap_or(0.0);
        if written as u64 >= rows {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{written} of {rows} rows written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_ledger_can_be_turned_off() {
    let mock = mock();
    let nexus = start(&mock, "off", &[]);
    let sent = traffic(&nexus, "off");
    assert_eq!(sent.len(), 5);
    let (status, body) = api(&nexus, "/api/requests", None);
    assert_eq!((status, &body["error"]["type"]), (503, &json!("api_error")));
    assert_eq!(nexus.metric("nexus_ledger_rows_total"), 0.0);
    assert!(
        !nexus.credentials_dir().join("nexus.db").exists(),
        "no database file with NEXUS_DB=off"
    );
}

#[test]
fn the_default_is_nexus_db_in_the_working_directory() {
    let mock = mock();
    let nexus = Nexus::builder().upstream(&mock.url()).start();
    let sent = traffic(&nexus, "default");
    wait_for_rows(&nexus, sent.len() as u64, Duration::from_secs(2));
    let file = nexus.credentials_dir().join("nexus.db");
    assert!(file.exists(), "{} missing", file.display());
    let header = std::fs::read(&file).unwrap();
    assert!(header.starts_with(b"SQLite format 3\0"));
    // WAL mode: the write-ahead log sits beside the file while nexus runs.
    assert!(nexus.credentials_dir().join("nexus.db-wal").exists());
}

/// A database that is not there at start (its directory is missing): nexus starts and
/// serves 200 requests as fast as with the ledger off, holds their rows, and writes them
/// all once the directory appears.
#[test]
fn a_database_missing_at_start_delays_nothing_and_gets_its_rows_later() {
    const N: usize = 200;
    let mock = mock();
    let timed = |nexus: &Nexus| -> Duration {
        let mut client = nexus.client();
        let started = Instant::now();
        for i in 0..N {
            let body = format!(
                r#"{{"model":"m","max_tokens":1,"metadata":{{"user_id":"json/{i}"}},"messages":[]}}"#
            );
            let response = client.request(&messages_request(body).host(DOMAIN_B));
            assert_eq!(response.status, 200);
        }
        started.elapsed()
    };
    let off = start(&mock, "off", &[]);
    let baseline = timed(&off);
    drop(off);

    let dir = TempDir::new("ledger-later");
    let later = dir.path().join("later");
    let db = format!("sqlite:{}", later.join("ledger.db").display());
    let nexus = start(&mock, &db, &[]);
    let with_missing_db = timed(&nexus);
    eprintln!("{N} requests: {baseline:?} with NEXUS_DB=off, {with_missing_db:?} with the database missing");
    // Generous: a design that waited on the database even once per request would take
    // seconds here (each attempt to open the file fails, and backoff sleeps).
    assert!(
        with_missing_db < baseline * 3 + Duration::from_millis(500),
        "{with_missing_db:?} vs {baseline:?}"
    );
    assert_eq!(nexus.metric("nexus_ledger_rows_total"), 0.0);
    assert_eq!(nexus.metric("nexus_ledger_up"), 0.0);
    assert!(
        nexus.logs().contains("ledger: database"),
        "a warning says why:\n{}",
        nexus.logs()
    );
    std::fs::create_dir_all(&later).unwrap();
    wait_for_rows(&nexus, N as u64, Duration::from_secs(10));
    assert_eq!(nexus.metric("nexus_ledger_dropped_total"), 0.0);
    let (_, usage) = api(&nexus, "/api/usage?group=domain", None);
    assert_eq!(usage["usage"][0]["requestCount"], N, "{usage}");
}
