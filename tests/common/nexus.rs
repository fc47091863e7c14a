//! Starting the real `nexus` binary for a test, and stopping it afterwards.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::client::{Client, Request, Response};
use super::process::{ChildGuard, OutputLog};
use super::tempdir::TempDir;
use super::tls::ListenerCerts;
use super::IO_TIMEOUT;

/// Variables taken from the test process's own environment when set there: the suite runs
/// once per driver, and NEXUS_LOG lets a developer turn nexus's logging up while debugging.
const FORWARDED_ENV: [&str; 2] = ["NEXUS_DRIVER", "NEXUS_LOG"];

/// Overrides the binary under test (e.g. a release build); default: this crate's `nexus`.
const BINARY_OVERRIDE: &str = "NEXUS_BIN";

/// The program the tests start.
fn nexus_binary() -> OsString {
    std::env::var_os(BINARY_OVERRIDE).unwrap_or_else(|| env!("CARGO_BIN_EXE_nexus").into())
}

/// How nexus is started; see [`Nexus::builder`].
pub struct NexusBuilder {
    workers: usize,
    env: Vec<(String, OsString)>,
    args: Vec<String>,
    credentials_dir: Option<PathBuf>,
    credential_files: Vec<(String, String)>,
    tls: Option<ListenerCerts>,
}

impl NexusBuilder {
    /// Serves HTTPS (`TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CERTS_DIR`) with generated
    /// certificates; [`Nexus::client`], [`Nexus::url`] and [`Nexus::metric`] then speak TLS.
    pub fn https(self) -> NexusBuilder {
        self.https_with(ListenerCerts::new())
    }

    /// [`NexusBuilder::https`] with given certificates.
    pub fn https_with(mut self, certs: ListenerCerts) -> NexusBuilder {
        let files = [
            ("TLS_CERT_FILE", certs.cert_file.clone()),
            ("TLS_KEY_FILE", certs.key_file.clone()),
            ("TLS_CERTS_DIR", certs.certs_dir.clone()),
        ];
        for (name, path) in files {
            self = self.env(name, path);
        }
        self.tls = Some(certs);
        self
    }

    /// `-w N` (default 2, one per core of the test machine).
    pub fn workers(mut self, n: usize) -> NexusBuilder {
        self.workers = n;
        self
    }

    /// Sets an environment variable for nexus.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> NexusBuilder {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// `UPSTREAM_URL`.
    pub fn upstream(self, url: &str) -> NexusBuilder {
        self.env("UPSTREAM_URL", url)
    }

    /// `UPSTREAM_CA_FILE`.
    pub fn ca_file(self, path: &Path) -> NexusBuilder {
        self.env("UPSTREAM_CA_FILE", path)
    }

    /// `CLAUDE_API_KEY`.
    pub fn api_key(self, key: &str) -> NexusBuilder {
        self.env("CLAUDE_API_KEY", key)
    }

    /// Uses an existing `CREDENTIALS_DIR` (also nexus's working directory) instead of a
    /// fresh temporary one.
    pub fn credentials_dir(mut self, dir: &Path) -> NexusBuilder {
        self.credentials_dir = Some(dir.to_path_buf());
        self
    }

    /// Writes `<domain>.credentials.json` with `json` into the credentials dir before start.
    pub fn credential(mut self, domain: &str, json: &str) -> NexusBuilder {
        self.credential_files
            .push((domain.to_string(), json.to_string()));
        self
    }

    /// An extra command-line argument.
    pub fn arg(mut self, arg: &str) -> NexusBuilder {
        self.args.push(arg.to_string());
        self
    }

