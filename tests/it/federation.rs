//! In-process federations with real mutual TLS (certificates from our own PKI), real journals and
//! indexes: convergence in a mesh and through a relay chain, resume after restart, and faults —
//! a relay serving a tampered entry, a relay serving a checkpoint it forged, an origin that
//! equivocates — each detected while honest data still converges.

use crate::common::{copy_dir, rt};
use cxnode::cli::demo::{Heads, LocalFederation, Topology};
use cxnode::log::{ChainHead, Checkpoint, Entry};
use cxnode::pki::{NodeSigner, TlsFiles};
use cxnode::record::{RecordGenerator, Region};
use cxnode::store::index::Index;
use cxnode::store::journal::{Frame, Journal};
use cxnode::store::StoreConfig;
use std::time::{Duration, Instant};

pub(crate) const CONVERGE: Duration = Duration::from_secs(60);

pub(crate) fn lines(seed: u64, region: Region, n: usize) -> Vec<String> {
    let mut g = RecordGenerator::new(seed, region);
    (0..n).map(|_| g.next_line()).collect()
}

/// Publishes `n` records in every province (different seeds per round).
pub(crate) async fn publish_everywhere(fed: &LocalFederation, round: u64, n: usize) {
    for (i, node) in fed.nodes.iter().enumerate() {
        let appended = fed
            .publish(i, lines(round * 100 + i as u64, node.region, n))
            .await
            .expect("publish");
        assert_eq!(appended, n);
    }
}

/// A fresh local federation of `n` nodes in a temporary directory (kept alive by the caller).
pub(crate) async fn federation(n: usize, topology: Topology) -> (tempfile::TempDir, LocalFederation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = LocalFederation::start(dir.path(), n, topology).await.expect("start");
    (dir, fed)
}

/// Waits until node `i` reports `seq` for `origin`, and returns that head's hash.
pub(crate) async fn wait_head(fed: &LocalFederation, i: usize, origin: Region, seq: u64) -> Vec<u8> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let heads = fed.heads(i).await.expect("heads");
        if let Some((s, h, _)) = heads.get(&origin.code()) {
            if *s == seq {
                return h.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {i} never reached {origin}/{seq}: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn assert_converges(fed: &LocalFederation) {
    assert!(
        fed.wait_converged(CONVERGE).await.expect("heads"),
        "the federation did not converge"
    );
}

#[test]
fn mesh_converges_and_a_restarted_node_resumes() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(3, Topology::Mesh).await;
        publish_everywhere(&fed, 1, 300).await;
        assert_converges(&fed).await;

        // Node 2 goes down; the others keep publishing; it comes back and catches up.
        fed.stop_node(2).await.expect("stop");
        publish_everywhere_but(&fed, 2, 2, 400).await;
        fed.start_node(2).await.expect("restart");
        fed.publish(2, lines(999, fed.nodes[2].region, 50))
            .await
            .expect("publish after restart");
        assert_converges(&fed).await;
        let heads = fed.heads(2).await.expect("heads");
        assert_eq!(heads[&fed.nodes[0].region.code()].0, 700);
        assert_eq!(heads[&fed.nodes[2].region.code()].0, 350);
        fed.shutdown().await.expect("shutdown");
    });
}

async fn publish_everywhere_but(fed: &LocalFederation, skip: usize, round: u64, n: usize) {
    for (i, node) in fed.nodes.iter().enumerate() {
        if i != skip {
            fed.publish(i, lines(round * 100 + i as u64, node.region, n))
                .await
                .expect("publish");
        }
    }
}

/// Messages received per link at node 0, by peer address.
async fn messages(fed: &LocalFederation) -> std::collections::BTreeMap<String, u64> {
    let s = fed.sync_status(0).await.expect("status");
    s.peers.into_iter().map(|p| (p.address, p.messages_received)).collect()
}

