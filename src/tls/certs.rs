//! The certificates served: a default pair and the pairs of `TLS_CERTS_DIR`
//! (`<domain>.crt` + `<domain>.key`), and the choice between them by SNI name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pem;
use crate::config::TlsFiles;

/// One complete set of certificates, swapped whole on a reload.
pub struct CertSet {
    default: Arc<CertifiedKey>,
    /// Lowercase domain (or `*.domain`) → its pair.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Reads every pair. With no `previous` (start-up) a default pair that cannot be read
    /// is an error; on a reload a pair that cannot be read keeps its previous version.
    /// A directory pair that cannot be read (and has no previous version) is left out.
    /// Returns the set and what was wrong, one line per file.
    pub fn load(
        files: &TlsFiles,
        previous: Option<&CertSet>,
    ) -> Result<(CertSet, Vec<String>), String> {
        let mut problems = Vec::new();
        let default = match (pem::load_pair(&files.cert_file, &files.key_file), previous) {
            (Ok(pair), _) => pair,
            (Err(why), Some(previous)) => {
                problems.push(format!(
                    "{why}; still serving the previous default certificate"
                ));
                Arc::clone(&previous.default)
            }
            (Err(why), None) => {
                return Err(format!("cannot use TLS_CERT_FILE/TLS_KEY_FILE: {why}"))
            }
        };
        let mut by_name = HashMap::new();
        if let Some(dir) = &files.certs_dir {
            for (name, cert, key) in pairs_in(dir, &mut problems) {
                match pem::load_pair(&cert, &key) {
                    Ok(pair) => {
                        by_name.insert(name, pair);
                    }
                    Err(why) => match previous.and_then(|p| p.by_name.get(&name)) {
                        Some(kept) => {
                            problems
                                .push(format!("{why}; still serving the previous one for {name}"));
                            by_name.insert(name, Arc::clone(kept));
                        }
                        None => {
                            problems.push(format!("{why}; {name} gets the default certificate"))
                        }
                    },
                }
            }
        }
        Ok((CertSet { default, by_name }, problems))
    }

    /// The pair for an SNI name: its own, else a `*.` pair for its parent domain, else the
    /// default one.
    fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return Arc::clone(&self.default);
        };
        // rustls hands SNI names over lowercased already.
        let own = self.by_name.get(name);
        let wildcard = || {
            let parent = name.split_once('.')?.1;
            self.by_name.get(&format!("*.{parent}"))
        };
        Arc::clone(own.or_else(wildcard).unwrap_or(&self.default))
    }
}

/// The `<domain>.crt` files of `dir` and the `<domain>.key` beside each, sorted by name;
/// a certificate without its key is a problem, not a pair; hidden files are not looked at.
fn pairs_in(dir: &Path, problems: &mut Vec<String>) -> Vec<(String, PathBuf, PathBuf)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("cannot read TLS_CERTS_DIR {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut pairs: Vec<_> = entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".crt")?;
            // A hidden file is one being written (write beside, then rename into place).
            if name.starts_with('.') {
                return None;
            }
            let name = name.to_ascii_lowercase();
            let key = path.with_extension("key");
            if !key.is_file() {
                problems.push(format!(
                    "{} has no {} beside it; left out",
                    path.display(),
                    key.display()
                ));
                return None;
            }
            Some((name, path, key))
        })
        .collect();
    pairs.sort();
    pairs
}

/// The current [`CertSet`], read by every handshake and replaced by the watcher.
pub struct CertStore {
    current: RwLock<Arc<CertSet>>,
}

impl CertStore {
    /// A store serving `set`.
    pub fn new(set: CertSet) -> CertStore {
        CertStore {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// The set handshakes use now.
    pub fn current(&self) -> Arc<CertSet> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serves `set` from the next handshake on.
    pub fn replace(&self, set: CertSet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The names that have a pair of their own, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current().by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("names", &self.names())
            .finish()
    }
}

/// One read lock per handshake (not per request), held for an `Arc` clone.
impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().choose(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a self-signed pair for `name` as `base.crt` + `base.key`; returns the leaf.
    fn write_pair(dir: &Path, base: &str, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("{base}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{base}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    #[test]
    fn sni_names_get_their_own_pair_a_wildcard_pair_or_the_default() {
        let scratch = Scratch(std::env::temp_dir().join(format!(
            "nexus-certs-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        let dir = scratch.0.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        let default = write_pair(&scratch.0, "default", "localhost");
        let own = write_pair(&dir, "a.example.com", "a.example.com");
        let wildcard = write_pair(&dir, "*.w.example.com", "*.w.example.com");
        write_pair(&dir, ".hidden.example.com", "hidden.example.com");
        std::fs::write(dir.join("lonely.example.com.crt"), "").unwrap();
        let files = TlsFiles {
            cert_file: scratch.0.join("default.crt"),
            key_file: scratch.0.join("default.key"),
            certs_dir: Some(dir),
        };

        let (set, problems) = CertSet::load(&files, None).unwrap();

        let leaf = |sni: Option<&str>| set.choose(sni).cert[0].to_vec();
        assert_eq!(leaf(Some("a.example.com")), own);
        assert_eq!(leaf(Some("x.w.example.com")), wildcard);
        assert_eq!(leaf(Some("x.y.w.example.com")), default, "one label only");
        assert_eq!(leaf(Some("b.example.com")), default);
        assert_eq!(leaf(None), default);
        assert_eq!(set.by_name.len(), 2, "hidden files are not pairs");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("lonely.example.com.crt has no"),
            "{problems:?}"
        );
    }
}
