//! The named clients in force: `CLIENTS_FILE` read at start and re-read twice a second on
//! a thread of its own. A change takes effect within a second; a file that does not
//! parse keeps the clients before it, and the log names the file and the field, once per
//! distinct error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::client::Client;
use super::file::parse_clients;
use super::set::ClientSet;
use crate::published::{Local, Published};

/// How often the file is read; its bytes are compared, not its timestamps (see the
/// credential store for why).
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// A clients file past this is not one, and is never read whole twice a second.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The process's named clients.
#[derive(Debug)]
pub struct Clients {
    path: PathBuf,
    set: Published<ClientSet>,
}

/// What the last scan saw, to tell a change.
#[derive(Debug, Default, PartialEq, Eq)]
enum Seen {
    #[default]
    Nothing,
    Missing,
    Bytes(Vec<u8>),
    Unreadable(String),
}

impl Clients {
    /// Reads `path` now: no clients if it does not exist; an error if it exists and
    /// cannot be used (starting without the clients it meant to name would leave their
    /// limits unenforced, and maybe the proxy unguarded).
    pub fn load(path: &Path) -> Result<(Arc<Clients>, Scanner), String> {
        let clients = Arc::new(Clients {
            path: path.to_path_buf(),
            set: Published::default(),
        });
        let mut scanner = Scanner {
            clients: Arc::clone(&clients),
            seen: Seen::Nothing,
            last_error: None,
        };
        scanner.scan();
        match scanner.last_error.take() {
            Some(why) => Err(format!("clients file {}: {why}", path.display())),
            None => Ok((clients, scanner)),
        }
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The client whose key is `presented`, through the worker's reference.
    pub fn by_key(&self, local: &LocalClients, presented: &str) -> Option<Arc<Client>> {
        self.set.with(&local.set, |set, version| {
            local.found.find(set, version, presented)
        })
    }

    /// Whether any named client exists (no key lookup needed otherwise).
    pub fn any(&self, local: &LocalClients) -> bool {
        self.set.with(&local.set, |set, _| !set.is_empty())
    }

    /// Whether named clients exist, and the one whose key the request presented (its
    /// `x-api-key` or bearer token), if any. Without named clients no key is hashed.
    pub fn identify(
        &self,
        local: &LocalClients,
        presented: [Option<&str>; 2],
    ) -> (bool, Option<Arc<Client>>) {
        self.set.with(&local.set, |set, version| {
            if set.is_empty() {
                return (false, None);
            }
            let named = presented
                .into_iter()
                .flatten()
                .find_map(|key| local.found.find(set, version, key));
            (true, named)
        })
    }

    /// The clients now in force.
    pub fn current(&self) -> Arc<ClientSet> {
        self.set.get()
    }
}

/// A worker's reference to the clients it last read, and the keys it found them by.
#[derive(Debug, Default)]
pub struct LocalClients {
    set: Local<ClientSet>,
    found: FoundKeys,
}

/// Keys a worker has found a client by, so that a key presented again is looked up
/// without hashing it (a SHA-256 per request cost more than the budget checks). Only
/// keys that named a client are kept, and at most [`FOUND_MAX`]; a new version of the
/// clients file starts afresh.
#[derive(Debug, Default)]
struct FoundKeys(RefCell<Found>);

/// The version of the clients the keys were found in, and the keys.
#[derive(Debug, Default)]
struct Found {
    version: Option<u64>,
    keys: HashMap<Box<str>, Arc<Client>, foldhash::fast::RandomState>,
}

/// Keys a worker keeps at most; past this it starts again from none.
const FOUND_MAX: usize = 4096;

impl FoundKeys {
    /// The client of `set` (the worker's `version` of the clients) whose key is
    /// `presented`.
    fn find(&self, set: &ClientSet, version: u64, presented: &str) -> Option<Arc<Client>> {
        let mut found = self.0.borrow_mut();
        let Found {
            version: kept_for,
            keys,
        } = &mut *found;
        if *kept_for != Some(version) {
            *kept_for = Some(version);
            keys.clear();
        }
        if let Some(client) = keys.get(presented) {
            return Some(Arc::clone(client));
        }
        let client = set.by_key(presented)?;
        if keys.len() >= FOUND_MAX {
            keys.clear();
        }
        keys.insert(presented.into(), Arc::clone(client));
        Some(Arc::clone(client))
    }
}

/// Re-reads the file; [`Scanner::spawn`] does it on a thread of its own.
#[derive(Debug)]
pub struct Scanner {
    clients: Arc<Clients>,
    seen: Seen,
    /// The last error logged, so that an unchanged broken file is logged once.
    last_error: Option<String>,
}

impl Scanner {
    pub fn spawn(mut self) {
        std::thread::Builder::new()
            .name("nexus-clients".into())
            .spawn(move || loop {
                std::thread::sleep(SCAN_INTERVAL);
                self.scan();
            })
            .expect("spawn the clients file scanner");
    }