/// A quiet federation sends heartbeats at their interval and nothing more: a request that writes
/// nothing must not wake the sync streams (it once did, and every heartbeat stored nowhere woke
/// the next: a storm that delayed live entries by ~300 ms).
#[test]
fn a_quiet_federation_exchanges_only_heartbeats() {
    rt().block_on(async {
        let (_dir, fed) = federation(3, Topology::Mesh).await;
        publish_everywhere(&fed, 1, 50).await;
        assert_converges(&fed).await;
        let before = messages(&fed).await;
        let quiet = Duration::from_secs(3);
        tokio::time::sleep(quiet).await;
        let after = messages(&fed).await;
        // Heartbeats every 500 ms: 6 in 3 s, plus slack for a fresh checkpoint and timing.
        for (peer, n) in &after {
            let sent = n - before.get(peer).copied().unwrap_or(0);
            assert!(sent <= 12, "{sent} messages from {peer} in {quiet:?} of quiet");
            assert!(sent >= 3, "heartbeats still flow: {sent} from {peer}");
        }
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_chain_relays_every_origin_with_no_direct_link() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // 0 - 1 - 2: node 0 and node 2 never talk; node 1 relays, and cannot alter what it relays.
        let fed = LocalFederation::start(dir.path(), 3, Topology::Chain)
            .await
            .expect("start");
        publish_everywhere(&fed, 1, 500).await;
        assert_converges(&fed).await;
        let a = fed.nodes[0].region;
        let at_origin = wait_head(&fed, 0, a, 500).await;
        let at_far_end = wait_head(&fed, 2, a, 500).await;
        assert_eq!(at_origin, at_far_end, "byte-identical chain at the far end");
        fed.shutdown().await.expect("shutdown");
    });
}

/// Appends frames to a stopped node's journal (as a compromised relay's disk would hold them).
fn append_to_journal(data: &std::path::Path, frames: &[Frame]) {
    let cfg = StoreConfig::new(data);
    let (mut journal, _) = Journal::open(&cfg.journal_dir(), cfg.segment_bytes_max).expect("journal");
    journal.append(frames).expect("append");
    journal.sync().expect("sync");
}

fn head_of(data: &std::path::Path, origin: Region) -> ChainHead {
    let cfg = StoreConfig::new(data);
    let index = Index::open(
        &cfg.index_dir(),
        StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
        StoreConfig::INDEX_FLUSH_MS_DEFAULT,
    )
    .expect("index");
    index.head(origin).expect("head")
}

fn signer(dir: &std::path::Path, name: &str) -> NodeSigner {
    let certs = dir.join("certs");
    NodeSigner::load(&TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{name}.pem")),
        key: certs.join(format!("{name}.key")),
        crl: None,
    })
    .expect("signer")
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Nodes 0 (origin a) and 1 (the relay) hold 100 entries each; `tamper` then changes the relay's
/// stored copy of origin a while it is stopped. A new watcher pulls from the relay and from node 0,
/// with feeder choice off, so that the relay does send its copy of origin a (with it on, the
/// watcher would take origin a from its own node and never ask the relay; the checks that refuse
/// a bad copy are the same either way).
/// Returns (watcher's heads, node 0's heads, watcher's data directory, the federation directory).
async fn bad_relay(
    tamper: impl FnOnce(&std::path::Path, &std::path::Path, Region, ChainHead),
) -> (Heads, Heads, std::path::PathBuf, tempfile::TempDir) {
    let (dir, mut fed) = federation(2, Topology::Mesh).await;
    publish_everywhere(&fed, 1, 100).await;
    assert_converges(&fed).await;
    fed.stop_node(1).await.expect("stop relay");
    let a = fed.nodes[0].region;
    let head = head_of(&fed.nodes[1].data, a);
    tamper(dir.path(), &fed.nodes[1].data, a, head);
    fed.start_node(1).await.expect("relay back");
    let c = Region::parse("310000").expect("province");
    let watcher = fed
        .add_node_with(c, "data-watcher", &[1, 0], "feeder_choice = false\n")
        .await
        .expect("watcher");
    let b = fed.nodes[1].region;
    let want_a = wait_head(&fed, 0, a, 100).await;
    assert_eq!(
        wait_head(&fed, watcher, a, 100).await,
        want_a,
        "the watcher holds origin a's real chain"
    );
    wait_head(&fed, watcher, b, 100).await;
    // Let the bad link be retried a few times: nothing it sends may ever be stored.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heads = fed.heads(watcher).await.expect("heads");
    let honest = fed.heads(0).await.expect("heads");
    // Operators see the link to the relay marked faulty, with the reason.
    let status = fed.sync_status(watcher).await.expect("sync status");
    let relay = status
        .peers
        .iter()
        .find(|p| p.address == fed.nodes[1].addr.to_string())
        .expect("relay listed");
    assert!(
        relay.errors_total > 0 && relay.last_error.contains("faulty peer"),
        "relay link: {relay:?}"
    );
    let honest_peer = status
        .peers
        .iter()
        .find(|p| p.address == fed.nodes[0].addr.to_string())
        .expect("listed");
    assert!(
        honest_peer.connected && honest_peer.errors_total == 0,
        "honest link: {honest_peer:?}"
    );
    let data = fed.nodes[watcher].data.clone();
    fed.shutdown().await.expect("shutdown");
    (heads, honest, data, dir)
}

