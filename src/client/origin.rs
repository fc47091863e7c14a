//! An origin: where a server is (scheme, host, port), how to reach it (TLS settings,
//! timeouts) and whether it has been reachable lately. Shared by every worker.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::health::ConnectHealth;
use super::resolve::{Host, Resolver};
use super::tls;
use crate::config::Config;

/// Idle connections a pool keeps by default (the proxy's, per worker).
const DEFAULT_MAX_IDLE: usize = 256;
/// Defaults for origins that are not the upstream (webhooks, the token endpoint).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server the client talks to.
pub struct Origin {
    /// `scheme://authority[/base]`, for messages and `GET /`. Never has a secret in it
    /// (a Slack webhook's path is one, so it is left out).
    pub display: String,
    /// The `Host` header value.
    pub authority: String,
    /// The host name or IP literal, and its addresses.
    pub host: Arc<Host>,
    pub port: u16,
    /// TLS config and the name to verify, for https origins.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Pooled connections older than this are closed; keep it under the server's own.
    pub idle_timeout: Duration,
    /// Opening a connection (resolution, TCP, TLS) may take this long.
    pub connect_timeout: Duration,
    /// Idle connections a pool keeps for this origin; more are closed when returned.
    pub max_idle: usize,
    /// Outcomes of recent connect attempts.
    pub health: ConnectHealth,
}

/// The proxy's name for the origin it forwards to.
pub type Upstream = Origin;

impl Origin {
    /// An origin resolved on demand, with default timeouts: `tls` is the client config
    /// for https (`None` for http).
    pub fn new(
        tls: Option<Arc<ClientConfig>>,
        host: &str,
        port: u16,
        authority: &str,
    ) -> Result<Origin, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tls = match tls {
            Some(config) => Some((config, tls::server_name(host)?)),
            None => None,
        };
        Ok(Origin {
            display: format!("{scheme}://{authority}"),
            authority: authority.to_string(),
            host: Resolver::shared().host(host, port),
            port,
            tls,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_idle: DEFAULT_MAX_IDLE,
            health: ConnectHealth::default(),
        })
    }

    /// The upstream of `config`: TLS with `UPSTREAM_CA_FILE`, its host watched by the
    /// resolver (resolved once now). Errors are configuration errors (bad CA file).
    pub fn from_config(config: &Config) -> Result<Arc<Origin>, String> {
        let url = &config.upstream;
        let tls = if url.tls {
            Some(tls::client_config(config.upstream_ca_file.as_deref())?)
        } else {
            None
        };
        let mut origin = Origin::new(tls, &url.host, url.port, &url.authority)?;
        origin.display = url.to_string();
        origin.host = Resolver::shared().watch(&url.host, url.port);
        origin.idle_timeout = config.upstream_idle_timeout;
        origin.connect_timeout = config.connect_timeout;
        Ok(Arc::new(origin))
    }

    /// Why this origin looks unreachable right now, or `None`: its host does not resolve,
    /// or every connect of the last minute failed (see [`super::health`]).
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = self.host.problem() {
            return Some(why);
        }
        self.health
            .problem()
            .map(|why| format!("{}: {why}", self.display))
    }
}
