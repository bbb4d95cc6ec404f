//! Mutual-TLS configurations for every gRPC port: reading PEM files, and building rustls server and
//! client configs.
//!
//! Invariants: TLS 1.3 only; the ring provider is passed explicitly (never the process default,
//! so a second provider in the graph cannot change behaviour); a server always requires a client
//! certificate chaining to the federation CA and, when a CRL is configured, refuses revoked ones;
//! ALPN is `h2` on both sides, which tonic needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::PkiError;

/// The PEM files that make up a party's TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// One or more federation CA certificates.
    pub ca: PathBuf,
    /// This party's certificate, leaf first, optionally followed by intermediates.
    pub cert: PathBuf,
    /// This party's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The federation CRL; when set it must be readable.
    pub crl: Option<PathBuf>,
}

pub(crate) const ALPN_H2: &[u8] = b"h2";

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, what: &'static str, e: rustls::pki_types::pem::Error) -> PkiError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => PkiError::Read {
            path: path.to_path_buf(),
            source,
        },
        rustls::pki_types::pem::Error::NoItemsFound => PkiError::PemEmpty {
            path: path.to_path_buf(),
            what,
        },
        other => PkiError::PemInvalid {
            path: path.to_path_buf(),
            what,
            reason: other.to_string(),
        },
    }
}

/// Reads every `CERTIFICATE` block of a PEM file, in order; at least one is required.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(path, "CERTIFICATE", e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "CERTIFICATE", e))?;
    if certs.is_empty() {
        return Err(PkiError::PemEmpty {
            path: path.to_path_buf(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    // The key itself never reaches an error message: pem errors name only the file and section.
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "PRIVATE KEY", e))
}

/// Reads every `X509 CRL` block of a PEM file; at least one is required.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let iter = CertificateRevocationListDer::pem_file_iter(path).map_err(|e| pem_error(path, "X509 CRL", e))?;
    let crls = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "X509 CRL", e))?;
    if crls.is_empty() {
        return Err(PkiError::PemEmpty {
            path: path.to_path_buf(),
            what: "X509 CRL",
        });
    }
    // Version 1 (no extensions, no CRL number) is what `openssl ca -gencrl` makes without a
    // crlnumber file; the TLS stack cannot use it, and says only "ParseError".
    for der in &crls {
        if let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref()) {
            if crl.version().is_none_or(|v| v.0 < 1) {
                return Err(PkiError::CrlVersion1 {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(crls)
}

/// The `crlNumber` of a parsed CRL: 0 when it has none (version 1), `None` past 64 bits.
pub(crate) fn crl_number_value(crl: &x509_parser::revocation_list::CertificateRevocationList<'_>) -> Option<u64> {
    let Some(number) = crl.crl_number() else {
        return Some(0);
    };
    let bytes = number.to_bytes_be();
    let bytes = super::trim_serial(&bytes);
    if bytes.len() > 8 {
        return None;
    }
    let mut padded = [0u8; 8];
    padded[8 - bytes.len()..].copy_from_slice(bytes);
    Some(u64::from_be_bytes(padded))
}

/// The highest `crlNumber` of the CRLs in a PEM file (0 for CRLs without one, such as version-1
/// CRLs): a reload to a lower number would bring back certificates revoked since, and is refused.
pub fn crl_number_of(path: &Path) -> Result<u64, PkiError> {
    let mut highest = 0u64;
    for der in load_crls(path)? {
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| PkiError::PemInvalid {
            path: path.to_path_buf(),
            what: "X509 CRL",
            reason: e.to_string(),
        })?;
        highest = highest.max(crl_number_value(&crl).unwrap_or(u64::MAX));
    }
    Ok(highest)
}

/// The CRL number in force at a reloading consumer (TLS configuration, checkpoint verifier): a
/// reload to a lower one is refused, and said once per refused number, not on every tick.
#[derive(Debug)]
pub struct CrlNumberGuard {
    loaded: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
}

impl CrlNumberGuard {
    /// The guard of the list at `crl` (0 without one).
    pub fn new(crl: Option<&Path>) -> Result<CrlNumberGuard, PkiError> {
        let loaded = match crl {
            Some(path) => crl_number_of(path)?,
            None => 0,
        };
        Ok(CrlNumberGuard {
            loaded: std::sync::atomic::AtomicU64::new(loaded),
            refused: std::sync::atomic::AtomicU64::new(u64::MAX),
        })
    }

    /// The number of the list now at `crl` if it may replace the one in force; `Ok(None)` for a
    /// lower number already refused (nothing to say again), an error the first time.
    pub fn check(&self, crl: &Path) -> Result<Option<u64>, PkiError> {
        use std::sync::atomic::Ordering;
        let found = crl_number_of(crl)?;
        let loaded = self.loaded.load(Ordering::SeqCst);
        if found >= loaded {
            return Ok(Some(found));
        }
        if self.refused.swap(found, Ordering::SeqCst) == found {
            return Ok(None);
        }
        Err(PkiError::CrlRollback {
            path: crl.to_path_buf(),
            loaded,
            found,
        })
    }

    /// The list of `number` is in force now.
    pub fn loaded(&self, number: u64) {
        self.loaded.store(number, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads the federation CA certificates (one or more, from any X.509 CA) as TLS trust anchors.
pub fn load_roots(ca_pem: &Path) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in load_cert_chain(ca_pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| PkiError::Tls {
            what: format!("ca certificate #{} in {}", index + 1, ca_pem.display()),
            source,
        })?;
    }
    Ok(roots)
}

fn tls_error(what: String) -> impl FnOnce(rustls::Error) -> PkiError {
    move |source| PkiError::Tls { what, source }
}

fn crl_text(files: &TlsFiles) -> String {
    files
        .crl
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "none".to_string())
}

fn verifier_error(files: &TlsFiles) -> impl FnOnce(rustls::server::VerifierBuilderError) -> PkiError + '_ {
    move |source| PkiError::Verifier {
        ca: files.ca.clone(),
        crl: crl_text(files),
        source,
    }
}

fn crls_of(files: &TlsFiles) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    match &files.crl {
        Some(path) => load_crls(path),
        None => Ok(Vec::new()),
    }
}

