//! The last OAuth refresh error of each member, kept beside the credential files
//! (`.<domain>.refresh-errors.json`) so that `nexus credentials` — another process — can
//! show it. Written when a refresh fails, cleared when one succeeds; informational only:
//! nothing reads it back to decide anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::persist::write_atomically;

/// The record's path for the credential file at `credential_path`.
pub fn path_for(credential_path: &Path, domain: &str) -> PathBuf {
    credential_path.with_file_name(format!(".{domain}.refresh-errors.json"))
}

/// Records (`Some`) or clears (`None`) the last refresh error of member `id`; a record
/// left empty is removed. Failures to write are logged at debug: the refresh matters, the
/// record does not.
pub fn record(record_path: &Path, id: &str, error: Option<(&str, u64)>) {
    let mut errors = read(record_path);
    let changed = match error {
        Some((why, at_ms)) => {
            let entry = serde_json::json!({
                "at": humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms)
                )
                .to_string(),
                "error": why,
            });
            errors.insert(id.to_string(), entry.clone()) != Some(entry)
        }
        None => errors.remove(id).is_some(),
    };
    if !changed {
        return;
    }
    let result = match errors.is_empty() {
        true => std::fs::remove_file(record_path),
        false => {
            let map: Map<String, Value> = errors.into_iter().collect();
            let mut text = serde_json::to_vec_pretty(&map).expect("JSON always serializes");
            text.push(b'\n');
            write_atomically(record_path, &text)
        }
    };
    if let Err(e) = result {
        log::debug!("credentials: cannot update {}: {e}", record_path.display());
    }
}

/// The recorded errors by member id: (when, what).
pub fn read(record_path: &Path) -> BTreeMap<String, Value> {
    std::fs::read(record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .map(|map| map.into_iter().collect())
        .unwrap_or_default()
}

/// How `nexus credentials` shows member `id`'s last refresh error, if there is one.
pub fn note(errors: &BTreeMap<String, Value>, id: &str) -> Option<String> {
    let entry = errors.get(id)?;
    let at = entry["at"].as_str().unwrap_or("?");
    let why = entry["error"].as_str().unwrap_or("?");
    Some(format!("last refresh failed {at}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_recorded_per_member_and_cleared_by_a_success() {
        let dir = std::env::temp_dir().join(format!("nexus-refresh-errors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_for(&dir.join("a.example.credentials.json"), "a.example");
        assert_eq!(path.file_name().unwrap(), ".a.example.refresh-errors.json");
        record(&path, "max-1", Some(("invalid_grant", 1_795_603_409_987)));
        record(&path, "max-2", Some(("timed out", 1_795_603_409_987)));
        let errors = read(&path);
        assert_eq!(
            note(&errors, "max-1").as_deref(),
            Some("last refresh failed 2026-11-25T10:43:29.987Z: invalid_grant")
        );
        record(&path, "max-1", None);
        assert_eq!(note(&read(&path), "max-1"), None);
        assert!(note(&read(&path), "max-2").is_some());
        record(&path, "max-2", None);
        assert!(!path.exists(), "an empty record is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
