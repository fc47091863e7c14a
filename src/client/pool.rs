//! A keep-alive pool of connections to one origin, per worker (the proxy's upstream,
//! each webhook origin) or per refresh (the token endpoint). Single-threaded, so a
//! `RefCell` is all the synchronisation it needs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use super::origin::Origin;
use super::resolve::Lookup;
use super::transport::{Connection, OpenError};

/// Idle connections younger than this are reused without a liveness probe.
const PROBE_AFTER: Duration = Duration::from_millis(250);
/// How often a connect waits for the resolver thread to answer about a host.
const RESOLVE_POLL: Duration = Duration::from_millis(20);

/// Why no upstream connection could be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// DNS has not produced an address yet.
    NoAddress,
    /// The host name does not resolve; why.
    Unresolved(String),
    /// Every address refused or failed; the last error.
    Connect(std::io::Error),
    /// TLS handshake failed (certificate, protocol).
    Tls(String),
    /// Opening took longer than the connect timeout (seconds).
    Timeout(u64),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoAddress => f.write_str("its address could not be resolved"),
            ConnectError::Unresolved(why) => f.write_str(why),
            ConnectError::Connect(e) => write!(f, "connection failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::Timeout(secs) => write!(f, "no connection within {secs}s"),
        }
    }
}

/// The idle connections to one origin.
pub struct Pool {
    origin: Arc<Origin>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: RefCell<Vec<(Connection, Instant)>>,
    idle_timeout: Duration,
}

impl Pool {
    /// An empty pool for `origin`.
    pub fn new(origin: Arc<Origin>) -> Rc<Pool> {
        let tls = origin
            .tls
            .as_ref()
            .map(|(config, name)| (TlsConnector::from(Arc::clone(config)), name.clone()));
        let idle_timeout = origin.idle_timeout;
        Rc::new(Pool {
            origin,
            tls,
            idle: RefCell::new(Vec::new()),
            idle_timeout,
        })
    }

    /// The most recently used idle connection that is still open, if any.
    pub fn checkout(&self) -> Option<Connection> {
        let mut idle = self.idle.borrow_mut();
        while let Some((mut conn, since)) = idle.pop() {
            let idle_for = since.elapsed();
            // A connection that carried a response a moment ago is not worth a syscall to
            // probe; one that sat idle may have been closed by the upstream meanwhile.
            let fresh = idle_for < PROBE_AFTER;
            if idle_for < self.idle_timeout && (fresh || conn.idle_and_open()) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection that finished a response cleanly.
    pub fn checkin(&self, conn: Connection) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.origin.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes idle connections past the idle timeout, or closed by the upstream.
    pub fn sweep(&self) {
        self.idle
            .borrow_mut()
            .retain(|(conn, since)| since.elapsed() < self.idle_timeout && conn.idle_and_open());
    }

    /// The origin this pool connects to.
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// Whether no connection is idle here.
    pub fn is_empty(&self) -> bool {
        self.idle.borrow().is_empty()
    }

    /// Opens a new connection, trying each resolved address in turn. The outcome counts
    /// toward the origin's health (see [`super::health`]).
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let limit = self.origin.connect_timeout;
        let result = match monoio::time::timeout(limit, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout(limit.as_secs())),
        };
        match &result {
            Ok(_) => self.origin.health.succeeded(),
            Err(e) => self.origin.health.failed(&e.to_string()),
        }
        result
    }

    async fn open(&self) -> Result<Connection, ConnectError> {
        let addrs = loop {
            match self.origin.host.lookup() {
                Lookup::Ready(addrs) => break addrs,
                Lookup::Pending => monoio::time::sleep(RESOLVE_POLL).await,
                Lookup::Failed(why) => return Err(ConnectError::Unresolved(why)),
            }
        };
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress);
        }
        Connection::open(&addrs, self.tls.as_ref())
            .await
            .map_err(|e| match e {
                OpenError::Connect(e) => ConnectError::Connect(e),
                OpenError::Tls(why) => ConnectError::Tls(why),
            })
    }
}