/// The check of a client's certificate: chains to the CA and, with a CRL, not revoked. Kept by
/// the transport so live connections can be judged again when the CRL changes.
pub fn client_verifier(files: &TlsFiles) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, PkiError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    // Only the end entity is checked against the CRL: a federation using an existing CA with
    // intermediates publishes one CRL for its leaves, and requiring CRLs for every intermediate
    // would refuse everyone. A leaf that no configured CRL covers is refused (unknown status is
    // denied), so a CRL from the wrong CA fails closed.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(crls_of(files)?)
        .only_check_end_entity_revocation()
        .build()
        .map_err(verifier_error(files))?;
    Ok(verifier)
}

/// The server side of every gRPC port: TLS 1.3, client certificate required and checked against
/// the CA and the CRL, ALPN h2. A new CRL takes effect by building a new config.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, PkiError> {
    server_config_with(files, client_verifier(files)?)
}

/// `server_config` with a client verifier already built (the transport keeps it).
pub fn server_config_with(
    files: &TlsFiles,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let chain = load_cert_chain(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("tls 1.3 with the ring provider".to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error(format!(
            "server certificate {} with key {}",
            files.cert.display(),
            files.key.display()
        )))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client side, used to dial peers: TLS 1.3, our certificate for client auth, the federation
/// CA as the only roots, normal server name checks, the CRL (when set) against the server's
/// certificate, ALPN h2.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, PkiError> {
    let roots = Arc::new(load_roots(&files.ca)?);
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .with_crls(crls_of(files)?)
        .only_check_end_entity_revocation()
        .build()
        .map_err(verifier_error(files))?;
    let chain = load_cert_chain(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("tls 1.3 with the ring provider".to_string()))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error(format!(
            "client certificate {} with key {}",
            files.cert.display(),
            files.key.display()
        )))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The end of a certificate's validity, for expiry warnings and the operations view.
pub fn cert_not_after(der: &[u8]) -> Result<time::OffsetDateTime, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::CertificateInvalid {
        what: "certificate".to_string(),
        reason: e.to_string(),
    })?;
    Ok(cert.validity().not_after.to_datetime())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration as StdDuration;

    use time::{Duration, OffsetDateTime};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::pki::ca::{init_ca, issue, revoke, IssueRequest, CA_CERT_FILE, CRL_FILE};
    use crate::pki::identity::{identity_from_cert_der, Identity};
    use crate::record::Region;

    /// Every wait on the network in these tests has this deadline.
    const DEADLINE: StdDuration = StdDuration::from_secs(10);

    pub(crate) fn node(region: &str) -> Identity {
        Identity::Node(Region::parse(region).expect("test region"))
    }

    pub(crate) fn request(identity: Identity, not_before: OffsetDateTime, not_after: OffsetDateTime) -> IssueRequest {
        IssueRequest {
            identity,
            not_before,
            not_after,
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
        }
    }

    /// Issues a certificate valid from a minute ago for a day.
    pub(crate) fn issue_now(ca_dir: &Path, identity: Identity, name: &str) -> TlsFiles {
        let now = OffsetDateTime::now_utc();
        let req = request(identity, now - Duration::minutes(1), now + Duration::days(1));
        issue_files(ca_dir, &req, name)
    }

    pub(crate) fn issue_files(ca_dir: &Path, req: &IssueRequest, name: &str) -> TlsFiles {
        let paths = issue(ca_dir, req, ca_dir, name).expect("issue");
        TlsFiles {
            ca: ca_dir.join(CA_CERT_FILE),
            cert: paths.cert,
            key: paths.key,
            crl: Some(ca_dir.join(CRL_FILE)),
        }
    }

    #[derive(Debug)]
    struct Outcome {
        /// What the client saw: Ok if it could write, and read the server's echo.
        client: Result<(), String>,
        /// What the server saw: Ok(identity of the client) or the handshake error.
        server: Result<Identity, String>,
    }

    /// One connection over loopback: the server accepts, reads one line and echoes it; the
    /// client connects, writes, and reads the echo. With TLS 1.3 a refused client certificate
    /// may only show on the client's first read, so "refused" means any client step failed.
    async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let der = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
                .ok_or_else(|| "no client certificate".to_string())?;
            let identity = identity_from_cert_der(&der).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<Identity, String>(identity)
        });
        let client_result = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tls.write_all(b"hello").await.map_err(|e| format!("write: {e}"))?;
            tls.flush().await.map_err(|e| format!("flush: {e}"))?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if &buf != b"hello" {
                return Err("echo mismatch".to_string());
            }
            Ok(())
        };
        let client = tokio::time::timeout(DEADLINE, client_result)
            .await
            .unwrap_or_else(|_| Err("client timed out".to_string()));
        let server = match tokio::time::timeout(DEADLINE, server_task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("server task failed: {join}")),
            Err(_) => Err("server timed out".to_string()),
        };
        Outcome { client, server }
    }

    fn assert_refused(outcome: &Outcome, server_error_contains: &str) {
        eprintln!("refused as expected: {outcome:?}");
        assert!(outcome.client.is_err(), "client must fail: {outcome:?}");
        let server_error = outcome.server.as_ref().expect_err("server must refuse");
        assert!(
            server_error.to_lowercase().contains(server_error_contains),
            "server error {server_error:?} should mention {server_error_contains:?}"
        );
    }

    #[tokio::test]
    async fn handshake_accepts_good_client_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        init_ca(&ca, "federation", 30).expect("init");
        let server_files = issue_now(&ca, node("330000"), "server");
        let good = issue_now(&ca, node("320000"), "good");

        let server = server_config(&server_files).expect("server config");
        let outcome = exchange(server.clone(), client_config(&good).expect("client")).await;
        assert_eq!(outcome.client, Ok(()), "{outcome:?}");
        assert_eq!(outcome.server.as_ref().ok(), Some(&node("320000")));

        // A client from a foreign CA, which trusts our CA for the server side.
        let foreign_ca = dir.path().join("foreign");
        init_ca(&foreign_ca, "foreign", 30).expect("init foreign");
        let mut foreign = issue_now(&foreign_ca, node("310000"), "foreign");
        foreign.ca = ca.join(CA_CERT_FILE);
        foreign.crl = Some(ca.join(CRL_FILE));
        let outcome = exchange(server.clone(), client_config(&foreign).expect("client")).await;
        assert_refused(&outcome, "issuer");

        // An expired client certificate.
        let now = OffsetDateTime::now_utc();
        let expired_req = request(node("340000"), now - Duration::days(10), now - Duration::days(1));
        let expired = issue_files(&ca, &expired_req, "expired");
        let outcome = exchange(server.clone(), client_config(&expired).expect("client")).await;
        assert_refused(&outcome, "expired");

        // A not-yet-valid client certificate.
        let future_req = request(node("350000"), now + Duration::days(1), now + Duration::days(2));
        let future = issue_files(&ca, &future_req, "future");
        let outcome = exchange(server.clone(), client_config(&future).expect("client")).await;
        assert_refused(&outcome, "not valid yet");

        // Revoked: accepted before, refused once the CRL is reloaded into a new config.
        let victim = issue_now(&ca, node("360000"), "victim");
        let outcome = exchange(server.clone(), client_config(&victim).expect("client")).await;
        assert_eq!(outcome.client, Ok(()), "before revocation: {outcome:?}");
        revoke(&ca, &victim.cert, "key-compromise").expect("revoke");
        let reloaded = server_config(&server_files).expect("reloaded server config");
        let outcome = exchange(reloaded.clone(), client_config(&victim).expect("client")).await;
        assert_refused(&outcome, "revoked");
        // Others still get in with the new CRL.
        let outcome = exchange(reloaded, client_config(&good).expect("client")).await;
        assert_eq!(outcome.client, Ok(()), "{outcome:?}");

        // A CRL from the wrong CA covers nobody: fail closed rather than accept unchecked.
        let wrong_crl = TlsFiles {
            crl: Some(foreign_ca.join(CRL_FILE)),
            ..server_files.clone()
        };
        let server = server_config(&wrong_crl).expect("server config");
        let outcome = exchange(server, client_config(&good).expect("client")).await;
        assert_refused(&outcome, "unknownrevocationstatus");
    }

    #[test]
    fn config_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        init_ca(&ca, "federation", 30).expect("init");
        let mut files = issue_now(&ca, node("330000"), "server");

        files.crl = Some(dir.path().join("missing.pem"));
        let err = server_config(&files).expect_err("missing crl");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        // A file that exists but holds no CRL (the CA certificate) is also an error.
        files.crl = Some(ca.join(CA_CERT_FILE));
        let err = server_config(&files).expect_err("no crl in file");
        assert!(matches!(err, PkiError::PemEmpty { .. }), "{err}");

        files.crl = None;
        let cert = files.cert.clone();
        files.cert = files.key.clone();
        let err = server_config(&files).expect_err("key is not a certificate");
        assert!(err.to_string().contains("server.key"), "{err}");
        files.cert = cert;

        // A key that does not belong to the certificate.
        let other = issue_now(&ca, node("320000"), "other");
        files.key = other.key;
        assert!(server_config(&files).is_err(), "mismatched key");
        assert!(client_config(&files).is_err(), "mismatched key");

        let err = load_roots(&dir.path().join("nope.pem")).expect_err("missing ca");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    #[test]
    fn cert_not_after_reads_validity() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "federation", 30).expect("init");
        let not_after = OffsetDateTime::from_unix_timestamp(4_000_000_000).expect("time");
        let req = request(node("330000"), OffsetDateTime::now_utc(), not_after);
        let files = issue_files(dir.path(), &req, "n");
        let chain = load_cert_chain(&files.cert).expect("chain");
        assert_eq!(cert_not_after(&chain[0]).expect("not after"), not_after);
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("/usr/bin/openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Writes an EC CA and a node leaf for cx://node/330000 made by the openssl CLI, with SEC1
    /// keys as `openssl ecparam` writes them. Returns (ca.pem, leaf.pem, leaf.key).
    pub(crate) fn openssl_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ossl-ca.key",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ossl-ca.key",
                "-sha256",
                "-days",
                "30",
                "-subj",
                "/CN=openssl federation ca",
                "-out",
                "ossl-ca.pem",
            ],
        );
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ossl-leaf.key",
            ],
        );
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                "ossl-leaf.key",
                "-subj",
                "/CN=node 330000",
                "-out",
                "ossl-leaf.csr",
            ],
        );
        std::fs::write(
            dir.join("ossl-leaf.ext"),
            "basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=URI:cx://node/330000,URI:https://example.invalid/x,DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "ossl-leaf.csr",
                "-CA",
                "ossl-ca.pem",
                "-CAkey",
                "ossl-ca.key",
                "-CAcreateserial",
                "-days",
                "10",
                "-sha256",
                "-extfile",
                "ossl-leaf.ext",
                "-out",
                "ossl-leaf.pem",
            ],
        );
        (
            dir.join("ossl-ca.pem"),
            dir.join("ossl-leaf.pem"),
            dir.join("ossl-leaf.key"),
        )
    }

    #[tokio::test]
    async fn openssl_made_ca_and_leaf_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, leaf, key) = openssl_pki(dir.path());
        let roots = load_roots(&ca).expect("roots");
        assert_eq!(roots.len(), 1);
        let chain = load_cert_chain(&leaf).expect("chain");
        // The https URI SAN is ignored; the cx:// one is the identity.
        assert_eq!(identity_from_cert_der(&chain[0]).expect("identity"), node("330000"));

        let files = TlsFiles {
            ca,
            cert: leaf,
            key,
            crl: None,
        };
        let server = server_config(&files).expect("server config from openssl files");
        let outcome = exchange(server, client_config(&files).expect("client")).await;
        assert_eq!(outcome.client, Ok(()), "{outcome:?}");
        assert_eq!(outcome.server.as_ref().ok(), Some(&node("330000")));
    }

    /// A version-1 CRL as `openssl ca -gencrl` makes it without a `crlnumber` file.
    fn openssl_v1_crl(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir.join("demoCA/newcerts")).expect("mkdir");
        std::fs::write(dir.join("demoCA/index.txt"), "").expect("index");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndir = ./demoCA\ndatabase = $dir/index.txt\n\
             new_certs_dir = $dir/newcerts\ncertificate = ./ossl-ca.pem\nprivate_key = ./ossl-ca.key\n\
             default_md = sha256\ndefault_crl_days = 30\n",
        )
        .expect("cnf");
        openssl(dir, &["ca", "-config", "ca.cnf", "-gencrl", "-out", "v1-crl.pem"]);
        dir.join("v1-crl.pem")
    }

    #[test]
    fn a_version_1_crl_is_refused_with_how_to_make_a_version_2_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, leaf, key) = openssl_pki(dir.path());
        let crl = openssl_v1_crl(dir.path());
        let files = TlsFiles {
            ca,
            cert: leaf,
            key,
            crl: Some(crl),
        };
        let err = server_config(&files).expect_err("a v1 crl").to_string();
        assert!(err.contains("version-1 CRL") && err.contains("crlnumber"), "{err}");
        assert_eq!(err.matches("v1-crl.pem").count(), 1, "said once: {err}");
    }

    #[test]
    fn identity_needs_exactly_one_cx_uri() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        openssl(
            d,
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "k.pem"],
        );
        for (name, san, expect_ok) in [
            (
                "none",
                "subjectAltName=DNS:localhost,URI:https://example.invalid/",
                false,
            ),
            (
                "two",
                "subjectAltName=URI:cx://node/330000,URI:cx://operator/alice",
                false,
            ),
            ("bad", "subjectAltName=URI:cx://node/330001", false),
            ("one", "subjectAltName=URI:cx://operator/alice", true),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    "k.pem",
                    "-subj",
                    "/CN=t",
                    "-days",
                    "1",
                    "-addext",
                    san,
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
            let chain = load_cert_chain(&d.join(format!("{name}.pem"))).expect("chain");
            let result = identity_from_cert_der(&chain[0]);
            assert_eq!(result.is_ok(), expect_ok, "{name}: {result:?}");
            match name {
                "none" => assert!(matches!(result, Err(PkiError::NoIdentity { .. }))),
                "two" => assert!(matches!(result, Err(PkiError::MultipleIdentities { count: 2, .. }))),
                _ => {}
            }
        }
    }
}
