//! The first bytes of a connection to the TLS port, peeked before the handshake: plain
//! HTTP (answered with a 400 instead of a handshake that would hang or fail obscurely),
//! or a ClientHello whose SNI name the connection keeps, to hold its requests' Host to.

/// What the bytes peeked so far show.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not enough yet to tell.
    NeedMore,
    /// An HTTP request line (a method's capital letters), not a TLS record.
    PlainHttp,
    /// A complete ClientHello, with the SNI name it carries (lowercase).
    Tls { server_name: Option<String> },
    /// Neither: the handshake will fail on it and say why.
    Other,
}

/// A TLS handshake record starts with this content type.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Looks at the start of a connection (peeked, so the handshake reads the same bytes).
pub fn inspect(bytes: &[u8]) -> Hello {
    let Some(&first) = bytes.first() else {
        return Hello::NeedMore;
    };
    if first != HANDSHAKE_RECORD {
        // Every method nexus answers (GET, HEAD, POST, …) starts with a capital letter.
        return if first.is_ascii_uppercase() {
            Hello::PlainHttp
        } else {
            Hello::Other
        };
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    // read_tls takes at most its buffer's room per call.
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Hello::Tls {
            server_name: accepted.client_hello().server_name().map(str::to_owned),
        },
        Ok(None) => Hello::NeedMore,
        Err(_) => Hello::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a rustls client connecting to `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn a_client_hello_gives_its_sni_name_once_whole_and_not_before() {
        let wire = client_hello("A.Example.com");
        for end in 0..wire.len() {
            assert_eq!(
                inspect(&wire[..end]),
                Hello::NeedMore,
                "prefix of {end} bytes"
            );
        }
        assert_eq!(
            inspect(&wire),
            Hello::Tls {
                server_name: Some("a.example.com".into())
            }
        );
    }

    #[test]
    fn a_client_hello_to_an_address_has_no_sni_name() {
        let wire = client_hello("127.0.0.1");
        assert_eq!(inspect(&wire), Hello::Tls { server_name: None });
    }

    #[test]
    fn plain_http_and_other_bytes_are_told_apart() {
        for request in ["GET / HTTP/1.1\r\n", "POST /v1/messages HTTP/1.1\r\n", "H"] {
            assert_eq!(inspect(request.as_bytes()), Hello::PlainHttp, "{request:?}");
        }
        assert_eq!(inspect(b"\x00\x01garbage"), Hello::Other);
        assert_eq!(inspect(b""), Hello::NeedMore);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            inspect(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
            Hello::Other
        );
    }
}
