//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`): every decoder that reads bytes
//! someone else wrote. Each takes arbitrary bytes, must never panic, hang or grow without bound,
//! and checks what must hold of what it accepts (a decoded frame re-encodes to the same bytes, a
//! published record decodes back from the log). They live in the library so a crash the fuzzer
//! finds becomes a plain unit test here (`tests` below), run by `cargo test`.

use crate::log::testkeys::{TestKey, TestVerifier};
use crate::log::{ChainHead, Checkpoint, Entry, Hash};
use crate::record::Region;
use crate::rpc::pb;
use crate::store::journal::{decode_frames, frame_bytes, framed};
use crate::sync::{Batch, Clock, LinkReceiver};

/// The journal frame decoder: `data` as a segment's raw bytes, and each piece of it as a frame
/// body behind a valid header (so the body decoder is reached past the checksum).
pub fn journal_frames(data: &[u8]) {
    let _ = decode_frames(data);
    let mut segment = Vec::new();
    for body in data.split(|b| *b == 0xFF).filter(|b| !b.is_empty()) {
        segment.extend_from_slice(&framed(body));
    }
    if let Ok(frames) = decode_frames(&segment) {
        for f in frames {
            let again = decode_frames(&frame_bytes(&f)).expect("a decoded frame re-encodes to a decodable one");
            assert_eq!(again, vec![f], "a frame survives encode and decode unchanged");
        }
    }
}

/// The protobuf -> domain conversions of the sync stream and of publishing.
pub fn wire_messages(data: &[u8]) {
    use prost::Message;
    if let Ok(m) = pb::SyncMessage::decode(data) {
        let _ = crate::rpc::replication::incoming_from_pb(m);
    }
    if let Ok(r) = pb::PublishRequest::decode(data) {
        for op in r.operations.iter().take(crate::rpc::publisher::PUBLISH_OPS_MAX) {
            let _ = crate::record::parse_operation(&op.json);
        }
    }
    if let Ok(h) = pb::HeadsResponse::decode(data) {
        for head in &h.heads {
            if let Some(cp) = &head.latest_checkpoint {
                let _ = Checkpoint::try_from(cp);
            }
        }
    }
}

/// JSON Lines record validation: whatever a line holds, it is accepted or rejected with a
/// reason; what is accepted decodes back from its stored form to the same operation.
pub fn record_line(data: &[u8]) {
    if let Ok(op) = crate::record::parse_operation(data) {
        let stored = op.canonical().to_vec();
        let back = crate::record::decode_stored(&stored).expect("an accepted operation decodes from the log");
        assert_eq!(back.canonical(), &stored[..], "the stored form is stable");
    }
}

/// Pending bytes a fuzzed link receiver may buffer (small, so the bound is reached).
const LINK_PENDING_BYTES_MAX: u64 = 16 * 1024;

/// What a fuzzed link did (so tests can show the harness reaches the receiver's depths).
#[derive(Debug, Default)]
pub struct LinkOutcome {
    /// Batches whose checkpoints covered entries.
    pub covered: usize,
    /// Checkpoints accepted as the origin's.
    pub verified: usize,
    /// Checkpoints refused as forged.
    pub refused: u64,
    /// Batches that were the link's fault (gaps, tampering, mixed origins).
    pub faults: usize,
}

