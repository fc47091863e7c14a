//! CLI flags + real environment + env file → one validated [`Config`].
//!
//! Precedence: CLI flags win over the real environment, which wins over the env file
//! (`.env` in the working directory, or the file named by `-e`). A bad value stops
//! start-up with one line that says which value, where it came from, and what was expected.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

use crate::cost::Pricing;
pub use crate::http::url::{parse_upstream_url, UpstreamUrl};

/// nexus: a Claude API proxy on io_uring, thread per core.
#[derive(FromArgs, Debug, Default)]
#[argh(help_triggers("-h", "--help"))]
pub struct Cli {
    /// port to listen on (env PORT, default 3000; 0 picks a free port)
    #[argh(option, short = 'p')]
    pub port: Option<String>,
    /// address to bind (env HOST, default 0.0.0.0)
    #[argh(option, short = 'H')]
    pub host: Option<String>,
    /// load environment from this file instead of ./.env
    #[argh(option, short = 'e')]
    pub env_file: Option<String>,
    /// worker threads, one io_uring runtime each (env NEXUS_WORKERS, default: available cores)
    #[argh(option, short = 'w')]
    pub workers: Option<String>,
    /// upstream base URL (env UPSTREAM_URL, default https://api.anthropic.com)
    #[argh(option)]
    pub upstream: Option<String>,
    /// GET / on the configured port (2 s limit) and exit 0 if nexus answers 200, else 1;
    /// for container health checks
    #[argh(switch)]
    pub check_health: bool,
    /// print the version and exit
    #[argh(switch, short = 'v')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving: `nexus login …`, `nexus credentials`.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    Login(LoginArgs),
    Credentials(CredentialsArgs),
}

/// log a Claude subscription in (OAuth with PKCE) and write CREDENTIALS_DIR/DOMAIN.credentials.json
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "login", help_triggers("-h", "--help"))]
pub struct LoginArgs {
    /// the domain whose credential file to write (e.g. claude-1.example.com)
    #[argh(positional)]
    pub domain: String,
    /// take the OAuth credential from a Claude Code credentials file
    /// (~/.claude/.credentials.json) instead of the browser flow
    #[argh(option)]
    pub import: Option<String>,
    /// write the credential as this member of the domain's credential pool (added, or its
    /// tokens replaced; every other member kept)
    #[argh(option)]
    pub id: Option<String>,
}

/// list the credentials in CREDENTIALS_DIR: type, expiry, refresh token; never a secret
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "credentials", help_triggers("-h", "--help"))]
pub struct CredentialsArgs {}

// `nexus login`'s defaults are what Claude Code's own login sends (client id in
// credentials::token_client): the authorize page on claude.ai with `code=true`, which
// redirects to the platform's code-callback page showing `code#state` for pasting. The
// callback moved from console.anthropic.com/oauth/code/callback to platform.claude.com
// with the token endpoint; anthropics/claude-code issues #45783 and #88877 (2026) quote
// the current URI, the login scripts of grandimam/barebone and rodmena-limited/trust5
// the authorize URL and these scopes. Each is overridable because they have moved before.
/// Default `OAUTH_AUTHORIZE_URL`.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://claude.ai/oauth/authorize";
/// Default `OAUTH_REDIRECT_URI`.
pub const DEFAULT_REDIRECT_URI: &str = "https://platform.claude.com/oauth/code/callback";
/// Default `OAUTH_SCOPES`.
pub const DEFAULT_SCOPES: &str = "org:create_api_key user:profile user:inference";

/// Which I/O driver the workers should try first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring, falling back to epoll when the ring cannot be set up.
    Uring,
    /// epoll only.
    Epoll,
}

/// Slack settings shared by all domains unless a credential file overrides them.
#[derive(Debug, Clone, Default)]
pub struct SlackConfig {
    pub webhook_url: Option<String>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub enabled: bool,
}

