//! The store through the library: reopen after drop, all-or-nothing groups, recovery of an index
//! that is behind, torn tails, damage reported with its position, reindex, and verify.

use crate::common::copy_dir;
use cxnode::log::{CheckpointSigner, Entry};
use cxnode::pki::{self, Identity, IssueRequest, NodeSigner, SignatureVerifier, TlsFiles};
use cxnode::record::{parse_operation, Operation, RecordGenerator, Region};
use cxnode::store::journal::{Frame, Journal, COMMIT_FRAME_BYTES};
use cxnode::store::verify::verify_store;
use cxnode::store::{OpOutcome, Store, StoreConfig, StoreError};

fn zj() -> Region {
    Region::parse("330000").expect("province")
}

struct Setup {
    dir: tempfile::TempDir,
    signer: NodeSigner,
    cfg: StoreConfig,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        pki::init_ca(&certs, "test CA", 30).expect("ca");
        let now = time::OffsetDateTime::now_utc();
        let req = IssueRequest {
            identity: Identity::Node(zj()),
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(30),
            dns_names: vec!["localhost".to_string()],
            ip_addresses: vec![],
        };
        pki::issue(&certs, &req, &certs, "node").expect("issue");
        let files = TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join("node.pem"),
            key: certs.join("node.key"),
            crl: None,
        };
        let signer = NodeSigner::load(&files).expect("signer");
        let mut cfg = StoreConfig::new(&dir.path().join("data"));
        cfg.segment_bytes_max = 256 * 1024;
        Setup { dir, signer, cfg }
    }

    fn verifier(&self) -> SignatureVerifier {
        SignatureVerifier::new(&self.dir.path().join("certs/ca.pem"), None).expect("verifier")
    }
}

fn ops(gen: &mut RecordGenerator, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|_| parse_operation(gen.next_line().as_bytes()).expect("generated lines are valid"))
        .collect()
}

fn commit(store: &mut Store, signer: &dyn CheckpointSigner, ops: &[Operation]) -> Vec<OpOutcome> {
    store.commit_local(zj(), ops, signer, now_micros()).expect("commit").0
}

fn index_dump(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .index()
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("iter"))
        .collect()
}

#[test]
fn reopen_after_drop_keeps_every_acknowledged_entry() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(1, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    let mut acks = Vec::new();
    for _ in 0..5 {
        for o in commit(&mut store, &s.signer, &ops(&mut gen, 300)) {
            if let OpOutcome::Appended { seq, hash, .. } = o {
                acks.push((seq, hash));
            }
        }
    }
    assert_eq!(acks.len(), 1500);
    let head = store.index().head(zj()).expect("head");
    drop(store);
    let (store, report) = Store::open(&s.cfg).expect("reopen");
    assert_eq!(report.tail.truncated_at, None);
    assert_eq!(store.index().head(zj()).expect("head"), head);
    for (seq, hash) in acks {
        let e = store.read_entry(zj(), seq).expect("read").expect("entry is there");
        assert_eq!(e.hash, hash);
    }
    let cp = store
        .index()
        .latest_checkpoint(zj())
        .expect("cp")
        .expect("a checkpoint exists");
    assert_eq!(cp.seq, 1500);
}

