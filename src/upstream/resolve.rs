//! Upstream address resolution, off the worker threads.
//!
//! monoio's `TcpStream::connect` with a host name calls the blocking resolver on the
//! worker; here one background thread resolves every minute and workers read the
//! latest addresses when they open a connection.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(1);

/// The upstream's current addresses.
pub struct Resolver {
    host: String,
    port: u16,
    addrs: RwLock<Arc<[SocketAddr]>>,
}

impl Resolver {
    /// Resolves once now, then (for host names) keeps re-resolving in the background.
    pub fn start(host: &str, port: u16) -> Arc<Resolver> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let addrs: Arc<[SocketAddr]> = Arc::new([SocketAddr::new(ip, port)]);
            return Arc::new(Resolver {
                host: host.into(),
                port,
                addrs: RwLock::new(addrs),
            });
        }
        let resolver = Arc::new(Resolver {
            host: host.into(),
            port,
            addrs: RwLock::new(Arc::new([])),
        });
        resolver.refresh();
        let background = Arc::clone(&resolver);
        std::thread::Builder::new()
            .name("nexus-resolver".into())
            .spawn(move || loop {
                let ok = !background.addrs().is_empty();
                std::thread::sleep(if ok { REFRESH } else { RETRY });
                background.refresh();
            })
            .expect("spawn resolver thread");
        resolver
    }

    /// The addresses to try, in the resolver's order. Empty until resolution succeeds.
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn refresh(&self) {
        match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(found) => {
                let found: Arc<[SocketAddr]> = found.collect();
                if found.is_empty() {
                    log::warn!("upstream {} resolved to no addresses", self.host);
                    return;
                }
                let mut current = self.addrs.write().unwrap_or_else(|e| e.into_inner());
                if **current != *found {
                    log::info!("upstream {} resolves to {:?}", self.host, &*found);
                    *current = found;
                }
            }
            // Keep the last good addresses: a DNS hiccup must not take the proxy down.
            Err(e) => log::warn!("cannot resolve upstream {}: {e}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost() {
        assert_eq!(
            &*Resolver::start("127.0.0.1", 8080).addrs(),
            &["127.0.0.1:8080".parse().unwrap()]
        );
        let local = Resolver::start("localhost", 443).addrs();
        assert!(
            !local.is_empty()
                && local
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 443)
        );
    }
}
