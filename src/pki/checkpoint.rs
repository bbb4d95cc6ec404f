//! Plugs the PKI into the log's signing interface: the node signs checkpoints with its TLS key,
//! and a checkpoint of origin O is valid only if signed by a `cx://node/O` certificate of the
//! federation, judged as of the checkpoint's time.

use super::{Identity, NodeSigner, SignatureVerifier};
use crate::log::{Checkpoint, CheckpointSigner, CheckpointVerifier};

impl CheckpointSigner for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        NodeSigner::sign(self, message).map_err(|e| e.to_string())
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        self.chain_der().to_vec()
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
}

impl ReloadingVerifier {
    pub fn new(ca: &std::path::Path, crl: Option<&std::path::Path>) -> Result<ReloadingVerifier, super::PkiError> {
        let first = SignatureVerifier::new(ca, crl)?;
        Ok(ReloadingVerifier {
            ca: ca.to_path_buf(),
            crl: crl.map(std::path::Path::to_path_buf),
            current: std::sync::RwLock::new(std::sync::Arc::new(first)),
            crl_number: super::CrlNumberGuard::new(crl)?,
        })
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
        CheckpointVerifier::verify(current.as_ref(), checkpoint)
    }
}