#[test]
fn a_group_whose_commit_never_finished_is_not_seen_at_all() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(2, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    commit(&mut store, &s.signer, &ops(&mut gen, 100));
    let head = store.index().head(zj()).expect("head");
    drop(store);
    // A crash mid-group: the entries of the next group are on disk, its checkpoint is not.
    let (mut journal, _) = Journal::open(&s.cfg.journal_dir(), s.cfg.segment_bytes_max).expect("journal");
    let mut prev = head.head_hash;
    let mut frames = Vec::new();
    for (i, op) in ops(&mut gen, 50).iter().enumerate() {
        let e = Entry::new(zj(), head.next_seq + i as u64, prev, 1, op.canonical().to_vec());
        prev = e.hash;
        frames.push(Frame::Entry(e));
    }
    journal.append(&frames).expect("append");
    journal.sync().expect("sync");
    drop(journal);
    // ... and its commit frame never reached the disk.
    let segment = std::fs::read_dir(s.cfg.journal_dir())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .max()
        .expect("a segment");
    let len = std::fs::metadata(&segment).expect("meta").len();
    let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("open");
    file.set_len(len - COMMIT_FRAME_BYTES).expect("cut the commit frame");
    drop(file);

    let (store, report) = Store::open(&s.cfg).expect("reopen");
    assert!(report.tail.truncated_at.is_some(), "the half group is cut");
    assert_eq!(
        store.index().head(zj()).expect("head"),
        head,
        "none of the half group is visible"
    );
    drop(store);
    let v = s.verifier();
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn an_index_behind_the_journal_catches_up_on_open() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(3, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    commit(&mut store, &s.signer, &ops(&mut gen, 200));
    store.index().flush().expect("flush");
    let backup = s.dir.path().join("index-after-first-group");
    copy_dir(&s.cfg.index_dir(), &backup);
    let second = ops(&mut gen, 200);
    commit(&mut store, &s.signer, &second);
    let expected = index_dump(&store);
    drop(store);
    // As if sled had not flushed the second group before a crash.
    std::fs::remove_dir_all(s.cfg.index_dir()).expect("rm");
    copy_dir(&backup, &s.cfg.index_dir());

    let (mut store, report) = Store::open(&s.cfg).expect("reopen");
    assert!(
        report.replayed_frames >= 201,
        "the second group is re-indexed from the journal: {report:?}"
    );
    assert_eq!(
        index_dump(&store),
        expected,
        "the caught-up index is identical to the one before the crash"
    );
    let last = second.last().expect("ops").record_id();
    store.index_view().expect("view");
    assert!(store.view().record(zj(), &last).expect("lookup").is_some());
}

#[test]
fn reindex_from_nothing_gives_the_same_answers_and_verify_passes() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(4, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    for _ in 0..8 {
        commit(&mut store, &s.signer, &ops(&mut gen, 250));
    }
    let before = index_dump(&store);
    drop(store);
    assert!(
        std::fs::read_dir(s.cfg.journal_dir()).expect("dir").count() > 2,
        "small segments rolled"
    );
    std::fs::remove_dir_all(s.cfg.index_dir()).expect("delete the index");
    let frames = Store::reindex(&s.cfg).expect("reindex");
    assert_eq!(frames, 2000 + 8);
    let (store, _) = Store::open(&s.cfg).expect("open");
    assert_eq!(index_dump(&store), before);
    drop(store);
    let v = s.verifier();
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 2000);
    assert_eq!(report.signatures_checked, 8);
}

#[test]
fn a_flipped_byte_is_reported_with_its_position_and_the_store_refuses_to_open() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(5, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    commit(&mut store, &s.signer, &ops(&mut gen, 50));
    commit(&mut store, &s.signer, &ops(&mut gen, 50));
    let (start, pos) = store.index().run_of(zj(), 10).expect("pos").expect("entry 10");
    assert_eq!(start, 1, "the first run starts at seq 1");
    drop(store);
    let seg = s.cfg.journal_dir().join(format!("seg-{:020}.cxj", 0));
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes[pos.0 as usize + 40] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");

    match Store::open(&s.cfg) {
        Err(StoreError::Journal(e)) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("position {}", pos.0)), "{msg}");
        }
        Err(e) => panic!("expected journal corruption, got {e}"),
        Ok(_) => panic!("a damaged journal must not open"),
    }
    let report = verify_store(&s.cfg, None).expect("verify runs");
    assert!(!report.ok());
    assert!(
        report.problems[0].contains(&format!("position {}", pos.0)),
        "{:?}",
        report.problems
    );
}

