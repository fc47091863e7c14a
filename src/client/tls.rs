//! The TLS client configuration for the upstream: Mozilla's roots plus `UPSTREAM_CA_FILE`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Builds the shared client config (ALPN http/1.1, since nexus speaks HTTP/1.1 upstream).
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let mut added = 0;
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("invalid UPSTREAM_CA_FILE {}: {e}", path.display()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("invalid UPSTREAM_CA_FILE {}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| {
                format!(
                    "invalid certificate in UPSTREAM_CA_FILE {}: {e}",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "invalid UPSTREAM_CA_FILE {}: no PEM certificates in it",
                path.display()
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The name the upstream certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}
