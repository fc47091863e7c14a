//! What the processes of a fleet share through one PostgreSQL ledger (a throwaway cluster
//! per test, see tests/common/postgres.rs): a named client's budget spent half through
//! each of two processes is enforced as one (issue 21), and a pool member one process
//! rested after a 429 is skipped by the other (issue 20).

mod common;

use std::path::Path;
use std::time::Duration;

use common::fixtures::MESSAGE_TEXT_JSON;
use common::oauth::wait_for;
use common::postgres::Cluster;
use common::*;
use serde_json::{json, Value};

/// Tokens of every kind the JSON fixture's usage names.
const FIXTURE_TOKENS: u64 = 57 + 11 + 1024 + 19;

fn nexus_on(cluster: &Cluster, mock: &MockUpstream, dir: &Path, env: &[(&str, String)]) -> Nexus {
    let mut builder = Nexus::builder()
        .upstream(&mock.url())
        .credentials_dir(dir)
        .env("NEXUS_DB", cluster.url());
    for (name, value) in env {
        builder = builder.env(name, value.clone());
    }
    builder.start()
}

fn messages(key: Option<&str>, session: &str) -> Request {
    let mut request = Request::post("/v1/messages")
        .header("anthropic-version", "2023-06-01")
        .header("x-claude-code-session-id", session)
        .json(
            json!({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        );
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request
}

fn token_stats(nexus: &Nexus) -> Value {
    nexus.request(&Request::get("/token-stats")).json()
}

/// What client `name`'s first budget counts as spent on `nexus` (its own and the fleet's).
fn spent(nexus: &Nexus, name: &str) -> u64 {
    token_stats(nexus)["clients"][name]["budgets"][0]["spent"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_for_spent(nexus: &Nexus, name: &str, tokens: u64) {
    wait_for(Duration::from_secs(20), "the fleet's spend", || {
        (spent(nexus, name) == tokens).then_some(())
    });
}

#[test]
fn a_budget_spent_half_through_each_of_two_processes_is_enforced_as_one() {
    let cluster = Cluster::start();
    let mock = MockUpstream::start(|_| MockReply::json(200, MESSAGE_TEXT_JSON));
    let dir = TempDir::new("fleet-clients");
    let clients = dir.path().join("clients.json");
    // Four requests' tokens pass the budget; three do not.
    let budget = 4 * FIXTURE_TOKENS - 1;
    std::fs::write(
        &clients,
        json!({"clients": [
            {"name": "team", "key": "nx-team", "budget": {"tokens": {"day": budget}}},
            {"name": "other", "key": "nx-other", "budget": {"tokens": {"day": budget}}}
        ]})
        .to_string(),
    )
    .unwrap();
    let env = [
        ("CLIENTS_FILE", clients.display().to_string()),
        ("CLAUDE_API_KEY", "sk-ant-api03-fleet-own".to_string()),
    ];
    let first = nexus_on(&cluster, &mock, dir.path(), &env);
    let second = nexus_on(&cluster, &mock, dir.path(), &env);

    for i in 0..2 {
        let answer = first.request(&messages(Some("nx-team"), &format!("a{i}")));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // The second process counts the first's spend once its rows are in the database.
    wait_for_spent(&second, "team", 2 * FIXTURE_TOKENS);
    for i in 0..2 {
        let answer = second.request(&messages(Some("nx-team"), &format!("b{i}")));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // A request's spend counts just after its last byte went out (the overshoot the
    // README names): wait for it, as a client that read the answer would.
    wait_for_spent(&second, "team", 4 * FIXTURE_TOKENS);
    let refused = second.request(&messages(Some("nx-team"), "b-over"));
    assert_eq!(refused.status, 429, "{}", refused.text());

    // The first process spent only half the budget itself; the fleet's half refuses it.
    wait_for_spent(&first, "team", 4 * FIXTURE_TOKENS);
    let refused = first.request(&messages(Some("nx-team"), "a-over"));
    assert_eq!(refused.status, 429, "{}", refused.text());
    let error = refused.json();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("team"), "{message}");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        mock.requests().len(),
        4,
        "nothing of a refused request went upstream"
    );
    // Another client's budget is its own.
    let answer = first.request(&messages(Some("nx-other"), "o"));
    assert_eq!(answer.status, 200, "{}", answer.text());

    // A process started again reads back what every process spent, its own earlier self's
    // included.
    let mut first = first;
    first.terminate(Duration::from_secs(15));
    let restarted = nexus_on(&cluster, &mock, dir.path(), &env);
    wait_for_spent(&restarted, "team", 4 * FIXTURE_TOKENS);
    let refused = restarted.request(&messages(Some("nx-team"), "c-over"));
    assert_eq!(refused.status, 429, "{}", refused.text());
}

const DOMAIN: &str = "pool.example.com";
const KEY_A: &str = "sk-ant-api03-member-a-0123456789";
const KEY_B: &str = "sk-ant-api03-member-b-0123456789";

#[test]
fn a_member_one_process_rested_is_skipped_by_the_other() {
    let cluster = Cluster::start();
    let mock = MockUpstream::start(|request| match request.headers.get("x-api-key") {
        Some(KEY_A) => MockReply::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        )
        .header("retry-after", "60"),
        _ => MockReply::json(200, MESSAGE_TEXT_JSON),
    });
    let dir = TempDir::new("fleet-pool");
    let pool = json!({"type": "pool", "credentials": [
        {"id": "a", "type": "api_key", "api_key": KEY_A},
        {"id": "b", "type": "api_key", "api_key": KEY_B}
    ]});
    std::fs::write(
        dir.path().join(format!("{DOMAIN}.credentials.json")),
        pool.to_string(),
    )
    .unwrap();
    let first = nexus_on(&cluster, &mock, dir.path(), &[]);
    let second = nexus_on(&cluster, &mock, dir.path(), &[]);
    let sent_with_a = || {
        mock.requests()
            .iter()
            .filter(|r| r.headers.get("x-api-key") == Some(KEY_A))
            .count()
    };

    // The first new conversation goes to the first member: a answers 429, b serves.
    let answer = first.request(&messages(None, "one").host(DOMAIN));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(sent_with_a(), 1);

    // The second process hears of a's rest through the ledger.
    wait_for(
        Duration::from_secs(20),
        "the second process resting a",
        || {
            second
                .logs()
                .contains("member a cools down for")
                .then_some(())
        },
    );

    // Its new conversations all go to b: a is never tried again.
    for i in 0..4 {
        let answer = second.request(&messages(None, &format!("two-{i}")).host(DOMAIN));
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(
        sent_with_a(),
        1,
        "the second process skipped the rested member"
    );
    let members = |nexus: &Nexus| token_stats(nexus)["stats"][DOMAIN]["credentials"].clone();
    let (here, there) = (members(&second), members(&first));
    assert_eq!(here["b"]["requestCount"], 4);
    assert_eq!(here["a"]["requestCount"], 0);
    assert_eq!(here["a"]["state"], "cooling", "{here}");
    assert_eq!(
        here["a"]["cooldownUntil"], there["a"]["cooldownUntil"],
        "the rest ends when the first process's does"
    );
}
