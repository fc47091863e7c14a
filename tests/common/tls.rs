//! Generated certificates for the TLS mock upstream: a private CA, a `localhost` /
//! `127.0.0.1` server certificate it signs, and the PEM trust file nexus reads through
//! `UPSTREAM_CA_FILE`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::tempdir::TempDir;

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// rustls' ring provider, chosen explicitly so no process-wide default is needed.
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate authority that can issue server certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl TestCa {
    /// Generates a fresh CA key and self-signed CA certificate named `common_name`.
    pub fn new(common_name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signing the CA");
        TestCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as PEM (what goes into `UPSTREAM_CA_FILE`).
    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA certificate PEM to `dir/name` and returns the path.
    pub fn write_pem(&self, dir: &TempDir, name: &str) -> PathBuf {
        dir.write(name, self.cert_pem.as_bytes())
    }

    /// Issues a server certificate for [`SERVER_NAMES`].
    pub fn issue_server(&self) -> ServerIdentity {
        let (cert, key) = self.sign(&SERVER_NAMES);
        ServerIdentity {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key_pkcs8: key.serialize_der(),
        }
    }

    /// Issues a server certificate for `names` as PEM files' contents.
    pub fn issue_pem(&self, names: &[&str]) -> IssuedPem {
        let (cert, key) = self.sign(names);
        IssuedPem {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().to_vec(),
        }
    }

    fn sign(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing the server certificate");
        (cert, key)
    }
}

/// A server certificate (chain: leaf, then the CA) and its key, as PEM text.
pub struct IssuedPem {
    pub chain_pem: String,
    pub key_pem: String,
    /// The leaf certificate, to compare with what a server presented.
    pub leaf_der: Vec<u8>,
}

/// Certificates for nexus's own HTTPS listener: a CA the test clients trust, a default
/// pair for [`SERVER_NAMES`] (`TLS_CERT_FILE`, `TLS_KEY_FILE`, mode 0600) and an empty
/// `TLS_CERTS_DIR` for SNI pairs, all in a directory removed on drop.
pub struct ListenerCerts {
    pub ca: TestCa,
    /// The default pair as first written.
    pub default: IssuedPem,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub certs_dir: PathBuf,
    pub ca_file: PathBuf,
    _dir: TempDir,
}

impl ListenerCerts {
    /// A fresh CA and default pair.
    pub fn new() -> ListenerCerts {
        let ca = TestCa::new("nexus listener test CA");
        let dir = TempDir::new("listener-tls");
        let default = ca.issue_pem(&SERVER_NAMES);
        let cert_file = dir.path().join("server.crt");
        let key_file = dir.path().join("server.key");
        write_pair(&cert_file, &key_file, &default);
        let certs_dir = dir.subdir("certs");
        let ca_file = ca.write_pem(&dir, "ca.pem");
        ListenerCerts {
            ca,
            default,
            cert_file,
            key_file,
            certs_dir,
            ca_file,
            _dir: dir,
        }
    }

    /// Issues a pair for `domain` and writes it to `TLS_CERTS_DIR` as `<domain>.crt/.key`.
    pub fn add_domain(&self, domain: &str) -> IssuedPem {
        let pair = self.ca.issue_pem(&[domain]);
        let base = self.certs_dir.join(domain);
        write_pair(
            &base.with_extension_str("crt"),
            &base.with_extension_str("key"),
            &pair,
        );
        pair
    }

    /// A client trusting the CA, offering ALPN http/1.1, without session resumption (so
    /// every connection shows the certificate served now).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut config = (*client_config_from_pem(&self.ca_file)).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// `path` with `.ext` appended (a domain's dots are not an extension).
trait WithExtensionStr {
    fn with_extension_str(&self, ext: &str) -> PathBuf;
}

impl WithExtensionStr for PathBuf {
    fn with_extension_str(&self, ext: &str) -> PathBuf {
        let mut name = self.as_os_str().to_owned();
        name.push(".");
        name.push(ext);
        PathBuf::from(name)
    }
}

/// Writes a pair: the key with mode 0600 (nexus warns about a key others can read).
pub fn write_pair(cert_file: &Path, key_file: &Path, pair: &IssuedPem) {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::write(cert_file, &pair.chain_pem)
        .unwrap_or_else(|e| panic!("writing {}: {e}", cert_file.display()));
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key_file)
        .unwrap_or_else(|e| panic!("opening {}: {e}", key_file.display()));
    std::io::Write::write_all(&mut key, pair.key_pem.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", key_file.display()));
}

/// Certificate parameters for a TLS server at [`SERVER_NAMES`].
fn server_params() -> CertificateParams {
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params
}

/// A server certificate chain and its private key.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

impl ServerIdentity {
    /// A self-signed server certificate (no CA) and its PEM, which is its own trust root.
    pub fn self_signed() -> (ServerIdentity, String) {
        let key = KeyPair::generate().expect("server key");
        let cert = server_params()
            .self_signed(&key)
            .expect("self-signing the server certificate");
        let identity = ServerIdentity {
            chain: vec![cert.der().clone()],
            key_pkcs8: key.serialize_der(),
        };
        (identity, cert.pem())
    }

    /// A rustls server configuration presenting this identity (HTTP/1.1 over ALPN too).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .expect("server certificate and key");
        // Only used if the client offers ALPN; a client that offers only h2 gets no match.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Everything a TLS upstream test needs: the server's config and a trust file for nexus.
pub struct TlsSetup {
    server: Arc<rustls::ServerConfig>,
    ca_file: PathBuf,
    _dir: TempDir,
}

impl TlsSetup {
    /// A server certificate signed by the CA written to the trust file.
    pub fn trusted() -> TlsSetup {
        let ca = TestCa::new("nexus test CA");
        Self::assemble(&ca, &ca)
    }

    /// A server certificate signed by a CA other than the one in the trust file.
    pub fn untrusted() -> TlsSetup {
        let trusted = TestCa::new("nexus test CA (trusted)");
        let other = TestCa::new("nexus test CA (stranger)");
        Self::assemble(&trusted, &other)
    }

    /// A self-signed server certificate that is itself the trust file's only entry.
    pub fn self_signed() -> TlsSetup {
        let (identity, pem) = ServerIdentity::self_signed();
        let dir = TempDir::new("tls");
        let ca_file = dir.write("self-signed.pem", pem.as_bytes());
        TlsSetup {
            server: identity.server_config(),
            ca_file,
            _dir: dir,
        }
    }

    fn assemble(trusted: &TestCa, signer: &TestCa) -> TlsSetup {
        let dir = TempDir::new("tls");
        let ca_file = trusted.write_pem(&dir, "ca.pem");
        TlsSetup {
            server: signer.issue_server().server_config(),
            ca_file,
            _dir: dir,
        }
    }

    /// The rustls server configuration for the mock.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The PEM file to pass as `UPSTREAM_CA_FILE`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

/// Reads every certificate in a PEM file (to prove the trust file is well-formed).
pub fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("opening {}: {e:?}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("parsing {}: {e:?}", path.display()))
}

/// A rustls client configuration trusting exactly the certificates in a PEM file (the way
/// nexus is meant to read `UPSTREAM_CA_FILE`, minus the public roots).
pub fn client_config_from_pem(path: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_pem_certs(path) {
        roots.add(cert).expect("adding a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// `localhost` as a rustls server name.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("valid DNS name")
}

/// The first flight (the ClientHello) of a rustls client connecting to `name`.
pub fn client_hello_to(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_string()).expect("a DNS name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("a client");
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("writing to a Vec");
    }
    wire
}
