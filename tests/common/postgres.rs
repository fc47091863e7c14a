//! A throwaway PostgreSQL cluster for a test: `initdb` into a temp dir, `pg_ctl start` on
//! a free port of 127.0.0.1 with its unix socket in the same dir, stopped and removed on
//! drop. The server binaries come from Debian's `postgresql` package
//! (tests/install-deps.sh). PostgreSQL refuses to run as root, so as root the cluster
//! runs as the package's `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::tempdir::TempDir;

/// A running cluster whose superuser is `nexus` (trust authentication, local only).
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as (root's own test process: `postgres`).
    user: Option<(u32, u32)>,
    running: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's initdb and pg_ctl were not found under /usr/lib/postgresql/*/bin: \
             run tests/install-deps.sh (it installs Debian's postgresql package)"
        ),
    }
}

/// The uid and gid of the `postgres` user, when this process is root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        if pw.is_null() {
            panic!(
                "running as root and there is no `postgres` user to run PostgreSQL as: run \
                 tests/install-deps.sh (Debian's postgresql package creates it)"
            );
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Cluster {
    /// Creates and starts a cluster (a second or two).
    pub fn start() -> Cluster {
        let bin = server_bin();
        let user = server_user();
        let dir = TempDir::new("postgres");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: free_port(),
            user,
            running: false,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "nexus",
                "-A",
                "trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.resume();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir the cluster lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `NEXUS_DB` for it.
    pub fn url(&self) -> String {
        format!("postgres://nexus@127.0.0.1:{}/postgres", self.port)
    }

    /// A client connection, for checking what nexus wrote.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"))
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        self.running = true;
    }

    /// Stops the server (fast: open connections are cut, as when a database goes away).
    pub fn stop(&mut self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
        self.running = false;
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .env("LC_ALL", "C")
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed ({}):\n{}{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        data.to_str().unwrap(),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                )
                .output();
        }
    }
}
