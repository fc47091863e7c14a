//! nexus: a Claude API proxy on io_uring, thread per core.
//!
//! The main thread parses the configuration, starts the shared services (credential
//! watcher, resolver) and the workers, then waits for SIGINT/SIGTERM and shuts down
//! gracefully.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus::client::Upstream;
use nexus::clients::watch::Clients;
use nexus::config::{self, Cli, Command, Config, LoginArgs};
use nexus::conn::body_budget::BodyBudget;
use nexus::credentials::CredentialStore;
use nexus::ledger::Ledger;
use nexus::notify::{logger, redact, Hub};
use nexus::server::{self, runtime, Lifecycle, Shared};
use nexus::stats::Stats;

fn main() {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("nexus {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let config = match Config::load(&cli, &|name| std::env::var(name).ok(), &cwd) {
        Ok(config) => config,
        Err(e) if cli.check_health => unhealthy(&e.to_string()),
        Err(e) => fail(&e.to_string()),
    };
    match &cli.command {
        Some(Command::Login(args)) => login(args, &config),
        Some(Command::Credentials(_)) => list_credentials(&config),
        None => {}
    }
    if cli.check_health {
        use nexus::health_check::{check, TIMEOUT};
        match check(&config.host, config.port, TIMEOUT, config.tls.is_some()) {
            Ok(line) => {
                println!("nexus: healthy ({line})");
                return;
            }
            Err(e) => unhealthy(&e),
        }
    }
    init_logging(&config);

    // Signals are taken synchronously by this thread; block them before any thread starts
    // so every worker inherits the mask and none is interrupted.
    let signals = block_shutdown_signals();

    let mut config = config;
    if config.port == 0 {
        config.port = pick_free_port(&config.host).unwrap_or_else(|e| fail(&e));
    }
    let upstream = Upstream::from_config(&config).unwrap_or_else(|e| fail(&e));
    let credentials = CredentialStore::open(config.credentials_dir.clone());
    credentials.watch();
    credentials
        .start_refresher(&config)
        .unwrap_or_else(|e| fail(&e));
    if let Some(warning) = nexus::credentials::exposure_warning(&config, &credentials) {
        log::warn!("{warning}");
    }
    let stats = Arc::new(Stats::new(config.max_domains, config.workers));
    let ledger = Ledger::start(&config, mask_body);
    if ledger.enabled()
        && config.admin_key.is_none()
        && !nexus::credentials::is_loopback(&config.host)
    {
        log::warn!(
            "listening on {} (not loopback) with the request ledger and no NEXUS_ADMIN_KEY: \
             /api/* on port {} serves every request's history{} to any client. Set \
             NEXUS_ADMIN_KEY, or listen on 127.0.0.1",
            config.host,
            config.port,
            if config.store_bodies {
                ", with bodies"
            } else {
                ""
            }
        );
    }
    let clients = start_clients(&config, &ledger);
    share_with_fleet(&ledger, &clients, &credentials);
    let notify =
        Hub::new(&config, Arc::clone(&stats), Arc::clone(&ledger)).unwrap_or_else(|e| fail(&e));
    let tls = config
        .tls
        .as_ref()
        .map(nexus::tls::ListenerTls::start)
        .transpose()
        .unwrap_or_else(|e| fail(&e));
    let max_connections = server::limits::max_connections(config.max_connections);
    let body_budget = BodyBudget::new(config.max_buffered_bytes);
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        upstream,
        credentials,
        lifecycle: Lifecycle::default(),
        max_connections,
        body_budget,
        stats,
        notify,
        ledger,
        clients,
        tls,
        started: Instant::now(),
    });
    let drivers = server::start_workers(&shared).unwrap_or_else(|e| fail(&e));
    let config = &shared.config;
    let driver_note = if config.driver == config::DriverChoice::Epoll {
        format!("{} (NEXUS_DRIVER=epoll)", drivers[0])
    } else if drivers.contains(&runtime::Driver::Epoll) {
        format!("{} (io_uring unavailable)", drivers[0])
    } else {
        drivers[0].to_string()
    };
    println!(
        "nexus {} listening on {}:{}{}, {} workers, driver {}, upstream {}, credentials {}, ledger {}",
        env!("CARGO_PKG_VERSION"),
        config.host,
        config.port,
        shared
            .tls
            .as_ref()
            .map(|tls| format!(" ({})", tls.describe()))
            .unwrap_or_default(),
        config.workers,
        driver_note,
        shared.upstream.display,
        config.credentials_dir.display(),
        shared.ledger.describe(),
    );

    shared
        .stats
        .start_report(config.stats_interval, shared.started);
    wait_for_signal(&signals);
    shutdown(&shared, &signals);
}

