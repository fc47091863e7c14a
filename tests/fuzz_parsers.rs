//! Property tests (stable Rust, proptest) for the parsers that face untrusted bytes, plus
//! a replay of the hostile corpus in tests/corpus/. No input may panic; framing decoded
//! in any chunking must equal framing decoded whole. (The usage parsers have their own:
//! tests/usage_fuzz.rs.) Over TLS: the ClientHello inspection of the TLS port, and the
//! request corpus sent through a TLS connection to a running nexus.

mod common;

use std::path::Path;

use nexus::config::parse_upstream_url;
use nexus::credentials::domain_from_host;
use nexus::credentials::file::parse_credential;
use nexus::http::chunked::ChunkedDecoder;
use nexus::http::event_stream::EventReframer;
use nexus::http::request::parse_request;
use nexus::http::response::parse_response;
use nexus::tls::client_hello::{inspect, Hello};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    // Bounded for CI on a slow machine; raise PROPTEST_CASES locally for a longer hunt.
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

/// Everything a request head parse may produce, checked for invariants.
fn check_request_head(input: &[u8]) {
    let upstream = parse_upstream_url("https://api.anthropic.com").unwrap();
    let mut out = Vec::new();
    if let Ok(Some(head)) = parse_request(input, &upstream, &mut out) {
        assert!(head.head_len <= input.len());
        assert!(head.target.starts_with('/'));
        // What goes upstream is well-formed: CRLF-terminated lines, no stray CR/LF/NUL.
        let text = std::str::from_utf8(&out)
            .map(str::to_owned)
            .unwrap_or_else(|_| String::from_utf8_lossy(&out).into());
        assert!(out.ends_with(b"\r\n"));
        for line in text.split_terminator("\r\n") {
            assert!(
                !line.contains('\r') && !line.contains('\n') && !line.contains('\0'),
                "{line:?}"
            );
        }
        assert!(text.contains("\r\nHost: api.anthropic.com\r\n"));
        let lower = text.to_ascii_lowercase();
        for dropped in [
            "\r\ncontent-length:",
            "\r\ntransfer-encoding:",
            "\r\nconnection:",
            "\r\nx-api-key:",
            "\r\nauthorization:",
        ] {
            assert!(!lower.contains(dropped), "{dropped} forwarded: {text:?}");
        }
    }
}

fn check_response_head(input: &[u8]) {
    let mut out = Vec::new();
    if let Ok(Some(nexus::http::response::ResponseHead::Final(head))) =
        parse_response(input, false, &mut out, &mut |_, _| {})
    {
        assert!(head.head_len <= input.len());
        let lower = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(!lower.contains("\r\ntransfer-encoding:") && !lower.contains("\r\nconnection:"));
    }
}

