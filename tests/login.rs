//! `nexus login` and `nexus credentials` against the real binary and a mock token
//! endpoint on 127.0.0.1 (issue 23): the PKCE flow end to end, import from Claude Code,
//! the failures that must leave the directory as it was, and a listing with no secret.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use common::credentials::{api_key_file, FAR_FUTURE_MS};
use common::oauth::*;
use common::process::{ChildGuard, OutputLog};
use common::*;
use serde_json::{json, Value};

const DOMAIN: &str = "claude-login.example.com";
const CODE: &str = "ac-mock-authorization-code-0123456789";
const EXPIRES_IN: u64 = 28_800;
/// The issue's bound on a running nexus using a new file.
const RELOAD_LIMIT: Duration = Duration::from_secs(2);

/// A token endpoint that accepts only the code its authorize step issued.
fn endpoint() -> (TokenEndpoint, IssuedCode) {
    let issued = IssuedCode::default();
    let check = issued.clone();
    let endpoint = TokenEndpoint::start(move |_, request| {
        check.exchange(
            request,
            token_reply(NEW_ACCESS, Some(NEW_REFRESH), EXPIRES_IN),
        )
    });
    (endpoint, issued)
}

/// What one `nexus login` run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `nexus <args>` in an empty working directory with `env` only. When `paste` is
/// given, waits for the authorize URL, lets `paste` turn it into what the user pastes,
/// and writes that to stdin.
fn nexus(args: &[&str], env: &[(&str, &str)], paste: Option<&dyn Fn(&str) -> String>) -> Run {
    let cwd = TempDir::new("login-cwd");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nexus"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(cwd.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::new(command.spawn().expect("spawning nexus"));
    let stdout = child.child_mut().stdout.take().unwrap();
    let stderr = child.child_mut().stderr.take().unwrap();
    let mut stdin = child.child_mut().stdin.take();
    let log = OutputLog::default();
    let (lines, out_done) = log.drain("stdout", stdout);
    let (_, err_done) = log.drain("stderr", stderr);
    if let Some(paste) = paste {
        let deadline = Instant::now() + IO_TIMEOUT;
        let url = loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("http") => break line,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => panic!("no URL:\n{}", log.snapshot()),
            }
            assert!(Instant::now() < deadline, "no URL:\n{}", log.snapshot());
        };
        let text = paste(&url);
        let mut pipe = stdin.take().unwrap();
        pipe.write_all(format!("{text}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let status = child
        .wait_for_exit(IO_TIMEOUT * 2)
        .unwrap_or_else(|| panic!("nexus {args:?} did not exit:\n{}", log.snapshot()));
    out_done.join().unwrap();
    err_done.join().unwrap();
    Run {
        code: status.code(),
        stdout: log.stream("stdout"),
        stderr: log.stream("stderr"),
    }
}

fn login_env<'a>(dir: &'a Path, token_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CREDENTIALS_DIR", dir.to_str().unwrap()),
        ("OAUTH_TOKEN_URL", token_url),
        ("OAUTH_AUTHORIZE_URL", "http://127.0.0.1:9/oauth/authorize"),
        (
            "OAUTH_REDIRECT_URI",
            "http://127.0.0.1:9/oauth/code/callback",
        ),
    ]
}

fn credential_path(dir: &Path) -> PathBuf {
    dir.join(format!("{DOMAIN}.credentials.json"))
}

/// Every file in `dir` with its bytes and mode: "unchanged" means equal snapshots.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            (
                e.file_name().into_string().unwrap(),
                (std::fs::read(e.path()).unwrap(), mode),
            )
        })
        .collect()
}

/// No token of these tests in `text`, nor a long piece of one.
fn assert_no_secret(text: &str) {
    for secret in [OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH, CODE] {
        assert!(!text.contains(&secret[..20]), "a secret leaked: {text}");
    }
}

/// An existing file with fields a login must keep.
fn existing_file() -> Value {
    json!({
        "type": "api_key",
        "api_key": "sk-ant-api03-replaced-by-the-login-0000",
        "slack": {"channel": "#claude", "enabled": false},
        "client_api_keys": ["nx-client-key-1"],
        "team": {"name": "nexus-tests"}
    })
}

