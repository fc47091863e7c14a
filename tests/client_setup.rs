//! `GET /client-setup/:filename`: files from `CLIENT_SETUP_DIR` with the right headers,
//! every traversal trick refused with an Anthropic-shaped 400, missing files 404, and the
//! shipped `client-setup/` example doing what its README says.

mod common;

use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};

use common::*;

/// These tests never forward: a closed local port keeps nexus from resolving a real host.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";

/// A file beside (outside) the served directory that no request may ever read.
const SECRET: &str = "TOP-SECRET-nexus-client-setup-canary";

struct Setup {
    nexus: Nexus,
    _root: TempDir,
}

/// `root/served/` is CLIENT_SETUP_DIR; `root/secret.txt` must stay unreachable.
fn start() -> Setup {
    let root = TempDir::new("client-setup");
    root.write("secret.txt", SECRET.as_bytes());
    root.write(
        "served/settings.json",
        br#"{"env":{"ANTHROPIC_BASE_URL":"http://x"}}"#,
    );
    root.write("served/setup.sh", b"#!/bin/sh\necho hi\n");
    root.write("served/setup.ps1", b"Write-Host hi\r\n");
    root.write("served/notes.txt", "héllo\n".as_bytes());
    root.write("served/UPPER.JSON", b"{}");
    root.write("served/blob.bin", &[0, 1, 2, 255]);
    root.write("served/Makefile", b"all:\n");
    root.write("served/exactly-1mib.txt", &vec![b'a'; 1024 * 1024]);
    root.write("served/too-big.txt", &vec![b'a'; 1024 * 1024 + 1]);
    root.write("served/sub/inner.txt", b"inner");
    let served = root.path().join("served");
    symlink(root.path().join("secret.txt"), served.join("escape.txt")).unwrap();
    symlink("/etc/passwd", served.join("passwd.txt")).unwrap();
    symlink(served.join("settings.json"), served.join("alias.json")).unwrap();
    symlink(root.path(), served.join("up")).unwrap();
    let nexus = Nexus::builder()
        .upstream(NO_UPSTREAM)
        .env("CLIENT_SETUP_DIR", &served)
        .start();
    Setup { nexus, _root: root }
}

fn get(nexus: &Nexus, target: &str) -> Response {
    nexus.request(&Request::get(target))
}

#[test]
fn serves_files_with_type_cache_and_attachment_headers() {
    let s = start();
    let cases: [(&str, &str, &[u8]); 8] = [
        (
            "settings.json",
            "application/json",
            br#"{"env":{"ANTHROPIC_BASE_URL":"http://x"}}"#,
        ),
        (
            "setup.sh",
            "text/x-shellscript; charset=utf-8",
            b"#!/bin/sh\necho hi\n",
        ),
        (
            "setup.ps1",
            "text/plain; charset=utf-8",
            b"Write-Host hi\r\n",
        ),
        (
            "notes.txt",
            "text/plain; charset=utf-8",
            "héllo\n".as_bytes(),
        ),
        ("UPPER.JSON", "application/json", b"{}"),
        ("blob.bin", "application/octet-stream", &[0, 1, 2, 255]),
        ("Makefile", "application/octet-stream", b"all:\n"),
        // A symlink that stays inside the directory is fine.
        (
            "alias.json",
            "application/json",
            br#"{"env":{"ANTHROPIC_BASE_URL":"http://x"}}"#,
        ),
    ];
    for (name, content_type, body) in cases {
        let r = get(&s.nexus, &format!("/client-setup/{name}"));
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(content_type), "{name}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=3600"),
            "{name}"
        );
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{name}\"").as_str()),
            "{name}"
        );
        assert_eq!(r.body, body, "{name}");
        assert_has_request_id(&r);
    }

    // Percent-encoding of ordinary characters is decoded once.
    let r = get(&s.nexus, "/client-setup/settings%2Ejson");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"settings.json\"")
    );

    // A query string is not part of the name.
    assert_eq!(get(&s.nexus, "/client-setup/setup.sh?v=2").status, 200);

    // HEAD: the same headers, no body; keep-alive survives it.
    let mut client = s.nexus.client();
    let head = client.request(&Request::new("HEAD", "/client-setup/setup.sh"));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("18"));
    assert!(head.body.is_empty());
    let again = client.request(&Request::get("/client-setup/notes.txt"));
    assert_eq!(again.status, 200);

    // Up to 1 MiB is served; beyond that is not.
    let r = get(&s.nexus, "/client-setup/exactly-1mib.txt");
    assert_eq!((r.status, r.body.len()), (200, 1024 * 1024));
}

