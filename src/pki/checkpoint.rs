//! Plugs the PKI into the log's signing interface: the node signs checkpoints with its TLS key,
//! and a checkpoint of origin O is valid only if signed by a `cx://node/O` certificate of the
//! federation, judged as of the checkpoint's time, and issued by a CA the policy's issuer
//! bindings allow to issue that node.

use super::{Identity, IssuerBindings, NodeSigner, SignatureVerifier};
use crate::log::{Checkpoint, CheckpointSigner, CheckpointVerifier};
use std::sync::Arc;

/// Where the verifier reads the issuer bindings in force (the node's policy, reloaded).
pub type IssuerSource = Arc<dyn Fn() -> Arc<IssuerBindings> + Send + Sync>;

impl CheckpointSigner for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        NodeSigner::sign(self, message).map_err(|e| e.to_string())
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        self.chain_der().to_vec()
    }
}

/// The node's signer, swapped for a renewed certificate and key without a restart (checkpoints
/// and progress marks signed from then on carry the new chain). A successor must hold the same
/// identity: a node does not change province under way.
pub struct ReloadingSigner {
    current: std::sync::RwLock<Arc<NodeSigner>>,
}

impl ReloadingSigner {
    pub fn new(signer: NodeSigner) -> ReloadingSigner {
        ReloadingSigner {
            current: std::sync::RwLock::new(Arc::new(signer)),
        }
    }

    /// The signer in force.
    pub fn current(&self) -> Arc<NodeSigner> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads the key and certificate at `files` and, when they match and hold the same identity,
    /// signs with them from now on. On error the previous signer stays in force.
    pub fn reload(&self, files: &super::TlsFiles) -> Result<(), super::PkiError> {
        let next = NodeSigner::load(files)?;
        let before = self.current();
        if next.identity() != before.identity() {
            return Err(super::PkiError::CertificateInvalid {
                what: files.cert.display().to_string(),
                reason: format!(
                    "the renewed certificate is {}, but this node signs as {}; a renewal keeps the identity (`cxnode certs renew`)",
                    next.identity(),
                    before.identity()
                ),
            });
        }
        if next.chain_der() != before.chain_der() {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
            tracing::info!(identity = %before.identity(), "checkpoint signer reloaded with the renewed certificate");
        }
        Ok(())
    }
}

impl CheckpointSigner for ReloadingSigner {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.current().sign(message).map_err(|e| e.to_string())
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        self.current().chain_der().to_vec()
    }

    fn sign_with_chain(&self, message: &[u8]) -> Result<crate::log::SignedWithChain, String> {
        let signer = self.current();
        let signed = signer.sign(message).map_err(|e| e.to_string())?;
        Ok((signed, signer.chain_der().to_vec()))
    }
}

