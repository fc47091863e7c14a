//! Client keys: a credential nexus hands out (a domain file, CLAUDE_API_KEY) is attached
//! only for a request that presents a client key, and the client key never goes upstream.

mod common;

use common::credentials::api_key_file;
use common::nexus::NexusBuilder;
use common::*;

const GUARDED: &str = "guarded.example.com";
const INHERITS: &str = "inherits.example.com";
const FILE_KEY: &str = "sk-ant-api03-guarded-domain-file-key";
const INHERITS_KEY: &str = "sk-ant-api03-inheriting-domain-file-key";
const ENV_KEY: &str = "sk-ant-api03-claude-api-key-from-env";
const TEAM_KEY: &str = "nexus-client-team-key-0123456789";
const GLOBAL_KEY: &str = "nexus-client-global-key-0123456789";
const OTHER_GLOBAL_KEY: &str = "nexus-client-global-key-second";

fn guarded_file() -> String {
    serde_json::json!({
        "type": "api_key",
        "api_key": FILE_KEY,
        "client_api_keys": [TEAM_KEY]
    })
    .to_string()
}

fn bare(host: &str) -> Request {
    Request::post("/v1/messages")
        .host(host)
        .header("anthropic-version", "2023-06-01")
        .json("{}")
}

fn rig(configure: impl FnOnce(NexusBuilder) -> NexusBuilder) -> Rig {
    Rig::start(Upstream::Plain, |_| MockReply::json(200, "{}"), configure)
}

/// The request reached the upstream with exactly `key`, and nothing of the client's key.
fn assert_forwarded_with(rig: &Rig, response: &Response, key: &str, client_key: &str) {
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = rig.mock.requests().pop().expect("an upstream request");
    assert_eq!(
        credential_headers(&seen.headers),
        [("x-api-key".to_string(), key.to_string())]
    );
    assert!(
        !seen.headers.mention(client_key),
        "the client key was forwarded: {:?}",
        seen.headers
    );
}

#[test]
fn a_domain_file_with_its_own_client_keys_needs_one_of_them() {
    let rig = rig(|n| n.credential(GUARDED, &guarded_file()));

    let response = rig
        .nexus
        .request(&bare(GUARDED).header("x-api-key", TEAM_KEY));
    assert_forwarded_with(&rig, &response, FILE_KEY, TEAM_KEY);
    let response = rig
        .nexus
        .request(&bare(GUARDED).header("Authorization", &format!("Bearer {TEAM_KEY}")));
    assert_forwarded_with(&rig, &response, FILE_KEY, TEAM_KEY);
    let upstream_count = rig.mock.requests().len();

    for request in [
        bare(GUARDED),
        bare(GUARDED).header("x-api-key", "nexus-client-team-key-0123456788"),
        bare(GUARDED).header("x-api-key", &TEAM_KEY[..TEAM_KEY.len() - 1]),
        bare(GUARDED).header("x-api-key", &format!("{TEAM_KEY}0")),
        bare(GUARDED).header("Authorization", &format!("Basic {TEAM_KEY}")),
        bare(GUARDED).header("x-api-key", "sk-ant-api03-a-real-looking-key-of-a-stranger"),
    ] {
        let response = rig.nexus.request(&request);
        assert_anthropic_error(&response, 401, "authentication_error");
        assert!(!response.text().contains(FILE_KEY));
    }
    assert_eq!(
        rig.mock.requests().len(),
        upstream_count,
        "nothing more went upstream"
    );
}

