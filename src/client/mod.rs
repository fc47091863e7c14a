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

pub use exchange::{BodyReader, RequestHead, Response, SendError};
pub use origin::{Origin, Upstream};
pub use pool::{ConnectError, Pool};
pub use transport::Connection;

/// Origins a [`Client`] keeps pools for; past this, empty pools are dropped.
const MAX_POOLS: usize = 64;

/// Pools for any number of origins, one per server (webhooks, whose URLs arrive with
/// credential files). Single-threaded: one per worker.
#[derive(Default)]
pub struct Client {
    pools: RefCell<Vec<Rc<Pool>>>,
}

impl Client {
    /// A client with no connections yet.
    pub fn new() -> Client {
        Client::default()
    }

    /// The pool for `origin`'s server, made on first use.
    pub fn pool(&self, origin: &Arc<Origin>) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        if let Some(pool) = pools.iter().find(|p| p.origin().same_server(origin)) {
            return Rc::clone(pool);
        }
        if pools.len() >= MAX_POOLS {
            pools.retain(|p| !p.is_empty());
        }
        let pool = Pool::new(Arc::clone(origin));
        pools.push(Rc::clone(&pool));
        pool
    }

    /// Sends one request to `origin` (see [`Pool::send`]).
    pub async fn send(
        &self,
        origin: &Arc<Origin>,
        head: &RequestHead<'_>,
        body: &[u8],
    ) -> Result<(Response, BodyReader), SendError> {
        self.pool(origin).send(head, body).await
    }
}
