//! The credential store shared by all workers.
//!
//! A background thread scans `CREDENTIALS_DIR` twice a second and publishes an immutable
//! snapshot when anything changed; the OAuth refresher publishes the same way when a token
//! is refreshed or a refresh fails. A request's lookup is a hash lookup in the worker's
//! own reference to the snapshot ([`Published`]): no disk I/O, and a lock only after a
//! change, never across I/O.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::counters::COUNTERS;
use super::file::{parse_credential, Credential, CredentialFile};
use super::member_state::{MemberSnapshot, MemberState};
use super::oauth::OAuthRefresher;
use super::pool::PoolShared;
use super::refresh_board::RefreshBoard;
use crate::config::Config;
use crate::published::{Local, Published};

/// What a credential file's name ends with, after the domain.
pub const SUFFIX: &str = ".credentials.json";
/// A change takes effect within this (plus one scan), well inside the 2 s promise even on
/// a loaded machine; a scan is one `readdir` and one small read per file.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// A file that does not parse and changed less than this long ago is probably still being
/// written (`echo > file`, an editor's save); it gets another scan before it counts.
const SETTLE: Duration = Duration::from_millis(500);
/// Credential files are a few hundred bytes; a file past this is not one, and is never
/// read whole every scan.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where a domain's OAuth refresh stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Nothing has failed since the file was (re)loaded or last refreshed.
    Ok,
    /// The endpoint refused this refresh token; no new attempt until the file changes.
    InvalidGrant,
    /// `failures` attempts in a row failed transiently; the next one not before `retry_at`.
    Failing { failures: u32, retry_at: Instant },
}

/// A loaded credential file, and each member's refresh state and live state.
#[derive(Debug, Clone)]
pub struct DomainEntry {
    pub file: CredentialFile,
    /// One per member of `file`, in its order.
    pub members: Box<[MemberEntry]>,
    /// The pool's turn and conversation table, kept across reloads of the file.
    pub pool: Arc<PoolShared>,
}

/// What nexus knows of one member besides its file entry.
#[derive(Debug, Clone)]
pub struct MemberEntry {
    /// Where its OAuth refresh stands (`Ok` for an API key).
    pub refresh: RefreshState,
    /// Cooldown, headroom, counters: shared by every worker, kept across reloads while the
    /// member's secret stays the same.
    pub live: Arc<MemberState>,
}

/// Why an entry replaces the previous one of its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacing {
    /// The file changed: a member keeps its live state if its id and secret are the same,
    /// and a disabled member gets another chance.
    Reload,
    /// nexus refreshed a token: every member keeps its live state.
    Refresh,
}

impl DomainEntry {
    /// The entry for `file`, taking over what `previous` knew of the same members.
    pub fn new(
        file: CredentialFile,
        previous: Option<&DomainEntry>,
        replacing: Replacing,
    ) -> DomainEntry {
        let members = file
            .members
            .iter()
            .map(|member| {
                let before = previous.and_then(|p| {
                    let i = p.file.position(&member.id)?;
                    Some((&p.file.members[i].credential, &p.members[i]))
                });
                let refresh = match before {
                    Some((credential, entry)) if *credential == member.credential => entry.refresh,
                    _ => RefreshState::Ok,
                };
                let live = match before {
                    Some((_, entry)) if replacing == Replacing::Refresh => Arc::clone(&entry.live),
                    Some((credential, entry)) if same_secret(credential, &member.credential) => {
                        entry.live.enable();
                        Arc::clone(&entry.live)
                    }
                    _ => Arc::new(MemberState::default()),
                };
                MemberEntry { refresh, live }
            })
            .collect();
        DomainEntry {
            file,
            members,
            pool: previous.map_or_else(Arc::default, |p| Arc::clone(&p.pool)),
        }
    }
}

/// Two entries are the same when their files and refresh states are (live state is not
/// part of a snapshot's identity).
impl PartialEq for DomainEntry {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
            && self
                .members
                .iter()
                .map(|m| m.refresh)
                .eq(other.members.iter().map(|m| m.refresh))
    }
}

