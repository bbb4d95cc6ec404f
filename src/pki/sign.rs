//! Checkpoint signatures: the node signs with its TLS key, and anyone verifies against the
//! federation CA as of the time the signature claims, so a log stays verifiable however many hops
//! it travels and after its signer's certificate expires or rotates.
//!
//! Invariants: this file is the only place that chooses signature algorithms for checkpoints (a
//! future SM2 suite plugs in here); a signature verifies only if the signer's chain was valid at
//! `at`, the signer is exactly the expected identity, the signer was not revoked at or before
//! `at`, and the signature checks with the leaf's key under the scheme it names.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};

use super::identity::{identity_from_cert_der, Identity};
use super::tls::{load_cert_chain, load_crls, load_key, provider, TlsFiles};
use super::{serial_hex, trim_serial, PkiError};

/// The schemes a node signs checkpoints with, most preferred first. RSA PKCS#1 v1.5 is not
/// offered: an RSA key signs with PSS.
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
];

/// Signed once at load to prove the key belongs to the certificate, before any checkpoint is.
const KEY_PROBE: &[u8] = b"cxnode signing key probe";

/// The node's checkpoint signer: its private key and its certificate chain (leaf first).
pub struct NodeSigner {
    key: Arc<dyn SigningKey>,
    chain: Vec<Vec<u8>>,
    identity: Identity,
}

impl std::fmt::Debug for NodeSigner {
    // Hand-written so that no future field can put key material into a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("identity", &self.identity)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// Loads the node's key and chain from its TLS files and checks that they match.
    pub fn load(files: &TlsFiles) -> Result<NodeSigner, PkiError> {
        let chain: Vec<Vec<u8>> = load_cert_chain(&files.cert)?.into_iter().map(|c| c.to_vec()).collect();
        let key_der = load_key(&files.key)?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| PkiError::KeyUnusable {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
        let identity = identity_from_cert_der(&chain[0])?;
        let signer = NodeSigner { key, chain, identity };
        let (scheme, signature) = signer.sign(KEY_PROBE).map_err(|_| PkiError::KeyUnusable {
            path: files.key.clone(),
            reason: "no supported signature scheme for this key type".to_string(),
        })?;
        let leaf = CertificateDer::from(signer.chain[0].as_slice());
        let leaf_cert = EndEntityCert::try_from(&leaf).map_err(|e| PkiError::CertificateInvalid {
            what: files.cert.display().to_string(),
            reason: format!("{e:?}"),
        })?;
        let matches = verification_algorithm(&algorithms(), scheme)
            .and_then(|alg| {
                leaf_cert
                    .verify_signature(alg, KEY_PROBE, &signature)
                    .map_err(|_| PkiError::BadSignature)
            })
            .is_ok();
        if !matches {
            return Err(PkiError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
            });
        }
        Ok(signer)
    }

    /// Signs `msg`, returning the TLS signature scheme id used and the signature.
    pub fn sign(&self, msg: &[u8]) -> Result<(u16, Vec<u8>), PkiError> {
        let signer = self.key.choose_scheme(SIGNING_SCHEMES).ok_or_else(|| PkiError::Sign {
            reason: format!(
                "key algorithm {:?} has no scheme among the supported ones",
                self.key.algorithm()
            ),
        })?;
        let signature = signer.sign(msg).map_err(|e| PkiError::Sign { reason: e.to_string() })?;
        Ok((u16::from(signer.scheme()), signature))
    }

    /// The signer's certificate chain, leaf first, as DER.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The identity of the signer's certificate.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

fn verification_algorithm(
    algorithms: &WebPkiSupportedAlgorithms,
    scheme: u16,
) -> Result<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm, PkiError> {
    let wanted = SignatureScheme::from(scheme);
    // Like TLS 1.3, a scheme names exactly one algorithm (the first in the mapping): a P-256
    // scheme must not be satisfied by a P-384 key.
    algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == wanted)
        .and_then(|(_, algs)| algs.first().copied())
        .filter(|_| SIGNING_SCHEMES.contains(&wanted) || is_rsa_pkcs1(wanted))
        .ok_or(PkiError::UnsupportedScheme { scheme })
}