    /// Spawns nexus and waits (up to 10 s) for its `listening on` line.
    pub fn start(self) -> Nexus {
        let scratch = match self.credentials_dir {
            Some(_) => None,
            None => Some(TempDir::new("creds")),
        };
        let dir = self
            .credentials_dir
            .clone()
            .unwrap_or_else(|| scratch.as_ref().unwrap().path().to_path_buf());
        for (domain, json) in &self.credential_files {
            let file = dir.join(format!("{domain}.credentials.json"));
            std::fs::write(&file, json)
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        }
        let mut child = self.command(&dir).spawn().expect("spawning nexus");
        let stdout = child.stdout.take().expect("nexus stdout");
        let stderr = child.stderr.take().expect("nexus stderr");
        let mut child = ChildGuard::new(child);
        let log = OutputLog::default();
        let (lines, _) = log.drain("stdout", stdout);
        let _ = log.drain("stderr", stderr);
        let deadline = Instant::now() + IO_TIMEOUT;
        let addr = loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(addr) = parse_listen_addr(&line) {
                        break addr;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait_for_exit(Duration::from_secs(2));
                    panic!(
                        "nexus closed stdout without a `listening on` line (exit: {status:?})\n{}",
                        log.snapshot()
                    );
                }
            }
            if let Some(status) = child.exited() {
                panic!(
                    "nexus exited ({status}) before listening\n{}",
                    log.snapshot()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "nexus printed no `listening on 127.0.0.1:PORT` line within {IO_TIMEOUT:?}\n{}",
                    log.snapshot()
                );
            }
        };
        Nexus {
            child,
            addr,
            log,
            credentials_dir: dir,
            _scratch: scratch,
            tls: self.tls,
        }
    }

    fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(nexus_binary());
        cmd.args([
            "-p",
            "0",
            "-H",
            "127.0.0.1",
            "-w",
            &self.workers.to_string(),
        ]);
        cmd.args(&self.args);
        cmd.env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for name in FORWARDED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.env("STATS_INTERVAL_SECS", "0");
        cmd.env("CREDENTIALS_DIR", dir);
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        // Nexus loads `.env` from its working directory; a fresh directory has none.
        cmd.current_dir(dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// A running nexus process; killed (and its log printed, if the test failed) on drop.
pub struct Nexus {
    child: ChildGuard,
    addr: SocketAddr,
    log: OutputLog,
    credentials_dir: PathBuf,
    _scratch: Option<TempDir>,
    tls: Option<ListenerCerts>,
}

impl Nexus {
    /// Options for starting nexus.
    pub fn builder() -> NexusBuilder {
        NexusBuilder {
            workers: 2,
            env: Vec::new(),
            args: Vec::new(),
            credentials_dir: None,
            credential_files: Vec::new(),
            tls: None,
        }
    }

    /// The listener's certificates when nexus serves HTTPS.
    pub fn tls(&self) -> Option<&ListenerCerts> {
        self.tls.as_ref()
    }

    /// The address nexus listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` when nexus serves HTTPS.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("http://{}", self.addr),
            Some(_) => format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// Everything nexus printed so far (stdout and stderr, prefixed per line).
    pub fn logs(&self) -> String {
        self.log.snapshot()
    }

    /// The credentials directory nexus was started with.
    pub fn credentials_dir(&self) -> &Path {
        &self.credentials_dir
    }

    /// A new client connection to nexus (TLS, trusting its CA, when it serves HTTPS).
    pub fn client(&self) -> Client {
        match &self.tls {
            None => Client::connect(self.addr),
            Some(certs) => Client::connect_tls(self.addr, certs.client_config())
                .unwrap_or_else(|e| panic!("TLS handshake with nexus: {e}")),
        }
    }

    /// A new TLS connection that sends `name` as SNI (and `name:port` as default Host).
    pub fn client_as(&self, name: &str) -> Client {
        let certs = self
            .tls
            .as_ref()
            .expect("nexus serves HTTPS (NexusBuilder::https)");
        Client::connect_tls_as(self.addr, certs.client_config(), name)
            .unwrap_or_else(|e| panic!("TLS handshake with nexus as {name}: {e}"))
    }

    /// Sends `request` on a new connection and returns the response.
    pub fn request(&self, request: &Request) -> Response {
        self.client().request(request)
    }

    /// The value of one `/metrics` series, e.g. `nexus_upstream_connections_opened_total`
    /// or `nexus_notify_dropped_total{sink="slack"}`; panics when nexus does not expose it.
    pub fn metric(&self, series: &str) -> f64 {
        super::metrics::read_with(self.client(), series)
    }

    /// Sends SIGKILL and waits for the process to be gone (no shutdown, no cleanup).
    pub fn kill(&mut self) {
        let _ = self.child.child_mut().kill();
        let _ = self.child.child_mut().wait();
    }

    /// Sends SIGTERM and waits up to `limit` for a clean exit; panics if nexus does not exit
    /// or exits with a failure.
    pub fn terminate(&mut self, limit: Duration) {
        let pid = self.pid();
        // SAFETY: signalling the child process this test started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
        match self.child.wait_for_exit(limit) {
            Some(status) if status.success() => {}
            Some(status) => panic!("nexus exited with {status} after SIGTERM\n{}", self.logs()),
            None => panic!(
                "nexus still running {limit:?} after SIGTERM\n{}",
                self.logs()
            ),
        }
    }

    /// Waits up to `limit` for nexus to exit by itself (after a signal the test sent).
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.child.wait_for_exit(limit)
    }

    /// The process id, for reading /proc/PID.
    pub fn pid(&mut self) -> u32 {
        self.child.child_mut().id()
    }

    /// Open file descriptors of the nexus process now.
    pub fn open_fds(&mut self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory of the nexus process now, in KiB.
    pub fn rss_kib(&mut self) -> u64 {
        rss_kib_of(self.pid())
    }

    /// Panics if nexus has exited (e.g. crashed while handling a failure).
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.exited() {
            panic!(
                "nexus exited unexpectedly ({status})\n{}",
                self.log.snapshot()
            );
        }
    }
}

impl Drop for Nexus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- nexus log ({}) -----\n{}----- end of nexus log -----",
                self.addr,
                self.log.snapshot()
            );
        }
    }
}

/// Resident memory of process `pid` now, in KiB (0 once it is gone). For sampling from
/// another thread while the test drives load.
pub fn rss_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The address in a line like `nexus 0.1.0 listening on 127.0.0.1:40123, 2 workers, …`.
pub fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