/// Everything nexus needs to run, validated. Settings for features that have not landed
/// yet (stats report, notify outbox, OAuth refresh, client setup) are parsed and checked
/// now so a deployment's configuration is validated from day one.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub driver: DriverChoice,
    pub upstream: UpstreamUrl,
    pub upstream_ca_file: Option<PathBuf>,
    pub upstream_timeout: Duration,
    /// Idle pooled upstream connections are closed after this (NEXUS_UPSTREAM_IDLE_SECS).
    pub upstream_idle_timeout: Duration,
    /// Opening an upstream connection, TCP + TLS (NEXUS_CONNECT_TIMEOUT_SECS) → 502.
    pub connect_timeout: Duration,
    /// No upstream byte for this long while streaming a body ends it (NEXUS_STREAM_IDLE_SECS).
    pub stream_idle_timeout: Duration,
    /// A request head must be complete this long after its first byte, or after a new
    /// connection is accepted (NEXUS_HEADER_TIMEOUT_SECS) → 408.
    pub header_timeout: Duration,
    /// Longest pause while reading a request body (NEXUS_BODY_TIMEOUT_SECS) → 408.
    pub body_timeout: Duration,
    /// A keep-alive connection with no new request is closed (NEXUS_KEEPALIVE_SECS).
    pub keepalive_timeout: Duration,
    /// A client that accepts no bytes for this long is dropped (NEXUS_CLIENT_WRITE_TIMEOUT_SECS).
    pub client_write_timeout: Duration,
    /// Client connections open at once; more wait in the kernel's backlog
    /// (NEXUS_MAX_CONNECTIONS; 0 = derived from the open-file limit).
    pub max_connections: usize,
    pub claude_api_key: Option<String>,
    pub client_api_keys: Vec<String>,
    pub credentials_dir: PathBuf,
    pub oauth_token_url: String,
    /// Where `nexus login` sends the browser (OAUTH_AUTHORIZE_URL).
    pub oauth_authorize_url: String,
    /// The page the authorize step redirects to, which shows the code (OAUTH_REDIRECT_URI).
    pub oauth_redirect_uri: String,
    /// Space-separated scopes `nexus login` asks for (OAUTH_SCOPES).
    pub oauth_scopes: String,
    /// Bound on one OAuth token request (NEXUS_OAUTH_TIMEOUT_SECS).
    pub oauth_timeout: Duration,
    pub client_setup_dir: PathBuf,
    pub telemetry_endpoint: Option<String>,
    pub slack: SlackConfig,
    pub debug: bool,
    pub log_level: String,
    pub stats_interval: Duration,
    pub shutdown_grace: Duration,
    pub max_domains: usize,
    pub notify_queue: usize,
    /// Request bodies held in memory at once, all connections together
    /// (NEXUS_MAX_BUFFERED_MB).
    pub max_buffered_bytes: u64,
    /// The built-in pricing table, extended by NEXUS_PRICING_FILE.
    pub pricing: Arc<Pricing>,
    /// `NEXUS_DB`: where the ledger of requests is kept.
    pub db: DbTarget,
    /// `NEXUS_STORE_BODIES`: the ledger keeps request and response bodies (masked).
    pub store_bodies: bool,
    /// `NEXUS_RETENTION_DAYS`: ledger rows older than this are deleted (0 keeps all).
    pub retention_days: u64,
    /// `NEXUS_ADMIN_KEY`: guards `/api/*`, `/dashboard`, `/token-stats`, `/metrics`.
    pub admin_key: Option<String>,
    /// `CLIENTS_FILE`: the named clients (`clients.json` in the working directory; used
    /// when it exists).
    pub clients_file: PathBuf,
    /// `TLS_CERT_FILE` + `TLS_KEY_FILE` (+ `TLS_CERTS_DIR`): HTTPS on the listening port.
    pub tls: Option<TlsFiles>,
}

/// Where the listening side's certificates are (paths resolved against the working
/// directory); read and watched by `crate::tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The default certificate chain (PEM), served when no SNI name has its own pair.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// `<domain>.crt` + `<domain>.key` pairs chosen by SNI.
    pub certs_dir: Option<PathBuf>,
}