/// Loads the named clients, re-reads their file as it changes, and counts back what they
/// spent in the windows still open (from the ledger, on a thread of its own: budgets
/// count from this start until it answers).
fn start_clients(config: &Config, ledger: &Ledger) -> Arc<Clients> {
    let (clients, scanner) = Clients::load(&config.clients_file).unwrap_or_else(|e| fail(&e));
    scanner.spawn();
    if clients.current().is_empty() || ledger.is_fleet() {
        // Nobody's spend to read back, or the fleet thread reads it: every process's,
        // this one's earlier starts included.
        return clients;
    }
    let restore_into = Arc::clone(&clients);
    ledger.restore_spend(
        nexus::clients::set::open_windows(nexus::stats::now_ms()),
        nexus::clients::spend::BUCKET_MS,
        move |lines| {
            restore_into.current().restore(&lines);
            if !lines.is_empty() {
                log::info!("clients: earlier spend read back from the ledger");
            }
        },
    );
    clients
}

/// With a PostgreSQL ledger: counts what the other processes on it spent in the named
/// clients' budgets, and rests the pool members they rested.
fn share_with_fleet(ledger: &Ledger, clients: &Arc<Clients>, credentials: &Arc<CredentialStore>) {
    let clients = Arc::clone(clients);
    let credentials = Arc::clone(credentials);
    ledger.start_fleet(nexus::ledger::fleet::Hooks {
        spend: Box::new(move |lines, now| clients.current().set_fleet_spend(lines, now)),
        rests: Box::new(move |rests, now| {
            for rest in rests {
                credentials.rest_member(&rest.domain, &rest.member, rest.until_ms, now);
            }
        }),
    });
}

/// A body as the ledger stores it: every secret masked as the `DEBUG=true` trace masks it.
fn mask_body(body: &[u8]) -> Vec<u8> {
    redact::redact(&String::from_utf8_lossy(body))
        .into_owned()
        .into_bytes()
}

/// `--check-health` failed: exit 1, the status container runtimes read as unhealthy.
fn unhealthy(message: &str) -> ! {
    eprintln!("nexus: unhealthy: {message}");
    std::process::exit(1);
}

/// `nexus login`: exit 0 with the file written, 1 when the login failed, 2 on a flag
/// it cannot honour.
fn login(args: &LoginArgs, config: &Config) -> ! {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    match nexus::login::run(args, config, &mut input, &mut std::io::stdout()) {
        Ok(()) => std::process::exit(0),
        Err(e @ nexus::login::LoginError::Usage(_)) => fail(&e.to_string()),
        Err(e) => {
            eprintln!("nexus: login failed, nothing was written: {e}");
            std::process::exit(1);
        }
    }
}

/// `nexus credentials`: exit 1 when a file does not parse.
fn list_credentials(config: &Config) -> ! {
    let listing = nexus::credentials_list::list(&config.credentials_dir, now_ms());
    print!("{}", listing.table);
    for problem in &listing.problems {
        eprintln!("nexus: {problem}");
    }
    std::process::exit(if listing.problems.is_empty() { 0 } else { 1 });
}

fn now_ms() -> u64 {
    nexus::credentials::token_client::now_ms()
}

fn fail(message: &str) -> ! {
    eprintln!("nexus: {message}");
    std::process::exit(2);
}