#[test]
fn client_api_keys_guard_claude_api_key_and_files_without_their_own_list() {
    let rig = rig(|n| {
        n.api_key(ENV_KEY)
            .env(
                "CLIENT_API_KEYS",
                format!(" {GLOBAL_KEY} , {OTHER_GLOBAL_KEY} "),
            )
            .credential(GUARDED, &guarded_file())
            .credential(INHERITS, &api_key_file(INHERITS_KEY))
    });

    // CLAUDE_API_KEY (no domain file for this Host).
    let host = "no-file.example.com";
    let response = rig
        .nexus
        .request(&bare(host).header("x-api-key", GLOBAL_KEY));
    assert_forwarded_with(&rig, &response, ENV_KEY, GLOBAL_KEY);
    let response = rig
        .nexus
        .request(&bare(host).header("Authorization", &format!("Bearer {OTHER_GLOBAL_KEY}")));
    assert_forwarded_with(&rig, &response, ENV_KEY, OTHER_GLOBAL_KEY);
    // A file without its own list.
    let response = rig
        .nexus
        .request(&bare(INHERITS).header("x-api-key", GLOBAL_KEY));
    assert_forwarded_with(&rig, &response, INHERITS_KEY, GLOBAL_KEY);
    // A file with its own list takes only its own keys.
    let response = rig
        .nexus
        .request(&bare(GUARDED).header("x-api-key", TEAM_KEY));
    assert_forwarded_with(&rig, &response, FILE_KEY, TEAM_KEY);
    let upstream_count = rig.mock.requests().len();

    for request in [
        bare(host),
        bare(host).header("x-api-key", "wrong"),
        bare(host).header("x-api-key", TEAM_KEY),
        bare(INHERITS),
        bare(INHERITS).header("x-api-key", TEAM_KEY),
        bare(GUARDED).header("x-api-key", GLOBAL_KEY),
        bare(GUARDED),
    ] {
        let response = rig.nexus.request(&request);
        assert_anthropic_error(&response, 401, "authentication_error");
        for secret in [ENV_KEY, FILE_KEY, INHERITS_KEY, GLOBAL_KEY, TEAM_KEY] {
            assert!(!response.text().contains(secret), "{}", response.text());
        }
    }
    assert_eq!(
        rig.mock.requests().len(),
        upstream_count,
        "nothing more went upstream"
    );

    // The health summary says keys are required, without showing them.
    let health = rig.nexus.request(&Request::get("/")).text();
    assert!(
        !health.contains(GLOBAL_KEY) && !health.contains(TEAM_KEY),
        "{health}"
    );
}

#[test]
fn without_client_keys_nexus_behaves_as_the_seed() {
    let rig = rig(|n| {
        n.api_key(ENV_KEY)
            .credential(INHERITS, &api_key_file(INHERITS_KEY))
    });
    let response = rig.nexus.request(&bare(INHERITS));
    assert_forwarded_with(&rig, &response, INHERITS_KEY, "no client key was sent");
    let response = rig.nexus.request(&bare("other.example.com"));
    assert_forwarded_with(&rig, &response, ENV_KEY, "no client key was sent");
}

/// Starts nexus on 0.0.0.0 (the harness always binds loopback), waits for its start-up
/// line, stops it, and returns everything it printed.
fn start_up_output(env: &[(&str, &str)], files: &[(&str, String)]) -> String {
    let dir = TempDir::new("exposed");
    for (domain, json) in files {
        dir.write(&format!("{domain}.credentials.json"), json.as_bytes());
    }
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .args(["-p", "0", "-H", "0.0.0.0", "-w", "1"])
        .env_clear()
        .env("STATS_INTERVAL_SECS", "0")
        .env("CREDENTIALS_DIR", dir.path())
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = common::process::ChildGuard::new(command.spawn().expect("spawning nexus"));
    let log = common::process::OutputLog::default();
    let (lines, _) = log.drain("stdout", child.child_mut().stdout.take().unwrap());
    let (_, stderr_done) = log.drain("stderr", child.child_mut().stderr.take().unwrap());
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !lines
        .recv_timeout(std::time::Duration::from_millis(50))
        .is_ok_and(|line| line.contains("listening on"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no start-up line:\n{}",
            log.snapshot()
        );
    }
    drop(child); // SIGKILL; stderr then reaches EOF
    let _ = stderr_done.join();
    log.snapshot()
}

#[test]
fn a_non_loopback_listener_with_an_unguarded_credential_warns_at_start() {
    const WARNING: &str = "anyone who can reach";
    let warned = |env: &[(&str, &str)], files: &[(&str, String)]| {
        let logs = start_up_output(env, files);
        for secret in [ENV_KEY, FILE_KEY, INHERITS_KEY, GLOBAL_KEY] {
            assert!(!logs.contains(secret), "{logs}");
        }
        logs.contains(WARNING)
    };
    let env_key = [("CLAUDE_API_KEY", ENV_KEY)];
    assert!(warned(&env_key, &[]));
    assert!(warned(&[], &[(INHERITS, api_key_file(INHERITS_KEY))]));
    assert!(!warned(
        &[("CLAUDE_API_KEY", ENV_KEY), ("CLIENT_API_KEYS", GLOBAL_KEY)],
        &[(INHERITS, api_key_file(INHERITS_KEY))]
    ));
    assert!(!warned(&[], &[(GUARDED, guarded_file())]));
    assert!(!warned(&[], &[]));
    // Loopback: nobody else can reach it.
    let nexus = Nexus::builder().api_key(ENV_KEY).start();
    assert!(!nexus.logs().contains(WARNING));
}