fn verify_ok(data: &std::path::Path) {
    let report = cxnode::store::verify::verify_store(&StoreConfig::new(data), None).expect("verify");
    assert!(report.ok(), "the watcher's store holds bad data: {:?}", report.problems);
}

#[test]
fn a_relay_serving_a_tampered_entry_is_refused() {
    rt().block_on(async {
        let (heads, honest, data, _dir) = bad_relay(|_, relay, a, _| {
            // Change one byte of the operation of origin a's entry 50 on the relay's disk (and fix
            // the frame checksum, as a relay that lies on purpose would).
            let cfg = StoreConfig::new(relay);
            let index = Index::open(
                &cfg.index_dir(),
                StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
                StoreConfig::INDEX_FLUSH_MS_DEFAULT,
            )
            .expect("index");
            let (_, run) = index.run_of(a, 50).expect("run").expect("entry 50");
            drop(index);
            let mut at = None;
            cxnode::store::journal::JournalReader::new(&cfg.journal_dir())
                .scan(run, cxnode::store::journal::JournalPos(u64::MAX), |pos, _, f| {
                    if matches!(&f, Frame::Entry(e) if e.seq == 50) {
                        at = Some(pos.0 as usize);
                        return Ok::<_, cxnode::store::journal::JournalError>(false);
                    }
                    Ok(true)
                })
                .expect("scan");
            let at = at.expect("entry 50 found");
            let seg = cfg.journal_dir().join(format!("seg-{:020}.cxj", 0));
            let mut bytes = std::fs::read(&seg).expect("read");
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            bytes[at + 8 + 129 + 5] ^= 0x01;
            let crc = crc32c::crc32c(&bytes[at + 8..at + 8 + len]);
            bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&seg, &bytes).expect("write");
        })
        .await;
        let a = Region::parse("330000").expect("province").code();
        assert_eq!(heads[&a], honest[&a]);
        verify_ok(&data);
    });
}

#[test]
fn a_relay_serving_a_forged_checkpoint_is_refused() {
    rt().block_on(async {
        let (heads, honest, data, _dir) = bad_relay(|dir, relay, a, head| {
            // New entries of origin a, "signed" by the relay's own key.
            let relay_key = signer(dir, "node-320000");
            let e = Entry::new(a, head.next_seq, head.head_hash, 1, b"{\"invented\":true}".to_vec());
            let mut h = head;
            h.advance(&e).expect("links");
            let cp = Checkpoint::sign(a, h, now_secs(), &relay_key).expect("sign");
            append_to_journal(relay, &[Frame::Entry(e), Frame::Checkpoint(cp)]);
        })
        .await;
        let a = Region::parse("330000").expect("province").code();
        assert_eq!(heads[&a], honest[&a], "the invented entry never reaches the watcher");
        assert!(!heads[&a].2, "a relay's forgery is not a fork of the origin");
        verify_ok(&data);
    });
}