impl Eq for DomainEntry {}

/// Whether two credentials are the same account: the same key, or OAuth tokens that share
/// a refresh token or an access token (a refresh replaces one of them at a time).
fn same_secret(a: &Credential, b: &Credential) -> bool {
    match (a, b) {
        (Credential::ApiKey { api_key: x }, Credential::ApiKey { api_key: y }) => x == y,
        (Credential::OAuth(x), Credential::OAuth(y)) => {
            x.access_token == y.access_token
                || (x.refresh_token.is_some() && x.refresh_token == y.refresh_token)
        }
        _ => false,
    }
}

/// A domain and its pool's members (id, figures).
pub type PoolFigures = (String, Vec<(Arc<str>, MemberSnapshot)>);

/// A domain's file: the credential, or why the file cannot be used.
pub type Entry = Result<Arc<DomainEntry>, Arc<str>>;
pub(super) type Snapshot = Arc<HashMap<String, Entry>>;

/// Credentials by domain, hot-reloaded from one directory.
pub struct CredentialStore {
    dir: PathBuf,
    snapshot: Published<HashMap<String, Entry>>,
    /// Held by whoever publishes (scanner, refresh jobs), so publishes never interleave.
    /// Holds each file's bytes as last loaded (or as a refresh wrote them).
    writer: Mutex<HashMap<String, Vec<u8>>>,
    refresh_board: RefreshBoard,
}

