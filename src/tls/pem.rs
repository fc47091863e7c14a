//! One certificate pair read from PEM files: the chain, its private key, and the check
//! that they belong together. Errors name the file and say what is wrong with it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

/// Reads `cert` (a PEM chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1 PEM) into a
/// pair rustls can serve; `Err` says which file and why.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {}", cert.display(), describe(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", cert.display(), describe(e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: {}", key.display(), describe(e)))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: unusable private key ({e})", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {} ({e})",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(pair))
}

fn describe(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Every private key file the listener reads now: the default one and the directory's.
pub fn key_files(files: &TlsFiles) -> Vec<PathBuf> {
    let mut keys = vec![files.key_file.clone()];
    if let Some(dir) = &files.certs_dir {
        if let Ok(entries) = std::fs::read_dir(dir) {
            keys.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "key")),
            );
        }
    }
    keys
}

/// A warning when a private key file can be read by its group or by others: whoever can
/// read it can impersonate this server.
pub fn exposure_warning(key: &Path) -> Option<String> {
    let mode = std::fs::metadata(key).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "TLS private key {} is readable by {} (mode {:o}): anyone who can read it can \
             impersonate this server; chmod 600 it",
            key.display(),
            if mode & 0o007 != 0 {
                "other users"
            } else {
                "its group"
            },
            mode & 0o777
        )
    })
}