/// `NEXUS_DB`: the ledger's database.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// `off`: no ledger.
    Off,
    /// `sqlite:PATH` (relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as given (it may hold a password).
    Postgres(String),
}

impl fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl DbTarget {
    /// Parses `NEXUS_DB`; `Err` says what was expected.
    pub fn parse(value: &str, cwd: &Path) -> Result<DbTarget, &'static str> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(DbTarget::Off);
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            // `sqlite://path` is a common spelling of the same thing.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("sqlite:PATH with a file name");
            }
            return Ok(DbTarget::Sqlite(cwd.join(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(DbTarget::Postgres(value.to_string()));
        }
        Err("sqlite:PATH, postgres://user:pass@host:port/db or off")
    }

    /// What the start-up line shows: the engine and the file or host, never a password.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Off => "off".into(),
            DbTarget::Sqlite(path) => format!("sqlite:{}", path.display()),
            DbTarget::Postgres(url) => {
                let rest = url.split_once("://").map_or("", |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split(['?']).next().unwrap_or("");
                format!("postgres://{host}")
            }
        }
    }
}

/// A configuration problem, phrased for the one line printed before exiting.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a setting's value came from, so an error can point at it.
#[derive(Debug, Clone)]
enum Origin {
    Flag(&'static str),
    Env,
    File(PathBuf, usize),
}

#[derive(Debug, Clone)]
struct Setting {
    name: &'static str,
    value: String,
    origin: Origin,
}

impl Setting {
    fn invalid(&self, expected: &str) -> ConfigError {
        ConfigError(format!(
            "invalid {} {:?} (from {}): expected {expected}",
            self.name,
            self.value,
            self.place()
        ))
    }

    /// Where the value came from, for messages.
    fn place(&self) -> String {
        match &self.origin {
            Origin::Flag(flag) => format!("command-line flag {flag}"),
            Origin::Env => format!("environment variable {}", self.name),
            Origin::File(path, line) => format!("env file {}:{line}", path.display()),
        }
    }
}

/// `CLAUDE_API_KEY`, trimmed; `None` when empty. It goes into upstream heads, so it must
/// be visible ASCII only — the rule of `credentials::header_token`, restated here with
/// std's `is_ascii_graphic` because credentials already depends on this module. The
/// message never repeats the key.
fn claude_api_key(setting: Option<Setting>) -> Result<Option<String>, ConfigError> {
    let Some(setting) = setting else {
        return Ok(None);
    };
    let key = setting.value.trim();
    if key.is_empty() {
        return Ok(None);
    }
    if let Some(bad) = key.bytes().find(|b| !b.is_ascii_graphic()) {
        let what = match bad {
            b'\r' | b'\n' => "a line break (CR or LF)",
            b' ' | b'\t' => "a space or tab",
            0x80.. => "a non-ASCII character",
            _ => "a control character",
        };
        return Err(ConfigError(format!(
            "invalid CLAUDE_API_KEY (from {}): it contains {what}; an API key must be \
             visible ASCII only",
            setting.place()
        )));
    }
    Ok(Some(key.to_string()))
}

/// Looks a name up in the CLI, then the real environment, then the env file.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: HashMap<String, (String, PathBuf, usize)>,
}

