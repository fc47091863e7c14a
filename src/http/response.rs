//! Upstream response heads: parse, decide the body's framing (RFC 9112 §6.3), and
//! write the head the client gets, with hop-by-hop headers and upstream framing removed.

use super::headers::{self, Known};

/// Largest upstream response head nexus reads; beyond it the upstream is broken.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// How the upstream delimits the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD request, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseHead {
    /// A 1xx interim response of this many bytes, to skip.
    Interim(usize),
    /// The final response.
    Final(FinalHead),
}

/// The final response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalHead {
    pub status: u16,
    pub framing: ResponseFraming,
    /// The upstream connection may carry another request afterwards.
    pub reusable: bool,
    pub head_len: usize,
    /// `Content-Type: text/event-stream`: the body is SSE.
    pub event_stream: bool,
}

/// Why an upstream response head cannot be relayed (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHeadError {
    TooLarge,
    Malformed,
    /// Framing a proxy must not guess at: CL with TE, or differing/invalid CL.
    AmbiguousFraming,
    /// 101 Switching Protocols: nexus does not tunnel upgrades.
    Upgrade,
}

/// Parses the upstream head at the start of `buf`; `Ok(None)` means read more.
///
/// For a final head, `client_head` gets the status line and end-to-end headers; the
/// caller adds framing, its own headers and the blank line.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
    client_head: &mut Vec<u8>,
    on_header: &mut dyn FnMut(&str, &[u8]),
) -> Result<Option<ResponseHead>, ResponseHeadError> {
    // Uninitialised slots, as for request heads: filling 128 empty ones costs 4 KiB of stores.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    // RFC 9112 §5.1 / §5.2: a proxy tolerates these from a server and cleans them up.
    let head_len = match httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD_BYTES => {
            return Err(ResponseHeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseHeadError::TooLarge),
        Err(_) => return Err(ResponseHeadError::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(ResponseHeadError::Upgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Some(ResponseHead::Interim(head_len)));
    }

    let mut connection: [&[u8]; 8] = [b""; 8];
    let mut connection_count = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut event_stream = false;
    for h in resp.headers.iter() {
        match Known::of(h.name) {
            Known::ContentType => {
                let value = h.value.trim_ascii_start();
                event_stream =
                    value.len() >= 17 && value[..17].eq_ignore_ascii_case(b"text/event-stream");
            }
            Known::ContentLength => {
                let n = headers::parse_content_length(h.value)
                    .ok_or(ResponseHeadError::AmbiguousFraming)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(ResponseHeadError::AmbiguousFraming);
                }
                content_length = Some(n);
            }
            Known::TransferEncoding => transfer_encoding = Some(h.value),
            Known::Connection if connection_count < connection.len() => {
                connection[connection_count] = h.value;
                connection_count += 1;
            }
            _ => {}
        }
    }
    let connection = &connection[..connection_count];
    if transfer_encoding.is_some() && content_length.is_some() {
        return Err(ResponseHeadError::AmbiguousFraming);
    }

    let no_body = request_was_head || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::Empty
    } else if let Some(te) = transfer_encoding {
        let last = te
            .split(|&b| b == b',')
            .next_back()
            .unwrap_or(b"")
            .trim_ascii();
        if last.eq_ignore_ascii_case(b"chunked") {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if let Some(n) = content_length {
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    let reusable = resp.version == Some(1)
        && !headers::connection_close(connection)
        && framing != ResponseFraming::UntilClose;

    client_head.clear();
    client_head.extend_from_slice(b"HTTP/1.1 ");
    super::digits::push_decimal(client_head, u64::from(status));
    client_head.push(b' ');
    client_head.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    client_head.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        on_header(h.name, h.value);
        let forward = match Known::of(h.name) {
            // A HEAD response's Content-Length describes the GET body: pass it on as sent.
            Known::ContentLength => request_was_head,
            known => !known.is_hop_by_hop() && !headers::named_by_connection(connection, h.name),
        };
        if forward {
            headers::push_header(client_head, h.name.as_bytes(), h.value);
        }
    }
    Ok(Some(ResponseHead::Final(FinalHead {
        status,
        framing,
        reusable,
        head_len,
        event_stream,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, head: bool) -> (Result<Option<ResponseHead>, ResponseHeadError>, String) {
        let mut out = Vec::new();
        let r = parse_response(raw.as_bytes(), head, &mut out, &mut |_, _| {});
        (r, String::from_utf8(out).unwrap())
    }

    fn final_head(raw: &str) -> FinalHead {
        match parse(raw, false).0 {
            Ok(Some(ResponseHead::Final(f))) => f,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            final_head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").framing,
            ResponseFraming::Length(5)
        );
        let chunked = final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.framing, ResponseFraming::Chunked);
        assert!(chunked.reusable);
        let close = final_head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(close.framing, ResponseFraming::UntilClose);
        assert!(!close.reusable);
        assert_eq!(
            final_head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            ResponseFraming::Empty
        );
        assert!(!final_head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").reusable);
        assert!(
            !final_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
                .reusable
        );
    }

    #[test]
    fn untrustworthy_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw, false).0.unwrap_err(),
                ResponseHeadError::AmbiguousFraming,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn client_head_drops_hop_by_hop_and_framing() {
        let (r, head) = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nrequest-id: req_1\r\n\r\n",
            false,
        );
        assert!(matches!(r, Ok(Some(ResponseHead::Final(_)))));
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nrequest-id: req_1\r\n"
        );
    }

    #[test]
    fn head_responses_keep_their_length_and_interim_is_skipped() {
        let (_, head) = parse("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", true);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n");
        assert_eq!(
            parse("HTTP/1.1 100 Continue\r\n\r\n", false).0,
            Ok(Some(ResponseHead::Interim(25)))
        );
        assert_eq!(
            parse("HTTP/1.1 101 Switching\r\n\r\n", false).0,
            Err(ResponseHeadError::Upgrade)
        );
    }

    #[test]
    fn tolerated_server_quirks() {
        let (r, head) = parse(
            "HTTP/1.1 200 OK\r\nX-Space : a\r\nX-Fold: one\r\n two\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(matches!(r, Ok(Some(ResponseHead::Final(_)))), "{r:?}");
        assert!(head.contains("X-Fold: one   two\r\n"), "{head}");
    }
}
