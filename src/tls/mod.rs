//! HTTPS on the listening side: what handshakes are made with. The default certificate
//! pair and the SNI pairs of `TLS_CERTS_DIR` (certs.rs, read by pem.rs), kept current by a
//! watcher thread (reload.rs); the one rustls server configuration every worker shares
//! (session tickets work across workers because the ticket keys are in it); the SNI name
//! read from a peeked ClientHello (client_hello.rs); the handshake counters (counters.rs).
//!
//! The handshakes themselves are the server's (src/server/tls_accept.rs): this module knows
//! nothing of connections or workers, so the server depends on it and not the other way.

pub mod certs;
pub mod client_hello;
pub mod counters;
pub mod host;
mod pem;
mod reload;

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::TlsFiles;
pub use certs::CertStore;
pub use counters::{Failure, TlsCounters};

/// How often the watcher looks at the certificate files: a change is served within this
/// plus the time to parse the pair (DESIGN.md: within 2 s).
pub const RELOAD_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The listening side's TLS: one shared server configuration over a reloadable store.
pub struct ListenerTls {
    /// What `monoio_rustls::TlsAcceptor` is made from: TLS 1.2 + 1.3, ALPN http/1.1,
    /// tickets, the certificate chosen by SNI from `store`.
    pub config: Arc<ServerConfig>,
    pub store: Arc<CertStore>,
    pub counters: TlsCounters,
}

impl ListenerTls {
    /// Loads the certificates (a default pair that cannot be read stops start-up with the
    /// file and the reason; a bad pair in the directory is skipped with a warning), warns
    /// about a key file others can read, and starts the watcher thread.
    pub fn start(files: &TlsFiles) -> Result<Arc<ListenerTls>, String> {
        for key in pem::key_files(files) {
            if let Some(warning) = pem::exposure_warning(&key) {
                log::warn!("{warning}");
            }
        }
        let (set, problems) = certs::CertSet::load(files, None)?;
        for problem in &problems {
            log::warn!("TLS: {problem}");
        }
        let store = Arc::new(CertStore::new(set));
        let tls = Arc::new(ListenerTls {
            config: server_config(Arc::clone(&store))?,
            store,
            counters: TlsCounters::default(),
        });
        reload::watch(files.clone(), Arc::clone(&tls));
        Ok(tls)
    }

    /// For the start-up line: how many certificates are served.
    pub fn describe(&self) -> String {
        let names = self.store.names();
        if names.is_empty() {
            "https".into()
        } else {
            format!("https, SNI pairs for {}", names.join(", "))
        }
    }

    /// Appends the TLS series to a `/metrics` exposition.
    pub fn metrics_text(&self, out: &mut String) {
        self.counters.render(out);
    }
}

/// The rustls configuration: ring (as on the upstream side), TLS 1.2 and 1.3, ALPN
/// `http/1.1` only (nexus speaks HTTP/1.1; a client offering only h2 is refused in the
/// handshake rather than misunderstood after it), stateless resumption by tickets.
fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Tickets rather than a session cache alone: a resumed connection may land on any
    // worker (SO_REUSEPORT), and a ticket carries its state with it.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| format!("TLS session tickets unavailable: {e}"))?;
    Ok(Arc::new(config))
}
