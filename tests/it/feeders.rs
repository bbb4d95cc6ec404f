//! One copy per entry, in a real federation: eight in-process nodes in a full mesh over mutual
//! TLS, each taking every origin from one peer (its own node), so each entry arrives about once;
//! then the link from one node to one origin's node goes through a TCP proxy that freezes (the
//! connection stays open, nothing passes) and later cuts: the node takes the origin from another
//! peer within the switch window and converges, and says so in `SyncStatus`.

use crate::common::rt;
use crate::federation::{assert_converges, federation, lines, publish_everywhere, wait_head};
use cxnode::cli::demo::{LocalFederation, Topology};
use cxnode::rpc::pb;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Pass,
    /// Connections stay open; nothing passes.
    Freeze,
    /// Connections are closed and new ones refused.
    Cut,
}

/// A TCP proxy on loopback to `target` whose flow the test sets.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) flow: watch::Sender<Flow>,
}

/// Copies `from` to `to` while the flow passes; ends when either side closes or the flow is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flow: watch::Receiver<Flow>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Frozen: wait (reading nothing) until it passes again or is cut.
        let Ok(now) = flow.wait_for(|f| *f != Flow::Freeze).await.map(|f| *f) else {
            return;
        };
        if now == Flow::Cut {
            return;
        }
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = flow.changed() => {}
        }
    }
}

pub(crate) async fn proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let (flow, rx) = watch::channel(Flow::Pass);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            if *rx.borrow() == Flow::Cut {
                continue;
            }
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, rx.clone()));
            tokio::spawn(pump(ro, wi, rx.clone()));
        }
    });
    Proxy { addr, flow }
}

/// Per node: (entries received from peers, entries of other origins it holds).
async fn received_and_needed(fed: &LocalFederation, i: usize) -> (u64, u64, pb::SyncStatusResponse) {
    let status = fed.sync_status(i).await.expect("sync status");
    let received = status.peers.iter().map(|p| p.entries_received).sum();
    let needed = status
        .origins
        .iter()
        .filter(|o| o.origin != status.region)
        .map(|o| o.local_head)
        .sum();
    (received, needed, status)
}

fn feeder_of(status: &pb::SyncStatusResponse, origin: u32) -> (String, u64) {
    let o = status
        .origins
        .iter()
        .find(|o| o.origin == origin)
        .expect("origin listed");
    (o.feeder.clone(), o.feeder_switches)
}

#[test]
fn a_mesh_of_eight_receives_each_entry_about_once_and_a_frozen_feeder_is_replaced() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(8, Topology::Mesh).await;
        publish_everywhere(&fed, 1, 150).await;
        assert_converges(&fed).await;
        for i in 0..8 {
            let (received, needed, status) = received_and_needed(&fed, i).await;
            assert_eq!(needed, 7 * 150, "node {i} holds every other origin");
            assert!(
                received as f64 <= 1.2 * needed as f64,
                "node {i} received {received} entries for {needed} it needed"
            );
            let duplicates: u64 = status.peers.iter().map(|p| p.duplicates_dropped).sum();
            assert!(
                duplicates <= received - needed.min(received),
                "node {i}: {duplicates} duplicates counted"
            );
            // In a full mesh each origin comes straight from its own node.
            for (j, node) in fed.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
                assert_eq!(
                    feeder_of(&status, node.region.code()).0,
                    node.addr.to_string(),
                    "node {i} origin of {j}"
                );
            }
        }
        // Node 7 reaches node 0 (origin a) through a proxy; its link would take a minute to be
        // called dead, so only the stall rule can move origin a.
        let (x, a) = (7, fed.nodes[0].region);
        let p = proxy(fed.nodes[0].addr).await;
        fed.stop_node(x).await.expect("stop");
        let direct = fed.nodes[0].addr.to_string();
        let via = p.addr.to_string();
        fed.edit_config(x, |text| {
            *text = text
                .replace(&format!("address = \"{direct}\""), &format!("address = \"{via}\""))
                .replace("[sync]\n", "[sync]\nsilence_max_ms = 60000\nfeeder_switch_ms = 2000\n");
        });
        fed.start_node(x).await.expect("restart through the proxy");
        fed.publish(0, lines(900, a, 20)).await.expect("publish");
        wait_head(&fed, x, a, 170).await;
        let status = fed.sync_status(x).await.expect("status");
        assert_eq!(
            feeder_of(&status, a.code()).0,
            via,
            "origin a straight from its node, via the proxy"
        );
        // Freeze: the connection stays up, nothing passes.
        p.flow.send_replace(Flow::Freeze);
        let frozen = Instant::now();
        fed.publish(0, lines(901, a, 30)).await.expect("publish");
        wait_head(&fed, x, a, 200).await;
        let took = frozen.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "node {x} took origin a from another peer only after {took:?}"
        );
        let status = fed.sync_status(x).await.expect("status");
        let (feeder, switches) = feeder_of(&status, a.code());
        assert!(
            feeder != via && !feeder.is_empty() && switches >= 1,
            "feeder {feeder}, {switches} switches"
        );
        let link = status.peers.iter().find(|p| p.address == via).expect("listed");
        assert!(
            link.connected,
            "the frozen link was not called dead: the stall rule moved the origin"
        );
        // Cut: the link drops; everything still converges.
        p.flow.send_replace(Flow::Cut);
        publish_everywhere(&fed, 2, 20).await;
        assert_converges(&fed).await;
        // Every origin at node 7 is fed by a peer whose link is up (the frozen one is not).
        let status = fed.sync_status(x).await.expect("status");
        for o in status.origins.iter().filter(|o| o.origin != status.region) {
            let peer = status.peers.iter().find(|p| p.address == o.feeder);
            assert!(
                peer.is_some_and(|p| p.connected),
                "origin {} fed by {:?}",
                o.origin,
                o.feeder
            );
        }
        fed.shutdown().await.expect("shutdown");
    });
}
