//! Table tests of the link receiver with a stand-in signature scheme (the real one is tested in
//! `pki` and end to end).

use super::*;
use crate::log::{digest, CheckpointSigner};

/// Signs with a per-origin secret: a checkpoint verifies only if made by that origin's "key".
struct TestKey(Region);

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

struct TestVerifier;

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

fn zj() -> Region {
    Region::parse("330000").expect("province")
}

/// An origin log of `n` entries with a checkpoint after every `every` entries.
fn log(n: u64, every: u64) -> (Vec<Entry>, Vec<Checkpoint>) {
    let mut head = ChainHead::default();
    let mut entries = Vec::new();
    let mut cps = Vec::new();
    for seq in 1..=n {
        let e = Entry::new(zj(), seq, head.head_hash, seq as i64, format!("op {seq}").into_bytes());
        head.advance(&e).expect("links");
        entries.push(e);
        if seq % every == 0 || seq == n {
            cps.push(Checkpoint::sign(zj(), head, seq as i64, &TestKey(zj())).expect("sign"));
        }
    }
    (entries, cps)
}

fn batch(entries: &[Entry], cps: &[Checkpoint]) -> Batch {
    Batch {
        origin: Some(zj()),
        entries: entries.to_vec(),
        checkpoints: cps.to_vec(),
    }
}

#[test]
fn covered_prefixes_come_out_in_order() {
    let (entries, cps) = log(10, 4);
    let mut rx = LinkReceiver::new([], 1 << 20);
    let out = rx
        .receive(batch(&entries[..6], &cps[..1]), &TestVerifier)
        .expect("valid");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let out = rx
        .receive(batch(&entries[6..], &cps[1..]), &TestVerifier)
        .expect("valid");
    assert_eq!(out.iter().map(|c| c.checkpoint.seq).collect::<Vec<_>>(), vec![8, 10]);
    assert_eq!(out[1].entries.last().map(|e| e.seq), Some(10));
}

#[test]
fn nothing_is_released_without_a_checkpoint() {
    let (entries, _) = log(5, 100);
    let mut rx = LinkReceiver::new([], 1 << 20);
    assert!(rx
        .receive(batch(&entries, &[]), &TestVerifier)
        .expect("valid")
        .is_empty());
}

#[test]
fn a_tampered_entry_is_a_fault() {
    let (mut entries, cps) = log(5, 5);
    entries[2].op_bytes = b"changed".to_vec();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx.receive(batch(&entries, &cps), &TestVerifier).expect_err("tampered");
    assert!(
        matches!(err, Fault::BadEntry(LogError::DigestMismatch { seq: 3, .. })),
        "{err}"
    );
}

#[test]
fn a_rewritten_chain_does_not_match_the_origin_checkpoint() {
    // A relay invents entries with consistent hashes: the origin's signed head exposes it.
    let (_, cps) = log(5, 5);
    let mut head = ChainHead::default();
    let fake: Vec<Entry> = (1..=5)
        .map(|seq| {
            let e = Entry::new(zj(), seq, head.head_hash, 0, b"invented".to_vec());
            head.advance(&e).expect("links");
            e
        })
        .collect();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx.receive(batch(&fake, &cps), &TestVerifier).expect_err("mismatch");
    assert_eq!(err, Fault::CheckpointMismatch { origin: zj(), seq: 5 });
}

#[test]
fn a_checkpoint_signed_by_another_node_is_forged() {
    let (entries, _) = log(3, 3);
    let mut head = ChainHead::default();
    for e in &entries {
        head.advance(e).expect("links");
    }
    let js = Region::parse("320000").expect("province");
    let mut forged = Checkpoint::sign(zj(), head, 3, &TestKey(js)).expect("sign");
    forged.origin = zj();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx
        .receive(batch(&entries, &[forged]), &TestVerifier)
        .expect_err("forged");
    assert!(matches!(err, Fault::ForgedCheckpoint { seq: 3, .. }), "{err}");
}

#[test]
fn entries_already_held_are_skipped_and_the_stream_resumes_after_them() {
    let (entries, cps) = log(6, 3);
    let mut held = ChainHead::default();
    for e in &entries[..3] {
        held.advance(e).expect("links");
    }
    let mut rx = LinkReceiver::new([(zj(), held)], 1 << 20);
    let out = rx.receive(batch(&entries, &cps), &TestVerifier).expect("valid");
    assert_eq!(
        out.len(),
        2,
        "the old checkpoint goes to the store for a fork check, the new one covers 4..=6"
    );
    assert!(out[0].entries.is_empty());
    assert_eq!(out[1].entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
}

#[test]
fn buffers_are_bounded() {
    let (entries, _) = log(50, 100);
    let mut rx = LinkReceiver::new([], 2_000);
    let err = rx.receive(batch(&entries, &[]), &TestVerifier).expect_err("overflow");
    assert_eq!(
        err,
        Fault::Overflow {
            origin: zj(),
            limit: 2_000
        }
    );
}
