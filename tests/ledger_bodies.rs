//! `NEXUS_STORE_BODIES=true`: request and response bodies kept (compressed), every secret
//! masked as the DEBUG trace masks it, nothing secret anywhere in the database file; and
//! `NEXUS_RETENTION_DAYS` deleting old rows.

mod common;

use std::time::Duration;

use common::ledger::*;
use common::*;
use serde_json::json;

const BODY_SECRET: &str = "sk-ant-api03-BODYSECRETabcdefghijklmnop0123456789";
const FIELD_SECRET: &str = "hunter2-very-secret-password";
const ECHOED_SECRET: &str = "sk-ant-api03-ECHOEDSECRETzyxwvutsrq9876543210";
const HEADER_SECRET: &str = "sk-ant-api03-HEADERSECRETqwertyuiop1122334455";

fn answer(stream: bool) -> MockReply {
    let text = format!("The capital of France is Paris. (You sent {ECHOED_SECRET}.)");
    let usage = json!({"input_tokens": 12, "output_tokens": 9});
    if !stream {
        return MockReply::json(
            200,
            json!({"id": "msg_b", "type": "message", "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": text}], "usage": usage})
            .to_string(),
        );
    }
    let event = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    MockReply::sse(vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s",
            "type": "message", "role": "assistant", "model": MODEL, "content": [], "usage": usage}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        ),
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ])
}

fn request(stream: bool) -> Request {
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
        "password": FIELD_SECRET,
        "messages": [{"role": "user", "content": format!(
            "My key is {BODY_SECRET}. What is the capital of France?")}]});
    Request::post("/v1/messages")
        .header("x-api-key", HEADER_SECRET)
        .header("anthropic-version", "2023-06-01")
        .json(body.to_string())
}

#[test]
fn bodies_are_kept_with_every_secret_masked() {
    let mock = MockUpstream::start(|r| answer(r.json()["stream"] == true));
    let dir = TempDir::new("ledger-bodies");
    let file = dir.path().join("ledger.db");
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .env("NEXUS_DB", format!("sqlite:{}", file.display()))
        .env("NEXUS_STORE_BODIES", "true")
        .start();
    let mut ids = Vec::new();
    for stream in [false, true] {
        let response = nexus.request(&request(stream));
        assert_eq!(response.status, 200, "{}", response.text());
        ids.push(response.header("x-nexus-request-id").unwrap().to_string());
    }
    // The secrets did reach the upstream: nexus relays bodies byte for byte.
    assert!(mock.requests()[0].body_text().contains(BODY_SECRET));
    wait_for_rows(&nexus, 2, Duration::from_secs(2));

    let secrets = [BODY_SECRET, FIELD_SECRET, ECHOED_SECRET, HEADER_SECRET];
    for (id, stream) in ids.iter().zip([false, true]) {
        let (status, row) = api(&nexus, &format!("/api/requests/{id}"), None);
        assert_eq!(status, 200, "{row}");
        let request_body = row["requestBody"].as_str().expect("requestBody");
        let response_body = row["responseBody"].as_str().expect("responseBody");
        assert!(
            request_body.contains("What is the capital of France?"),
            "{request_body}"
        );
        assert!(
            response_body.contains("The capital of France is Paris."),
            "{response_body}"
        );
        if stream {
            assert!(
                response_body.starts_with("event: message_start\n"),
                "the SSE as relayed"
            );
            assert!(response_body.contains("event: message_stop"));
        }
        for secret in secrets {
            assert!(!request_body.contains(secret), "{secret} in {request_body}");
            assert!(
                !response_body.contains(secret),
                "{secret} in {response_body}"
            );
        }
        // Masked as the trace masks: the token's last characters stay recognisable.
        assert!(request_body.contains("****"), "{request_body}");
    }
    // And nowhere in the database's files, as stored (compressed or not).
    for name in ["ledger.db", "ledger.db-wal"] {
        let raw = std::fs::read(dir.path().join(name)).unwrap_or_default();
        for secret in secrets {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {name}"
            );
        }
    }
    // Without NEXUS_STORE_BODIES a row has no bodies.
    let plain = Nexus::builder()
        .upstream(&mock.url())
        .env(
            "NEXUS_DB",
            format!("sqlite:{}", dir.path().join("plain.db").display()),
        )
        .start();
    let id = plain
        .request(&request(false))
        .header("x-nexus-request-id")
        .unwrap()
        .to_string();
    wait_for_rows(&plain, 1, Duration::from_secs(2));
    let (_, row) = api(&plain, &format!("/api/requests/{id}"), None);
    assert!(
        row.get("requestBody").is_none() && row.get("responseBody").is_none(),
        "{row}"
    );
}

#[test]
fn rows_older_than_the_retention_are_deleted() {
    let mock = MockUpstream::start(|_| answer(false));
    let dir = TempDir::new("ledger-retention");
    let file = dir.path().join("ledger.db");
    let db = format!("sqlite:{}", file.display());
    // A first run creates the schema and one row.
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .env("NEXUS_DB", &db)
        .start();
    nexus.request(&request(false));
    wait_for_rows(&nexus, 1, Duration::from_secs(2));
    drop(nexus);
    // Age that row 40 days, then start with a 30-day retention.
    let conn = rusqlite::Connection::open(&file).unwrap();
    let aged = conn
        .execute("UPDATE requests SET ts_ms = ts_ms - 40 * 86400000", [])
        .unwrap();
    assert_eq!(aged, 1);
    drop(conn);
    let nexus = Nexus::builder()
        .upstream(&mock.url())
        .env("NEXUS_DB", &db)
        .env("NEXUS_RETENTION_DAYS", "30")
        .start();
    let fresh = nexus.request(&request(false));
    let fresh_id = fresh.header("x-nexus-request-id").unwrap();
    wait_for_rows(&nexus, 1, Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !nexus.logs().contains("past NEXUS_RETENTION_DAYS") {
        assert!(std::time::Instant::now() < deadline, "{}", nexus.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, listed) = api(&nexus, "/api/requests", None);
    let rows = listed["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["id"], fresh_id);
}