impl CheckpointVerifier for SignatureVerifier {
    fn verify(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        SignatureVerifier::verify(
            self,
            &checkpoint.signer_chain,
            &Identity::Node(checkpoint.origin),
            checkpoint.at_unix_seconds,
            checkpoint.signature_scheme,
            &checkpoint.message(),
            &checkpoint.signature,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

/// The checkpoint verifier a node runs with: the federation CA and CRL, reloaded with the TLS
/// material, so a certificate revoked for TLS is revoked for signatures at the same moment.
pub struct ReloadingVerifier {
    ca: std::path::PathBuf,
    crl: Option<std::path::PathBuf>,
    current: std::sync::RwLock<std::sync::Arc<SignatureVerifier>>,
    /// A reload to an older CRL is refused.
    crl_number: super::CrlNumberGuard,
    issuers: Option<IssuerSource>,
}

impl ReloadingVerifier {
    pub fn new(ca: &std::path::Path, crl: Option<&std::path::Path>) -> Result<ReloadingVerifier, super::PkiError> {
        let first = SignatureVerifier::new(ca, crl)?;
        Ok(ReloadingVerifier {
            ca: ca.to_path_buf(),
            crl: crl.map(std::path::Path::to_path_buf),
            current: std::sync::RwLock::new(std::sync::Arc::new(first)),
            crl_number: super::CrlNumberGuard::new(crl)?,
            issuers: None,
        })
    }

    /// Judges signer chains by these issuer bindings too (read at each verification).
    pub fn with_issuers(mut self, issuers: IssuerSource) -> ReloadingVerifier {
        self.issuers = Some(issuers);
        self
    }

    /// Reads the CA and CRL files again; on an error (or a CRL older than the one in force) the
    /// last good verifier stays in force.
    pub fn reload(&self) -> Result<(), super::PkiError> {
        let number = match &self.crl {
            Some(path) => match self.crl_number.check(path)? {
                Some(n) => n,
                None => return Ok(()),
            },
            None => 0,
        };
        let next = SignatureVerifier::new(&self.ca, self.crl.as_deref())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(next);
        self.crl_number.loaded(number);
        Ok(())
    }
}

impl CheckpointVerifier for ReloadingVerifier {
    fn verify(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let signer = Identity::Node(checkpoint.origin);
        let issuer = current
            .verify(
                &checkpoint.signer_chain,
                &signer,
                checkpoint.at_unix_seconds,
                checkpoint.signature_scheme,
                &checkpoint.message(),
                &checkpoint.signature,
            )
            .map_err(|e| e.to_string())?;
        match &self.issuers {
            Some(issuers) => issuers().check(&signer, &issuer),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::ChainHead;
    use crate::pki::ca::{init_ca, CA_CERT_FILE};
    use crate::pki::issuers::fingerprint;
    use crate::pki::tls::tests::{issue_now, node};
    use crate::pki::{load_cert_chain, IssuerRule};
    use crate::record::Region;

    /// Two provincial CAs in one trust file; a binding lets only Zhejiang's issue cx://node/330000.
    #[test]
    fn a_checkpoint_signed_by_a_node_another_provinces_ca_minted_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (zj_ca, js_ca) = (dir.path().join("zj"), dir.path().join("js"));
        init_ca(&zj_ca, "zhejiang", 30).expect("zj ca");
        init_ca(&js_ca, "jiangsu", 30).expect("js ca");
        let both = dir.path().join("cas.pem");
        let mut pem = std::fs::read(zj_ca.join(CA_CERT_FILE)).expect("zj pem");
        pem.extend(std::fs::read(js_ca.join(CA_CERT_FILE)).expect("js pem"));
        std::fs::write(&both, pem).expect("write cas");
        let genuine = NodeSigner::load(&issue_now(&zj_ca, node("330000"), "genuine")).expect("signer");
        let minted = NodeSigner::load(&issue_now(&js_ca, node("330000"), "minted")).expect("signer");
        let zj_fp = fingerprint(load_cert_chain(&zj_ca.join(CA_CERT_FILE)).expect("zj")[0].as_ref());
        let bindings = Arc::new(IssuerBindings::new(vec![IssuerRule {
            ca_file: "zj/ca.pem".to_string(),
            cas: vec![zj_fp],
            patterns: vec!["cx://node/330000".to_string()],
        }]));
        let zj = Region::parse("330000").expect("region");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cp = |s: &NodeSigner| Checkpoint::sign(zj, ChainHead::default(), now, s).expect("sign");

        // Without the binding both CAs are trusted for everything: the minted node signs our log.
        let open = ReloadingVerifier::new(&both, None).expect("verifier");
        assert!(CheckpointVerifier::verify(&open, &cp(&minted)).is_ok());

        let source = bindings.clone();
        let bound = ReloadingVerifier::new(&both, None)
            .expect("verifier")
            .with_issuers(Arc::new(move || source.clone()));
        CheckpointVerifier::verify(&bound, &cp(&genuine)).expect("Zhejiang's own node");
        let e = CheckpointVerifier::verify(&bound, &cp(&minted)).expect_err("a node minted by Jiangsu's CA");
        assert!(e.contains("cx://node/330000") && e.contains("zj/ca.pem"), "{e}");
    }
}
