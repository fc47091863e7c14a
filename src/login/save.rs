//! Writing the logged-in credential into `<domain>.credentials.json` — the file's one
//! credential, or (`--id`) one member of its pool: the `oauth` block replaced, every other
//! field and member of an existing file kept, atomically, under the lock the refresher
//! takes — so a running nexus never sees half a file and never refreshes the old token
//! while it is being replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::credentials::file::{parse_value, valid_id, DEFAULT_MEMBER};
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
    /// `--id`: the pool member written, instead of the file's one credential.
    pub member: Option<String>,
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
            member: None,
        };
        target.existing()?;
        Ok(target)
    }

    /// Writes member `id` of the domain's pool instead of its one credential.
    pub fn member(mut self, id: &str) -> Result<Target, String> {
        if !valid_id(id) {
            return Err(format!(
                "{id:?} is not a member id (1 to 64 of A-Z a-z 0-9 . _ -)"
            ));
        }
        self.member = Some(id.to_string());
        Ok(self)
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
        let fields = self.existing()?;
        let doc = Value::Object(match &self.member {
            None => self.as_single(fields, tokens)?,
            Some(id) => as_member(fields, id, tokens),
        });
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

impl Target {
    /// The file's one credential replaced by `tokens`.
    fn as_single(
        &self,
        mut fields: Map<String, Value>,
        tokens: &LoggedIn,
    ) -> Result<Map<String, Value>, String> {
        if fields.get("type").and_then(Value::as_str) == Some("pool") {
            return Err(format!(
                "{} is a credential pool: name the member to write with --id (nothing was \
                 written)",
                self.path.display()
            ));
        }
        set_oauth(&mut fields, tokens);
        Ok(fields)
    }
}

/// Makes `credential` (a file's or a member's fields) the OAuth credential `tokens`.
fn set_oauth(credential: &mut Map<String, Value>, tokens: &LoggedIn) {
    credential.remove("api_key");
    credential.insert("type".into(), "oauth".into());
    credential.insert("oauth".into(), tokens.oauth_block());
}

/// The file with member `id` set to `tokens`: replaced in place (its other fields kept) or
/// added. A new file becomes a pool of one; a single-credential file a pool whose old
/// credential is member `default` (unless that is the member written).
fn as_member(mut fields: Map<String, Value>, id: &str, tokens: &LoggedIn) -> Map<String, Value> {
    let mut members = match fields.get("type").and_then(Value::as_str) {
        Some("pool") => match fields.remove("credentials") {
            Some(Value::Array(members)) => members,
            _ => Vec::new(),
        },
        None => Vec::new(),
        Some(_) => {
            let mut old = Map::new();
            old.insert("id".into(), DEFAULT_MEMBER.into());
            for name in ["type", "api_key", "oauth"] {
                if let Some(value) = fields.remove(name) {
                    old.insert(name.into(), value);
                }
            }
            vec![Value::Object(old)]
        }
    };
    let existing = members
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|m| m.get("id").and_then(Value::as_str) == Some(id));
    match existing {
        Some(member) => set_oauth(member, tokens),
        None => {
            let mut member = Map::new();
            member.insert("id".into(), id.into());
            set_oauth(&mut member, tokens);
            members.push(Value::Object(member));
        }
    }
    fields.insert("type".into(), "pool".into());
    fields.insert("credentials".into(), Value::Array(members));
    fields
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
    fn a_member_is_added_replaced_or_made_from_a_single_credential() {
        let dir = scratch("member");
        let file = dir.join("a.example.com.credentials.json");
        let member = |id: &str| {
            Target::check(&dir, "a.example.com")
                .unwrap()
                .member(id)
                .unwrap()
        };
        let read = || -> Value { serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap() };
        // A single credential becomes member "default" of a pool; top-level fields stay.
        std::fs::write(
            &file,
            r##"{"type":"api_key","api_key":"sk-old","slack":{"channel":"#x"}}"##,
        )
        .unwrap();
        member("max-1").save(&tokens()).unwrap();
        let doc = read();
        assert_eq!(doc["type"], "pool");
        assert_eq!(doc["slack"]["channel"], "#x");
        assert_eq!(
            doc["credentials"][0],
            serde_json::json!({"id":"default","type":"api_key","api_key":"sk-old"})
        );
        assert_eq!(doc["credentials"][1]["id"], "max-1");
        assert_eq!(
            doc["credentials"][1]["oauth"]["accessToken"],
            "sk-ant-oat01-new"
        );
        // The same member again: replaced in place, its other fields kept.
        let mut edited = doc.clone();
        edited["credentials"][1]["note"] = "mine".into();
        std::fs::write(&file, edited.to_string()).unwrap();
        let mut newer = tokens();
        newer.access_token = "sk-ant-oat01-newer".into();
        member("max-1").save(&newer).unwrap();
        let doc = read();
        assert_eq!(doc["credentials"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["credentials"][1]["oauth"]["accessToken"],
            "sk-ant-oat01-newer"
        );
        assert_eq!(doc["credentials"][1]["note"], "mine");
        // Without --id a pool is refused, untouched.
        let before = std::fs::read(&file).unwrap();
        let err = Target::check(&dir, "a.example.com")
            .unwrap()
            .save(&tokens())
            .unwrap_err();
        assert!(err.contains("--id"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert!(Target::check(&dir, "a.example.com")
            .unwrap()
            .member("a b")
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
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
