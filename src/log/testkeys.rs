//! Stand-in checkpoint keys for tests: a checkpoint verifies only if made with its origin's
//! "key" (the real scheme is tested in `pki` and end to end).

use super::{digest, Checkpoint, CheckpointSigner, CheckpointVerifier};
use crate::record::Region;

/// Signs with a per-origin secret: a checkpoint verifies only if made by that origin's "key".
pub struct TestKey(pub Region);

impl CheckpointSigner for TestKey {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut m = self.0.code().to_be_bytes().to_vec();
        m.extend_from_slice(message);
        Ok((1, digest(&m).to_vec()))
    }
    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.0.code().to_be_bytes().to_vec()]
    }
}

pub struct TestVerifier;

impl CheckpointVerifier for TestVerifier {
    fn verify(&self, c: &Checkpoint) -> Result<(), String> {
        let signer = c.signer_chain.first().ok_or("no chain")?;
        if signer[..] != c.origin.code().to_be_bytes()[..] {
            return Err("signer is not the origin".to_string());
        }
        let (_, expected) = TestKey(c.origin).sign(&c.message())?;
        if expected == c.signature {
            Ok(())
        } else {
            Err("bad signature".to_string())
        }
    }
}
