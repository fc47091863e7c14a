//! `GET /client-setup/:filename`: small files from `CLIENT_SETUP_DIR` that help a client
//! point itself at nexus (a Claude Code `settings.json`, a setup script, …).
//!
//! The name comes from the request path, so it is checked before it comes near the
//! filesystem: one round of percent-decoding, then only `A-Z a-z 0-9 . _ -`, no leading
//! dot, no `..`; anything else is a 400. The file must be a regular file whose real path
//! (symlinks resolved) is inside the real directory, and at most [`MAX_FILE_BYTES`].
//!
//! The read is a blocking `std::fs` call on the worker thread. That is deliberate: the
//! files are small and bounded, the route is hit once per client set-up, and a thread
//! hop would cost more code than the read costs time.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::http::error::ErrorReply;

/// Path prefix of the route.
pub const ROUTE_PREFIX: &str = "/client-setup/";

/// Largest file served; a bigger one is answered 404 and logged.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Longest accepted file name (after decoding), the usual filesystem limit.
const MAX_NAME_BYTES: usize = 255;

/// A file ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFile {
    /// The decoded, validated file name (safe inside a quoted header value).
    pub name: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The `Content-Type` for a file name, by extension (case-insensitive).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "sh" => "text/x-shellscript; charset=utf-8",
        "ps1" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Decodes and validates the name part of the path (`raw` is what follows the prefix).
pub fn parse_name(raw: &str) -> Result<String, ErrorReply> {
    let bad = |why: &str| ErrorReply::new(400, format!("invalid client-setup file name: {why}"));
    if raw.is_empty() {
        return Err(bad(
            "a file name is required, e.g. /client-setup/settings.json",
        ));
    }
    let decoded = percent_decode(raw).ok_or_else(|| bad("malformed percent-encoding"))?;
    // A `%` left after one round of decoding is double encoding (`%252e`): never a
    // legitimate name here, and a classic way around a check like this one.
    if decoded.contains(&b'%') {
        return Err(bad("double percent-encoding"));
    }
    if decoded.contains(&0) {
        return Err(bad("NUL byte"));
    }
    if decoded.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(bad("path separators are not allowed"));
    }
    if decoded.windows(2).any(|w| w == b"..") {
        return Err(bad("\"..\" is not allowed"));
    }
    if decoded.first() == Some(&b'.') {
        return Err(bad("names starting with \".\" are not served"));
    }
    if decoded.len() > MAX_NAME_BYTES {
        return Err(bad("longer than 255 bytes"));
    }
    if !decoded
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(
            "only letters, digits, \".\", \"_\" and \"-\" are allowed",
        ));
    }
    Ok(String::from_utf8(decoded).expect("ASCII checked above"))
}

/// One round of `%XX` decoding; `None` on a truncated or non-hex escape.
fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Loads `raw` (the undecoded name from the path) from `dir`.
pub fn load(dir: &Path, raw: &str) -> Result<SetupFile, ErrorReply> {
    let name = parse_name(raw)?;
    let not_found = || ErrorReply::new(404, format!("no client-setup file named {name:?}"));
    // Resolve both sides fully so a symlink can point anywhere inside the directory but
    // never out of it (and a symlinked directory itself still works).
    let Ok(root) = dir.canonicalize() else {
        log::debug!("client-setup dir {} is not readable", dir.display());
        return Err(not_found());
    };
    let real = match root.join(&name).canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(read_failed(&name, &e)),
    };
    if !real.starts_with(&root) {
        log::warn!(
            "client-setup file {name:?} resolves outside {} (to {}); not served",
            root.display(),
            real.display()
        );
        return Err(not_found());
    }
    let file = File::open(&real).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => not_found(),
        _ => read_failed(&name, &e),
    })?;
    let meta = file.metadata().map_err(|e| read_failed(&name, &e))?;
    if !meta.is_file() {
        return Err(not_found());
    }
    if meta.len() > MAX_FILE_BYTES {
        log::warn!(
            "client-setup file {name:?} is {} bytes, over the {MAX_FILE_BYTES}-byte limit; not served",
            meta.len()
        );
        return Err(not_found());
    }
    // The file may grow between stat and read: read at most one byte past the limit.
    let mut body = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| read_failed(&name, &e))?;
    if body.len() as u64 > MAX_FILE_BYTES {
        log::warn!("client-setup file {name:?} grew past {MAX_FILE_BYTES} bytes; not served");
        return Err(not_found());
    }
    Ok(SetupFile {
        content_type: content_type(&name),
        name,
        body,
    })
}

fn read_failed(name: &str, e: &io::Error) -> ErrorReply {
    log::warn!("reading client-setup file {name:?}: {e}");
    ErrorReply::new(500, format!("client-setup file {name:?} could not be read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("settings.json"), "application/json");
        assert_eq!(content_type("README.TXT"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type("setup.sh"),
            "text/x-shellscript; charset=utf-8"
        );
        assert_eq!(content_type("setup.ps1"), "text/plain; charset=utf-8");
        assert_eq!(content_type("archive.tar.gz"), "application/octet-stream");
        assert_eq!(content_type("Makefile"), "application/octet-stream");
    }

    #[test]
    fn plain_names_pass_and_decode() {
        assert_eq!(parse_name("settings.json").unwrap(), "settings.json");
        assert_eq!(
            parse_name("setup-v2_final.sh").unwrap(),
            "setup-v2_final.sh"
        );
        assert_eq!(parse_name("a%2Djson").unwrap(), "a-json");
    }

    #[test]
    fn tricks_are_refused() {
        for raw in [
            "",
            "..",
            "..%2fetc%2fpasswd",
            "%2e%2e",
            "%2E%2E%2Fsecret",
            "a%2fb",
            "a%5cb",
            "a\\b",
            "a%00.json",
            "%252e%252e",
            "%25",
            "%2",
            "%zz",
            ".env",
            "%2eenv",
            "x..y",
            "sp ace.txt",
            "quote\".txt",
            "new%0aline",
            "caf%C3%A9.txt",
        ] {
            let err = parse_name(raw).expect_err(raw);
            assert_eq!(err.status, 400, "{raw}: {}", err.message);
        }
        assert!(parse_name(&"a".repeat(256)).is_err());
        assert!(parse_name(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn percent_decoding_is_one_round() {
        assert_eq!(percent_decode("%41%2e").unwrap(), b"A.");
        assert_eq!(percent_decode("%2541").unwrap(), b"%41");
        assert_eq!(percent_decode("abc%"), None);
        assert_eq!(percent_decode("%g0"), None);
    }
}