fn is_rsa_pkcs1(scheme: SignatureScheme) -> bool {
    // Accepted for verification so a federation CA's RSA tooling can sign too; never chosen by
    // NodeSigner.
    matches!(
        scheme,
        SignatureScheme::RSA_PKCS1_SHA256 | SignatureScheme::RSA_PKCS1_SHA384 | SignatureScheme::RSA_PKCS1_SHA512
    )
}

/// Verifies checkpoint signatures against the federation CA and CRL.
pub struct SignatureVerifier {
    /// The federation CAs, with their fingerprints.
    anchors: super::Anchors,
    /// (issuer name DER, serial without leading zeros) -> revocation time, unix seconds.
    revoked: HashMap<(Vec<u8>, Vec<u8>), i64>,
    /// Signer chains that verified to the roots, by digest: the same few chains sign every
    /// checkpoint, and their check (one ECDSA verification per certificate) need not be repeated
    /// for a time inside all their certificates' validity.
    chains: std::sync::Mutex<HashMap<crate::log::Hash, VerifiedChain>>,
}

/// Signer chains remembered as verified; past this the memory is cleared.
const VERIFIED_CHAINS_MAX: usize = 1024;

/// What a verified signer chain showed.
#[derive(Clone, Debug)]
struct VerifiedChain {
    /// The chain verifies at any time in [not_before, not_after] (unix seconds): inside every
    /// certificate's validity; the signatures between them do not depend on time.
    not_before: i64,
    not_after: i64,
    identity: Identity,
    /// (issuer name DER, serial without leading zeros) of the leaf, and its serial in hex.
    revocation_key: (Vec<u8>, Vec<u8>),
    serial: String,
    /// The CA (trust anchor) the chain verified to.
    issuer: super::CaFingerprint,
}

