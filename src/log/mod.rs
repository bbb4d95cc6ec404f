//! The origin log: entries, their hash chain, signed checkpoints and version vectors. Pure: no I/O,
//! no clock (times are arguments). Invariants: per origin, seq starts at 1 and is contiguous; an
//! entry's `prev_hash` is the previous entry's `hash` (32 zero bytes for seq 1); `op_digest` is the
//! SHA-256 of `op_bytes` exactly as stored; `hash` commits to everything but the op bytes, so the
//! bytes can be erased later and the chain still verifies.

pub mod ledger;
// Stand-in keys: for tests and the fuzz targets only (cargo fuzz builds with `--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
pub mod testkeys;

use crate::record::Region;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

pub type Hash = [u8; 32];

/// An origin signs a checkpoint at least every this many entries, however large its write
/// group: a receiver buffers at most this many uncovered entries of an origin.
pub const CHECKPOINT_ENTRIES_MAX: u64 = 256;
/// Bytes a buffered entry is counted for besides its operation bytes.
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;
pub const ZERO_HASH: Hash = [0u8; 32];

/// Domain-separation prefixes: a hash or signature made for one purpose can never be replayed as
/// another.
const ENTRY_HASH_DOMAIN: &[u8] = b"cx.v1.entry";
const CHECKPOINT_SIGN_DOMAIN: &[u8] = b"cx.v1.checkpoint";

/// The one hash function of the log. Kept behind this function so that a national (SM3) suite can
/// replace it in one place.
pub fn digest(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("origin {origin} seq {seq}: op_digest does not match the operation bytes")]
    DigestMismatch { origin: Region, seq: u64 },
    #[error("origin {origin} seq {seq}: the operation bytes are missing (an entry must carry the bytes its op_digest commits to)")]
    MissingBytes { origin: Region, seq: u64 },
    #[error("origin {origin} seq {seq}: entry hash does not match its contents")]
    HashMismatch { origin: Region, seq: u64 },
    #[error("origin {origin}: expected seq {expected}, got {got}")]
    SeqGap { origin: Region, expected: u64, got: u64 },
    #[error("origin {origin} seq {seq}: prev_hash does not link to the previous entry")]
    BrokenLink { origin: Region, seq: u64 },
    #[error("origin {origin}: checkpoint at seq {seq} does not match the log's hash at that seq")]
    CheckpointMismatch { origin: Region, seq: u64 },
    #[error("origin {origin}: checkpoint at seq {seq} is beyond the log head {head}")]
    CheckpointAhead { origin: Region, seq: u64, head: u64 },
    #[error("origin {origin}: checkpoint at seq {seq} has a bad signature: {reason}")]
    BadSignature { origin: Region, seq: u64, reason: String },
}

#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub origin: Region,
    pub seq: u64,
    pub prev_hash: Hash,
    pub appended_at_micros: i64,
    pub op_digest: Hash,
    /// The operation exactly as stored. Never empty: until erasure exists as a signed operation of
    /// the origin, an entry without its bytes is refused everywhere (a relay must not be able to
    /// blank a record and have honest copies count as "already held").
    /// Shared, not copied, when an entry is cloned (a feed sends one entry to many subscribers).
    pub op_bytes: bytes::Bytes,
    pub hash: Hash,
}

impl fmt::Debug for Entry {
    // Op bytes may hold personal data: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("origin", &self.origin)
            .field("seq", &self.seq)
            .field("hash", &hex::encode(self.hash))
            .field("op_len", &self.op_bytes.len())
            .finish()
    }
}

impl Entry {
    /// Builds the entry that follows `prev_hash` at `seq`.
    pub fn new(origin: Region, seq: u64, prev_hash: Hash, appended_at_micros: i64, op_bytes: Vec<u8>) -> Entry {
        let op_digest = digest(&op_bytes);
        Entry::with_digest(origin, seq, prev_hash, appended_at_micros, op_bytes, op_digest)
    }

    /// Like `new`, for a caller that already computed `op_digest = digest(&op_bytes)`.
    pub fn with_digest(
        origin: Region,
        seq: u64,
        prev_hash: Hash,
        appended_at_micros: i64,
        op_bytes: Vec<u8>,
        op_digest: Hash,
    ) -> Entry {
        debug_assert_eq!(digest(&op_bytes), op_digest, "callers pass the digest of these bytes");
        let hash = entry_hash(origin, seq, &prev_hash, appended_at_micros, &op_digest);
        Entry {
            origin,
            seq,
            prev_hash,
            appended_at_micros,
            op_digest,
            op_bytes: op_bytes.into(),
            hash,
        }
    }