impl Sources<'_> {
    fn get(
        &self,
        name: &'static str,
        flag: Option<(&'static str, &Option<String>)>,
    ) -> Option<Setting> {
        if let Some((flag_name, Some(value))) = flag {
            return Some(Setting {
                name,
                value: value.clone(),
                origin: Origin::Flag(flag_name),
            });
        }
        if let Some(value) = (self.env)(name) {
            return Some(Setting {
                name,
                value,
                origin: Origin::Env,
            });
        }
        self.file.get(name).map(|(value, path, line)| Setting {
            name,
            value: value.clone(),
            origin: Origin::File(path.clone(), *line),
        })
    }

    /// Non-empty string value, or None.
    fn string(&self, name: &'static str) -> Option<String> {
        self.get(name, None)
            .map(|s| s.value)
            .filter(|v| !v.trim().is_empty())
    }

    fn number<T: std::str::FromStr + PartialOrd + fmt::Display>(
        &self,
        name: &'static str,
        flag: Option<(&'static str, &Option<String>)>,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        let Some(setting) = self.get(name, flag) else {
            return Ok(default);
        };
        match setting.value.trim().parse::<T>() {
            Ok(v) if v >= min && v <= max => Ok(v),
            _ => Err(setting.invalid(&format!("a whole number from {min} to {max}"))),
        }
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(setting) = self.get(name, None) else {
            return Ok(default);
        };
        match setting.value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(setting.invalid("true or false")),
        }
    }
}

