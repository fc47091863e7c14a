//! HTTP/1.1 wire format shared by the mock upstream and the test client: head parsing,
//! body framing (Content-Length, chunked, close-delimited) and chunk encoding.
//!
//! Deliberately hand-written and independent of nexus's own parser, so a bug there cannot
//! hide behind the same bug here.

use std::io::{self, BufRead, Read};

/// Longest request/status line or header line accepted; guards against a runaway peer.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines accepted in one head.
const MAX_HEADERS: usize = 256;

/// Header list in wire order with the original name case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// Builds a list from `(name, value)` pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive), in wire order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// How many lines carry `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).len()
    }

    /// Whether any line carries `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any value, or any header name, contains `needle` (case-sensitive).
    pub fn mention(&self, needle: &str) -> bool {
        self.0
            .iter()
            .any(|(n, v)| n.contains(needle) || v.contains(needle))
    }

    /// Iterates `(name, value)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether the message body is chunked (last Transfer-Encoding coding is `chunked`).
    pub fn is_chunked(&self) -> bool {
        self.get_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty())
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
    }

    /// The Content-Length, if present; an unparsable or conflicting value is an error.
    pub fn content_length(&self) -> io::Result<Option<u64>> {
        let values = self.get_all("content-length");
        let mut parsed: Option<u64> = None;
        for value in values {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
            if parsed.is_some_and(|p| p != n) {
                return Err(invalid("conflicting Content-Length headers".into()));
            }
            parsed = Some(n);
        }
        Ok(parsed)
    }

    /// Serializes as `Name: value\r\n` lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.0 {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A parsed message head: the start line and the header lines.
#[derive(Clone, Debug)]
pub struct Head {
    pub start_line: String,
    pub headers: Headers,
}

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

impl Framing {
    /// Framing of a request body (RFC 9112 §6.3: no length means no body).
    pub fn of_request(headers: &Headers) -> io::Result<Framing> {
        if headers.is_chunked() {
            return Ok(Framing::Chunked);
        }
        Ok(match headers.content_length()? {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }

    /// Framing of a response body to a request with `method`.
    pub fn of_response(method: &str, status: u16, headers: &Headers) -> io::Result<Framing> {
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(Framing::Empty);
        }
        if headers.is_chunked() {
            return Ok(Framing::Chunked);
        }
        Ok(match headers.content_length()? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

/// Makes an `InvalidData` error.
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one CRLF- (or LF-) terminated line without the terminator; `None` on EOF before
/// any byte.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut raw = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut raw)?;
    if n == 0 {
        return Ok(None);
    }
    if raw.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            invalid("line too long".into())
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        });
    }
    raw.pop();
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    Ok(Some(String::from_utf8_lossy(&raw).into_owned()))
}

/// Reads a message head; `None` when the peer closed cleanly before sending anything.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let start_line = match read_line(reader)? {
        Some(line) => line,
        None => return Ok(None),
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a head",
            )
        })?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(invalid("too many header lines".into()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line without colon: {line:?}")))?;
        if name.is_empty() || name.starts_with([' ', '\t']) {
            return Err(invalid(format!("bad header name in {line:?}")));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Some(Head {
        start_line,
        headers: Headers(headers),
    }))
}

/// Reads the whole body delimited by `framing`.
pub fn read_body(reader: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(n) => {
            let mut body = Vec::new();
            let got = reader.by_ref().take(n).read_to_end(&mut body)?;
            if (got as u64) < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {got} of {n} bytes"),
                ));
            }
            Ok(body)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            while let Some(chunk) = read_chunk(reader)? {
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
        Framing::UntilClose => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            Ok(body)
        }
    }
}

/// Reads one chunk of a chunked body; `None` after the last chunk (trailers consumed).
pub fn read_chunk(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let size_line = read_line(reader)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a chunk",
        )
    })?;
    let size_hex = size_line.split(';').next().unwrap_or("").trim();
    let size = u64::from_str_radix(size_hex, 16)
        .map_err(|_| invalid(format!("bad chunk size line {size_line:?}")))?;
    if size == 0 {
        // Trailer section: header lines up to an empty line.
        loop {
            let line = read_line(reader)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in trailers",
                )
            })?;
            if line.is_empty() {
                return Ok(None);
            }
        }
    }
    let mut data = vec![0; usize::try_from(size).map_err(|_| invalid("chunk too large".into()))?];
    reader.read_exact(&mut data)?;
    let mut crlf = [0u8; 2];
    reader.read_exact(&mut crlf)?;
    if &crlf != b"\r\n" {
        return Err(invalid("chunk data not followed by CRLF".into()));
    }
    Ok(Some(data))
}

/// Encodes `data` as one chunk (never the zero-length last chunk).
pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty(), "an empty chunk would end the body");
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The zero-length chunk that ends a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Encodes `chunks` as a complete chunked body.
pub fn encode_chunked(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = chunks.iter().flat_map(|c| encode_chunk(c)).collect();
    out.extend_from_slice(LAST_CHUNK);
    out
}

/// Splits `data` into pieces of the given sizes (cycled), for chunked-body tests.
pub fn split_sizes(data: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    assert!(sizes.iter().all(|&s| s > 0), "chunk sizes must be positive");
    let mut out = Vec::new();
    let mut rest = data;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece.to_vec());
        rest = tail;
    }
    out
}

/// Standard reason phrase for the statuses tests use.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}
