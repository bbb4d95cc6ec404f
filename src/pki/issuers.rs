//! Which CA may issue which identity. With several CAs in `tls.ca` (a provincial PKI per region),
//! any of them could mint any `cx://` identity, `cx://node/330000` included; the policy's
//! `[[issuer]]` sections bind identity patterns to the CAs that may issue them, and both the
//! handshake (through the policy gate) and checkpoint signatures are judged by the same binding.
//!
//! Invariants: a CA is named by the SHA-256 of its certificate; the CA of a chain is the trust
//! anchor its path was verified to (webpki's verified path), never a name it claims; with no
//! `[[issuer]]` section every CA in `tls.ca` may issue everything (one federation CA); with any,
//! an identity no section covers is refused.

use std::path::Path;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::identity::Identity;
use super::tls::load_cert_chain;
use super::PkiError;

/// The SHA-256 of a CA certificate's DER: how bindings name it.
pub type CaFingerprint = [u8; 32];

pub fn fingerprint(der: &[u8]) -> CaFingerprint {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}

/// The trust anchors of `tls.ca`, with the fingerprint and subject of each, to tell which one a
/// verified chain leads to.
#[derive(Debug)]
pub struct Anchors {
    roots: Vec<TrustAnchor<'static>>,
    fingerprints: Vec<CaFingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Anchors {
    pub fn load(ca_pem: &Path) -> Result<Anchors, PkiError> {
        let mut roots = Vec::new();
        let mut fingerprints = Vec::new();
        for (index, der) in load_cert_chain(ca_pem)?.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(der).map_err(|e| PkiError::CertificateInvalid {
                what: format!("ca certificate #{} in {}", index + 1, ca_pem.display()),
                reason: format!("{e:?}"),
            })?;
            roots.push(anchor.to_owned());
            fingerprints.push(fingerprint(der));
        }
        Ok(Anchors {
            roots,
            fingerprints,
            algorithms: super::tls::provider().signature_verification_algorithms,
        })
    }

    pub fn roots(&self) -> &[TrustAnchor<'static>] {
        &self.roots
    }

    pub fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algorithms
    }

    /// The fingerprint of the anchor that verified path ends at: the very element of `roots` the
    /// path names (two certificates of one CA with the same name and key, a renewal, stay apart),
    /// else the first root with its name and key.
    pub fn fingerprint_of(&self, anchor: &TrustAnchor<'_>) -> Option<CaFingerprint> {
        if let Some(i) = self
            .roots
            .iter()
            .position(|r| std::ptr::eq(r as *const _ as *const u8, anchor as *const _ as *const u8))
        {
            return Some(self.fingerprints[i]);
        }
        self.roots
            .iter()
            .position(|r| {
                r.subject.as_ref() == anchor.subject.as_ref()
                    && r.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            })
            .map(|i| self.fingerprints[i])
    }

    /// The CA a client certificate chain verifies to at `now` (the handshake already verified it;
    /// this finds which anchor it led to).
    pub fn issuer_of_client(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<CaFingerprint, PkiError> {
        let (leaf, intermediates) = chain.split_first().ok_or(PkiError::EmptyChain)?;
        let cert = EndEntityCert::try_from(leaf).map_err(|e| PkiError::SignerChain {
            at: now.as_secs() as i64,
            reason: format!("leaf certificate: {e:?}"),
        })?;
        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.roots,
                intermediates,
                now,
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| PkiError::SignerChain {
                at: now.as_secs() as i64,
                reason: format!("{e:?}"),
            })?;
        self.fingerprint_of(path.anchor()).ok_or(PkiError::EmptyChain)
    }
}

/// One `[[issuer]]` section: the CAs (fingerprints, with their files for messages) that may issue
/// identities matching `patterns` (exact URIs, or prefixes ending in `*`).
#[derive(Clone, Debug)]
pub struct IssuerRule {
    pub ca_file: String,
    pub cas: Vec<CaFingerprint>,
    pub patterns: Vec<String>,
}

fn matches(pattern: &str, uri: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => uri.starts_with(prefix),
        None => uri == pattern,
    }
}

/// The binding of identities to the CAs that may issue them.
#[derive(Clone, Debug, Default)]
pub struct IssuerBindings {
    rules: Vec<IssuerRule>,
}

impl IssuerBindings {
    pub fn new(rules: Vec<IssuerRule>) -> IssuerBindings {
        IssuerBindings { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `ca` may issue `identity`; the error says who may.
    pub fn check(&self, identity: &Identity, ca: &CaFingerprint) -> Result<(), String> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let uri = identity.uri();
        let covering: Vec<&IssuerRule> = self
            .rules
            .iter()
            .filter(|r| r.patterns.iter().any(|p| matches(p, &uri)))
            .collect();
        if covering.iter().any(|r| r.cas.contains(ca)) {
            return Ok(());
        }
        let ca_hex = hex::encode(&ca[..8]);
        if covering.is_empty() {
            return Err(format!(
                "{uri} is not covered by any [[issuer]] section of the node's policy, so no CA may issue it (its CA: sha256 {ca_hex}...)"
            ));
        }
        let allowed: Vec<&str> = covering.iter().map(|r| r.ca_file.as_str()).collect();
        Err(format!(
            "{uri} was issued by a CA (sha256 {ca_hex}...) that the node's policy does not allow to issue it; only {} may",
            allowed.join(", ")
        ))
    }
}