#[test]
fn traversal_and_encoding_tricks_are_refused_with_400() {
    let s = start();
    let table = [
        // Plain traversal (the request-head parser refuses dot segments itself).
        "/client-setup/..",
        "/client-setup/../secret.txt",
        "/client-setup/./settings.json",
        "/client-setup/up/../secret.txt",
        // Separators inside the name.
        "/client-setup/sub/inner.txt",
        "/client-setup/up/secret.txt",
        "/client-setup//etc/passwd",
        "/client-setup/..%2fsecret.txt",
        "/client-setup/%2e%2e%2fsecret.txt",
        "/client-setup/%2E%2E%2Fsecret.txt",
        "/client-setup/up%2fsecret.txt",
        "/client-setup/..%5csecret.txt",
        "/client-setup/up%5Csecret.txt",
        "/client-setup/up\\secret.txt",
        // Encoded dots.
        "/client-setup/%2e%2e",
        "/client-setup/%2E%2e",
        "/client-setup/.%2e",
        // NUL, and names that end early in C.
        "/client-setup/%00",
        "/client-setup/settings.json%00.txt",
        "/client-setup/settings.json%00",
        // Double and broken encoding.
        "/client-setup/%252e%252e%252fsecret.txt",
        "/client-setup/%252fetc%252fpasswd",
        "/client-setup/%25",
        "/client-setup/%",
        "/client-setup/%2",
        "/client-setup/%zz.json",
        "/client-setup/%c0%ae%c0%ae%c0%afsecret.txt",
        // Hidden files, odd characters, nothing at all.
        "/client-setup/.env",
        "/client-setup/%2eenv",
        "/client-setup/a..b",
        "/client-setup/new%0aline.txt",
        "/client-setup/quote%22.txt",
        "/client-setup/",
    ];
    for target in table {
        let mut client = s.nexus.client();
        let r = match client.try_request(&Request::get(target)) {
            Ok(r) => r,
            Err(e) => panic!("{target}: no response ({e})"),
        };
        assert_anthropic_error(&r, 400, "invalid_request_error");
        assert!(!r.text().contains(SECRET), "{target} leaked the secret");
    }
    // The name is checked before the filesystem: an over-long one is a 400 too.
    let long = format!("/client-setup/{}.txt", "a".repeat(300));
    assert_anthropic_error(&get(&s.nexus, &long), 400, "invalid_request_error");
}

#[test]
fn missing_escaping_and_oversized_files_are_404() {
    let s = start();
    for target in [
        "/client-setup/nope.json",
        "/client-setup/sub",
        // Symlinks that lead out of the directory.
        "/client-setup/escape.txt",
        "/client-setup/passwd.txt",
        "/client-setup/up",
        "/client-setup/too-big.txt",
    ] {
        let r = get(&s.nexus, target);
        assert_anthropic_error(&r, 404, "not_found_error");
        assert!(
            !r.text().contains(SECRET) && !r.text().contains("root:"),
            "{target}"
        );
    }
    let post = s
        .nexus
        .request(&Request::post("/client-setup/settings.json").body("{}"));
    assert_anthropic_error(&post, 405, "invalid_request_error");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // Not the route: no trailing slash, no file name.
    assert_anthropic_error(&get(&s.nexus, "/client-setup"), 404, "not_found_error");
    s.nexus.request(&Request::get("/")); // still serving
}

/// A HEAD that fails gets the error's head only: a body there would be taken for the start
/// of the next response on the same connection.
#[test]
fn head_errors_carry_no_body_and_keep_alive_stays_in_step() {
    let s = start();
    let mut client = s.nexus.client();
    for target in [
        "/client-setup/nope.json",
        "/api/hello",
        "/client-setup/a%5cb",
    ] {
        let head = client.request(&Request::new("HEAD", target));
        assert!(
            head.status == 404 || head.status == 400,
            "{target}: {}",
            head.status
        );
        assert!(head.body.is_empty(), "{target}");
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert!(
            head.header("content-length").is_some_and(|n| n != "0"),
            "{target}"
        );
        // The next response on this connection is read from the right place.
        let next = client.request(&Request::get("/client-setup/setup.sh"));
        assert_eq!(next.status, 200, "after HEAD {target}");
        assert_eq!(next.body, b"#!/bin/sh\necho hi\n");
    }
}

#[test]
fn a_missing_directory_is_404_not_an_error() {
    let nexus = Nexus::builder()
        .upstream(NO_UPSTREAM)
        .env("CLIENT_SETUP_DIR", "/nonexistent/nexus-client-setup")
        .start();
    let r = get(&nexus, "/client-setup/settings.json");
    assert_anthropic_error(&r, 404, "not_found_error");
}

/// The repository's own `client-setup/`: the settings file is valid Claude Code settings,
/// and the setup script, downloaded through nexus, merges them into an existing file.
#[test]
fn shipped_examples_work_as_documented() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/client-setup");
    let nexus = Nexus::builder()
        .upstream(NO_UPSTREAM)
        .env("CLIENT_SETUP_DIR", shipped)
        .start();

    let settings = get(&nexus, "/client-setup/settings.json");
    assert_eq!(settings.status, 200);
    let json = settings.json();
    assert_eq!(json["env"]["ANTHROPIC_BASE_URL"], "http://localhost:3000");
    assert_eq!(json["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
    let readme = get(&nexus, "/client-setup/README.txt");
    assert_eq!(
        readme.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(readme.text().contains("setup.sh"));

    let script = get(&nexus, "/client-setup/setup.sh");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/x-shellscript; charset=utf-8")
    );
    let home = TempDir::new("setup-home");
    home.write(
        ".claude/settings.json",
        br#"{"model":"opus","env":{"KEEP_ME":"1","ANTHROPIC_BASE_URL":"http://old"}}"#,
    );
    // As the README says: curl … | sh -s -- URL KEY
    let mut child = Command::new("sh")
        .args(["-s", "--", &format!("{}/", nexus.url()), "client-key-123"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &script.body).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "setup.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join(".claude/settings.json")).unwrap())
            .unwrap();
    assert_eq!(written["model"], "opus", "other settings kept: {written}");
    assert_eq!(written["env"]["KEEP_ME"], "1", "{written}");
    assert_eq!(
        written["env"]["ANTHROPIC_BASE_URL"],
        nexus.url(),
        "{written}"
    );
    assert_eq!(written["env"]["ANTHROPIC_AUTH_TOKEN"], "client-key-123");
    assert_eq!(
        written["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"],
        "1"
    );
}
