//! The certificate watcher: a thread that notices a changed, added or removed pair and
//! serves it from the next handshake on. A file that no longer reads (half-written by a
//! renewal, a key that does not match) keeps the previous pair, and says why once.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::certs::CertSet;
use super::{ListenerTls, RELOAD_POLL};
use crate::config::TlsFiles;

/// What a file looks like on disk: changes when it is rewritten, replaced or removed.
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    // metadata follows symlinks: certbot's live/ links change target on renewal.
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// The stamps of every file the set is read from, in a stable order.
fn fingerprint(files: &TlsFiles) -> Vec<(String, Stamp)> {
    let mut all = vec![
        (
            files.cert_file.display().to_string(),
            stamp(&files.cert_file),
        ),
        (files.key_file.display().to_string(), stamp(&files.key_file)),
    ];
    if let Some(dir) = &files.certs_dir {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt" || e == "key"))
            .map(|p| (p.display().to_string(), stamp(&p)))
            .collect();
        entries.sort();
        all.extend(entries);
    }
    all
}

/// Starts the watcher thread for `tls` (it lives as long as the process).
pub fn watch(files: TlsFiles, tls: Arc<ListenerTls>) {
    let spawned = std::thread::Builder::new()
        .name("nexus-tls-reload".into())
        .spawn(move || {
            let mut seen = fingerprint(&files);
            // Problems already logged: each is said once while it lasts.
            let mut told: HashSet<String> = HashSet::new();
            loop {
                std::thread::sleep(RELOAD_POLL);
                let now = fingerprint(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                reload(&files, &tls, &mut told);
            }
        });
    if let Err(e) = spawned {
        log::warn!("TLS: certificates will not be reloaded (cannot start the watcher: {e})");
    }
}

fn reload(files: &TlsFiles, tls: &ListenerTls, told: &mut HashSet<String>) {
    let previous = tls.store.current();
    // With a previous set to fall back on, a load never fails as a whole.
    let Ok((set, problems)) = CertSet::load(files, Some(&previous)) else {
        return;
    };
    let fresh: Vec<&String> = problems.iter().filter(|p| !told.contains(*p)).collect();
    for problem in &fresh {
        log::warn!("TLS reload: {problem}");
    }
    tls.counters.reloaded(problems.is_empty());
    *told = problems.into_iter().collect();
    tls.store.replace(set);
    if told.is_empty() {
        log::info!("TLS: certificates reloaded");
    }
}
