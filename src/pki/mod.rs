//! Public key infrastructure of the federation: identities carried in certificates, the CA that
//! issues and revokes them, the mutual-TLS configurations, and checkpoint signatures.
//!
//! Invariants: the only thing a certificate grants is the one `cx://` URI SAN it carries
//! (`identity`); one crypto provider, ring, is used everywhere and passed explicitly (never the
//! process default); private key files are written with mode 0600 and key material is never
//! logged or put into an error message.

pub mod ca;
mod checkpoint;
mod crl;
pub mod identity;
pub mod issuers;
pub mod life;
pub mod sign;
pub mod tls;

mod files;

use std::path::PathBuf;

pub use ca::{init_ca, issue, revoke, write_crl, IssueRequest, IssuedPaths};
pub use checkpoint::{IssuerSource, ReloadingSigner, ReloadingVerifier};
pub use crl::{crl_next_update_of, CrlStatus, CRL_RENEWAL_WARNING_SECONDS};
pub use identity::{dns_names_of_cert_der, identity_from_cert_der, Identity};
pub use issuers::{Anchors, CaFingerprint, IssuerBindings, IssuerRule};
pub use life::{CertLife, Held, EXPIRY_WARNING_DAYS_DEFAULT};
pub use sign::{NodeSigner, SignatureVerifier};
pub use tls::{
    cert_not_after, client_config, client_verifier, crl_number_of, load_cert_chain, load_key, load_roots,
    server_config, server_config_with, CrlNumberGuard, TlsFiles,
};

/// Every failure of the PKI layer. Messages name the file or field at fault and, where there is
/// one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: CRL number {found} is lower than {loaded}, the one in force: an older list would bring back certificates revoked since, so it is refused (publish a newer CRL with `cxnode certs crl`)")]
    CrlRollback { path: PathBuf, loaded: u64, found: u64 },
    #[error("{path} is a version-1 CRL (no CRL number), which this node cannot use: make a version-2 CRL. With openssl, give the CA a CRL number (`echo 01 > crlnumber` next to its index.txt, with `crlnumber = $dir/crlnumber` in the CA section) and run `openssl ca -gencrl` again; or use `cxnode certs crl`")]
    CrlVersion1 { path: PathBuf },
    #[error("cannot read {path}: {source}; check the path in the config and its permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("refusing to overwrite {path}: it already exists; move it away or choose another directory or name")]
    AlreadyExists { path: PathBuf },

    #[error("{path} holds no {what}; expected a PEM file with at least one {what} block")]
    PemEmpty { path: PathBuf, what: &'static str },

    #[error("{path} is not a valid PEM {what} file: {reason}")]
    PemInvalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    #[error("invalid identity uri {uri:?}: {reason}")]
    InvalidIdentity { uri: String, reason: String },

    #[error("cannot parse {what}: {reason}")]
    CertificateInvalid { what: String, reason: String },

    #[error("certificate {subject} has no cx:// uri subject alternative name; issue it with `cxnode certs issue` or add subjectAltName=URI:cx://...")]
    NoIdentity { subject: String },

    #[error("certificate {subject} has {count} cx:// uri subject alternative names ({uris}); a certificate must carry exactly one identity, re-issue it with one")]
    MultipleIdentities {
        subject: String,
        count: usize,
        uris: String,
    },

    #[error("invalid {field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },

    #[error("cannot {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("{path} is not valid json: {source}; restore it from backup or fix the syntax")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("certificate {cert} was not issued by the ca in {ca_dir}; revoke it with the ca that issued it")]
    NotIssuedByCa { cert: PathBuf, ca_dir: PathBuf },

    #[error("{what} rejected by rustls: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },

    #[error("cannot build the certificate verifier from {ca} (crl {crl}): {source}")]
    Verifier {
        ca: PathBuf,
        crl: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    #[error("private key in {path} is not usable for signing ({reason}); use an ecdsa p-256/p-384, ed25519 or rsa key in pkcs#8, sec1 or pkcs#1 pem")]
    KeyUnusable { path: PathBuf, reason: String },

    #[error("private key {key} does not match the certificate {cert}; point tls.key and tls.cert at a matching pair")]
    KeyMismatch { key: PathBuf, cert: PathBuf },

    #[error("signing failed: {reason}")]
    Sign { reason: String },

    #[error("signer certificate chain is empty; a checkpoint must carry its signer's chain, leaf first")]
    EmptyChain,

    #[error("signer certificate chain does not verify to the federation ca at unix time {at}: {reason}")]
    SignerChain { at: i64, reason: String },

    #[error("checkpoint signed by {actual}, expected {expected}")]
    WrongSigner { expected: String, actual: String },

    #[error("signer certificate serial {serial} was revoked at {revoked_at}, at or before the signature time {at}")]
    SignerRevoked {
        serial: String,
        revoked_at: String,
        at: String,
    },

    #[error("signature scheme {scheme:#06x} is not supported; supported are ecdsa p-256/p-384, ed25519, rsa-pss and rsa-pkcs1")]
    UnsupportedScheme { scheme: u16 },

    #[error("signature does not verify with the signer certificate's key")]
    BadSignature,
}

/// Lowercase hex of a big-endian unsigned integer without leading zero bytes, so the same serial
/// prints the same whatever DER padding it came with.
pub(crate) fn serial_hex(raw: &[u8]) -> String {
    let trimmed = trim_serial(raw);
    if trimmed.is_empty() {
        return "00".to_string();
    }
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// A DER INTEGER for a positive serial may carry a leading 0x00; strip it (and any other leading
/// zeros) so serials from certificates and from CRLs compare equal.
pub(crate) fn trim_serial(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    &raw[start..]
}