impl CredentialStore {
    /// Loads the directory once, synchronously, so credentials exist before traffic does.
    pub fn open(dir: PathBuf) -> Arc<CredentialStore> {
        let store = Arc::new(CredentialStore {
            dir,
            snapshot: Published::default(),
            writer: Mutex::new(HashMap::new()),
            refresh_board: RefreshBoard::default(),
        });
        store.scan(false);
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
                store.log_returns();
            })
            .expect("spawn credential watcher");
    }

    /// Starts refreshing this store's OAuth credentials: [`OAuthRefresher::start`].
    pub fn start_refresher(self: &Arc<Self>, config: &Config) -> Result<(), String> {
        OAuthRefresher::start(self, config)
    }

    /// Where requests and the OAuth refresher meet.
    pub(super) fn refresh_board(&self) -> &RefreshBoard {
        &self.refresh_board
    }

    /// Number of domains with a credential file (valid or not).
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no domain has a credential file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Domains whose credential anyone may use: valid files without `client_api_keys`,
    /// when `CLIENT_API_KEYS` is not set either.
    pub fn unguarded(&self, global_keys_set: bool) -> usize {
        if global_keys_set {
            return 0;
        }
        self.current()
            .values()
            .filter(|e| matches!(e, Ok(entry) if entry.file.client_keys.is_none()))
            .count()
    }

    /// `CREDENTIALS_DIR/<domain>.credentials.json`.
    pub(super) fn file_path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}{SUFFIX}"))
    }

    /// The latest published snapshot.
    pub(super) fn current(&self) -> Snapshot {
        self.snapshot.get()
    }

    fn publish(&self, next: HashMap<String, Entry>) {
        self.snapshot.publish(next);
    }

    /// Every domain file's members with their figures, domains sorted, members in file
    /// order: what `/token-stats` and `/metrics` show of the pools.
    pub fn pool_figures(&self) -> Vec<PoolFigures> {
        let now = super::token_client::now_ms();
        let mut all: Vec<PoolFigures> = self
            .current()
            .iter()
            .filter_map(|(domain, entry)| {
                let entry = entry.as_ref().ok()?;
                let members = entry
                    .file
                    .members
                    .iter()
                    .zip(entry.members.iter())
                    .map(|(m, state)| (Arc::clone(&m.id), state.live.read(now)))
                    .collect();
                Some((domain.clone(), members))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Rests `member` of `domain` until `until_ms`, as another process of the fleet told
    /// (a later rest already set stays); logged when it was not resting. Unknown domains
    /// and members are passed over: the processes' files may differ for a moment.
    pub fn rest_member(&self, domain: &str, member: &str, until_ms: u64, now_ms: u64) {
        let current = self.current();
        let Some(Ok(entry)) = current.get(domain) else {
            return;
        };
        let found = entry.file.members.iter().zip(entry.members.iter());
        for (m, state) in found.filter(|(m, _)| &*m.id == member) {
            if state.live.cool_until(until_ms, now_ms) && until_ms > now_ms {
                log::warn!(
                    "credentials: {domain}: member {} cools down for {}s: another nexus on the \
                     ledger rested it",
                    m.id,
                    (until_ms - now_ms).div_ceil(1000)
                );
            }
        }
    }

    /// Logs each member whose cooldown has ended since the last look. Its return needs no
    /// action (a request reads the cooldown's end itself); this is the operator's line.
    fn log_returns(&self) {
        let now = super::token_client::now_ms();
        for (domain, entry) in self.current().iter() {
            let Ok(entry) = entry else { continue };
            for (member, state) in entry.file.members.iter().zip(entry.members.iter()) {
                if state.live.returned(now) {
                    log::info!(
                        "credentials: {domain}: member {} returns to service",
                        member.id
                    );
                }
            }
        }
    }

    /// Re-reads every file; publishes a new snapshot if anything changed.
    pub fn rescan(&self) {
        self.scan(true);
    }

    /// [`CredentialStore::rescan`]; `settle`: give a fresh file that does not parse one
    /// more scan (off for the first load, when there is no previous credential to keep).
    fn scan(&self, settle: bool) {
        self.scan_files(settle);
        COUNTERS.scanned();
    }

    // A change is recognised by content, not by `stat`: (mtime, size, inode) cannot tell a
    // same-size rewrite in place within one mtime tick (a jiffy on ext4, a second or two
    // on others) from no change, and "re-read while the mtime is recent" would still trust
    // the clock and every tool that keeps an old mtime (`cp -p`, `tar`, `rsync -t`).
    // Credential files are a few hundred bytes, so reading each one every scan costs an
    // open, a read and a close per file twice a second on this thread, and nothing on the
    // request path; a file is parsed only when its bytes differ from the last load.
    fn scan_files(&self, settle: bool) {
        let mut loaded = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        let mut next: HashMap<String, Entry> = HashMap::with_capacity(current.len());
        let mut seen: HashMap<String, Vec<u8>> = HashMap::with_capacity(loaded.len());
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
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let bytes = read_bounded(&path);
            let unchanged =
                matches!((&bytes, loaded.get(domain)), (Ok(now), Some(then)) if now == then);
            if let (true, Some(entry)) = (unchanged, current.get(domain)) {
                next.insert(domain.to_string(), entry.clone());
                seen.insert(domain.to_string(), bytes.unwrap_or_default());
                continue;
            }
            // Loaded before but unreadable now (the process is out of file descriptors
            // under load, a permission change): keep what was loaded, as a stat-based
            // scan would, rather than fail the domain's requests; look again next scan.
            if let (Err(why @ Unreadable::Io(_)), Some(previous)) = (&bytes, current.get(domain)) {
                log::debug!(
                    "credentials: {}: {why}; keeping it as loaded",
                    path.display()
                );
                next.insert(domain.to_string(), previous.clone());
                if let Some(then) = loaded.remove(domain) {
                    seen.insert(domain.to_string(), then);
                }
                continue;
            }
            let settling = settle
                && meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age < SETTLE);
            match load(&bytes, &path, domain, settling, current.get(domain)) {
                Some(entry) => {
                    changed |= current.get(domain) != Some(&entry);
                    next.insert(domain.to_string(), entry);
                    seen.insert(domain.to_string(), bytes.unwrap_or_default());
                }
                // Still being written: keep what was there, look again next scan.
                None => {
                    if let Some(previous) = current.get(domain) {
                        next.insert(domain.to_string(), previous.clone());
                    }
                }
            }
        }
        changed |= current.keys().any(|d| !next.contains_key(d));
        *loaded = seen;
        if changed {
            self.publish(next);
        }
    }

    /// Publishes `file` for `domain` with a clean refresh state, and remembers `on_disk`
    /// (the file's bytes now) so the scanner keeps this entry until the file changes.
    pub(super) fn publish_file(&self, domain: &str, file: CredentialFile, on_disk: Vec<u8>) {
        let mut loaded = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.current()).clone();
        let previous = match next.get(domain) {
            Some(Ok(entry)) => Some(Arc::clone(entry)),
            _ => None,
        };
        let entry = DomainEntry::new(file, previous.as_deref(), Replacing::Refresh);
        next.insert(domain.to_string(), Ok(Arc::new(entry)));
        loaded.insert(domain.to_string(), on_disk);
        self.publish(next);
    }

    /// Replaces the refresh state of member `id` of `domain`, if it still holds
    /// `refresh_token` (a file changed meanwhile starts over). Returns the state it replaced.
    pub(super) fn set_refresh_state(
        &self,
        domain: &str,
        id: &str,
        refresh_token: &str,
        state: impl FnOnce(RefreshState) -> RefreshState,
    ) -> Option<RefreshState> {
        let _loaded = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current();
        let Some(Ok(entry)) = current.get(domain) else {
            return None;
        };
        let i = entry.file.position(id)?;
        match &entry.file.members[i].credential {
            Credential::OAuth(tokens) if tokens.refresh_token.as_deref() == Some(refresh_token) => {
            }
            _ => return None,
        }
        let previous = entry.members[i].refresh;
        let mut updated = (**entry).clone();
        updated.members[i].refresh = state(previous);
        let mut next = (*current).clone();
        next.insert(domain.to_string(), Ok(Arc::new(updated)));
        self.publish(next);
        Some(previous)
    }

    /// The entry for `domain`, if it has a file. Cheap: see [`LocalView`].
    pub fn lookup(&self, view: &LocalView, domain: &str) -> Option<Entry> {
        self.snapshot
            .with(&view.0, |entries, _| entries.get(domain).cloned())
    }
}