impl Config {
    /// Builds the configuration from parsed flags, a lookup into the real environment
    /// (injected so tests need not touch the process environment) and the working directory.
    pub fn load(
        cli: &Cli,
        env: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        let file = match &cli.env_file {
            Some(path) => {
                let path = cwd.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError(format!(
                        "cannot read env file {} (from flag -e): {e}",
                        path.display()
                    ))
                })?;
                parse_env_file(&text, &path)?
            }
            None => {
                let path = cwd.join(".env");
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_env_file(&text, &path)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
                    Err(e) => {
                        return Err(ConfigError(format!("cannot read {}: {e}", path.display())))
                    }
                }
            }
        };
        let src = Sources { env, file };

        let port = src.number("PORT", Some(("-p", &cli.port)), 3000u16, 0, 65535)?;
        let host = src
            .get("HOST", Some(("-H", &cli.host)))
            .map(|s| s.value)
            .unwrap_or_else(|| "0.0.0.0".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers = src.number("NEXUS_WORKERS", Some(("-w", &cli.workers)), cores, 1, 1024)?;

        let driver = match src.get("NEXUS_DRIVER", None) {
            None => DriverChoice::Uring,
            Some(s) => match s.value.trim().to_ascii_lowercase().as_str() {
                "" | "uring" | "io_uring" | "iouring" => DriverChoice::Uring,
                "epoll" | "legacy" => DriverChoice::Epoll,
                _ => return Err(s.invalid("uring or epoll")),
            },
        };

        let upstream = match src.get("UPSTREAM_URL", Some(("--upstream", &cli.upstream))) {
            None => {
                parse_upstream_url("https://api.anthropic.com").expect("default upstream parses")
            }
            Some(s) => parse_upstream_url(s.value.trim()).map_err(|why| s.invalid(why))?,
        };

        let upstream_ca_file = match src
            .get("UPSTREAM_CA_FILE", None)
            .filter(|s| !s.value.trim().is_empty())
        {
            None => None,
            Some(s) => {
                let path = cwd.join(s.value.trim());
                if let Err(e) = std::fs::File::open(&path) {
                    return Err(s.invalid(&format!("a readable PEM file ({e})")));
                }
                Some(path)
            }
        };

        let log_level = match src.get("NEXUS_LOG", None) {
            None => "info".to_string(),
            Some(s) => {
                let level = s.value.trim().to_ascii_lowercase();
                if !["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                    return Err(s.invalid("off, error, warn, info, debug or trace"));
                }
                level
            }
        };

        let pricing = Arc::new(pricing(src.get("NEXUS_PRICING_FILE", None), cwd)?);
        let db = match src.get("NEXUS_DB", None) {
            None => DbTarget::Sqlite(cwd.join("nexus.db")),
            // The message must not repeat a postgres URL: it may hold a password.
            Some(s) => DbTarget::parse(&s.value, cwd).map_err(|why| {
                ConfigError(format!(
                    "invalid NEXUS_DB (from {}): expected {why}",
                    s.place()
                ))
            })?,
        };

        let secs = |name: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            src.number(name, None, default, min, 365 * 24 * 3600)
                .map(Duration::from_secs)
        };

        Ok(Config {
            host,
            port,
            workers,
            driver,
            upstream,
            upstream_ca_file,
            upstream_timeout: secs("UPSTREAM_TIMEOUT_SECS", 600, 1)?,
            upstream_idle_timeout: secs("NEXUS_UPSTREAM_IDLE_SECS", 30, 1)?,
            connect_timeout: secs("NEXUS_CONNECT_TIMEOUT_SECS", 10, 1)?,
            stream_idle_timeout: secs("NEXUS_STREAM_IDLE_SECS", 300, 1)?,
            header_timeout: secs("NEXUS_HEADER_TIMEOUT_SECS", 30, 1)?,
            body_timeout: secs("NEXUS_BODY_TIMEOUT_SECS", 60, 1)?,
            keepalive_timeout: secs("NEXUS_KEEPALIVE_SECS", 75, 1)?,
            client_write_timeout: secs("NEXUS_CLIENT_WRITE_TIMEOUT_SECS", 300, 1)?,
            max_connections: src.number("NEXUS_MAX_CONNECTIONS", None, 0usize, 0, 10_000_000)?,
            claude_api_key: claude_api_key(src.get("CLAUDE_API_KEY", None))?,
            client_api_keys: src
                .string("CLIENT_API_KEYS")
                .map(|v| {
                    v.split(',')
                        .map(|k| k.trim().to_string())
                        .filter(|k| !k.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            credentials_dir: cwd.join(
                src.string("CREDENTIALS_DIR")
                    .unwrap_or_else(|| "credentials".into()),
            ),
            oauth_token_url: src
                .string("OAUTH_TOKEN_URL")
                .unwrap_or_else(|| "https://platform.claude.com/v1/oauth/token".into()),
            oauth_authorize_url: src
                .string("OAUTH_AUTHORIZE_URL")
                .unwrap_or_else(|| DEFAULT_AUTHORIZE_URL.into()),
            oauth_redirect_uri: src
                .string("OAUTH_REDIRECT_URI")
                .unwrap_or_else(|| DEFAULT_REDIRECT_URI.into()),
            oauth_scopes: src
                .string("OAUTH_SCOPES")
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| DEFAULT_SCOPES.into()),
            oauth_timeout: secs("NEXUS_OAUTH_TIMEOUT_SECS", 30, 1)?,
            client_setup_dir: cwd.join(
                src.string("CLIENT_SETUP_DIR")
                    .unwrap_or_else(|| "client-setup".into()),
            ),
            telemetry_endpoint: src.string("TELEMETRY_ENDPOINT"),
            slack: SlackConfig {
                webhook_url: src.string("SLACK_WEBHOOK_URL"),
                channel: src.string("SLACK_CHANNEL"),
                username: src.string("SLACK_USERNAME"),
                icon_emoji: src.string("SLACK_ICON_EMOJI"),
                enabled: src.boolean("SLACK_ENABLED", true)?,
            },
            debug: src.boolean("DEBUG", false)?,
            log_level,
            stats_interval: secs("STATS_INTERVAL_SECS", 10, 0)?,
            shutdown_grace: secs("NEXUS_SHUTDOWN_GRACE_SECS", 30, 0)?,
            max_domains: src.number("NEXUS_MAX_DOMAINS", None, 1000usize, 1, 10_000_000)?,
            notify_queue: src.number("NEXUS_NOTIFY_QUEUE", None, 10_000usize, 1, 10_000_000)?,
            max_buffered_bytes: src.number("NEXUS_MAX_BUFFERED_MB", None, 256u64, 1, 1 << 20)?
                << 20,
            pricing,
            db,
            store_bodies: src.boolean("NEXUS_STORE_BODIES", false)?,
            retention_days: src.number("NEXUS_RETENTION_DAYS", None, 30u64, 0, 100_000)?,
            admin_key: src.string("NEXUS_ADMIN_KEY").map(|k| k.trim().to_string()),
            clients_file: cwd.join(
                src.string("CLIENTS_FILE")
                    .map_or_else(|| "clients.json".into(), |f| f.trim().to_string()),
            ),
            tls: tls_files(&src, cwd)?,
        })
    }
}

