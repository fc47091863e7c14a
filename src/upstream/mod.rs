//! The upstream side: where it is, how to reach it (TLS), and each worker's pool.

pub mod conn;
pub mod pool;
pub mod resolve;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

pub use conn::UpstreamConn;
pub use pool::{ConnectError, Pool};

use crate::config::Config;
use resolve::Resolver;

/// Everything workers share about the upstream.
pub struct Upstream {
    /// `scheme://authority/base` for messages.
    pub display: String,
    pub resolver: Arc<Resolver>,
    /// TLS config and the name to verify, for https upstreams.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Pooled connections older than this are closed; keep it under the upstream's own.
    pub idle_timeout: Duration,
    /// Opening a connection (TCP + TLS) may take this long.
    pub connect_timeout: Duration,
}

impl Upstream {
    /// Sets up TLS and starts resolving. Errors are configuration errors (bad CA file).
    pub fn new(config: &Config) -> Result<Arc<Upstream>, String> {
        let url = &config.upstream;
        let tls = if url.tls {
            let client = tls::client_config(config.upstream_ca_file.as_deref())?;
            Some((client, tls::server_name(&url.host)?))
        } else {
            None
        };
        Ok(Arc::new(Upstream {
            display: url.to_string(),
            resolver: Resolver::start(&url.host, url.port),
            tls,
            idle_timeout: config.upstream_idle_timeout,
            connect_timeout: config.connect_timeout,
        }))
    }
}