/// The level: `NEXUS_LOG` (env, .env), else `RUST_LOG`, else info; `DEBUG=true` raises
/// the default to debug.
fn init_logging(config: &Config) {
    let configured = if std::env::var_os("NEXUS_LOG").is_none() && config.log_level == "info" {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|spec| logger::parse_level(&spec))
    } else {
        None
    };
    let level = configured.unwrap_or_else(|| {
        logger::parse_level(&config.log_level).unwrap_or(log::LevelFilter::Info)
    });
    let level = if config.debug && level == log::LevelFilter::Info {
        log::LevelFilter::Debug
    } else {
        level
    };
    logger::init(level);
}

/// Binds `host:0` once to learn a free port for all workers to share.
fn pick_free_port(host: &str) -> Result<u16, String> {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind {host}:0 to pick a port: {e}"))
}

fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then masking the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(signals: &libc::sigset_t) -> libc::c_int {
    let mut signal: libc::c_int = 0;
    // SAFETY: the set was initialised by block_shutdown_signals.
    while unsafe { libc::sigwait(signals, &mut signal) } != 0 {}
    signal
}

/// Waits up to `timeout` for a shutdown signal; true if one came.
fn signal_within(signals: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &ts) > 0 }
}

/// How long shutdown waits for queued telemetry and Slack events to be delivered.
const NOTIFY_FLUSH_GRACE: Duration = Duration::from_secs(3);

/// Gives the outboxes a short grace to deliver what is queued; a second signal cuts it.
fn flush_notifications(hub: &Hub, signals: &libc::sigset_t) {
    if hub.pending() == 0 {
        return;
    }
    log::info!(
        "delivering {} queued telemetry/Slack event(s) (up to {}s)",
        hub.pending(),
        NOTIFY_FLUSH_GRACE.as_secs()
    );
    let deadline = Instant::now() + NOTIFY_FLUSH_GRACE;
    while hub.pending() > 0 && Instant::now() < deadline {
        if signal_within(signals, Duration::from_millis(20)) {
            break;
        }
    }
    if hub.pending() > 0 {
        log::warn!(
            "{} telemetry/Slack event(s) not delivered before exit",
            hub.pending()
        );
    }
}

/// How long shutdown waits for the ledger's last rows to be written.
const LEDGER_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Writes every row queued so far before exit (the requests have all ended by now).
fn flush_ledger(ledger: &Ledger) {
    if !ledger.enabled() {
        return;
    }
    if ledger.flush(LEDGER_FLUSH_GRACE) {
        log::info!("ledger: every row written");
    } else {
        log::warn!(
            "ledger: rows not written before exit (database {} unavailable within {}s)",
            ledger.describe(),
            LEDGER_FLUSH_GRACE.as_secs()
        );
    }
}

/// Stops accepting, lets in-flight requests finish within the grace period, exits 0.
/// A second signal exits at once.
fn shutdown(shared: &Shared, signals: &libc::sigset_t) -> ! {
    let grace = shared.config.shutdown_grace;
    let lifecycle = &shared.lifecycle;
    lifecycle.begin_shutdown();
    log::info!(
        "shutting down: no new connections; waiting up to {}s for requests in flight",
        grace.as_secs()
    );
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && (lifecycle.accepting() > 0 || lifecycle.busy() > 0) {
        if signal_within(signals, Duration::from_millis(50)) {
            log::warn!(
                "second signal: exiting now with {} request(s) in flight",
                lifecycle.busy()
            );
            std::process::exit(1);
        }
    }
    if lifecycle.busy() > 0 {
        log::warn!(
            "grace period over: {} request(s) still in flight are cut off",
            lifecycle.busy()
        );
    } else {
        log::info!("all requests finished");
    }
    flush_notifications(&shared.notify, signals);
    flush_ledger(&shared.ledger);
    // Workers write their batched log lines every 100 ms: let the last batch out.
    std::thread::sleep(Duration::from_millis(150));
    log::info!("bye");
    std::process::exit(0);
}
