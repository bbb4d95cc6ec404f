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
