//! `nexus credentials`: what `CREDENTIALS_DIR` holds, one line per domain — type,
//! expiry, whether a refresh token is there, the last refresh error nexus recorded — and
//! never a secret (the last 4 characters of a long key or token at most). A file that
//! does not parse is named with its field.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::credentials::domain_from_host;
use crate::credentials::file::{parse_credential, Credential};
use crate::credentials::refresh_errors;
use crate::credentials::store::SUFFIX;

/// A secret shorter than this shows nothing of itself.
const SHOW_TAIL_FROM: usize = 16;
/// Characters of a long secret shown.
const TAIL: usize = 4;
/// Files larger than this are not credentials (the scanner's limit too).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The listing: a table for stdout, and one line per file that does not parse.
pub struct Listing {
    pub table: String,
    pub problems: Vec<String>,
}

/// Lists `dir`; `now_ms` decides what counts as expired.
pub fn list(dir: &Path, now_ms: u64) -> Listing {
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Listing {
                table: String::new(),
                problems: vec![format!(
                    "cannot read CREDENTIALS_DIR {}: {e}",
                    dir.display()
                )],
            }
        }
    };
    let mut files: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let domain = name.strip_suffix(SUFFIX)?;
            // The files nexus itself would load, no others.
            domain_from_host(domain).filter(|d| d.may_have_file && d.name == domain)?;
            Some((domain.to_string(), entry.path()))
        })
        .collect();
    files.sort();
    let mut rows = vec![row([
        "DOMAIN", "TYPE", "EXPIRES", "REFRESH", "SECRET", "NOTE",
    ])];
    for (domain, path) in &files {
        match read(path).and_then(|text| parse_credential(&text)) {
            Ok(file) => {
                let errors = refresh_errors::read(&refresh_errors::path_for(path, domain));
                for member in &file.members {
                    // A pool's members each get a row, named `domain/id`.
                    let name = match file.pool {
                        true => format!("{domain}/{}", member.id),
                        false => domain.clone(),
                    };
                    let mut cells = describe(&name, &member.credential, now_ms);
                    if let (Some(note), Credential::OAuth(_)) = (
                        refresh_errors::note(&errors, &member.id),
                        &member.credential,
                    ) {
                        cells[5] = note;
                    }
                    rows.push(cells);
                }
            }
            Err(why) => {
                problems.push(format!("{}: {why}", path.display()));
                rows.push(row([domain, "invalid", "-", "-", "-", &why]));
            }
        }
    }
    let table = if files.is_empty() {
        format!("no credential files in {}\n", dir.display())
    } else {
        render(&rows)
    };
    Listing { table, problems }
}

fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read it ({e})"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {} KiB", MAX_FILE_BYTES / 1024));
    }
    Ok(text)
}

fn describe(domain: &str, credential: &Credential, now_ms: u64) -> Vec<String> {
    match credential {
        Credential::ApiKey { api_key } => row([domain, "api_key", "-", "-", &tail(api_key), ""]),
        Credential::OAuth(tokens) => {
            let expires = match tokens.expires_at {
                None => "never".to_string(),
                Some(ms) => {
                    let at =
                        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
                    if ms <= now_ms {
                        format!("{at} (expired)")
                    } else {
                        at.to_string()
                    }
                }
            };
            let refresh = if tokens.refresh_token.is_some() {
                "yes"
            } else {
                "no"
            };
            row([
                domain,
                "oauth",
                &expires,
                refresh,
                &tail(&tokens.access_token),
                "",
            ])
        }
    }
}

/// `****` and the last 4 characters of a long secret; `****` alone for a short one.
fn tail(secret: &str) -> String {
    let chars = secret.chars().count();
    if chars < SHOW_TAIL_FROM {
        return "****".into();
    }
    let tail: String = secret.chars().skip(chars - TAIL).collect();
    format!("****{tail}")
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_show_four_characters_of_long_secrets_only() {
        assert_eq!(tail("sk-ant-api03-abcdefgh1234"), "****1234");
        assert_eq!(tail("short-key"), "****");
        assert_eq!(tail(""), "****");
    }

    #[test]
    fn lists_each_kind_and_names_the_broken_field() {
        let dir = std::env::temp_dir().join(format!("nexus-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "b.example.com.credentials.json",
            r#"{"type":"api_key","api_key":"sk-ant-api03-secretsecret9876"}"#,
        );
        write(
            "a.example.com.credentials.json",
            r#"{"type":"oauth","oauth":{"accessToken":"sk-ant-oat01-secretsecretWXYZ","refreshToken":"sk-ant-ort01-secretsecret","expiresAt":1000}}"#,
        );
        write(
            "c.example.com.credentials.json",
            r#"{"type":"oauth","oauth":{}}"#,
        );
        write("not a domain.credentials.json", "{}");
        write(".tmp-x.credentials.json", "{}");
        let listing = list(&dir, 2000);
        assert_eq!(
            listing.table,
            "DOMAIN         TYPE     EXPIRES                         REFRESH  SECRET    NOTE\n\
             a.example.com  oauth    1970-01-01T00:00:01Z (expired)  yes      ****WXYZ\n\
             b.example.com  api_key  -                               -        ****9876\n\
             c.example.com  invalid  -                               -        -         missing string field \"oauth.accessToken\"\n"
        );
        assert_eq!(listing.problems.len(), 1);
        assert!(listing.problems[0].contains(
            "c.example.com.credentials.json: missing string field \"oauth.accessToken\""
        ));
        assert!(!listing.table.contains("secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
