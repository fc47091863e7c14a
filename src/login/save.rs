//! Writing the logged-in credential into `<domain>.credentials.json`: the `oauth` block
//! replaced, every other field of an existing file kept, atomically, under the lock the
//! refresher takes — so a running nexus never sees half a file and never refreshes the
//! old token while it is being replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::credentials::file::parse_value;
use crate::credentials::persist::{lock_path, write_atomically, FileLock};
use crate::credentials::store::SUFFIX;
use crate::credentials::{domain_from_host, mask};

/// The tokens `nexus login` got, from the token endpoint or a Claude Code file.
#[derive(Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub expires_at: Option<u64>,
    pub scopes: Vec<String>,
    /// Claude Code's `subscriptionType` (`pro`, `max`, …), kept for people reading the file.
    pub subscription_type: Option<String>,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedIn")
            .field("access_token", &mask(&self.access_token))
            .field("refresh_token", &self.refresh_token.as_deref().map(mask))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl LoggedIn {
    /// The file's `oauth` block, in the format credentials/README.md documents.
    fn oauth_block(&self) -> Value {
        let mut oauth = Map::new();
        oauth.insert("accessToken".into(), self.access_token.clone().into());
        if let Some(refresh) = &self.refresh_token {
            oauth.insert("refreshToken".into(), refresh.clone().into());
        }
        if let Some(at) = self.expires_at {
            oauth.insert("expiresAt".into(), at.into());
        }
        oauth.insert("scopes".into(), self.scopes.clone().into());
        if let Some(kind) = &self.subscription_type {
            oauth.insert("subscriptionType".into(), kind.clone().into());
        }
        Value::Object(oauth)
    }
}

/// Where a login writes, checked before any browser step so a code is never spent on a
/// file that cannot be written.
#[derive(Debug)]
pub struct Target {
    pub domain: String,
    pub path: PathBuf,
}

/// How long to wait for a refresh holding the file's lock (its token request is bounded
/// by `NEXUS_OAUTH_TIMEOUT_SECS`, 30 s by default).
pub const LOCK_WAIT: Duration = Duration::from_secs(70);

impl Target {
    /// Validates the domain, and checks that the directory (or, when missing, where it
    /// will be created, mode 0700) is writable and that an existing file is a JSON
    /// object whose fields can be kept.
    pub fn check(dir: &Path, domain: &str) -> Result<Target, String> {
        let valid = domain_from_host(domain)
            .filter(|d| d.may_have_file && d.name == domain.trim().to_ascii_lowercase());
        let Some(valid) = valid.filter(|_| !domain.contains(':')) else {
            return Err(format!(
                "{domain:?} is not a domain name (letters, digits, dots and hyphens, as in \
                 claude-1.example.com)"
            ));
        };
        // A missing directory is created only when there is something to write in it.
        let existing = dir
            .ancestors()
            .find(|d| d.exists())
            .unwrap_or(Path::new("."));
        if !writable(existing) {
            return Err(format!(
                "cannot write to {}: the directory is not writable by this user (nexus \
                 also needs it writable to refresh OAuth tokens)",
                existing.display()
            ));
        }
        let target = Target {
            path: dir.join(format!("{}{SUFFIX}", valid.name)),
            domain: valid.name,
        };
        target.existing()?;
        Ok(target)
    }

    /// The existing file's top-level fields, or none. A file that is not a JSON object
    /// is refused rather than overwritten: its other fields could not be kept.
    fn existing(&self) -> Result<Map<String, Value>, String> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        match serde_json::from_slice(&text) {
            Ok(Value::Object(fields)) => Ok(fields),
            _ => Err(format!(
                "{} exists but is not a JSON object; fix or remove it first (nothing was \
                 written)",
                self.path.display()
            )),
        }
    }

    /// Writes `tokens` as the file's credential. On any error the file is as it was.
    pub fn save(&self, tokens: &LoggedIn) -> Result<(), String> {
        if let Some(dir) = self.path.parent().filter(|d| !d.exists()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let lock = lock_path(&self.path);
        let _held = FileLock::acquire(&lock, LOCK_WAIT)
            .map_err(|e| format!("cannot lock {}: {e}", lock.display()))?;
        // Under the lock: a refresh may have rewritten the file since the check.
        let mut fields = self.existing()?;
        fields.remove("api_key");
        fields.insert("type".into(), "oauth".into());
        fields.insert("oauth".into(), tokens.oauth_block());
        let doc = Value::Object(fields);
        // What nexus would refuse to load is never written.
        parse_value(&doc).map_err(|why| {
            format!(
                "the new {} would not load ({why}); nothing was written",
                self.path.display()
            )
        })?;
        let mut text = serde_json::to_vec_pretty(&doc).expect("JSON always serializes");
        text.push(b'\n');
        write_atomically(&self.path, &text)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// `access(2)` with W_OK|X_OK: what creating the temp and lock files needs.
pub fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; access only reads it.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nexus-login-save-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tokens() -> LoggedIn {
        LoggedIn {
            access_token: "sk-ant-oat01-new".into(),
            refresh_token: Some("sk-ant-ort01-new".into()),
            expires_at: Some(1_900_000_000_000),
            scopes: vec!["user:inference".into()],
            subscription_type: None,
        }
    }

    #[test]
    fn keeps_other_fields_and_drops_an_old_api_key() {
        let dir = scratch("keep");
        let file = dir.join("a.example.com.credentials.json");
        std::fs::write(
            &file,
            r##"{"type":"api_key","api_key":"sk-old","slack":{"channel":"#x"},"client_api_keys":["k1"],"note":1}"##,
        )
        .unwrap();
        let target = Target::check(&dir, "a.example.com").unwrap();
        assert_eq!(target.path, file);
        target.save(&tokens()).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(doc["type"], "oauth");
        assert_eq!(doc["oauth"]["accessToken"], "sk-ant-oat01-new");
        assert_eq!(doc["oauth"]["expiresAt"], 1_900_000_000_000u64);
        assert_eq!(doc["slack"]["channel"], "#x");
        assert_eq!(doc["client_api_keys"][0], "k1");
        assert_eq!(doc["note"], 1);
        assert!(doc.get("api_key").is_none());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_bad_domains_and_files_it_cannot_keep() {
        let dir = scratch("refuse");
        for domain in ["../x", "a/b", "", "[::1]", "host:3000", "a b"] {
            assert!(Target::check(&dir, domain).is_err(), "{domain}");
        }
        std::fs::write(dir.join("b.example.com.credentials.json"), "{ half").unwrap();
        let err = Target::check(&dir, "b.example.com").unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