#[test]
fn an_origin_that_equivocates_is_detected_as_a_fork_and_others_still_converge() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(2, Topology::Mesh).await;
        let (a, b) = (fed.nodes[0].region, fed.nodes[1].region);
        fed.publish(0, lines(1, a, 60)).await.expect("publish");
        fed.publish(1, lines(2, b, 60)).await.expect("publish");
        assert_converges(&fed).await;
        // An evil twin of origin a (same certificate, its own log) signs a different chain.
        let twin = fed.add_node(a, "data-twin", &[]).await.expect("twin");
        fed.publish(twin, lines(3, a, 80)).await.expect("twin publishes");
        // A new node pulls from node b (honest chain of a) and from the twin.
        let c = Region::parse("310000").expect("province");
        let watcher = fed.add_node(c, "data-watcher", &[1, twin]).await.expect("watcher");
        wait_head(&fed, watcher, b, 60).await;
        let deadline = Instant::now() + CONVERGE;
        loop {
            let heads = fed.heads(watcher).await.expect("heads");
            if heads.get(&a.code()).is_some_and(|h| h.2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fork of {a} was never detected: {heads:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = fed.sync_status(watcher).await.expect("sync status");
        let fork = status
            .forks
            .iter()
            .find(|f| f.origin == a.code())
            .expect("the fork is listed with its evidence");
        assert!(fork.second.is_some(), "the contradicting checkpoint is kept");
        assert!(status.origins.iter().any(|o| o.origin == a.code() && o.forked));
        // Honest origins go on converging at the watcher.
        fed.publish(1, lines(4, b, 25)).await.expect("publish");
        wait_head(&fed, watcher, b, 85).await;
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn an_origin_restored_from_an_old_backup_sees_that_peers_hold_more_of_its_log() {
    rt().block_on(async {
        let (dir, mut fed) = federation(2, Topology::Mesh).await;
        let a = fed.nodes[0].region;
        fed.publish(0, lines(1, a, 50)).await.expect("publish");
        wait_head(&fed, 1, a, 50).await;
        fed.stop_node(0).await.expect("stop");
        let backup = dir.path().join("backup-of-a");
        copy_dir(&fed.nodes[0].data, &backup);
        fed.start_node(0).await.expect("start");
        fed.publish(0, lines(2, a, 50)).await.expect("publish");
        wait_head(&fed, 1, a, 100).await;
        // The province restores its node from the old backup.
        fed.stop_node(0).await.expect("stop");
        std::fs::remove_dir_all(&fed.nodes[0].data).expect("rm");
        copy_dir(&backup, &fed.nodes[0].data);
        fed.start_node(0).await.expect("start from backup");
        let deadline = Instant::now() + CONVERGE;
        loop {
            let status = fed.sync_status(0).await.expect("status");
            let own = status.origins.iter().find(|o| o.origin == a.code()).cloned();
            if let Some(o) = own.filter(|o| o.best_peer_head == 100) {
                assert_eq!(
                    (o.local_head, o.lag_entries),
                    (50, 50),
                    "its own log is behind what peers hold"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restored origin never saw the peer's head: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            fed.heads(0).await.expect("heads")[&a.code()].0,
            50,
            "it never takes its own entries from a peer"
        );
        // Publishing now would fork the origin: it is refused, naming what to do.
        let refused = fed
            .publish(0, lines(3, a, 5))
            .await
            .expect_err("a restored origin must not publish");
        let text = format!("{refused:#}");
        assert!(
            text.contains("publishing is refused") && text.contains("restore"),
            "{text}"
        );
        assert_eq!(fed.heads(0).await.expect("heads")[&a.code()].0, 50);
        // The operator stops the node and recovers its own log from the replica.
        fed.stop_node(0).await.expect("stop");
        let config = fed.config(0).expect("config");
        let report = cxnode::link::recover::recover(&config, &fed.as_peer(1))
            .await
            .expect("recover");
        assert!(report.complete(), "{report:?}");
        assert_eq!(
            (report.before[&a], report.after[&a], report.appended),
            (50, 100, 50),
            "{report:?}"
        );
        verify_ok(&fed.nodes[0].data);
        fed.start_node(0).await.expect("start after recovery");
        assert_eq!(fed.heads(0).await.expect("heads")[&a.code()].0, 100);
        fed.publish(0, lines(3, a, 5))
            .await
            .expect("publishing resumes from the true head");
        wait_head(&fed, 1, a, 105).await;
        assert_converges(&fed).await;
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_damaged_journal_is_cut_and_rebuilt_from_a_replica() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(2, Topology::Mesh).await;
        for round in 0..4 {
            publish_everywhere(&fed, round, 40).await;
        }
        assert_converges(&fed).await;
        let before = fed.contents(1).expect("contents");
        fed.stop_node(1).await.expect("stop");
        // A flipped byte in the middle of the journal, with groups after it: corruption.
        let journal = fed.nodes[1].data.join("journal");
        let segment = std::fs::read_dir(&journal)
            .expect("journal dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "cxj"))
            .expect("a segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&segment, &bytes).expect("write");
        let refused = fed.start_node(1).await;
        let serve_refused = match refused {
            Err(e) => format!("{e:#}"),
            Ok(()) => format!(
                "{:#}",
                fed.stop_node(1).await.expect_err("a damaged journal must not serve")
            ),
        };
        assert!(serve_refused.contains("cxnode recover"), "{serve_refused}");
        let report = cxnode::link::recover::recover(&fed.config(1).expect("config"), &fed.as_peer(0))
            .await
            .expect("recover");
        assert_eq!(report.quarantined.len(), 1, "{report:?}");
        assert!(report.quarantined[0].cut_at.0 <= middle as u64, "{report:?}");
        assert!(
            report.quarantined[0].files.iter().all(|f| f.exists()),
            "kept for inspection"
        );
        assert!(report.appended > 0 && report.complete(), "{report:?}");
        assert_eq!(
            fed.contents(1).expect("contents"),
            before,
            "every origin back, byte for byte"
        );
        verify_ok(&fed.nodes[1].data);
        fed.start_node(1).await.expect("start after recovery");
        publish_everywhere(&fed, 9, 10).await;
        assert_converges(&fed).await;
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_longer_branch_from_an_honest_relay_is_a_fork_and_the_relay_is_not_blamed() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(2, Topology::Mesh).await;
        let a = fed.nodes[0].region;
        fed.publish(0, lines(1, a, 60)).await.expect("publish");
        // The watcher holds branch B: origin a's chain as node 0 signed it.
        let d = Region::parse("110000").expect("province");
        let watcher = fed.add_node(d, "data-watcher", &[0]).await.expect("watcher");
        wait_head(&fed, watcher, a, 60).await;
        fed.stop_node(watcher).await.expect("stop watcher");
        // A twin of a (same key) signs a longer branch A; an honest relay holds only that branch.
        let twin = fed.add_node(a, "data-twin", &[]).await.expect("twin");
        fed.publish(twin, lines(3, a, 80)).await.expect("twin publishes");
        let c = Region::parse("310000").expect("province");
        let relay = fed.add_node(c, "data-relay", &[twin]).await.expect("relay");
        wait_head(&fed, relay, a, 80).await;
        // The watcher now pulls from the relay only.
        fed.set_peers(watcher, &[relay]);
        fed.start_node(watcher).await.expect("watcher back");
        let deadline = Instant::now() + CONVERGE;
        loop {
            let heads = fed.heads(watcher).await.expect("heads");
            if heads.get(&a.code()).is_some_and(|h| h.2) {
                assert_eq!(heads[&a.code()].0, 60, "nothing of the other branch is stored");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the fork of {a} was never recorded: {heads:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = fed.sync_status(watcher).await.expect("status");
        assert!(status.forks.iter().any(|f| f.origin == a.code()), "{status:?}");
        let link = status
            .peers
            .iter()
            .find(|p| p.address == fed.nodes[relay].addr.to_string())
            .expect("relay listed");
        assert!(
            link.connected && !link.last_error.contains("faulty"),
            "the relay carried valid data and is not blamed: {link:?}"
        );
        // The relay's own origin still arrives.
        fed.publish(relay, lines(4, c, 10)).await.expect("publish");
        wait_head(&fed, watcher, c, 10).await;
        fed.shutdown().await.expect("shutdown");
    });
}