/// The link receiver's batch handling: `data` drives a peer that sends valid entries, gaps,
/// replays, tampered entries, checkpoints good and forged, and batches of mixed origins, four
/// bytes a step. The receiver must never panic, whatever the order.
pub fn link_batches(data: &[u8]) -> LinkOutcome {
    let mut outcome = LinkOutcome::default();
    const ORIGINS: [u32; 3] = [330000, 320000, 310000];
    let origins: Vec<Region> = ORIGINS.iter().filter_map(|c| Region::from_code(*c).ok()).collect();
    let clock = Clock {
        now_unix_seconds: 1_000_000,
        skew_seconds_max: 300,
    };
    let mut receiver = LinkReceiver::new(Vec::new(), LINK_PENDING_BYTES_MAX);
    // What the peer's origins hold: every entry made so far, per origin.
    let mut logs: Vec<Vec<Entry>> = vec![Vec::new(); origins.len()];
    for step in data.chunks(4).take(256) {
        let [o, action, n, size] = [
            step[0],
            step.get(1).copied().unwrap_or(0),
            step.get(2).copied().unwrap_or(1),
            step.get(3).copied().unwrap_or(0),
        ];
        let i = o as usize % origins.len();
        let origin = origins[i];
        let n = usize::from(n % 8) + 1;
        let mut batch = Batch {
            origin: Some(origin),
            entries: Vec::new(),
            checkpoints: Vec::new(),
        };
        match action % 7 {
            // The next entries of the origin's chain.
            0 | 1 => {
                for _ in 0..n {
                    let e = next_entry(origin, &logs[i], size);
                    logs[i].push(e.clone());
                    batch.entries.push(e);
                }
            }
            // A gap: the entry after the next.
            2 => {
                let skipped = next_entry(origin, &logs[i], size);
                logs[i].push(skipped);
                batch.entries.push(next_entry(origin, &logs[i], size));
            }
            // A replay of what was sent already.
            3 => batch.entries.extend(logs[i].iter().rev().take(n).rev().cloned()),
            // A tampered entry.
            4 => {
                let mut e = next_entry(origin, &logs[i], size);
                let mut tampered = e.op_bytes.to_vec();
                tampered.push(b'x');
                e.op_bytes = tampered.into();
                batch.entries.push(e);
            }
            // A checkpoint signed by the origin over its head, or over a head it never had.
            5 => {
                let head = head_of(&logs[i]);
                let at = clock.now_unix_seconds - i64::from(size);
                if let Ok(cp) = Checkpoint::sign(origin, head, at, &TestKey(origin)) {
                    batch.checkpoints.push(cp);
                }
            }
            // Forged: signed by another origin's key, or a batch of mixed origins.
            _ => {
                let other = origins[(i + 1) % origins.len()];
                if size % 2 == 0 {
                    if let Ok(cp) = Checkpoint::sign(origin, head_of(&logs[i]), clock.now_unix_seconds, &TestKey(other))
                    {
                        batch.checkpoints.push(cp);
                    }
                } else {
                    batch.entries.push(next_entry(other, &[], size));
                }
            }
        }
        match receiver.receive(batch, &TestVerifier, clock) {
            Ok(covered) => outcome.covered += usize::from(!covered.is_empty()),
            Err(_) => outcome.faults += 1,
        }
        outcome.verified += receiver.take_verified().len();
        outcome.refused = receiver.take_refused().1;
    }
    outcome
}

fn head_of(log: &[Entry]) -> ChainHead {
    let mut head = ChainHead::default();
    for e in log {
        if head.advance(e).is_err() {
            break;
        }
    }
    head
}

fn next_entry(origin: Region, log: &[Entry], size: u8) -> Entry {
    let (seq, prev): (u64, Hash) = match log.last() {
        Some(e) => (e.seq + 1, e.hash),
        None => (1, ChainHead::default().head_hash),
    };
    let bytes = vec![b'a' + (seq % 26) as u8; usize::from(size) * 16 + 1];
    Entry::new(origin, seq, prev, seq as i64, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target on a few fixed inputs (the committed corpus seeds, and every crash the fuzzer
    /// found, once fixed).
    #[test]
    fn the_fuzz_entries_take_their_seeds_without_panicking() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("journal_frames", journal_frames),
            ("wire_messages", wire_messages),
            ("record_line", record_line),
            ("link_batches", |d| {
                link_batches(d);
            }),
        ];
        let mut seen = 0;
        for (name, target) in targets {
            let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
                panic!("no corpus for {name} in {}", dir.display());
            };
            for entry in entries.flatten() {
                target(&std::fs::read(entry.path()).expect("seed"));
                seen += 1;
            }
        }
        assert!(seen >= 8, "corpus seeds read: {seen}");
    }

    #[test]
    fn the_link_harness_reaches_covered_entries_forgeries_and_faults() {
        // One origin: entries, its checkpoint over them, more entries and a checkpoint; then a
        // forged checkpoint, a tampered entry and a gap.
        let valid = [0u8, 0, 3, 1, 0, 5, 0, 0, 0, 1, 2, 2, 0, 5, 0, 0];
        let o = link_batches(&valid);
        assert!(o.covered >= 2 && o.verified >= 2 && o.faults == 0, "{o:?}");
        let hostile = [0u8, 0, 3, 1, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0];
        let o = link_batches(&hostile);
        assert!(o.refused >= 1 && o.faults >= 2 && o.verified == 0, "{o:?}");
    }
}
