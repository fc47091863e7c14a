//! `nexus --check-health`: asks a running nexus for `GET /` and exits 0 on a 200.
//!
//! Made for container health checks (`HEALTHCHECK CMD ["nexus","--check-health"]`):
//! std only (and rustls, already linked), so the image needs no curl or shell. It reads
//! the same configuration as the server (flags, environment, `.env`), so it knocks on the
//! port nexus listens on, over TLS when the port serves HTTPS (`TLS_CERT_FILE`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The whole check, connect to status line, must fit in this.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The address to knock on: a wildcard bind is reached through loopback.
pub fn target_host(host: &str) -> &str {
    match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other,
    }
}

/// Runs the check (over TLS when `tls`); `Ok` with the status line on a 200, `Err` with
/// why otherwise.
pub fn check(host: &str, port: u16, timeout: Duration, tls: bool) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let host = target_host(host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {host}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let tcp = TcpStream::connect_timeout(&addr, left())
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_write_timeout(Some(left()));
    let _ = tcp.set_read_timeout(Some(left()));
    let mut stream: Box<dyn ReadWrite> = if tls {
        // An address as the server name: no SNI is sent, so the Host below (the address)
        // is not held to one.
        let name = ServerName::IpAddress(addr.ip().into());
        let session = rustls::ClientConnection::new(any_certificate_config()?, name)
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        Box::new(rustls::StreamOwned::new(session, tcp))
    } else {
        Box::new(tcp)
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        if Instant::now() >= deadline {
            return Err(format!("no answer from {addr} within {timeout:?}"));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]))
        .trim_end()
        .to_string();
    let status = line.split(' ').nth(1).unwrap_or("");
    if line.starts_with("HTTP/1.") && status == "200" {
        Ok(line)
    } else if line.is_empty() {
        Err(format!("{addr} closed the connection without a response"))
    } else {
        Err(format!("{addr} answered {line:?}"))
    }
}

/// A byte stream, plain or TLS.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A client that accepts whatever certificate the port presents (its signatures still
/// checked). The check asks whether this host's nexus answers, on loopback; it is not a
/// client whose trust matters, and the certificate rarely names the loopback address.
fn any_certificate_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(reply: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
            }
        });
        port
    }

    #[test]
    fn ok_on_200_err_otherwise() {
        let port = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(check("127.0.0.1", port, TIMEOUT, false).is_ok());
        let port = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(check("0.0.0.0", port, TIMEOUT, false)
            .unwrap_err()
            .contains("503"));
    }

    #[test]
    fn silence_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let err = check("127.0.0.1", port, Duration::from_millis(300), false).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        drop(listener);
    }

    #[test]
    fn wildcard_binds_go_through_loopback() {
        assert_eq!(target_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(target_host("::"), "::1");
        assert_eq!(target_host("10.0.0.5"), "10.0.0.5");
    }
}