    /// Checks the entry against itself: the bytes are present, their digest and the hash.
    pub fn verify_self(&self) -> Result<(), LogError> {
        if self.op_bytes.is_empty() {
            return Err(LogError::MissingBytes {
                origin: self.origin,
                seq: self.seq,
            });
        }
        if digest(&self.op_bytes) != self.op_digest {
            return Err(LogError::DigestMismatch {
                origin: self.origin,
                seq: self.seq,
            });
        }
        let expected = entry_hash(
            self.origin,
            self.seq,
            &self.prev_hash,
            self.appended_at_micros,
            &self.op_digest,
        );
        if expected != self.hash {
            return Err(LogError::HashMismatch {
                origin: self.origin,
                seq: self.seq,
            });
        }
        Ok(())
    }
}

pub fn entry_hash(origin: Region, seq: u64, prev_hash: &Hash, appended_at_micros: i64, op_digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_HASH_DOMAIN);
    h.update(origin.code().to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(prev_hash);
    h.update(appended_at_micros.to_be_bytes());
    h.update(op_digest);
    h.finalize().into()
}

/// Where an origin's chain stands: the next seq it expects and the hash of its last entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub next_seq: u64,
    pub head_hash: Hash,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            next_seq: 1,
            head_hash: ZERO_HASH,
        }
    }
}

impl ChainHead {
    /// The number of entries held.
    pub fn seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Checks that `entry` is a valid next link and moves the head past it.
    pub fn advance(&mut self, entry: &Entry) -> Result<(), LogError> {
        if entry.seq != self.next_seq {
            return Err(LogError::SeqGap {
                origin: entry.origin,
                expected: self.next_seq,
                got: entry.seq,
            });
        }
        if entry.prev_hash != self.head_hash {
            return Err(LogError::BrokenLink {
                origin: entry.origin,
                seq: entry.seq,
            });
        }
        entry.verify_self()?;
        self.next_seq += 1;
        self.head_hash = entry.hash;
        Ok(())
    }
}

/// A signed statement by an origin node that its log holds `seq` entries ending in `head_hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: Region,
    pub seq: u64,
    pub head_hash: Hash,
    pub at_unix_seconds: i64,
    pub signature_scheme: u16,
    pub signature: Vec<u8>,
    /// DER certificates, the signer's leaf first.
    pub signer_chain: Vec<Vec<u8>>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("seq", &self.seq)
            .field("head_hash", &hex::encode(self.head_hash))
            .field("at", &self.at_unix_seconds)
            .finish()
    }
}

/// The exact bytes a checkpoint signature covers.
pub fn checkpoint_message(origin: Region, seq: u64, head_hash: &Hash, at_unix_seconds: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_SIGN_DOMAIN.len() + 4 + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_SIGN_DOMAIN);
    m.extend_from_slice(&origin.code().to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head_hash);
    m.extend_from_slice(&at_unix_seconds.to_be_bytes());
    m
}

/// A signature (TLS signature scheme code, bytes) and the DER chain of the key that made it.
pub type SignedWithChain = ((u16, Vec<u8>), Vec<Vec<u8>>);

/// Signs checkpoints with the node's key (implemented by `pki`; a trait so this module stays pure).
pub trait CheckpointSigner: Send + Sync {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String>;
    fn chain(&self) -> Vec<Vec<u8>>;
    /// The signature and the chain of the key that made it, together: a signer whose key can be
    /// replaced meanwhile (a renewal) must answer both from one key.
    fn sign_with_chain(&self, message: &[u8]) -> Result<SignedWithChain, String> {
        Ok((self.sign(message)?, self.chain()))
    }
}

/// Judges a checkpoint's signature: the signer must be `cx://node/<origin>` under the federation CA,
/// as of the checkpoint's time.
pub trait CheckpointVerifier: Send + Sync {
    fn verify(&self, checkpoint: &Checkpoint) -> Result<(), String>;
}