/// `TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CERTS_DIR`: both files or neither; a directory
/// only beside them (its pairs fall back to the default one). The files are parsed at
/// start by `crate::tls`, which names the file that is wrong.
fn tls_files(src: &Sources, cwd: &Path) -> Result<Option<TlsFiles>, ConfigError> {
    let path = |name| src.string(name).map(|v| cwd.join(v.trim()));
    let (cert, key, dir) = (
        path("TLS_CERT_FILE"),
        path("TLS_KEY_FILE"),
        path("TLS_CERTS_DIR"),
    );
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => {
            if let Some(dir) = dir.as_ref().filter(|d| !d.is_dir()) {
                return Err(ConfigError(format!(
                    "invalid TLS_CERTS_DIR {}: not a directory",
                    dir.display()
                )));
            }
            Ok(Some(TlsFiles {
                cert_file,
                key_file,
                certs_dir: dir,
            }))
        }
        (None, None) if dir.is_none() => Ok(None),
        (None, None) => Err(ConfigError(
            "TLS_CERTS_DIR is set without TLS_CERT_FILE and TLS_KEY_FILE: HTTPS needs a \
             default certificate for clients whose SNI name has no pair in the directory"
                .into(),
        )),
        (Some(_), None) => Err(ConfigError(
            "TLS_CERT_FILE is set without TLS_KEY_FILE: HTTPS needs both".into(),
        )),
        (None, Some(_)) => Err(ConfigError(
            "TLS_KEY_FILE is set without TLS_CERT_FILE: HTTPS needs both".into(),
        )),
    }
}

/// The built-in pricing table, extended by the file `NEXUS_PRICING_FILE` names (relative
/// to the working directory). A file that cannot be read, or is not a valid table, stops
/// start-up with one line naming the file and the field.
fn pricing(setting: Option<Setting>, cwd: &Path) -> Result<Pricing, ConfigError> {
    let mut pricing = Pricing::builtin();
    let Some(setting) = setting.filter(|s| !s.value.trim().is_empty()) else {
        return Ok(pricing);
    };
    let path = cwd.join(setting.value.trim());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError(format!(
            "cannot read pricing file {} (from {}): {e}",
            path.display(),
            setting.place()
        ))
    })?;
    pricing.extend(&text).map_err(|e| {
        ConfigError(format!(
            "invalid pricing file {} (from {}): {e}",
            path.display(),
            setting.place()
        ))
    })?;
    Ok(pricing)
}