/// The merged view's bucket chunks live in the chunk heap (`view/chunks`): a changed byte there
/// is named by `verify` (and the facts it hid are missing), and `reindex` repairs it.
#[test]
fn a_changed_byte_in_the_chunk_heap_is_found_by_verify_and_mended_by_reindex() {
    let mut s = Setup::new();
    // Few buckets and a small level 0, so 1,000 records flush into bucket chunks.
    s.cfg.view_layout = cxnode::store::view::ViewLayout {
        buckets: 4,
        level0_items_per_bucket: 16,
    };
    let mut gen = RecordGenerator::new(9, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    for _ in 0..4 {
        commit(&mut store, &s.signer, &ops(&mut gen, 250));
        store.index_view().expect("index");
    }
    drop(store);
    let v = s.verifier();
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    let heap = s.cfg.view_dir().join(cxnode::store::view::HEAP_DIR);
    let segment = std::fs::read_dir(&heap)
        .expect("heap dir")
        .map(|e| e.expect("entry").path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .expect("a segment with payloads");
    let mut bytes = std::fs::read(&segment).expect("read");
    // The last byte: the newest payload is a bucket chunk of the last flush, which nothing
    // replaced (the first payload is a level-0 chunk, dropped once every partition was flushed).
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    let all = report.problems.join("\n");
    assert!(!report.ok());
    assert!(all.contains("CRC mismatch"), "{all}");
    assert!(all.contains("merged view is missing"), "{all}");
    Store::reindex(&s.cfg).expect("reindex");
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn verify_finds_a_forged_entry_and_a_forged_checkpoint() {
    let s = Setup::new();
    let mut gen = RecordGenerator::new(6, zj());
    let (mut store, _) = Store::open(&s.cfg).expect("open");
    commit(&mut store, &s.signer, &ops(&mut gen, 20));
    let head = store.index().head(zj()).expect("head");
    drop(store);
    // Append a group with a well-framed entry whose hash lies, closed by a checkpoint whose
    // signature does not cover what it says.
    let (mut journal, _) = Journal::open(&s.cfg.journal_dir(), s.cfg.segment_bytes_max).expect("journal");
    let op = ops(&mut gen, 1).remove(0);
    let mut forged = Entry::new(zj(), head.next_seq, head.head_hash, 5, op.canonical().to_vec());
    forged.hash[0] ^= 0xff;
    let mut cp = cxnode::log::Checkpoint::sign(
        zj(),
        cxnode::log::ChainHead {
            next_seq: 22,
            head_hash: forged.hash,
        },
        100,
        &s.signer,
    )
    .expect("sign");
    cp.at_unix_seconds += 1;
    journal
        .append(&[Frame::Entry(forged), Frame::Checkpoint(cp)])
        .expect("append");
    journal.sync().expect("sync");
    drop(journal);
    let v = s.verifier();
    let report = verify_store(&s.cfg, Some(&v)).expect("verify");
    assert!(!report.ok());
    let all = report.problems.join("\n");
    assert!(all.contains("entry hash does not match"), "{all}");
    assert!(all.contains("bad signature"), "{all}");
}

fn now_micros() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

#[test]
fn a_store_never_changes_province() {
    let s = Setup::new();
    let mut cfg = s.cfg.clone();
    cfg.local = Some(zj());
    drop(Store::open(&cfg).expect("first open records the origin"));
    cfg.local = Some(Region::parse("320000").expect("province"));
    match Store::open(&cfg) {
        Err(StoreError::Origin(msg)) => assert!(msg.contains("region 330000") && msg.contains("320000"), "{msg}"),
        Err(e) => panic!("expected an origin mismatch, got {e}"),
        Ok(_) => panic!("a store of 330000 must not open as 320000"),
    }
    cfg.local = None;
    assert_eq!(
        cfg.resolve_local().expect("read"),
        Some(zj()),
        "tools without a config read the recorded origin"
    );
}

#[test]
fn the_national_hubs_store_opens_again_with_and_without_its_config() {
    let s = Setup::new();
    let mut cfg = s.cfg.clone();
    cfg.local = Some(Region::NATIONAL_HUB);
    drop(Store::open(&cfg).expect("first open records the hub"));
    drop(Store::open(&cfg).expect("a restarted hub reads its recorded origin"));
    cfg.local = None;
    assert_eq!(
        cfg.resolve_local().expect("read"),
        Some(Region::NATIONAL_HUB),
        "tools without a config (reindex, verify, evaluate --data) read the hub's origin"
    );
}
