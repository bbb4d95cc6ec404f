//! What operators see and rely on, on real nodes (in-process, real mutual TLS, journals and
//! indexes) with the admin port on: a black-holed link and then a cut one, seen in the sync
//! status, on the status page (rendered by headless Chromium), in the metrics (checked by
//! promtool) and by `cxnode status`; a failing fsync under the journal; certificate and CA
//! rotation while a Sync stream runs.

use crate::common::{chromium_dom, cxnode, have_tool, http_get, rt};
use crate::federation::{federation, lines};
use crate::feeders::{proxy, Flow};
use cxnode::cli::demo::{LocalFederation, Topology};
use cxnode::rpc::pb;
use cxnode::store::fs::{JournalFs, OsFs, SegmentFile, SegmentRead, SharedFs};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Waits until the admin port at `addr` accepts connections (the node binds it as it starts).
async fn wait_admin(addr: SocketAddr) {
    let deadline = Instant::now() + WITHIN;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "the admin port {addr} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` on node `i`'s sync status every 250 ms until it holds (or fails after WITHIN).
async fn wait_status(
    fed: &LocalFederation,
    i: usize,
    what: &str,
    mut check: impl FnMut(&pb::SyncStatusResponse) -> bool,
) -> pb::SyncStatusResponse {
    let deadline = Instant::now() + WITHIN;
    loop {
        let s = fed.sync_status(i).await.expect("sync status");
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn origin(s: &pb::SyncStatusResponse, code: u32) -> pb::OriginStatus {
    s.origins.iter().find(|o| o.origin == code).cloned().unwrap_or_default()
}

fn peer(s: &pb::SyncStatusResponse, address: &str) -> pb::PeerStatus {
    s.peers
        .iter()
        .find(|p| p.address == address)
        .cloned()
        .unwrap_or_default()
}

/// The page as Chromium renders it, until `wanted` is in it (the page reloads itself).
async fn page_shows(admin: SocketAddr, wanted: &str) -> String {
    let deadline = Instant::now() + WITHIN;
    let url = format!("http://{admin}/");
    loop {
        let u = url.clone();
        let dom = tokio::task::spawn_blocking(move || chromium_dom(&u))
            .await
            .expect("chromium task");
        if dom.contains(wanted) {
            return dom;
        }
        assert!(Instant::now() < deadline, "the page never showed {wanted:?}:\n{dom}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// promtool's verdict on a metrics text.
fn promtool(metrics: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The line of `name{labels}` in a metrics text, as its value.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// A three-node mesh in which node 0 (330000) reaches node 1 (320000) through a proxy, with
/// node 0's admin port on and windows long enough for a stall to show before the feeder moves.
async fn mesh_with_proxy() -> (tempfile::TempDir, LocalFederation, crate::feeders::Proxy, SocketAddr) {
    let (dir, mut fed) = federation(3, Topology::Mesh).await;
    fed.stop_node(0).await.expect("stop");
    let p = proxy(fed.nodes[1].addr).await;
    let admin = free_addr();
    let b = fed.nodes[1].addr.to_string();
    let via = p.addr.to_string();
    fed.edit_config(0, |text| {
        *text = text
            .replace(
                "reconnect_max_ms = 2000\n",
                "reconnect_max_ms = 2000\nsilence_max_ms = 60000\nfeeder_switch_ms = 60000\n",
            )
            .replace(&format!("address = \"{b}\""), &format!("address = \"{via}\""));
        text.push_str(&format!("[admin]\nlisten = \"{admin}\"\n"));
    });
    fed.start_node(0)
        .await
        .expect("restart with the proxy and the admin port");
    wait_admin(admin).await;
    (dir, fed, p, admin)
}

#[test]
fn a_black_holed_then_cut_link_shows_on_status_page_metrics_and_cxnode_status_then_heals() {
    let tools = have_tool("chromium", "--version") & have_tool("promtool", "--version");
    rt().block_on(async {
        let (dir, fed, p, admin) = mesh_with_proxy().await;
        let (a, b, c) = (
            fed.nodes[0].region.code(),
            fed.nodes[1].region.code(),
            fed.nodes[2].region.code(),
        );
        let via = p.addr.to_string();
        // Probes: alive and ready.
        assert_eq!(http_get(admin, "/livez").0, 200);
        let (code, body) = http_get(admin, "/readyz");
        assert_eq!((code, body.as_str()), (200, "ready\n"));
        // Some publishing at every node, one line of it refused at A (counted by reason).
        for i in 0..3 {
            fed.publish(i, lines(i as u64, fed.nodes[i].region, 20))
                .await
                .expect("publish");
        }
        fed.publish(0, vec!["{not json".to_string()])
            .await
            .expect("publish a bad line");
        wait_status(&fed, 0, "A in sync with everyone", |s| {
            s.origins.len() == 3 && s.origins.iter().all(|o| o.local_head == 20 && o.lag_entries == 0)
        })
        .await;

        // The link A -> B is black-holed: the connection stays open and nothing passes (what a
        // firewall that drops packets does). B keeps publishing; C, which still reaches B,
        // announces B's new heads to A.
        p.flow.send(Flow::Freeze).expect("freeze");
        let publishing = {
            let node_b = fed.nodes[1].addr;
            let files = fed.files(&format!("publisher-{}", fed.nodes[1].region));
            let region = fed.nodes[1].region;
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                let mut round = 100;
                while !stopped.load(Ordering::SeqCst) {
                    let channel = cxnode::rpc::client::connect(&node_b.to_string(), &files, Some("localhost"))
                        .await
                        .expect("connect to B");
                    let mut client = pb::publisher_client::PublisherClient::new(channel);
                    let operations = lines(round, region, 5)
                        .into_iter()
                        .map(|l| pb::Operation {
                            json: l.into_bytes().into(),
                        })
                        .collect();
                    client
                        .publish(pb::PublishRequest { operations })
                        .await
                        .expect("publish at B");
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
            (stop, task)
        };
        let lagging = wait_status(&fed, 0, "B's origin lagging at A", |s| {
            let o = origin(s, b);
            o.lag_entries > 0 && !o.stalled
        })
        .await;
        assert!(peer(&lagging, &via).connected, "black-holed, not yet known dead");
        if tools {
            page_shows(admin, &format!("data-origin=\"{b}\" data-state=\"lagging\"")).await;
        }
        // No progress for the stall window: stalled, in the status, on the page, in the metrics
        // and in `cxnode status` (exit 2).
        let stalled = wait_status(&fed, 0, "B's origin stalled at A", |s| origin(s, b).stalled).await;
        assert_eq!(origin(&stalled, a).lag_entries, 0, "A's own origin is fine");
        assert!(!origin(&stalled, c).stalled, "C's origin still comes from C");
        if tools {
            let dom = page_shows(admin, &format!("data-origin=\"{b}\" data-state=\"stalled\"")).await;
            assert!(
                dom.contains(&format!("data-origin=\"{a}\" data-state=\"in-sync\"")),
                "{dom}"
            );
            let (code, text) = http_get(admin, "/metrics");
            assert_eq!(code, 200);
            let (ok, verdict) = promtool(&text);
            assert!(ok, "promtool check metrics: {verdict}\n{text}");
            assert_eq!(
                metric(&text, &format!("cx_sync_origin_stalled{{origin=\"{b}\"}}")),
                Some(1.0),
                "{text}"
            );
            assert!(
                metric(&text, &format!("cx_sync_lag_entries{{origin=\"{b}\"}}")).unwrap_or(0.0) > 0.0,
                "{text}"
            );
            assert_eq!(
                metric(&text, "cx_publish_operations_total{outcome=\"appended\"}"),
                Some(20.0),
                "{text}"
            );
            assert_eq!(
                metric(&text, "cx_publish_rejections_total{reason=\"invalid_json\"}"),
                Some(1.0),
                "{text}"
            );
            assert!(
                metric(&text, "cx_journal_fsync_duration_seconds_count").unwrap_or(0.0) >= 1.0,
                "{text}"
            );
            assert_eq!(metric(&text, "cx_node_ready"), Some(1.0), "{text}");
        }
        let node_a = fed.nodes[0].addr.to_string();
        let node_c = fed.nodes[2].addr.to_string();
        let args = [
            "status",
            "--node",
            &node_a,
            "--node",
            &node_c,
            "--cert",
            "certs/operator-demo.pem",
            "--key",
            "certs/operator-demo.key",
            "--server-name",
            "localhost",
        ];
        let d = dir.path().to_path_buf();
        let matrix_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = matrix_args.iter().map(String::as_str).collect();
            cxnode(&d, &a)
        })
        .await
        .expect("cxnode status");
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(2), "a stall is a problem: {table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&b.to_string()) && l.contains("stalled")),
            "{table}"
        );
        let d = dir.path().to_path_buf();
        let json_args: Vec<String> = args
            .iter()
            .map(|s| s.to_string())
            .chain(["--json".to_string()])
            .collect();
        let out = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = json_args.iter().map(String::as_str).collect();
            cxnode(&d, &a)
        })
        .await
        .expect("cxnode status --json");
        let objects: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(objects.len(), 2, "{objects:?}");
        let at_a = &objects[0]["origins"];
        assert!(
            at_a.as_array()
                .expect("origins")
                .iter()
                .any(|o| o["origin"] == b.to_string().as_str() && o["state"] == "stalled"),
            "{at_a}"
        );

        // Heal: what was held back passes, A catches up; page and status say in sync.
        p.flow.send(Flow::Pass).expect("pass");
        publishing.0.store(true, Ordering::SeqCst);
        publishing.1.await.expect("publisher");
        let healed = wait_status(&fed, 0, "A in sync with B again", |s| {
            let o = origin(s, b);
            o.lag_entries == 0 && !o.stalled && o.local_head > 20
        })
        .await;
        assert!(peer(&healed, &via).connected);
        if tools {
            page_shows(admin, &format!("data-origin=\"{b}\" data-state=\"in-sync\"")).await;
        }

        // Cut: the connection is closed and new ones refused. The peer shows disconnected.
        p.flow.send(Flow::Cut).expect("cut");
        let cut = wait_status(&fed, 0, "B disconnected at A", |s| !peer(s, &via).connected).await;
        assert!(!peer(&cut, &via).last_error.is_empty(), "a disconnected link says why");
        if tools {
            page_shows(admin, &format!("data-peer=\"{via}\" data-link=\"down\"")).await;
        }
        p.flow.send(Flow::Pass).expect("pass");
        wait_status(&fed, 0, "B connected again", |s| peer(s, &via).connected).await;
        if tools {
            page_shows(admin, &format!("data-peer=\"{via}\" data-link=\"up\"")).await;
        }
        fed.shutdown().await.expect("shutdown");
    });
}

/// The real file system, except that fsync of journal segments fails with EIO once `failing`.
struct FailingFsync {
    failing: Arc<AtomicBool>,
}

struct FailingSegment {
    inner: Box<dyn SegmentFile>,
    failing: Arc<AtomicBool>,
}

impl SegmentFile for FailingSegment {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

impl JournalFs for FailingFsync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        OsFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        OsFs.list_dir(dir)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FailingSegment {
            inner: OsFs.create_new(path)?,
            failing: self.failing.clone(),
        }))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FailingSegment {
            inner: OsFs.open_append(path)?,
            failing: self.failing.clone(),
        }))
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn SegmentRead>> {
        OsFs.open_read(path)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        OsFs.file_len(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsFs.sync_dir(dir)
    }
}

