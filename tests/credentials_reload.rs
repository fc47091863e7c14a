//! Hot reload: domain credential files added, changed and deleted while nexus runs take
//! effect within 2 s, with no restart.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::credentials::api_key_file;
use common::oauth::{wait_for, write_credential};
use common::*;

const ENV_KEY: &str = "sk-ant-api03-from-env";
const DOMAIN: &str = "team.example.com";
/// The issue's bound on how soon a file change takes effect.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

fn request() -> Request {
    Request::post("/v1/messages")
        .host(DOMAIN)
        .header("anthropic-version", "2023-06-01")
        .json("{}")
}

/// Sends requests until one reaches the mock with `key`; returns how long that took.
fn time_until_key(rig: &Rig, key: &str) -> Duration {
    let since = Instant::now();
    wait_for(RELOAD_LIMIT * 3, &format!("x-api-key {key}"), || {
        let response = rig.nexus.request(&request());
        assert_eq!(response.status, 200, "body: {}", response.text());
        let seen = rig.mock.requests();
        let last = seen.last().expect("a request reached the mock");
        (last.headers.get_all("x-api-key") == [key]).then_some(())
    });
    since.elapsed()
}

#[test]
fn added_changed_and_deleted_files_take_effect_without_restart() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| n.api_key(ENV_KEY),
    );
    let file = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    assert!(time_until_key(&rig, ENV_KEY) < RELOAD_LIMIT);

    // Added.
    let first = "sk-ant-api03-added-while-running";
    write_credential(&file, &serde_json::from_str(&api_key_file(first)).unwrap());
    let took = time_until_key(&rig, first);
    assert!(took <= RELOAD_LIMIT, "new file took {took:?}");

    // Changed in place (same length, plain write: no rename, same inode).
    let second = "sk-ant-api03-changed-in-place-xy";
    assert_eq!(first.len(), second.len());
    std::fs::write(&file, api_key_file(second)).unwrap();
    let took = time_until_key(&rig, second);
    assert!(took <= RELOAD_LIMIT, "changed file took {took:?}");

    // Deleted: back to the next rule (CLAUDE_API_KEY).
    std::fs::remove_file(&file).unwrap();
    let took = time_until_key(&rig, ENV_KEY);
    assert!(took <= RELOAD_LIMIT, "deleted file took {took:?}");

    // Deleted with a client key present: the client's own key is next in line.
    let response = rig
        .nexus
        .request(&request().header("x-api-key", CLIENT_KEY));
    assert_eq!(response.status, 200);
    let last = rig.mock.requests().pop().unwrap();
    assert_eq!(last.headers.get_all("x-api-key"), [CLIENT_KEY]);
}

/// `stat`'s view of a file: what a reload that trusts it compares.
fn stat_of(path: &std::path::Path) -> (u64, u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.len(), meta.modified().unwrap())
}

#[test]
fn a_same_size_rewrite_in_place_within_one_mtime_tick_is_used_within_2_s_three_times_in_a_row() {
    let keys = [
        "sk-ant-api03-same-size-rewrite-key-0",
        "sk-ant-api03-same-size-rewrite-key-1",
        "sk-ant-api03-same-size-rewrite-key-2",
        "sk-ant-api03-same-size-rewrite-key-3",
    ];
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.api_key(ENV_KEY)
                .credential(DOMAIN, &api_key_file(keys[0]))
        },
    );
    let file = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    time_until_key(&rig, keys[0]);

    for key in &keys[1..] {
        // nexus has read the previous version (its key went upstream). Rewrite the file in
        // place (truncate + write: same inode, same length), then put its mtime back: that
        // is what a filesystem whose clock ticks once a second shows for a second write
        // within the same second, on any machine however slow. stat sees no change at all.
        let before = stat_of(&file);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .unwrap();
        out.write_all(api_key_file(key).as_bytes()).unwrap();
        out.set_modified(before.2).unwrap();
        drop(out);
        assert_eq!(
            stat_of(&file),
            before,
            "the rewrite must look unchanged to stat"
        );

        let took = time_until_key(&rig, key);
        assert!(took <= RELOAD_LIMIT, "rewrite to {key} took {took:?}");
    }
}

#[test]
fn a_broken_file_is_reported_once_and_answered_with_a_clear_error() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.api_key(ENV_KEY).credential(
                DOMAIN,
                r#"{"type":"api_key","apikey":"sk-ant-api03-typo-in-the-field-name"}"#,
            )
        },
    );
    for _ in 0..5 {
        let response = rig.nexus.request(&request());
        assert_anthropic_error(&response, 500, "api_error");
        let message = response.json()["error"]["message"].to_string();
        assert!(message.contains(DOMAIN), "{message}");
        assert!(message.contains("api_key"), "names the field: {message}");
        assert!(!message.contains("typo-in-the-field"), "{message}");
    }
    assert_no_upstream_contact(&rig.mock);
    let logs = rig.nexus.logs();
    let reports = logs
        .lines()
        .filter(|l| l.contains("is unusable") && l.contains(DOMAIN))
        .count();
    assert_eq!(reports, 1, "logged once, not per request:\n{logs}");
    assert!(!logs.contains("typo-in-the-field"), "{logs}");

    // Fixed: it takes effect like any change.
    let file = rig
        .nexus
        .credentials_dir()
        .join(format!("{DOMAIN}.credentials.json"));
    write_credential(
        &file,
        &serde_json::from_str(&api_key_file("sk-ant-api03-fixed")).unwrap(),
    );
    wait_for(RELOAD_LIMIT * 3, "the fixed file", || {
        (rig.nexus.request(&request()).status == 200).then_some(())
    });
    let last = rig.mock.requests().pop().unwrap();
    assert_eq!(last.headers.get_all("x-api-key"), ["sk-ant-api03-fixed"]);
}

#[test]
fn health_shows_how_many_domains_not_which() {
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| {
            n.credential("secret-customer-one.example.com", &api_key_file("k1"))
                .credential("secret-customer-two.example.com", &api_key_file("k2"))
        },
    );
    let response = rig.nexus.request(&Request::get("/"));
    assert_eq!(response.status, 200);
    let body = response.text();
    assert_eq!(response.json()["config"]["domainCredentials"], 2, "{body}");
    assert!(!body.contains("secret-customer"), "{body}");
}
