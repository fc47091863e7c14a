//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! JSON messages separated by NUL on fds 3 and 4), so a test can load a page, let it run in
//! real time, read values out of its DOM, list the requests it made, and take a
//! screenshot — with std, libc and serde_json only.
//!
//! Debian's `chromium` package is expected at `chromium` on PATH (or `$NEXUS_CHROMIUM`);
//! tests/install-deps.sh installs it. A missing browser is a test failure, never a skip.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::process::{ChildGuard, OutputLog};
use crate::common::TempDir;

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The browser executable.
pub fn chromium_path() -> String {
    std::env::var("NEXUS_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Panics with the fix when Chromium cannot be run.
pub fn require_chromium() -> String {
    let path = chromium_path();
    match Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`{path} --version` failed ({}); run tests/install-deps.sh to install Debian's chromium\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `{path}` ({e}): headless Chromium is required for this test; \
             run tests/install-deps.sh (it installs Debian's `chromium` package)"
        ),
    }
}

/// A running headless Chromium with one page attached.
pub struct Browser {
    to_browser: File,
    replies: Receiver<Value>,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: u64,
    session: String,
    log: OutputLog,
    child: ChildGuard,
    _profile: TempDir,
}

fn pipe_pair() -> (RawFd, RawFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// Moves `fd` to a number >= 10 (close-on-exec), so dup2 onto 3 and 4 cannot clobber it.
fn high_fd(fd: RawFd) -> RawFd {
    // SAFETY: duplicating a descriptor this process owns, then closing the original.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        assert!(high >= 10, "fcntl: {}", std::io::Error::last_os_error());
        libc::close(fd);
        high
    }
}

impl Browser {
    /// Starts Chromium (`width`×`height` window) and opens a blank page.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = TempDir::new("chromium-profile");
        // Parent → browser on the child's fd 3, browser → parent on its fd 4.
        let (cmd_read, cmd_write) = pipe_pair();
        let (ev_read, ev_write) = pipe_pair();
        let (child_in, child_out) = (high_fd(cmd_read), high_fd(ev_write));
        let mut command = Command::new(chromium_path());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); run tests/install-deps.sh",
                chromium_path()
            )
        });
        // SAFETY: the child has its copies; these ends are ours alone.
        unsafe {
            libc::close(child_in);
            libc::close(child_out);
        }
        let log = OutputLog::default();
        let _ = log.drain("chromium stdout", child.stdout.take().unwrap());
        let _ = log.drain("chromium stderr", child.stderr.take().unwrap());
        // SAFETY: fresh descriptors from pipe2 owned by nobody else.
        let to_browser = unsafe { File::from_raw_fd(cmd_write) };
        let from_browser = unsafe { File::from_raw_fd(ev_read) };

        let (tx, replies) = mpsc::channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(0, &mut raw) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if raw.last() == Some(&0) {
                    raw.pop();
                }
                let Ok(message) = serde_json::from_slice::<Value>(&raw) else {
                    continue;
                };
                if message.get("id").is_some() {
                    if tx.send(message).is_err() {
                        return;
                    }
                } else {
                    sink.lock().unwrap().push(message);
                }
            }
        });

        let mut browser = Browser {
            to_browser,
            replies,
            events,
            next_id: 0,
            session: String::new(),
            log,
            child: ChildGuard::new(child),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.page_call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser.page_call("Network.enable", json!({}));
        browser.page_call("Page.enable", json!({}));
        browser
    }

    /// What Chromium printed (for failure messages), less its D-Bus complaints: a
    /// container has no system bus, and headless Chromium works without one.
    pub fn logs(&self) -> String {
        self.log
            .snapshot()
            .lines()
            .filter(|l| !l.contains("dbus") && !l.contains("DBus"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("writing {method} to chromium: {e}\n{}", self.logs()));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(reply) if reply["id"] == id => {
                    if let Some(error) = reply.get("error") {
                        panic!("chromium refused {method}: {error}\n{}", self.logs());
                    }
                    return reply["result"].clone();
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "chromium did not answer {method} within {COMMAND_TIMEOUT:?}\n{}",
                    self.logs()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium closed its pipe during {method}\n{}", self.logs())
                }
            }
        }
    }

    /// A browser-level command.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page.
    pub fn page_call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Navigates the page to `url`.
    pub fn goto(&mut self, url: &str) {
        let result = self.page_call("Page.navigate", json!({"url": url}));
        if let Some(error) = result.get("errorText") {
            panic!("navigating to {url}: {error}\n{}", self.logs());
        }
    }

    /// Evaluates `expression` in the page and returns its value (JSON-serializable).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("page threw evaluating {expression:?}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `done` accepts its value or `limit` passes; returns the
    /// last value either way (the caller asserts on it, with it in the message).
    pub fn eval_until(
        &mut self,
        expression: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (bool, Value) {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(expression);
            if done(&value) {
                return (true, value);
            }
            if Instant::now() >= deadline {
                return (false, value);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// URLs of every request the page has made so far.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(String::from))
            .collect()
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&mut self) -> Vec<u8> {
        let result = self.page_call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(result["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- chromium log -----\n{}----- end of chromium log -----",
                self.logs()
            );
        }
        // Ask nicely first; ChildGuard kills whatever is left.
        self.next_id += 1;
        let bye = json!({"id": self.next_id, "method": "Browser.close"});
        let mut bytes = serde_json::to_vec(&bye).unwrap();
        bytes.push(0);
        let _ = self.to_browser.write_all(&bytes);
        let _ = self.child.wait_for_exit(Duration::from_secs(3));
    }
}

/// en-US thousands separators, as the dashboard formats numbers.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Standard base64 (with padding), as DevTools sends binary data.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    }
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

/// Width and height from a PNG's IHDR chunk; panics if `png` is not a PNG.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
        "not a PNG ({} bytes)",
        png.len()
    );
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn base64_round_trips_known_values() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode(""), b"");
}