#[test]
fn the_pkce_flow_writes_the_endpoints_tokens_and_keeps_other_fields() {
    let (endpoint, issued) = endpoint();
    let dir = TempDir::new("login-pkce");
    write_credential(&credential_path(dir.path()), &existing_file());
    let url = endpoint.url();
    let before = now_ms();
    let run = nexus(
        &["login", DOMAIN],
        &login_env(dir.path(), &url),
        Some(&|authorize: &str| {
            assert!(
                authorize.starts_with("http://127.0.0.1:9/oauth/authorize?"),
                "{authorize}"
            );
            assert_eq!(
                query_param(authorize, "scope").unwrap(),
                "org:create_api_key user:profile user:inference"
            );
            let state = issued.authorize(authorize, CODE);
            format!("{CODE}#{state}")
        }),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("hot reload"), "{}", run.stdout);
    assert_no_secret(&run.stdout);
    assert_no_secret(&run.stderr);

    // The verifier matched the challenge and the state came back: the mock answered 200
    // only then, and it saw exactly one exchange.
    let requests = endpoint.mock.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json();
    assert_eq!(body["grant_type"], "authorization_code");
    assert_eq!(
        body["redirect_uri"],
        "http://127.0.0.1:9/oauth/code/callback"
    );

    let path = credential_path(dir.path());
    let doc = read_credential(&path);
    assert_eq!(doc["type"], "oauth");
    assert_eq!(doc["oauth"]["accessToken"], NEW_ACCESS);
    assert_eq!(doc["oauth"]["refreshToken"], NEW_REFRESH);
    let expires_at = doc["oauth"]["expiresAt"].as_u64().unwrap();
    assert!(
        (before + EXPIRES_IN * 1000..=now_ms() + EXPIRES_IN * 1000).contains(&expires_at),
        "{expires_at}"
    );
    assert_eq!(
        doc["oauth"]["scopes"],
        json!(["user:inference", "user:profile", "org:create_api_key"])
    );
    let kept = existing_file();
    for field in ["slack", "client_api_keys", "team"] {
        assert_eq!(doc[field], kept[field], "{field}");
    }
    assert!(doc.get("api_key").is_none(), "the old key is gone: {doc}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<String> = snapshot(dir.path()).into_keys().collect();
    assert_eq!(
        names,
        [
            format!("{DOMAIN}.credentials.json"),
            format!("{DOMAIN}.credentials.json.lock")
        ],
        "no temp file left"
    );
}

#[test]
fn a_bare_code_is_accepted_and_the_directory_is_created() {
    let (endpoint, issued) = endpoint();
    let parent = TempDir::new("login-bare");
    let dir = parent.path().join("credentials");
    let url = endpoint.url();
    let run = nexus(
        &["login", DOMAIN],
        &login_env(&dir, &url),
        Some(&|authorize: &str| {
            issued.authorize(authorize, CODE);
            CODE.to_string()
        }),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        read_credential(&credential_path(&dir))["oauth"]["accessToken"],
        NEW_ACCESS
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_running_nexus_uses_the_new_token_within_2_s() {
    let (endpoint, issued) = endpoint();
    let rig = Rig::start(
        Upstream::Plain,
        |_| MockReply::json(200, "{}"),
        |n| n.api_key("sk-ant-api03-env-key-for-login"),
    );
    let dir = rig.nexus.credentials_dir().to_path_buf();
    let url = endpoint.url();
    let run = nexus(
        &["login", DOMAIN],
        &login_env(&dir, &url),
        Some(&|authorize: &str| format!("{CODE}#{}", issued.authorize(authorize, CODE))),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let written = Instant::now();
    let request = Request::post("/v1/messages")
        .host(DOMAIN)
        .header("anthropic-version", "2023-06-01")
        .json("{}");
    wait_for(RELOAD_LIMIT, "nexus to send the new token", || {
        let response = rig.nexus.request(&request);
        assert_eq!(response.status, 200, "{}", response.text());
        let last = rig.mock.requests().pop().unwrap();
        (bearer_of(&last) == NEW_ACCESS).then_some(())
    });
    assert!(written.elapsed() <= RELOAD_LIMIT);
}

#[test]
fn import_takes_claude_codes_credential() {
    let dir = TempDir::new("login-import");
    let claude = TempDir::new("claude-home");
    let file = claude.write(
        ".credentials.json",
        json!({"claudeAiOauth": {
            "accessToken": OLD_ACCESS, "refreshToken": OLD_REFRESH, "expiresAt": FAR_FUTURE_MS,
            "scopes": ["user:inference", "user:profile"], "subscriptionType": "max"
        }})
        .to_string()
        .as_bytes(),
    );
    let run = nexus(
        &["login", DOMAIN, "--import", file.to_str().unwrap()],
        &[
            ("CREDENTIALS_DIR", dir.path().to_str().unwrap()),
            ("OAUTH_TOKEN_URL", "http://127.0.0.1:9/"),
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_no_secret(&run.stdout);
    assert_eq!(
        read_credential(&credential_path(dir.path())),
        json!({"type": "oauth", "oauth": {
            "accessToken": OLD_ACCESS, "refreshToken": OLD_REFRESH, "expiresAt": FAR_FUTURE_MS,
            "scopes": ["user:inference", "user:profile"], "subscriptionType": "max"
        }})
    );

    // A file that is not Claude Code's: named with the field, nothing written.
    let other = claude.write("other.json", br#"{"oauth":{"accessToken":"x"}}"#);
    let before = snapshot(dir.path());
    let run = nexus(
        &[
            "login",
            "second.example.com",
            "--import",
            other.to_str().unwrap(),
        ],
        &[("CREDENTIALS_DIR", dir.path().to_str().unwrap())],
        None,
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("other.json") && run.stderr.contains("claudeAiOauth"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(dir.path()), before);
}

/// A failed login: exit 1, one line on stderr saying why, no secret, directory as it was.
fn assert_failed_cleanly(
    run: &Run,
    dir: &Path,
    before: &BTreeMap<String, (Vec<u8>, u32)>,
    why: &str,
) {
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.contains(why), "{why}: {}", run.stderr);
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert_no_secret(&run.stderr);
    assert_eq!(&snapshot(dir), before, "the directory changed");
}

#[test]
fn wrong_state_used_code_and_unreachable_endpoint_change_nothing() {
    let (endpoint, issued) = endpoint();
    let dir = TempDir::new("login-failures");
    write_credential(&credential_path(dir.path()), &existing_file());
    let before = snapshot(dir.path());
    let url = endpoint.url();

    let run = nexus(
        &["login", DOMAIN],
        &login_env(dir.path(), &url),
        Some(&|authorize: &str| {
            issued.authorize(authorize, CODE);
            format!("{CODE}#state-of-another-login")
        }),
    );
    assert_failed_cleanly(&run, dir.path(), &before, "state");
    assert_eq!(
        endpoint.calls(),
        0,
        "a wrong state never reaches the endpoint"
    );

    // A code used once already (by a login into another directory) is refused.
    let elsewhere = TempDir::new("login-first-use");
    let first = nexus(
        &["login", DOMAIN],
        &login_env(elsewhere.path(), &url),
        Some(&|authorize: &str| format!("{CODE}#{}", issued.authorize(authorize, CODE))),
    );
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let run = nexus(
        &["login", DOMAIN],
        &login_env(dir.path(), &url),
        Some(&|_: &str| CODE.to_string()),
    );
    assert_failed_cleanly(&run, dir.path(), &before, "invalid_grant");

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1/oauth/token", dead.local_addr().unwrap());
    drop(dead);
    let run = nexus(
        &["login", DOMAIN],
        &login_env(dir.path(), &dead_url),
        Some(&|_: &str| CODE.to_string()),
    );
    assert_failed_cleanly(&run, dir.path(), &before, "token endpoint");
}

#[test]
fn id_writes_one_member_of_the_domains_pool_and_keeps_the_others() {
    let dir = TempDir::new("login-id");
    let claude = TempDir::new("claude-home-id");
    let file = claude.write(
        ".credentials.json",
        json!({"claudeAiOauth": {
            "accessToken": OLD_ACCESS, "refreshToken": OLD_REFRESH, "expiresAt": FAR_FUTURE_MS,
            "scopes": ["user:inference"]
        }})
        .to_string()
        .as_bytes(),
    );
    let pool = json!({"type": "pool", "client_api_keys": ["nx-team"], "credentials": [
        {"id": "key-1", "type": "api_key", "api_key": "sk-ant-api03-pool-member-key"}
    ]});
    dir.write(
        &format!("{DOMAIN}.credentials.json"),
        pool.to_string().as_bytes(),
    );
    let login = |id: &str| {
        nexus(
            &[
                "login",
                DOMAIN,
                "--id",
                id,
                "--import",
                file.to_str().unwrap(),
            ],
            &[("CREDENTIALS_DIR", dir.path().to_str().unwrap())],
            None,
        )
    };
    let run = login("max-1");
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("pool member max-1"), "{}", run.stdout);
    let mut expected = pool.clone();
    expected["credentials"].as_array_mut().unwrap().push(
        json!({"id": "max-1", "type": "oauth", "oauth": {
            "accessToken": OLD_ACCESS, "refreshToken": OLD_REFRESH, "expiresAt": FAR_FUTURE_MS,
            "scopes": ["user:inference"]
        }}),
    );
    assert_eq!(read_credential(&credential_path(dir.path())), expected);

    // The same id again, with new tokens: that member is replaced in place, not added.
    let renewed = claude.write(
        ".credentials.json",
        json!({"claudeAiOauth": {
            "accessToken": NEW_ACCESS, "refreshToken": NEW_REFRESH, "expiresAt": FAR_FUTURE_MS,
            "scopes": ["user:inference"]
        }})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(renewed, file, "the same Claude Code file, rewritten");
    let run = login("max-1");
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    expected["credentials"][1]["oauth"]["accessToken"] = NEW_ACCESS.into();
    expected["credentials"][1]["oauth"]["refreshToken"] = NEW_REFRESH.into();
    assert_eq!(read_credential(&credential_path(dir.path())), expected);

    // An id that is not one: a usage error, nothing written.
    let before = snapshot(dir.path());
    let run = login("max 1");
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn credentials_lists_every_file_without_a_secret() {
    let dir = TempDir::new("login-list");
    let write = |domain: &str, text: &str| {
        dir.write(&format!("{domain}.credentials.json"), text.as_bytes());
    };
    write(
        "api.example.com",
        &api_key_file("sk-ant-api03-secret-key-material-K3Y9"),
    );
    let mut oauth = oauth_file_expiring(OLD_ACCESS, OLD_REFRESH, FAR_FUTURE_MS);
    oauth["client_api_keys"] = json!(["nx-client-secret-key-0001"]);
    write("max.example.com", &oauth.to_string());
    write(
        "old.example.com",
        &json!({"type": "oauth", "oauth": {"accessToken": NEW_ACCESS, "expiresAt": 1_000}})
            .to_string(),
    );
    write(
        "pool.example.com",
        &json!({"type": "pool", "credentials": [{"id": "max-1", "type": "api_key", "api_key": "sk-ant-api03-pool-member-secret"}]}).to_string(),
    );
    write(
        "broken.example.com",
        r#"{"type":"oauth","oauth":{"accessToken":"sk-ant-oat01-half"#,
    );

    let run = nexus(
        &["credentials"],
        &[("CREDENTIALS_DIR", dir.path().to_str().unwrap())],
        None,
    );
    assert_eq!(
        run.code,
        Some(1),
        "a broken file makes the exit status non-zero"
    );
    // A pool's members each have a row, named domain/id.
    let expected = "\
DOMAIN                  TYPE     EXPIRES                         REFRESH  SECRET    NOTE
api.example.com         api_key  -                               -        ****K3Y9
broken.example.com      invalid  -                               -        -         not valid JSON (EOF while parsing a string at line 1 column 57)
max.example.com         oauth    2100-01-01T00:00:00Z            yes      ****cdef
old.example.com         oauth    1970-01-01T00:00:01Z (expired)  no       ****3210
pool.example.com/max-1  api_key  -                               -        ****cret
";
    assert_eq!(run.stdout, expected);
    let d = dir.path().display();
    assert_eq!(
        run.stderr,
        format!(
            "nexus: {d}/broken.example.com.credentials.json: not valid JSON (EOF while parsing a string at line 1 column 57)\n"
        )
    );
    for text in [&run.stdout, &run.stderr] {
        assert_no_secret(text);
        for secret in [
            "secret-key-material",
            "nx-client-secret",
            "pool-member-secret",
            "oat01-half",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    // All files good: exit 0.
    std::fs::remove_file(dir.path().join("broken.example.com.credentials.json")).unwrap();
    std::fs::remove_file(dir.path().join("pool.example.com.credentials.json")).unwrap();
    let run = nexus(
        &["credentials"],
        &[("CREDENTIALS_DIR", dir.path().to_str().unwrap())],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}