impl Checkpoint {
    pub fn sign(
        origin: Region,
        head: ChainHead,
        at_unix_seconds: i64,
        signer: &dyn CheckpointSigner,
    ) -> Result<Checkpoint, String> {
        let message = checkpoint_message(origin, head.seq(), &head.head_hash, at_unix_seconds);
        let ((signature_scheme, signature), signer_chain) = signer.sign_with_chain(&message)?;
        Ok(Checkpoint {
            origin,
            seq: head.seq(),
            head_hash: head.head_hash,
            at_unix_seconds,
            signature_scheme,
            signature,
            signer_chain,
        })
    }

    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(self.origin, self.seq, &self.head_hash, self.at_unix_seconds)
    }

    pub fn verify(&self, verifier: &dyn CheckpointVerifier) -> Result<(), LogError> {
        verifier.verify(self).map_err(|reason| LogError::BadSignature {
            origin: self.origin,
            seq: self.seq,
            reason,
        })
    }
}

/// `{origin -> next seq wanted}`. Monotonic: `observe` never moves an origin backwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector(BTreeMap<Region, u64>);

impl VersionVector {
    pub fn next_seq(&self, origin: Region) -> u64 {
        self.0.get(&origin).copied().unwrap_or(1)
    }

    pub fn observe(&mut self, origin: Region, next_seq: u64) {
        let slot = self.0.entry(origin).or_insert(1);
        if next_seq > *slot {
            *slot = next_seq;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Region, u64)> + '_ {
        self.0.iter().map(|(r, s)| (*r, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zj() -> Region {
        Region::parse("330000").expect("valid province")
    }

    fn chain(n: u64) -> Vec<Entry> {
        let mut head = ChainHead::default();
        let mut out = Vec::new();
        for seq in 1..=n {
            let e = Entry::new(
                zj(),
                seq,
                head.head_hash,
                1_700_000_000_000_000 + seq as i64,
                format!("op{seq}").into_bytes(),
            );
            head.advance(&e).expect("fresh chain links");
            out.push(e);
        }
        out
    }

    #[test]
    fn a_fresh_chain_verifies() {
        let entries = chain(5);
        let mut head = ChainHead::default();
        for e in &entries {
            head.advance(e).expect("links");
        }
        assert_eq!(head.seq(), 5);
        assert_eq!(head.head_hash, entries[4].hash);
    }

    #[test]
    fn tampering_is_detected() {
        let mut entries = chain(3);
        let mut changed = entries[1].op_bytes.to_vec();
        changed[0] ^= 1;
        entries[1].op_bytes = changed.into();
        assert_eq!(
            entries[1].verify_self(),
            Err(LogError::DigestMismatch { origin: zj(), seq: 2 })
        );

        let mut entries = chain(3);
        entries[1].appended_at_micros += 1;
        assert_eq!(
            entries[1].verify_self(),
            Err(LogError::HashMismatch { origin: zj(), seq: 2 })
        );

        let entries = chain(3);
        let mut head = ChainHead::default();
        head.advance(&entries[0]).expect("first links");
        assert_eq!(
            head.advance(&entries[2]),
            Err(LogError::SeqGap {
                origin: zj(),
                expected: 2,
                got: 3
            })
        );

        let mut other = chain(3);
        other[1] = Entry::new(zj(), 2, [7u8; 32], 0, b"x".to_vec());
        let mut head = ChainHead::default();
        head.advance(&other[0]).expect("first links");
        assert_eq!(
            head.advance(&other[1]),
            Err(LogError::BrokenLink { origin: zj(), seq: 2 })
        );
    }

    #[test]
    fn an_entry_without_its_bytes_is_refused() {
        let mut entries = chain(2);
        entries[1].op_bytes.clear();
        assert_eq!(
            entries[1].verify_self(),
            Err(LogError::MissingBytes { origin: zj(), seq: 2 })
        );
        let mut head = ChainHead::default();
        head.advance(&entries[0]).expect("first links");
        assert_eq!(
            head.advance(&entries[1]),
            Err(LogError::MissingBytes { origin: zj(), seq: 2 })
        );
    }

    #[test]
    fn version_vector_is_monotonic() {
        let mut v = VersionVector::default();
        assert_eq!(v.next_seq(zj()), 1);
        v.observe(zj(), 10);
        v.observe(zj(), 4);
        assert_eq!(v.next_seq(zj()), 10);
    }

    #[test]
    fn checkpoint_message_commits_to_every_field() {
        let base = checkpoint_message(zj(), 5, &[1u8; 32], 100);
        assert_ne!(base, checkpoint_message(zj(), 6, &[1u8; 32], 100));
        assert_ne!(base, checkpoint_message(zj(), 5, &[2u8; 32], 100));
        assert_ne!(base, checkpoint_message(zj(), 5, &[1u8; 32], 101));
        let js = Region::parse("320000").expect("valid province");
        assert_ne!(base, checkpoint_message(js, 5, &[1u8; 32], 100));
    }
}
