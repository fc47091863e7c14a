//! The credential store shared by all workers.
//!
//! A background thread scans `CREDENTIALS_DIR` every second and publishes an immutable
//! snapshot when anything changed. A request's lookup is one atomic load of the
//! generation plus a hash lookup in the worker's cached snapshot: no disk I/O, no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::file::{parse_credential, Credential};

const SUFFIX: &str = ".credentials.json";
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A domain's file: the credential, or why the file cannot be used.
pub type Entry = Result<Arc<Credential>, Arc<str>>;
type Snapshot = Arc<HashMap<String, Entry>>;

/// Identity of a file's content as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// Credentials by domain, hot-reloaded from one directory.
pub struct CredentialStore {
    dir: PathBuf,
    generation: AtomicU64,
    snapshot: RwLock<Snapshot>,
    /// Scanner-only state: what each file looked like when last parsed.
    stamps: std::sync::Mutex<HashMap<String, Stamp>>,
}

impl CredentialStore {
    /// Loads the directory once, synchronously, so credentials exist before traffic does.
    pub fn open(dir: PathBuf) -> Arc<CredentialStore> {
        let store = Arc::new(CredentialStore {
            dir,
            generation: AtomicU64::new(0),
            snapshot: RwLock::new(Arc::new(HashMap::new())),
            stamps: std::sync::Mutex::new(HashMap::new()),
        });
        store.rescan();
        store
    }

    /// Starts the thread that picks up new, changed and deleted files.
    pub fn watch(self: &Arc<Self>) {
        let store = Arc::clone(self);
        std::thread::Builder::new()
            .name("nexus-credentials".into())
            .spawn(move || loop {
                std::thread::sleep(SCAN_INTERVAL);
                store.rescan();
            })
            .expect("spawn credential watcher");
    }

    /// Number of domains with a credential file (valid or not).
    pub fn len(&self) -> usize {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Re-reads files whose stamp changed; publishes a new snapshot if anything did.
    pub fn rescan(&self) {
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        let current = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next: HashMap<String, Entry> = HashMap::with_capacity(current.len());
        let mut seen: HashMap<String, Stamp> = HashMap::with_capacity(stamps.len());
        let mut changed = false;

        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.flatten().collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                log::warn!(
                    "credentials: cannot read directory {}: {e}",
                    self.dir.display()
                );
                return;
            }
        };
        for entry in entries {
            let file_name = entry.file_name();
            let Some(domain) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if super::domain::domain_from_host(domain).map(|d| d.name) != Some(domain.to_string()) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let stamp = Stamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: std::os::unix::fs::MetadataExt::ino(&meta),
            };
            seen.insert(domain.to_string(), stamp);
            if let (Some(old), Some(entry)) = (stamps.get(domain), current.get(domain)) {
                if *old == stamp {
                    next.insert(domain.to_string(), entry.clone());
                    continue;
                }
            }
            changed = true;
            next.insert(domain.to_string(), load(&entry.path(), domain));
        }
        changed |= current.keys().any(|d| !next.contains_key(d));
        *stamps = seen;
        if changed {
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The entry for `domain`, if it has a file. Cheap: see [`LocalView`].
    pub fn lookup(&self, view: &LocalView, domain: &str) -> Option<Entry> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut cached = view.0.borrow_mut();
        if cached.0 != generation || cached.1.is_none() {
            let snapshot = self
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            *cached = (generation, Some(snapshot));
        }
        cached.1.as_ref().and_then(|s| s.get(domain).cloned())
    }
}

/// A worker's cached copy of the latest snapshot, refreshed when the generation moves.
#[derive(Default)]
pub struct LocalView(RefCell<(u64, Option<Snapshot>)>);

fn load(path: &Path, domain: &str) -> Entry {
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read ({e})"))
        .and_then(|text| parse_credential(&text));
    match parsed {
        Ok(credential) => {
            log::info!("credentials: loaded {}", path.display());
            Ok(Arc::new(credential))
        }
        Err(why) => {
            log::error!("credentials: {} is unusable: {why}", path.display());
            Err(Arc::from(format!(
                "the credential file for {domain} is invalid: {why}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_up_new_changed_and_deleted_files() {
        let dir = std::env::temp_dir().join(format!("nexus-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.example.com.credentials.json");
        std::fs::write(&file, r#"{"type":"api_key","api_key":"one"}"#).unwrap();
        std::fs::write(dir.join("bad.example.com.credentials.json"), "{").unwrap();
        std::fs::write(
            dir.join("..credentials.json"),
            r#"{"type":"api_key","api_key":"x"}"#,
        )
        .unwrap();
        let store = CredentialStore::open(dir.clone());
        let view = LocalView::default();
        let key = |store: &CredentialStore| match store.lookup(&view, "a.example.com") {
            Some(Ok(c)) => match &*c {
                Credential::ApiKey { api_key } => Some(api_key.clone()),
                _ => None,
            },
            _ => None,
        };
        assert_eq!(key(&store), Some("one".into()));
        assert!(matches!(
            store.lookup(&view, "bad.example.com"),
            Some(Err(_))
        ));
        assert_eq!(store.len(), 2, "the invalid domain name is ignored");

        std::fs::write(&file, r#"{"type":"api_key","api_key":"two, longer"}"#).unwrap();
        store.rescan();
        assert_eq!(key(&store), Some("two, longer".into()));
        std::fs::remove_file(&file).unwrap();
        store.rescan();
        assert_eq!(key(&store), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
