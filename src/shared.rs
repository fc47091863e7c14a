//! What every worker shares: read-mostly configuration, the stores, and atomics.

use std::sync::Arc;
use std::time::Instant;

use crate::client::Upstream;
use crate::clients::watch::Clients;
use crate::config::Config;
use crate::conn::body_budget::BodyBudget;
use crate::credentials::CredentialStore;
use crate::ledger::Ledger;
use crate::lifecycle::Lifecycle;
use crate::stats::Stats;

/// What every worker shares: read-mostly configuration and atomics.
pub struct Shared {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub credentials: Arc<CredentialStore>,
    pub lifecycle: Lifecycle,
    /// Client connections open at once across all workers (see `server::limits`).
    pub max_connections: usize,
    /// Request bodies held in memory, all workers together.
    pub body_budget: BodyBudget,
    pub stats: Arc<Stats>,
    /// Telemetry and Slack settings and counters; each worker has its own outbox.
    pub notify: Arc<crate::notify::Hub>,
    /// The request history (`NEXUS_DB`); off is a ledger that keeps nothing.
    pub ledger: Arc<Ledger>,
    /// The named clients (`CLIENTS_FILE`), re-read as the file changes.
    pub clients: Arc<Clients>,
    /// HTTPS on the listening port (`TLS_CERT_FILE`), or `None` for plain HTTP.
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
    pub started: Instant,
}