/// Parses `KEY=VALUE` lines: `#` comments, optional `export `, optional single or double quotes.
fn parse_env_file(
    text: &str,
    path: &Path,
) -> Result<HashMap<String, (String, PathBuf, usize)>, ConfigError> {
    let mut vars = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError(format!(
                "{}:{}: expected KEY=VALUE, found {:?}",
                path.display(),
                index + 1,
                raw
            )));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError(format!(
                "{}:{}: invalid variable name {:?}",
                path.display(),
                index + 1,
                key
            )));
        }
        let value = value.trim();
        let value = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value.split(" #").next().unwrap_or("").trim_end(),
        };
        vars.insert(
            key.to_string(),
            (value.to_string(), path.to_path_buf(), index + 1),
        );
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(cli: Cli, env: &[(&str, &str)], dir: &Path) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&cli, &move |k| env.get(k).cloned(), dir)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nexus-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn defaults_match_the_design() {
        let dir = temp_dir("defaults");
        let c = load(Cli::default(), &[], &dir).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.upstream.to_string(), "https://api.anthropic.com");
        assert_eq!(c.upstream.port, 443);
        assert_eq!(c.upstream_timeout, Duration::from_secs(600));
        assert_eq!(c.driver, DriverChoice::Uring);
        assert_eq!(c.credentials_dir, dir.join("credentials"));
    }

    #[test]
    fn cli_beats_env_beats_file() {
        let dir = temp_dir("precedence");
        std::fs::write(
            dir.join(".env"),
            "PORT=1111\nHOST=10.0.0.1\nCLAUDE_API_KEY='from-file'\n",
        )
        .unwrap();
        let c = load(Cli::default(), &[("PORT", "2222")], &dir).unwrap();
        assert_eq!((c.port, c.host.as_str()), (2222, "10.0.0.1"));
        assert_eq!(c.claude_api_key.as_deref(), Some("from-file"));
        let cli = Cli {
            port: Some("3333".into()),
            ..Cli::default()
        };
        assert_eq!(load(cli, &[("PORT", "2222")], &dir).unwrap().port, 3333);
    }

    #[test]
    fn bad_values_say_what_and_where() {
        let dir = temp_dir("bad");
        let cli = Cli {
            port: Some("abc".into()),
            ..Cli::default()
        };
        let err = load(cli, &[], &dir).unwrap_err().to_string();
        assert!(
            err.contains("PORT") && err.contains("abc") && err.contains("-p"),
            "{err}"
        );
        let err = load(Cli::default(), &[("UPSTREAM_URL", "ftp://x")], &dir)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("UPSTREAM_URL") && err.contains("environment"),
            "{err}"
        );
        let cli = Cli {
            env_file: Some("missing.env".into()),
            ..Cli::default()
        };
        let err = load(cli, &[], &dir).unwrap_err().to_string();
        assert!(err.contains("missing.env"), "{err}");
        let err = load(
            Cli::default(),
            &[("UPSTREAM_CA_FILE", "/nonexistent/ca.pem")],
            &dir,
        )
        .unwrap_err();
        assert!(err.to_string().contains("UPSTREAM_CA_FILE"), "{err}");
    }

    #[test]
    fn tls_files_come_in_pairs_and_resolve_against_the_working_directory() {
        let dir = temp_dir("tls");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let tls = |env: &[(&str, &str)]| load(Cli::default(), env, &dir).map(|c| c.tls);
        assert_eq!(tls(&[]).unwrap(), None);
        let pair = [("TLS_CERT_FILE", "a.crt"), ("TLS_KEY_FILE", "a.key")];
        assert_eq!(
            tls(&pair).unwrap(),
            Some(TlsFiles {
                cert_file: dir.join("a.crt"),
                key_file: dir.join("a.key"),
                certs_dir: None,
            })
        );
        let with_dir = [pair[0], pair[1], ("TLS_CERTS_DIR", "certs")];
        assert_eq!(
            tls(&with_dir).unwrap().unwrap().certs_dir,
            Some(dir.join("certs"))
        );
        for (env, says) in [
            (&pair[..1], "without TLS_KEY_FILE"),
            (&pair[1..], "without TLS_CERT_FILE"),
            (
                &[("TLS_CERTS_DIR", "certs")][..],
                "TLS_CERTS_DIR is set without",
            ),
            (
                &[pair[0], pair[1], ("TLS_CERTS_DIR", "nowhere")][..],
                "not a directory",
            ),
        ] {
            let err = tls(env).unwrap_err().to_string();
            assert!(err.contains(says), "{env:?}: {err}");
        }
    }

    #[test]
    fn claude_api_key_must_be_visible_ascii_and_is_never_repeated() {
        let dir = temp_dir("api-key");
        let key = |value: &str| load(Cli::default(), &[("CLAUDE_API_KEY", value)], &dir);
        assert_eq!(
            key("  sk-ant-api03-ok\n")
                .unwrap()
                .claude_api_key
                .as_deref(),
            Some("sk-ant-api03-ok"),
            "surrounding whitespace is trimmed"
        );
        assert_eq!(key("   ").unwrap().claude_api_key, None);
        for (value, what) in [
            ("sk-ant-api03-secret\r\nx-injected: 1", "line break"),
            ("sk-ant-api03-secret\u{1}", "control character"),
            ("sk-ant-api03 secret", "space"),
            ("sk-ant-api03-sécret", "non-ASCII"),
        ] {
            let err = key(value).unwrap_err().to_string();
            assert!(
                err.contains("CLAUDE_API_KEY") && err.contains(what),
                "{err}"
            );
            assert!(err.contains("environment variable"), "{err}");
            assert!(!err.contains("secret") && !err.contains("cret"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_pricing_file_extends_the_table_or_stops_start_up_naming_its_field() {
        let dir = temp_dir("pricing");
        let builtin = load(Cli::default(), &[], &dir).unwrap().pricing;
        assert_eq!(builtin.find("acme-1"), None);
        std::fs::write(
            dir.join("prices.json"),
            r#"{"models":{"acme-1":{"input":1,"output":2,"cacheWrite5m":1.25,"cacheWrite1h":2,"cacheRead":0.1}}}"#,
        )
        .unwrap();
        let c = load(
            Cli::default(),
            &[("NEXUS_PRICING_FILE", "prices.json")],
            &dir,
        )
        .unwrap();
        assert_eq!(c.pricing.find("acme-1").unwrap().base.output, 2_000_000);
        assert!(
            c.pricing.find("claude-opus-4-1").is_some(),
            "built-in models stay"
        );

        std::fs::write(
            dir.join("broken.json"),
            r#"{"models":{"acme-1":{"input":"one","output":2}}}"#,
        )
        .unwrap();
        let err = load(
            Cli::default(),
            &[("NEXUS_PRICING_FILE", "broken.json")],
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&dir.join("broken.json").display().to_string()),
            "{err}"
        );
        assert!(err.contains("models.acme-1.input"), "{err}");
        assert!(err.contains("NEXUS_PRICING_FILE"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = load(
            Cli::default(),
            &[("NEXUS_PRICING_FILE", "missing.json")],
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("cannot read pricing file"), "{err}");
    }

    #[test]
    fn ledger_settings() {
        let dir = temp_dir("ledger");
        let c = load(Cli::default(), &[], &dir).unwrap();
        assert_eq!(c.db, DbTarget::Sqlite(dir.join("nexus.db")));
        assert!(!c.store_bodies);
        assert_eq!((c.retention_days, c.admin_key.as_deref()), (30, None));
        assert_eq!(c.clients_file, dir.join("clients.json"));
        let c = load(
            Cli::default(),
            &[("CLIENTS_FILE", "/etc/nexus/clients.json")],
            &dir,
        )
        .unwrap();
        assert_eq!(c.clients_file, Path::new("/etc/nexus/clients.json"));
        let db = |v: &str| load(Cli::default(), &[("NEXUS_DB", v)], &dir).map(|c| c.db);
        assert_eq!(db("off").unwrap(), DbTarget::Off);
        assert_eq!(
            db("sqlite:/tmp/x.db").unwrap(),
            DbTarget::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            db("sqlite:rel.db").unwrap(),
            DbTarget::Sqlite(dir.join("rel.db"))
        );
        let pg = db("postgres://u:hunter2@db.example:5432/nexus").unwrap();
        assert_eq!(format!("{pg:?}"), "postgres://db.example:5432/nexus");
        let err = db("mysql://u:hunter2@h/db").unwrap_err().to_string();
        assert!(
            err.contains("NEXUS_DB") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn upstream_urls() {
        let u = parse_upstream_url("http://127.0.0.1:8080/gateway/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 8080));
        assert_eq!(
            (u.authority.as_str(), u.base_path.as_str()),
            ("127.0.0.1:8080", "/gateway")
        );
        let u = parse_upstream_url("https://[::1]:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:8443")
        );
        assert!(parse_upstream_url("https://host:0").is_err());
        assert!(parse_upstream_url("https://user@host").is_err());
    }
}
