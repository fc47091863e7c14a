//! A worker's keep-alive pool of upstream connections. Single-threaded (one per worker),
//! so a `RefCell` is all the synchronisation it needs.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use super::conn::UpstreamConn;
use super::Upstream;

/// Idle connections younger than this are reused without a liveness probe.
const PROBE_AFTER: Duration = Duration::from_millis(250);
/// Most idle connections a worker keeps; more are closed when returned.
const MAX_IDLE: usize = 256;

/// Why no upstream connection could be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// DNS has not produced an address yet.
    NoAddress,
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
            ConnectError::Connect(e) => write!(f, "connection failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::Timeout(secs) => write!(f, "no connection within {secs}s"),
        }
    }
}

/// The idle connections of one worker.
pub struct Pool {
    upstream: Arc<Upstream>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: RefCell<Vec<(UpstreamConn, Instant)>>,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(upstream: Arc<Upstream>) -> Rc<Pool> {
        let tls = upstream
            .tls
            .as_ref()
            .map(|(config, name)| (TlsConnector::from(Arc::clone(config)), name.clone()));
        let idle_timeout = upstream.idle_timeout;
        Rc::new(Pool {
            upstream,
            tls,
            idle: RefCell::new(Vec::new()),
            idle_timeout,
        })
    }

    /// The most recently used idle connection that is still open, if any.
    pub fn checkout(&self) -> Option<UpstreamConn> {
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
    pub fn checkin(&self, conn: UpstreamConn) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes idle connections past the idle timeout, or closed by the upstream.
    pub fn sweep(&self) {
        self.idle
            .borrow_mut()
            .retain(|(conn, since)| since.elapsed() < self.idle_timeout && conn.idle_and_open());
    }

    /// Opens a new connection, trying each resolved address in turn.
    pub async fn connect(&self) -> Result<UpstreamConn, ConnectError> {
        let limit = self.upstream.connect_timeout;
        match monoio::time::timeout(limit, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout(limit.as_secs())),
        }
    }

    async fn open(&self) -> Result<UpstreamConn, ConnectError> {
        let addrs = self.upstream.resolver.addrs();
        let mut last_error = None;
        for addr in addrs.iter() {
            match TcpStream::connect_addr(*addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let fd = stream.as_raw_fd();
                    return match &self.tls {
                        None => Ok(UpstreamConn::plain(stream, fd)),
                        Some((connector, name)) => {
                            match connector.connect(name.clone(), stream).await {
                                Ok(tls) => Ok(UpstreamConn::tls(tls, fd)),
                                Err(e) => Err(ConnectError::Tls(e.to_string())),
                            }
                        }
                    };
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .map(ConnectError::Connect)
            .unwrap_or(ConnectError::NoAddress))
    }
}
