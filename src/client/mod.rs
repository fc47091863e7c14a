//! The one HTTP/1.1 client, used by the proxy (its upstream), the webhooks and the OAuth
//! token refresh alike.
//!
//! - [`origin`]: where a server is, how to reach it, whether it was reachable lately;
//! - [`resolve`]: host names resolved on one background thread, never on a worker;
//! - [`transport`]: one connection, plain TCP or TLS, owned-buffer I/O;
//! - [`pool`]: keep-alive connections to one origin;
//! - [`exchange`]: `send(head, body)` → response head and body reader, for callers that
//!   want the whole answer (the proxy streams through the pool's connections itself);
//! - [`health`]: the connect-outcome rule behind `GET /`'s `degraded`;
//! - [`tls`]: the rustls client config (Mozilla roots plus `UPSTREAM_CA_FILE`).
//!
//! Every response head is parsed by [`crate::http::response`] and every chunked body
//! by [`crate::http::chunked`]: one set of framing rules for every caller (CL with TE,
//! a signed or conflicting Content-Length are refused).

pub mod exchange;
pub mod health;
pub mod origin;
pub mod pool;
pub mod resolve;
pub mod tls;
pub mod transport;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rustls::ClientConfig;

pub use exchange::{BodyReader, RequestHead, Response, SendError};
pub use origin::{Origin, Upstream};
pub use pool::{ConnectError, Pool};
pub use transport::Connection;

/// Origins a [`Client`] keeps pools for; past this, empty pools are dropped.
const MAX_POOLS: usize = 64;
/// Idle connections a [`Client`] keeps per origin.
const CLIENT_MAX_IDLE: usize = 8;

/// Which server a request goes to: what a pooled connection is good for, and the `Host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server<'a> {
    /// https.
    pub tls: bool,
    /// Host name or IP literal (no brackets): for DNS and SNI.
    pub host: &'a str,
    pub port: u16,
    /// The `Host` header value.
    pub authority: &'a str,
}

/// Pools for any number of servers, made on first use (webhooks, whose URLs arrive with
/// credential files). Single-threaded: one per worker, or one per refresh.
pub struct Client {
    tls: Arc<ClientConfig>,
    pools: RefCell<Vec<Rc<Pool>>>,
}

impl Client {
    /// A client trusting `tls`'s roots for https servers.
    pub fn new(tls: Arc<ClientConfig>) -> Client {
        Client {
            tls,
            pools: RefCell::new(Vec::new()),
        }
    }

    /// The pool for `server`, made on first use.
    pub fn pool(&self, server: Server<'_>) -> Result<Rc<Pool>, ConnectError> {
        let mut pools = self.pools.borrow_mut();
        let serves = |pool: &&Rc<Pool>| {
            let origin = pool.origin();
            origin.tls.is_some() == server.tls
                && origin.port == server.port
                && origin.host.name() == server.host
        };
        if let Some(pool) = pools.iter().find(serves) {
            return Ok(Rc::clone(pool));
        }
        let tls = server.tls.then(|| Arc::clone(&self.tls));
        let mut origin = Origin::new(tls, server.host, server.port, server.authority)
            .map_err(ConnectError::Tls)?;
        origin.max_idle = CLIENT_MAX_IDLE;
        if pools.len() >= MAX_POOLS {
            pools.retain(|p| !p.is_empty());
        }
        let pool = Pool::new(Arc::new(origin));
        pools.push(Rc::clone(&pool));
        Ok(pool)
    }

    /// Sends one request to `server` (see [`Pool::send`]).
    pub async fn send(
        &self,
        server: Server<'_>,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Result<(Response, BodyReader), SendError> {
        let pool = self.pool(server).map_err(SendError::Connect)?;
        pool.send(head, body).await
    }
}