/// The memory key of a signer chain (hashed as it is, not copied into one buffer first: this
/// runs for every checkpoint verified).
fn chain_digest(chain_der: &[Vec<u8>]) -> crate::log::Hash {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in chain_der {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c);
    }
    h.finalize().into()
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("roots", &self.anchors.roots().len())
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl SignatureVerifier {
    /// Loads the trust anchors from `roots_pem` and, if given, the revocations from `crl` (PEM,
    /// one or more CRLs). The CRL file is trusted configuration like the CA file; its signature
    /// is not re-checked here (the TLS verifier does), and an entry can only refuse more.
    pub fn new(roots_pem: &Path, crl: Option<&Path>) -> Result<SignatureVerifier, PkiError> {
        let anchors = super::Anchors::load(roots_pem)?;
        let mut revoked = HashMap::new();
        if let Some(path) = crl {
            for der in load_crls(path)? {
                let (_, parsed) = x509_parser::parse_x509_crl(&der).map_err(|e| PkiError::PemInvalid {
                    path: path.to_path_buf(),
                    what: "X509 CRL",
                    reason: e.to_string(),
                })?;
                let issuer = parsed.issuer().as_raw().to_vec();
                for entry in parsed.iter_revoked_certificates() {
                    let key = (issuer.clone(), trim_serial(entry.raw_serial()).to_vec());
                    let at = entry.revocation_date.timestamp();
                    // If two CRLs disagree, the earlier revocation is the safer one to enforce.
                    revoked
                        .entry(key)
                        .and_modify(|t: &mut i64| *t = (*t).min(at))
                        .or_insert(at);
                }
            }
        }
        Ok(SignatureVerifier {
            anchors,
            revoked,
            chains: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Verifies `sig` over `msg` by the leaf of `chain_der` as of `at_unix_seconds`: the chain
    /// must verify to the federation CA at that time, the leaf must be `expected`, the leaf must
    /// not have been revoked at or before that time, and the signature must check. Returns the CA
    /// the chain verified to (for the policy's issuer bindings).
    pub fn verify(
        &self,
        chain_der: &[Vec<u8>],
        expected: &Identity,
        at_unix_seconds: i64,
        scheme: u16,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<super::CaFingerprint, PkiError> {
        let at = at_unix_seconds;
        let (leaf_der, rest) = chain_der.split_first().ok_or(PkiError::EmptyChain)?;
        let seconds = u64::try_from(at).map_err(|_| PkiError::SignerChain {
            at,
            reason: "the signature time is before 1970".to_string(),
        })?;
        let leaf = CertificateDer::from(leaf_der.as_slice());
        let leaf_cert = EndEntityCert::try_from(&leaf).map_err(|e| PkiError::SignerChain {
            at,
            reason: format!("leaf certificate: {e:?}"),
        })?;
        let digest = chain_digest(chain_der);
        let known = self
            .chains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .filter(|c| c.not_before <= at && at <= c.not_after)
            .cloned();
        let chain = match known {
            Some(c) => c,
            None => {
                let intermediates: Vec<CertificateDer<'_>> =
                    rest.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
                // Revocation is judged below by date, so webpki gets no CRLs: it would refuse a
                // certificate revoked *after* the signature, which must stay valid.
                let path = leaf_cert
                    .verify_for_usage(
                        self.anchors.algorithms().all,
                        self.anchors.roots(),
                        &intermediates,
                        UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
                        KeyUsage::client_auth(),
                        None,
                        None,
                    )
                    .map_err(|e| PkiError::SignerChain {
                        at,
                        reason: format!("{e:?}"),
                    })?;
                let issuer = self
                    .anchors
                    .fingerprint_of(path.anchor())
                    .ok_or_else(|| PkiError::SignerChain {
                        at,
                        reason: "the chain's trust anchor is not among the roots".to_string(),
                    })?;
                let chain = verified_chain(chain_der, issuer)?;
                let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
                if chains.len() >= VERIFIED_CHAINS_MAX {
                    chains.clear();
                }
                chains.insert(digest, chain.clone());
                chain
            }
        };
        if &chain.identity != expected {
            return Err(PkiError::WrongSigner {
                expected: expected.uri(),
                actual: chain.identity.uri(),
            });
        }
        // Revoked at or before the signature time: refused. Revoked later: the signature was
        // made while the key was still trusted, and stays valid.
        if let Some(&revoked_at) = self.revoked.get(&chain.revocation_key) {
            if revoked_at <= at {
                return Err(PkiError::SignerRevoked {
                    serial: chain.serial.clone(),
                    revoked_at: unix_text(revoked_at),
                    at: unix_text(at),
                });
            }
        }

        let algorithm = verification_algorithm(self.anchors.algorithms(), scheme)?;
        leaf_cert
            .verify_signature(algorithm, msg, sig)
            .map_err(|_| PkiError::BadSignature)?;
        Ok(chain.issuer)
    }
}

/// What a chain that just verified shows: its validity window, the leaf's identity and its
/// revocation key.
fn verified_chain(chain_der: &[Vec<u8>], issuer: super::CaFingerprint) -> Result<VerifiedChain, PkiError> {
    let (leaf_der, _) = chain_der.split_first().ok_or(PkiError::EmptyChain)?;
    let identity = identity_from_cert_der(leaf_der)?;
    let mut not_before = i64::MIN;
    let mut not_after = i64::MAX;
    let mut leaf_key = None;
    for (i, der) in chain_der.iter().enumerate() {
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::CertificateInvalid {
            what: "signer certificate".to_string(),
            reason: e.to_string(),
        })?;
        let validity = x509.validity();
        not_before = not_before.max(validity.not_before.timestamp());
        not_after = not_after.min(validity.not_after.timestamp());
        if i == 0 {
            leaf_key = Some((
                (x509.issuer().as_raw().to_vec(), trim_serial(x509.raw_serial()).to_vec()),
                serial_hex(x509.raw_serial()),
            ));
        }
    }
    let (revocation_key, serial) = leaf_key.ok_or(PkiError::EmptyChain)?;
    Ok(VerifiedChain {
        not_before,
        not_after,
        identity,
        revocation_key,
        serial,
        issuer,
    })
}

fn unix_text(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {seconds}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use time::Duration as TimeDuration;

    use super::*;
    use crate::pki::ca::{init_ca, revoke, CA_CERT_FILE, CRL_FILE, REVOKED_FILE};
    use crate::pki::tls::tests::{issue_files, issue_now, node, openssl_pki, request};

    struct Fixture {
        _dir: tempfile::TempDir,
        ca: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        init_ca(&ca, "federation", 3650).expect("init");
        Fixture { _dir: dir, ca }
    }

    fn verifier(ca: &Path) -> SignatureVerifier {
        SignatureVerifier::new(&ca.join(CA_CERT_FILE), Some(&ca.join(CRL_FILE))).expect("verifier")
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn sign_and_verify() {
        let f = fixture();
        let files = issue_now(&f.ca, node("330000"), "n");
        let signer = NodeSigner::load(&files).expect("signer");
        assert_eq!(signer.identity(), &node("330000"));
        assert_eq!(signer.chain_der().len(), 1);
        let (scheme, sig) = signer.sign(b"checkpoint 1").expect("sign");
        assert_eq!(scheme, u16::from(SignatureScheme::ECDSA_NISTP256_SHA256));
        let v = verifier(&f.ca);
        let chain = signer.chain_der();
        let expected = node("330000");
        v.verify(chain, &expected, now(), scheme, b"checkpoint 1", &sig)
            .expect("verifies");

        let err = v
            .verify(chain, &expected, now(), scheme, b"checkpoint 2", &sig)
            .expect_err("tampered message");
        assert!(matches!(err, PkiError::BadSignature), "{err}");

        let err = v
            .verify(chain, &node("320000"), now(), scheme, b"checkpoint 1", &sig)
            .expect_err("wrong identity");
        assert!(matches!(err, PkiError::WrongSigner { .. }), "{err}");

        let err = v
            .verify(chain, &expected, now(), 0x0401, b"checkpoint 1", &sig)
            .expect_err("rsa scheme for an ecdsa key");
        assert!(matches!(err, PkiError::BadSignature), "{err}");
        let err = v
            .verify(chain, &expected, now(), 0xfefe, b"checkpoint 1", &sig)
            .expect_err("unknown scheme");
        assert!(matches!(err, PkiError::UnsupportedScheme { .. }), "{err}");

        let err = v
            .verify(&[], &expected, now(), scheme, b"checkpoint 1", &sig)
            .expect_err("empty chain");
        assert!(matches!(err, PkiError::EmptyChain), "{err}");

        let err = v
            .verify(chain, &expected, -1, scheme, b"checkpoint 1", &sig)
            .expect_err("negative time");
        assert!(matches!(err, PkiError::SignerChain { .. }), "{err}");

        // A chain from another CA.
        let other = fixture();
        let foreign = NodeSigner::load(&issue_now(&other.ca, node("330000"), "n")).expect("signer");
        let (scheme, sig) = foreign.sign(b"m").expect("sign");
        let err = v
            .verify(foreign.chain_der(), &expected, now(), scheme, b"m", &sig)
            .expect_err("foreign ca");
        assert!(matches!(err, PkiError::SignerChain { .. }), "{err}");
    }

    #[test]
    fn verification_is_as_of_the_signature_time() {
        let f = fixture();
        let t0 = OffsetDateTime::now_utc() - TimeDuration::days(30);
        let not_before = t0;
        let not_after = t0 + TimeDuration::days(10);
        // A certificate that expired 20 days ago.
        let files = issue_files(&f.ca, &request(node("330000"), not_before, not_after), "old");
        let signer = NodeSigner::load(&files).expect("expired certs still load for signing");
        let (scheme, sig) = signer.sign(b"old checkpoint").expect("sign");
        let v = verifier(&f.ca);
        let chain = signer.chain_der();
        let expected = node("330000");
        let inside = (t0 + TimeDuration::days(5)).unix_timestamp();
        v.verify(chain, &expected, inside, scheme, b"old checkpoint", &sig)
            .expect("valid as of a time inside the validity, though expired now");

        for at in [
            (not_before - TimeDuration::hours(1)).unix_timestamp(),
            (not_after + TimeDuration::hours(1)).unix_timestamp(),
            now(),
        ] {
            let err = v
                .verify(chain, &expected, at, scheme, b"old checkpoint", &sig)
                .expect_err("outside validity");
            assert!(matches!(err, PkiError::SignerChain { .. }), "{err}");
        }
    }

    #[test]
    fn revocation_refuses_only_later_signatures() {
        let f = fixture();
        let t0 = OffsetDateTime::now_utc() - TimeDuration::days(10);
        let files = issue_files(&f.ca, &request(node("330000"), t0, t0 + TimeDuration::days(20)), "n");
        let signer = NodeSigner::load(&files).expect("signer");
        let (scheme, sig) = signer.sign(b"m").expect("sign");
        let chain = signer.chain_der();
        let expected = node("330000");

        revoke(&f.ca, &files.cert, "key-compromise").expect("revoke");
        let revoked: Vec<crate::pki::ca::RevokedEntry> =
            serde_json::from_str(&std::fs::read_to_string(f.ca.join(REVOKED_FILE)).expect("revoked.json"))
                .expect("json");
        let revoked_at = OffsetDateTime::parse(&revoked[0].revoked_at, &Rfc3339)
            .expect("time")
            .unix_timestamp();
        let v = verifier(&f.ca);

        let before = revoked_at - 86_400;
        v.verify(chain, &expected, before, scheme, b"m", &sig)
            .expect("signed before revocation stays valid");
        for at in [revoked_at, revoked_at + 60] {
            let err = v
                .verify(chain, &expected, at, scheme, b"m", &sig)
                .expect_err("signed at or after revocation");
            assert!(matches!(err, PkiError::SignerRevoked { .. }), "{err}");
        }
        // Without the CRL the same signature passes: the refusal came from the CRL.
        let no_crl = SignatureVerifier::new(&f.ca.join(CA_CERT_FILE), None).expect("verifier");
        no_crl
            .verify(chain, &expected, revoked_at + 60, scheme, b"m", &sig)
            .expect("no crl, no revocation");
    }

    #[test]
    fn signer_refuses_mismatched_key_and_accepts_openssl_keys() {
        let f = fixture();
        let a = issue_now(&f.ca, node("330000"), "a");
        let b = issue_now(&f.ca, node("320000"), "b");
        let mixed = TlsFiles {
            key: b.key.clone(),
            ..a.clone()
        };
        let err = NodeSigner::load(&mixed).expect_err("key of another cert");
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");

        // SEC1 keys and a CA made by openssl work for signing and verifying.
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = openssl_pki(dir.path());
        let files = TlsFiles {
            ca: ca.clone(),
            cert,
            key,
            crl: None,
        };
        let signer = NodeSigner::load(&files).expect("openssl signer");
        let (scheme, sig) = signer.sign(b"m").expect("sign");
        SignatureVerifier::new(&ca, None)
            .expect("verifier")
            .verify(signer.chain_der(), &node("330000"), now(), scheme, b"m", &sig)
            .expect("verifies");
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let f = fixture();
        let files = issue_now(&f.ca, node("330000"), "n");
        let signer = NodeSigner::load(&files).expect("signer");
        let text = format!("{signer:?}");
        assert!(text.contains("cx://node/330000") || text.contains("Node"), "{text}");
        assert!(!text.to_lowercase().contains("private"), "{text}");
    }
}