fn chunk_encode(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut last = 0;
    for &c in cuts {
        let c = c % (bytes.len() + 1);
        if c > last {
            pieces.push(&bytes[last..c]);
            last = c;
        }
    }
    pieces.push(&bytes[last..]);
    pieces
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_heads_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_request_head(&input);
    }

    #[test]
    fn request_heads_from_plausible_pieces(
        method in prop::sample::select(vec!["GET", "POST", "HEAD", "DELETE", "G ET", ""]),
        target in "(/[a-z0-9./%?=&-]{0,20}|[a-z:/]{0,10})",
        headers in proptest::collection::vec(("[A-Za-z-]{0,12}( )?", "[ -~\t]{0,24}"), 0..8),
        tail in proptest::collection::vec(prop::sample::select(vec!["\r\n", "\n", "\r", " ", ":", "\0"]), 0..3),
    ) {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: a.example.com\r\n");
        for (name, value) in &headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str(&tail.concat());
        raw.push_str("\r\n");
        check_request_head(raw.as_bytes());
    }

    #[test]
    fn response_heads_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_response_head(&input);
        let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
        prefixed.extend_from_slice(&input);
        check_response_head(&prefixed);
    }

    #[test]
    fn chunked_decoding_is_independent_of_read_boundaries(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
        cuts in proptest::collection::btree_set(0usize..5000, 0..20),
    ) {
        let wire = chunk_encode(&chunks);
        let cuts: Vec<usize> = cuts.into_iter().collect();
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for piece in split_at(&wire, &cuts) {
            let p = decoder.feed(piece, &mut |d| data.extend_from_slice(d)).unwrap();
            consumed += p.consumed;
            done = p.done;
        }
        prop_assert!(done);
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(data, chunks.concat());

        // The in-place decoder agrees.
        let mut in_place = ChunkedDecoder::new();
        let mut buf = wire.clone();
        let (end, p) = in_place.decode_in_place(&mut buf, 0, 0).unwrap();
        prop_assert!(p.done);
        let expected = chunks.concat();
        prop_assert_eq!(&buf[..end], expected.as_slice());
    }

    #[test]
    fn chunked_decoder_survives_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut decoder = ChunkedDecoder::new();
        let mut total = 0usize;
        if let Ok(p) = decoder.feed(&input, &mut |d| total += d.len()) {
            prop_assert!(p.consumed <= input.len());
            prop_assert!(total <= input.len());
        }
    }

    #[test]
    fn reframed_event_streams_carry_the_same_body(
        events in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,60}", prop::sample::select(vec!["\n", "\r\n", "\r"])), 1..10),
        upstream_cuts in proptest::collection::btree_set(0usize..2000, 0..10),
        read_cuts in proptest::collection::btree_set(0usize..2000, 0..10),
    ) {
        let body: String = events
            .iter()
            .map(|(name, data, eol)| format!("event: {name}{eol}data: {data}{eol}{eol}"))
            .collect();
        let upstream_cuts: Vec<usize> = upstream_cuts.into_iter().collect();
        let chunks: Vec<Vec<u8>> = split_at(body.as_bytes(), &upstream_cuts).iter().map(|p| p.to_vec()).collect();
        let wire = chunk_encode(&chunks);
        let read_cuts: Vec<usize> = read_cuts.into_iter().collect();

        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut buf = head.to_vec();
        let mut reframer = EventReframer::new(head.len());
        let mut client_wire = Vec::new();
        let mut scanned = Vec::new();
        for piece in split_at(&wire, &read_cuts) {
            buf.extend_from_slice(piece);
            reframer.absorb(&mut buf, &mut |b| scanned.extend_from_slice(b)).unwrap();
            if let Some(frame) = reframer.frame(&mut buf) {
                client_wire.extend_from_slice(&buf[frame.range.clone()]);
                reframer.forwarded(&mut buf, &frame);
            }
        }
        prop_assert!(reframer.done());
        prop_assert_eq!(&scanned, body.as_bytes());
        let mut decoder = ChunkedDecoder::new();
        let mut relayed = Vec::new();
        let p = decoder.feed(&client_wire, &mut |d| relayed.extend_from_slice(d)).unwrap();
        prop_assert!(p.done, "the client's framing ends properly");
        prop_assert_eq!(relayed, body.into_bytes());
    }

    #[test]
    fn credential_files_never_panic_or_echo_secrets(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&input);
        let _ = parse_credential(&text);
    }

    #[test]
    fn credential_errors_never_contain_the_secret(
        kind in prop::sample::select(vec!["api_key", "oauth", "other", ""]),
        field in prop::sample::select(vec!["api_key", "apikey", "oauth", "accessToken"]),
    ) {
        let secret = "sk-ant-api03-SECRETSECRETSECRET";
        let text = format!(r#"{{"type":"{kind}","{field}":"{secret}","oauth":{{"refreshToken":"{secret}"}}}}"#);
        if let Err(why) = parse_credential(&text) {
            prop_assert!(!why.contains("SECRET"), "{}", why);
        }
    }

    #[test]
    fn client_hello_inspection_never_panics(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        record in any::<bool>(),
    ) {
        let mut bytes = input;
        if record && !bytes.is_empty() {
            // A handshake record's first byte, so the bytes reach the ClientHello parser.
            bytes[0] = 0x16;
        }
        let _ = inspect(&bytes);
    }

    #[test]
    fn a_client_hello_gives_its_sni_name_in_any_case(name in "[a-z]([a-z0-9-]{0,18}[a-z0-9])?(\\.[a-zA-Z][a-zA-Z0-9]{0,9}){1,3}") {
        let wire = common::tls::client_hello_to(&name);
        prop_assert_eq!(inspect(&wire), Hello::Tls { server_name: Some(name.to_ascii_lowercase()) });
    }

    #[test]
    fn hosts_that_pass_validation_are_safe_file_names(host in "[ -~]{0,80}") {
        if let Some(domain) = domain_from_host(&host) {
            prop_assert!(!domain.name.contains('/') && !domain.name.contains('\\'));
            prop_assert!(!domain.name.split('.').any(|label| label.is_empty() || label == ".."));
            prop_assert_eq!(domain.name.clone(), domain.name.to_ascii_lowercase());
        }
    }
}

/// Replays every file in tests/corpus/<kind>/ through its parser: inputs that once
/// troubled parsers (or might), kept so they are tried on every run.
#[test]
fn hostile_corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut replayed = 0;
    for (kind, check) in [
        ("requests", check_request_head as fn(&[u8])),
        ("responses", check_response_head),
        ("chunked", |input: &[u8]| {
            let _ = ChunkedDecoder::new().feed(input, &mut |_| {});
        }),
        ("credentials", |input: &[u8]| {
            let _ = parse_credential(&String::from_utf8_lossy(input));
        }),
    ] {
        let dir = root.join(kind);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            // Prefixes too: a hostile input often bites when it arrives in pieces (every
            // prefix of small inputs, 256 spread over large ones, to stay quick).
            let step = (bytes.len() / 256).max(1);
            for end in (0..bytes.len()).step_by(step).chain([bytes.len()]) {
                check(&bytes[..end]);
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "only {replayed} corpus files found");
}

/// The hostile request corpus, each file sent whole through its own TLS connection to a
/// running nexus: every one gets an answer or a close (no hang: the client's reads time
/// out), and nexus serves on.
#[test]
fn hostile_request_corpus_through_tls_gets_answers_and_nexus_lives() {
    use common::{Nexus, Request};
    let mut nexus = Nexus::builder().https().workers(1).start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/requests");
    let mut sent = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut client = nexus.client();
        // A write may fail once nexus has answered and closed: that is an answer too.
        let _ = client.send_raw(&bytes);
        let answer = client
            .read_all()
            .unwrap_or_else(|e| panic!("{}: no answer, no close ({e})", path.display()));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 "),
            "{}: {text:?}",
            path.display()
        );
        sent += 1;
    }
    assert!(sent >= 10, "only {sent} corpus requests");
    assert_eq!(nexus.request(&Request::get("/token-stats")).status, 200);
    nexus.assert_alive();
}