    /// Reads the file once; publishes a new set if its bytes changed and parse.
    pub fn scan(&mut self) {
        let path = &self.clients.path;
        let seen = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                Seen::Unreadable(format!("larger than {} MiB", MAX_FILE_BYTES >> 20))
            }
            _ => match std::fs::read(path) {
                Ok(bytes) => Seen::Bytes(bytes),
                Err(e) => Seen::Unreadable(e.to_string()),
            },
        };
        if seen == self.seen {
            return;
        }
        let current = self.clients.current();
        // The first read's error is the caller's to report (`Clients::load`).
        let first = self.seen == Seen::Nothing;
        let parsed = match &seen {
            Seen::Missing | Seen::Nothing => Ok(Vec::new()),
            Seen::Unreadable(why) => Err(why.clone()),
            Seen::Bytes(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| "not UTF-8 text".to_string())
                .and_then(parse_clients),
        };
        self.seen = seen;
        match parsed {
            Ok(specs) => {
                if specs.is_empty() && current.is_empty() {
                    return;
                }
                let names: Vec<&str> = specs.iter().map(|s| &*s.name).collect();
                log::info!(
                    "clients: {} named client(s) from {}: {}",
                    specs.len(),
                    path.display(),
                    names.join(", ")
                );
                self.last_error = None;
                self.clients.set.publish(ClientSet::new(specs, &current));
            }
            Err(why) => {
                if !first && self.last_error.as_deref() != Some(why.as_str()) {
                    log::warn!(
                        "clients: {} cannot be used ({why}); keeping the {} client(s) loaded \
                         before",
                        path.display(),
                        current.all().len()
                    );
                }
                self.last_error = Some(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_take_effect_and_a_broken_file_keeps_the_clients_before() {
        let dir = std::env::temp_dir().join(format!("nexus-clients-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clients.json");
        let _ = std::fs::remove_file(&path);
        let (clients, mut scanner) = Clients::load(&path).unwrap();
        let local = LocalClients::default();
        assert!(!clients.any(&local), "no file: no clients");

        std::fs::write(&path, r#"{"clients":[{"name":"alice","key":"nx-a"}]}"#).unwrap();
        scanner.scan();
        assert_eq!(
            clients.by_key(&local, "nx-a").map(|c| c.name().to_string()),
            Some("alice".into())
        );

        std::fs::write(&path, r#"{"clients":[{"name":"alice"}]}"#).unwrap();
        scanner.scan();
        assert!(clients.by_key(&local, "nx-a").is_some(), "kept");

        std::fs::write(&path, r#"{"clients":[{"name":"bob","key":"nx-b"}]}"#).unwrap();
        scanner.scan();
        assert!(clients.by_key(&local, "nx-a").is_none(), "removed");
        assert!(clients.by_key(&local, "nx-b").is_some(), "added");

        std::fs::remove_file(&path).unwrap();
        scanner.scan();
        assert!(!clients.any(&local), "the file is gone: no named clients");

        // At start, a file that cannot be used stops nexus, naming the file and field.
        std::fs::write(
            &path,
            r#"{"clients":[{"name":"alice","key":"k","maxConcurrent":0}]}"#,
        )
        .unwrap();
        let err = Clients::load(&path).unwrap_err();
        assert!(
            err.contains("clients.json") && err.contains("maxConcurrent"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