/// A worker's reference to the snapshot it last read (see [`Published`]).
#[derive(Default)]
pub struct LocalView(Local<HashMap<String, Entry>>);

/// Why a file's bytes could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unreadable {
    /// Reading failed; it may work next time.
    Io(String),
    /// Over [`MAX_FILE_BYTES`]: a verdict on the content.
    TooLarge,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Io(e) => write!(f, "cannot read ({e})"),
            Unreadable::TooLarge => write!(
                f,
                "larger than {} KiB: not a credential file",
                MAX_FILE_BYTES / 1024
            ),
        }
    }
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, Unreadable> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Unreadable::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable::TooLarge);
    }
    Ok(bytes)
}

/// Parses one file's bytes. `None` when they do not parse but may still be being written.
fn load(
    bytes: &Result<Vec<u8>, Unreadable>,
    path: &Path,
    domain: &str,
    settling: bool,
    previous: Option<&Entry>,
) -> Option<Entry> {
    let parsed = bytes.clone().map_err(|e| e.to_string()).and_then(|bytes| {
        let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        parse_credential(&text)
    });
    match parsed {
        Ok(file) => {
            log::info!("credentials: loaded {}", path.display());
            let previous = previous.and_then(|p| p.as_deref().ok());
            Some(Ok(Arc::new(DomainEntry::new(
                file,
                previous,
                Replacing::Reload,
            ))))
        }
        Err(_) if settling => None,
        Err(why) => {
            log::error!("credentials: {} is unusable: {why}", path.display());
            Some(Err(Arc::from(format!(
                "the credential file for {domain} is invalid: {why}"
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn age(path: &Path) {
        // Backdate the file past the settle window, as if written a while ago.
        let old = SystemTime::now() - Duration::from_secs(5);
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(old).unwrap();
    }

    #[test]
    fn picks_up_new_changed_and_deleted_files() {
        let dir = std::env::temp_dir().join(format!("nexus-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.example.com.credentials.json");
        std::fs::write(&file, r#"{"type":"api_key","api_key":"one"}"#).unwrap();
        let bad = dir.join("bad.example.com.credentials.json");
        std::fs::write(&bad, "{").unwrap();
        age(&bad);
        for ignored in ["..credentials.json", ".tmp-a.example.com.credentials.json"] {
            std::fs::write(dir.join(ignored), r#"{"type":"api_key","api_key":"x"}"#).unwrap();
        }
        let store = CredentialStore::open(dir.clone());
        let view = LocalView::default();
        let key = |store: &CredentialStore| match store.lookup(&view, "a.example.com") {
            Some(Ok(c)) => match &c.file.members[0].credential {
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
        assert_eq!(
            store.len(),
            2,
            "invalid domain names (and temp files) are ignored"
        );
        assert_eq!(store.unguarded(false), 1);
        assert_eq!(store.unguarded(true), 0);

        std::fs::write(&file, r#"{"type":"api_key","api_key":"two-longer"}"#).unwrap();
        store.rescan();
        assert_eq!(key(&store), Some("two-longer".into()));

        // Half-written: the previous credential stays until the file settles.
        std::fs::write(&file, r#"{"type":"api_k"#).unwrap();
        store.rescan();
        assert_eq!(key(&store), Some("two-longer".into()));
        age(&file);
        store.rescan();
        assert!(matches!(store.lookup(&view, "a.example.com"), Some(Err(_))));

        // Too large to be a credential file: a verdict, not a read error to ride out.
        std::fs::write(&file, r#"{"type":"api_key","api_key":"three"}"#).unwrap();
        age(&file);
        store.rescan();
        assert_eq!(key(&store), Some("three".into()));
        std::fs::write(&file, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        age(&file);
        store.rescan();
        match store.lookup(&view, "a.example.com") {
            Some(Err(why)) => assert!(why.contains("larger than"), "{why}"),
            other => panic!("{other:?}"),
        }

        std::fs::remove_file(&file).unwrap();
        store.rescan();
        assert_eq!(key(&store), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_same_size_rewrite_with_the_same_mtime_is_seen() {
        let dir = std::env::temp_dir().join(format!("nexus-store-tick-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.example.com.credentials.json");
        std::fs::write(&file, r#"{"type":"api_key","api_key":"key-1"}"#).unwrap();
        age(&file);
        let store = CredentialStore::open(dir.clone());
        let view = LocalView::default();
        let before = std::fs::metadata(&file).unwrap();
        for key in ["key-2", "key-3"] {
            // In place, same length, and the mtime put back: what a filesystem with a
            // coarse clock shows for two writes within one tick. stat sees no change.
            std::fs::write(&file, format!(r#"{{"type":"api_key","api_key":"{key}"}}"#)).unwrap();
            let f = std::fs::File::options().write(true).open(&file).unwrap();
            f.set_modified(before.modified().unwrap()).unwrap();
            let after = std::fs::metadata(&file).unwrap();
            assert_eq!(
                (after.len(), after.modified().unwrap()),
                (before.len(), before.modified().unwrap())
            );
            store.rescan();
            match store.lookup(&view, "a.example.com") {
                Some(Ok(entry)) => assert_eq!(
                    entry.file.members[0].credential,
                    Credential::ApiKey {
                        api_key: key.into()
                    }
                ),
                other => panic!("{other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refresh_state_applies_only_to_the_same_refresh_token() {
        let dir = std::env::temp_dir().join(format!("nexus-store-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("o.example.com.credentials.json"),
            r#"{"type":"oauth","oauth":{"accessToken":"a","refreshToken":"r1","expiresAt":1}}"#,
        )
        .unwrap();
        let store = CredentialStore::open(dir.clone());
        let view = LocalView::default();
        let state = || match store.lookup(&view, "o.example.com") {
            Some(Ok(entry)) => entry.members[0].refresh,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            store.set_refresh_state("o.example.com", "default", "other", |_| {
                RefreshState::InvalidGrant
            }),
            None
        );
        assert_eq!(state(), RefreshState::Ok);
        assert_eq!(
            store.set_refresh_state("o.example.com", "default", "r1", |_| {
                RefreshState::InvalidGrant
            }),
            Some(RefreshState::Ok)
        );
        assert_eq!(state(), RefreshState::InvalidGrant);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