async fn health_of(fed: &LocalFederation, i: usize, service: &str) -> i32 {
    let channel = cxnode::rpc::client::connect(
        &fed.nodes[i].addr.to_string(),
        &fed.files("operator-demo"),
        Some("localhost"),
    )
    .await
    .expect("connect");
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status
}

#[test]
fn a_failing_fsync_makes_readyz_fail_health_not_serving_and_the_node_stop_with_an_error() {
    use tonic_health::pb::health_check_response::ServingStatus;
    rt().block_on(async {
        let (_dir, mut fed) = federation(1, Topology::Mesh).await;
        fed.stop_node(0).await.expect("stop");
        let failing = Arc::new(AtomicBool::new(false));
        fed.set_journal_fs(
            0,
            SharedFs(Arc::new(FailingFsync {
                failing: failing.clone(),
            })),
        );
        let admin = free_addr();
        fed.edit_config(0, |text| {
            *text = text.replacen("[tls]", "unwell_exit_seconds = 4\n[tls]", 1);
            text.push_str(&format!("[admin]\nlisten = \"{admin}\"\n"));
        });
        fed.start_node(0).await.expect("start on the failing file system");
        wait_admin(admin).await;
        let region = fed.nodes[0].region;
        assert_eq!(fed.publish(0, lines(1, region, 10)).await.expect("publish"), 10);
        assert_eq!(http_get(admin, "/readyz").0, 200);
        assert_eq!(
            health_of(&fed, 0, "cx.v1.Publisher").await,
            ServingStatus::Serving as i32
        );

        // The disk fails: the group commit's fsync returns EIO.
        failing.store(true, Ordering::SeqCst);
        let refused = fed.publish(0, lines(2, region, 10)).await;
        assert!(
            refused.is_err(),
            "a write that could not be made durable is not acknowledged"
        );
        let deadline = Instant::now() + WITHIN;
        let why = loop {
            let (code, body) = http_get(admin, "/readyz");
            if code == 503 {
                break body;
            }
            assert!(Instant::now() < deadline, "/readyz never failed: {code} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(why.contains("writer:") && why.contains("Input/output error"), "{why}");
        for service in ["", "cx.v1.Publisher", "cx.v1.Replication", "cx.v1.Feed"] {
            assert_eq!(
                health_of(&fed, 0, service).await,
                ServingStatus::NotServing as i32,
                "service {service:?}"
            );
        }
        assert_eq!(
            health_of(&fed, 0, "cx.v1.Operations").await,
            ServingStatus::Serving as i32
        );
        let status = fed.sync_status(0).await.expect("operators can still ask why");
        assert!(!status.ready);
        assert!(
            status
                .alarms
                .iter()
                .any(|a| a.contains("unwell") && a.contains("writer")),
            "{:?}",
            status.alarms
        );
        let (_, page) = http_get(admin, "/");
        assert!(page.contains("data-part=\"writer\" data-state=\"down\""), "{page}");
        // Then it stops by itself, with an error naming the cause (`cxnode run` exits non-zero).
        let deadline = Instant::now() + WITHIN;
        let ended = loop {
            if let Some(r) = fed.exited(0).await {
                break r;
            }
            assert!(Instant::now() < deadline, "the unwell node never stopped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let e = ended.expect_err("an unwell node stops with an error");
        assert!(e.contains("writer") && e.contains("Input/output error"), "{e}");
        // A restart on a working disk recovers: the 10 acknowledged records are there. The
        // refused batch was written but never made durable nor acknowledged: it may be back (read
        // from the page cache, and synced at recovery) or not; publishing it again is safe
        // either way, and leaves it there exactly once.
        failing.store(false, Ordering::SeqCst);
        fed.start_node(0).await.expect("restart");
        let s = wait_status(&fed, 0, "the restarted node ready", |s| s.ready).await;
        let head = origin(&s, region.code()).local_head;
        assert!(head == 10 || head == 20, "{s:#?}");
        fed.publish(0, lines(2, region, 10))
            .await
            .expect("publish the refused batch again");
        let s = fed.sync_status(0).await.expect("status");
        assert_eq!(origin(&s, region.code()).local_head, 20, "{s:#?}");
        fed.shutdown().await.expect("shutdown");
    });
}

/// Writes `bytes` to `path` by a rename, as operators are told to (a reload never reads half).
fn replace_file(path: &Path, bytes: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, bytes).expect("write staged");
    std::fs::rename(&staged, path).expect("rename into place");
}

#[test]
fn a_node_certificate_renewed_from_a_new_ca_is_taken_up_without_a_restart_or_a_dropped_stream() {
    rt().block_on(async {
        let (dir, fed) = federation(2, Topology::Mesh).await;
        let certs = dir.path().join("certs");
        let (a, b) = (0, 1);
        let b_region = fed.nodes[b].region;
        // A steady stream of B's records to A while everything below happens.
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let stop = stop.clone();
            let node_b = fed.nodes[b].addr.to_string();
            let files = fed.files(&format!("publisher-{b_region}"));
            tokio::spawn(async move {
                let mut sent = 0usize;
                let mut round = 0;
                while !stop.load(Ordering::SeqCst) {
                    // A new connection each round: the publisher's handshakes judge B's current
                    // server certificate too.
                    let channel = cxnode::rpc::client::connect(&node_b, &files, Some("localhost"))
                        .await
                        .expect("connect to B");
                    let mut client = pb::publisher_client::PublisherClient::new(channel);
                    let operations = lines(1000 + round, b_region, 20)
                        .into_iter()
                        .map(|l| pb::Operation {
                            json: l.into_bytes().into(),
                        })
                        .collect();
                    let r = client
                        .publish(pb::PublishRequest { operations })
                        .await
                        .expect("publish at B");
                    sent += r
                        .into_inner()
                        .results
                        .iter()
                        .filter(|x| matches!(x.outcome, Some(pb::operation_result::Outcome::Appended(_))))
                        .count();
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                sent
            })
        };
        let before = wait_status(&fed, a, "A receiving B's records", |s| {
            origin(s, b_region.code()).local_head > 0
        })
        .await;
        let b_peer = fed.nodes[b].addr.to_string();
        let errors_before = peer(&before, &b_peer).errors_total;
        let entries_before = peer(&before, &b_peer).entries_received;
        let own_before = fed.sync_status(b).await.expect("B status").certificates[0].not_after_unix_seconds;

        // A second CA: first trusted next to the first everywhere (CA bundle and CRLs), ...
        let certs2 = dir.path().join("certs2");
        cxnode::pki::init_ca(&certs2, "cxnode second federation CA", 30).expect("second CA");
        let mut bundle = std::fs::read(certs.join("ca.pem")).expect("ca");
        bundle.extend(std::fs::read(certs2.join("ca.pem")).expect("ca2"));
        let mut crls = std::fs::read(certs.join("crl.pem")).expect("crl");
        crls.extend(std::fs::read(certs2.join("crl.pem")).expect("crl2"));
        replace_file(&certs.join("crl.pem"), &crls);
        replace_file(&certs.join("ca.pem"), &bundle);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // ... then B's node certificate renewed from the new CA, in place.
        let out = tokio::task::spawn_blocking({
            let d = dir.path().to_path_buf();
            let cert = format!("certs/node-{b_region}.pem");
            move || {
                cxnode(
                    &d,
                    &[
                        "certs",
                        "renew",
                        "--ca-dir",
                        "certs2",
                        "--cert",
                        &cert,
                        "--validity-days",
                        "300",
                    ],
                )
            }
        })
        .await
        .expect("renew");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // B serves the renewed certificate (a new handshake with it succeeds) without a restart.
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Ok(s) = fed.sync_status(b).await {
                let own = s
                    .certificates
                    .iter()
                    .find(|c| c.role == "node")
                    .map(|c| c.not_after_unix_seconds);
                if own.is_some_and(|t| t > own_before + 30 * 86_400) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "B never took up its renewed certificate");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // A accepts a connection made with B's renewed certificate (issued by the new CA).
        let channel = cxnode::rpc::client::connect(
            &fed.nodes[a].addr.to_string(),
            &fed.files(&format!("node-{b_region}")),
            Some("localhost"),
        )
        .await
        .expect("connect to A with the renewed certificate");
        pb::replication_client::ReplicationClient::new(channel)
            .heads(pb::HeadsRequest {})
            .await
            .expect("A accepts the renewed certificate");
        // Records published after the renewal carry checkpoints signed with the new certificate;
        // A takes them over the stream it had before.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        let sent = publisher.await.expect("publisher");
        let after = wait_status(&fed, a, "A holding every record B published", |s| {
            origin(s, b_region.code()).local_head == sent as u64
        })
        .await;
        // A holds B's head with a checkpoint signed by the renewed certificate (the signer
        // reloaded too; the old CA is still trusted, so only this says it did).
        let renewed = cxnode::pki::load_cert_chain(&certs.join(format!("node-{b_region}.pem"))).expect("renewed cert");
        let channel = cxnode::rpc::client::connect(
            &fed.nodes[a].addr.to_string(),
            &fed.files(&format!("node-{b_region}")),
            Some("localhost"),
        )
        .await
        .expect("connect to A");
        let heads = pb::replication_client::ReplicationClient::new(channel)
            .heads(pb::HeadsRequest {})
            .await
            .expect("A's heads")
            .into_inner()
            .heads;
        let head = heads
            .iter()
            .find(|h| h.origin == b_region.code())
            .expect("B's origin at A");
        let cp = head.latest_checkpoint.as_ref().expect("a checkpoint of B");
        assert_eq!(cp.seq, sent as u64, "the checkpoint covers the last record");
        assert_eq!(
            cp.signer_chain.first().map(|c| c.to_vec()),
            Some(renewed[0].to_vec()),
            "signed with the renewed certificate"
        );
        let link = peer(&after, &b_peer);
        assert!(link.connected, "{link:?}");
        assert_eq!(
            link.errors_total, errors_before,
            "the Sync stream was not dropped: {link:?}"
        );
        assert!(link.entries_received > entries_before);
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn both_reflection_versions_list_the_services() {
    rt().block_on(async {
        let (_dir, fed) = federation(1, Topology::Mesh).await;
        let (addr, files) = (fed.nodes[0].addr.to_string(), fed.files("operator-demo"));
        let connect = || cxnode::rpc::client::connect(&addr, &files, Some("localhost"));
        use tonic_reflection::pb::{v1, v1alpha};
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(connect().await.expect("connect"));
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1 reflection")
            .into_inner();
        let v1_names: Vec<String> = match answers
            .message()
            .await
            .expect("answer")
            .and_then(|r| r.message_response)
        {
            Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("v1: {other:?}"),
        };
        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(connect().await.expect("connect"));
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection (what many clients still ask for)")
            .into_inner();
        let alpha_names: Vec<String> = match answers
            .message()
            .await
            .expect("answer")
            .and_then(|r| r.message_response)
        {
            Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("v1alpha: {other:?}"),
        };
        for wanted in [
            "cx.v1.Publisher",
            "cx.v1.Replication",
            "cx.v1.Feed",
            "cx.v1.Operations",
            "grpc.health.v1.Health",
        ] {
            assert!(v1_names.iter().any(|n| n == wanted), "v1 lacks {wanted}: {v1_names:?}");
            assert!(
                alpha_names.iter().any(|n| n == wanted),
                "v1alpha lacks {wanted}: {alpha_names:?}"
            );
        }
        fed.shutdown().await.expect("shutdown");
    });
}
