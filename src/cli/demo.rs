//! `cxnode demo`: a complete local federation on loopback, one command, no set-up. Fresh
//! certificates in a temporary directory, N real nodes (mutual TLS, journals, sled indexes) wired
//! as a mesh, a hub or a chain, publishers in every province sending realistic records, and a live
//! table of every node's heads. At the end (after `--duration`, or Ctrl-C) publishing stops and
//! the demo waits for convergence: exit 0 only if every node holds byte-identical logs (same head
//! seq and head hash) for every origin. `LocalFederation` is also the harness of the in-process
//! federation tests.

use crate::config::Config;
use crate::node::{self, NodeError};
use crate::pki::{self, Identity, IssueRequest, TlsFiles};
use crate::record::{RecordGenerator, Region};
use crate::rpc::client::connect;
use crate::rpc::pb;
use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Provinces the demo uses, in order (all 31).
const DEMO_PROVINCES: [&str; 31] = [
    "330000", "320000", "310000", "110000", "440000", "510000", "420000", "370000", "120000", "130000", "140000",
    "150000", "210000", "220000", "230000", "340000", "350000", "360000", "410000", "430000", "450000", "460000",
    "500000", "520000", "530000", "540000", "610000", "620000", "630000", "640000", "650000",
];
/// Nodes a demo runs at most: every province and the national hub.
pub const DEMO_NODES_MAX: usize = 32;

/// The regions of an `n`-node demo: with a hub topology the national hub first, then
/// provinces; otherwise provinces, and the national hub as the 32nd node.
pub fn demo_regions(n: usize, topology: Topology) -> anyhow::Result<Vec<Region>> {
    anyhow::ensure!(
        (1..=DEMO_NODES_MAX).contains(&n),
        "--nodes must be 1..={DEMO_NODES_MAX} (31 provinces and the national hub)"
    );
    let provinces = DEMO_PROVINCES.iter().map(|r| Region::parse(r));
    let mut regions: Vec<Region> = if topology == Topology::Hub {
        std::iter::once(Ok(Region::NATIONAL_HUB))
            .chain(provinces)
            .take(n)
            .collect::<Result<_, _>>()?
    } else {
        provinces.take(n).collect::<Result<_, _>>()?
    };
    if regions.len() < n {
        regions.push(Region::NATIONAL_HUB);
    }
    Ok(regions)
}
/// How long the demo waits for convergence once publishing stops, and more per node.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
const CONVERGE_PER_NODE: Duration = Duration::from_secs(5);
/// Publishing batches per second in each province (a federation of more than
/// `SMALL_FEDERATION_NODES` publishes one a second).
const PUBLISH_TICKS_PER_SECOND: u64 = 10;
const SMALL_FEDERATION_NODES: usize = 8;

fn fed_size_large(nodes: usize) -> bool {
    nodes > SMALL_FEDERATION_NODES
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Every node pulls from every other.
    Mesh,
    /// The first node is the national hub (100000); every province pulls only from it (and it
    /// from them).
    Hub,
    /// Each node pulls from its neighbours only: A - B - C - ...
    Chain,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, value_enum, default_value = "mesh")]
    topology: Topology,
    /// Seconds to publish for; 0 = until Ctrl-C.
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Records per second published in each province.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Keep certificates and stores here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A node's heads as reported: origin code -> (seq, head hash, forked).
pub type Heads = BTreeMap<u32, (u64, Vec<u8>, bool)>;

/// A node of a local federation, running in this process.
pub struct LocalNode {
    pub region: Region,
    pub addr: SocketAddr,
    pub data: PathBuf,
    /// The node's admin port, when it has one.
    pub admin: Option<SocketAddr>,
    config_text: String,
    /// The file system its journal is on, when not the real one (fault injection in tests).
    journal_fs: Option<crate::store::fs::SharedFs>,
    stop: Option<watch::Sender<bool>>,
    join: Option<tokio::task::JoinHandle<Result<(), NodeError>>>,
}

pub struct LocalFederation {
    pub dir: PathBuf,
    pub nodes: Vec<LocalNode>,
    /// The feed clock nodes start with (tests end publicity periods on demand); `None` = the
    /// system clock.
    pub feed_clock: Option<crate::delivery::Clock>,
}

/// The policy a demo node starts with: every department of the federation may subscribe to, look
/// up and acknowledge every category from every origin, public and unconditionally or
/// conditionally shared records about companies.
pub const DEMO_POLICY: &str = r#"[[grant]]
identity = "cx://department/*"
rpcs = ["Subscribe", "Profile", "Acknowledge"]
categories = ["*"]
regions = ["*"]
sharing = ["unconditional", "conditional"]
"#;

/// A demo node's config: loopback, short timers, its own policy file; `sync` adds lines to its
/// `[sync]` table.
fn node_config(region: Region, addr: SocketAddr, data: &str, peers: &[(SocketAddr, Region)], sync: &str) -> String {
    let mut text = format!(
        "[node]\nregion = \"{region}\"\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\npolicy = \"policy-{data}.toml\"\n\
         [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-{region}.pem\"\nkey = \"certs/node-{region}.key\"\ncrl = \"certs/crl.pem\"\ncrl_reload_seconds = 1\n\
         [sync]\nheartbeat_ms = 500\nreconnect_min_ms = 100\nreconnect_max_ms = 2000\n{sync}"
    );
    for (address, region) in peers {
        text.push_str(&format!(
            "[[peers]]\naddress = \"{address}\"\nregion = \"{region}\"\nserver_name = \"localhost\"\n"
        ));
    }
    text
}

fn certs_dir(dir: &Path) -> PathBuf {
    dir.join("certs")
}

fn issue(certs: &Path, identity: Identity, name: &str) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let req = IssueRequest {
        identity,
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::days(90),
        dns_names: vec!["localhost".to_string()],
        ip_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    };
    pki::issue(certs, &req, certs, name)?;
    Ok(())
}

/// Which nodes node `i` pulls from.
pub fn peers_of(i: usize, n: usize, topology: Topology) -> Vec<usize> {
    match topology {
        Topology::Mesh => (0..n).filter(|j| *j != i).collect(),
        Topology::Hub if i == 0 => (1..n).collect(),
        Topology::Hub => vec![0],
        Topology::Chain => [i.checked_sub(1), (i + 1 < n).then_some(i + 1)]
            .into_iter()
            .flatten()
            .collect(),
    }
}

impl LocalFederation {
    /// Makes certificates for `n` provinces in `dir` and starts their nodes.
    pub async fn start(dir: &Path, n: usize, topology: Topology) -> anyhow::Result<LocalFederation> {
        Self::start_with_clock(dir, n, topology, None).await
    }

    /// `start`, the nodes' feeds running on `feed_clock` (tests end publicity periods on demand).
    pub async fn start_with_clock(
        dir: &Path,
        n: usize,
        topology: Topology,
        feed_clock: Option<crate::delivery::Clock>,
    ) -> anyhow::Result<LocalFederation> {
        Self::start_inner(dir, n, topology, feed_clock, false).await
    }

    /// `start`, every node with its admin port (metrics, probes, status page) on loopback.
    pub async fn start_with_admin(dir: &Path, n: usize, topology: Topology) -> anyhow::Result<LocalFederation> {
        Self::start_inner(dir, n, topology, None, true).await
    }

    async fn start_inner(
        dir: &Path,
        n: usize,
        topology: Topology,
        feed_clock: Option<crate::delivery::Clock>,
        admin: bool,
    ) -> anyhow::Result<LocalFederation> {
        let regions = demo_regions(n, topology)?;
        let certs = certs_dir(dir);
        pki::init_ca(&certs, "cxnode demo federation CA", 365)?;
        issue(&certs, Identity::Operator("demo".to_string()), "operator-demo")?;
        let mut listeners = Vec::new();
        for r in &regions {
            issue(&certs, Identity::Node(*r), &format!("node-{r}"))?;
            issue(&certs, Identity::Publisher(*r), &format!("publisher-{r}"))?;
            listeners.push(std::net::TcpListener::bind("127.0.0.1:0")?);
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
        drop(listeners);
        let mut nodes = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            let peers: Vec<_> = peers_of(i, n, topology)
                .into_iter()
                .map(|j| (addrs[j], regions[j]))
                .collect();
            let data = format!("data-{r}");
            std::fs::write(dir.join(format!("policy-{data}.toml")), DEMO_POLICY)?;
            issue(
                &certs,
                Identity::Department {
                    region: *r,
                    dept: "demo".to_string(),
                },
                &format!("department-{r}-demo"),
            )?;
            let mut text = node_config(*r, addrs[i], &data, &peers, "");
            let admin = if admin {
                let at = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                text.push_str(&format!("[admin]\nlisten = \"{at}\"\n"));
                Some(at)
            } else {
                None
            };
            nodes.push(LocalNode {
                region: *r,
                addr: addrs[i],
                admin,
                data: dir.join(format!("data-{r}")),
                config_text: text,
                journal_fs: None,
                stop: None,
                join: None,
            });
        }
        let mut fed = LocalFederation {
            dir: dir.to_path_buf(),
            nodes,
            feed_clock,
        };
        for i in 0..n {
            fed.start_node(i).await?;
        }
        Ok(fed)
    }

    /// Adds and starts another node of `region` (a second one of a region is an "evil twin" for
    /// tests: same certificate, its own log) with its store in `data`, pulling from `peers`.
    pub async fn add_node(&mut self, region: Region, data: &str, peers: &[usize]) -> anyhow::Result<usize> {
        self.add_node_with(region, data, peers, "").await
    }

    /// `add_node`, with `sync` added to the node's `[sync]` table (lines of TOML).
    pub async fn add_node_with(
        &mut self,
        region: Region,
        data: &str,
        peers: &[usize],
        sync: &str,
    ) -> anyhow::Result<usize> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let certs = certs_dir(&self.dir);
        if !certs.join(format!("node-{region}.pem")).exists() {
            issue(&certs, Identity::Node(region), &format!("node-{region}"))?;
            issue(&certs, Identity::Publisher(region), &format!("publisher-{region}"))?;
        }
        let peers: Vec<_> = peers
            .iter()
            .map(|j| (self.nodes[*j].addr, self.nodes[*j].region))
            .collect();
        std::fs::write(self.dir.join(format!("policy-{data}.toml")), DEMO_POLICY)?;
        let text = node_config(region, addr, data, &peers, sync);
        self.nodes.push(LocalNode {
            region,
            addr,
            data: self.dir.join(data),
            admin: None,
            config_text: text,
            journal_fs: None,
            stop: None,
            join: None,
        });
        let i = self.nodes.len() - 1;
        self.start_node(i).await?;
        Ok(i)
    }

    /// Node `i`'s config, as it is started with.
    pub fn config(&self, i: usize) -> anyhow::Result<Config> {
        Config::parse(&self.nodes[i].config_text, &self.dir).map_err(|e| anyhow::anyhow!("demo config: {e}"))
    }

    /// Node `i` as a peer of another node.
    pub fn as_peer(&self, i: usize) -> crate::sync::peer::PeerConfig {
        crate::sync::peer::PeerConfig {
            address: self.nodes[i].addr.to_string(),
            region: self.nodes[i].region,
            server_name: Some("localhost".to_string()),
        }
    }

    /// Starts (or restarts) node `i` from its config and store.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let mut config = self.config(i)?;
        if let Some(fs) = &self.nodes[i].journal_fs {
            config.store.journal_fs = fs.clone();
        }
        let addr = self.nodes[i].addr;
        let mut prepared = tokio::task::spawn_blocking(move || node::prepare(config)).await??;
        if let Some(clock) = &self.feed_clock {
            prepared = prepared.with_feed_clock(clock.clone());
        }
        // The port was free a moment ago; retry briefly if the previous instance still holds it.
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listener = listener.with_context(|| format!("binding {addr}"))?;
        let (stop, mut stopped) = watch::channel(false);
        let join = tokio::spawn(node::serve(prepared, listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        self.nodes[i].stop = Some(stop);
        self.nodes[i].join = Some(join);
        Ok(())
    }

    /// Puts node `i`'s journal on `fs` from its next start (tests inject faults under it).
    pub fn set_journal_fs(&mut self, i: usize, fs: crate::store::fs::SharedFs) {
        self.nodes[i].journal_fs = Some(fs);
    }

    /// Whether node `i` has stopped by itself, and how (None while it runs or was never started).
    pub async fn exited(&mut self, i: usize) -> Option<Result<(), String>> {
        let finished = self.nodes[i].join.as_ref().is_some_and(|j| j.is_finished());
        if !finished {
            return None;
        }
        let join = self.nodes[i].join.take()?;
        Some(match join.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("node task: {e}")),
        })
    }

    /// Stops node `i` gracefully and waits for it.
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(stop) = self.nodes[i].stop.take() {
            let _ = stop.send(true);
        }
        if let Some(join) = self.nodes[i].join.take() {
            join.await??;
        }
        Ok(())
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await?;
        }
        Ok(())
    }

    /// The TLS files of certificate `name` in the federation's certs directory (CA: certs/ca.pem).
    pub fn files(&self, name: &str) -> TlsFiles {
        let certs = certs_dir(&self.dir);
        TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("{name}.pem")),
            key: certs.join(format!("{name}.key")),
            crl: None,
        }
    }

    /// Publishes `lines` at node `i` as its province's publisher; returns how many were appended.
    pub async fn publish(&self, i: usize, lines: Vec<String>) -> anyhow::Result<usize> {
        let node = &self.nodes[i];
        let channel = connect(
            &node.addr.to_string(),
            &self.files(&format!("publisher-{}", node.region)),
            Some("localhost"),
        )
        .await?;
        let mut client = pb::publisher_client::PublisherClient::new(channel);
        let operations = lines
            .into_iter()
            .map(|l| pb::Operation {
                json: l.into_bytes().into(),
            })
            .collect();
        let response = client.publish(pb::PublishRequest { operations }).await?.into_inner();
        Ok(response
            .results
            .iter()
            .filter(|r| matches!(r.outcome, Some(pb::operation_result::Outcome::Appended(_))))
            .count())
    }

    /// Node `i`'s heads: origin -> (seq, head hash, forked).
    pub async fn heads(&self, i: usize) -> anyhow::Result<Heads> {
        // A node may read heads (policy); each node is asked with its own certificate.
        let me = format!("node-{}", self.nodes[i].region);
        let channel = connect(&self.nodes[i].addr.to_string(), &self.files(&me), Some("localhost")).await?;
        let mut client = pb::replication_client::ReplicationClient::new(channel);
        let heads = client.heads(pb::HeadsRequest {}).await?.into_inner().heads;
        Ok(heads
            .into_iter()
            .map(|h| (h.origin, (h.seq, h.head_hash.to_vec(), h.forked)))
            .collect())
    }

    /// Edits node `i`'s config text; takes effect at its next start.
    pub fn edit_config(&mut self, i: usize, edit: impl FnOnce(&mut String)) {
        edit(&mut self.nodes[i].config_text);
    }

    /// Appends `text` (TOML tables) to node `i`'s config; takes effect at its next start.
    pub fn append_config(&mut self, i: usize, text: &str) {
        self.nodes[i].config_text.push_str(text);
    }

    /// Replaces node `i`'s access policy file (the node reloads it within about a second).
    pub fn set_policy(&self, i: usize, text: &str) -> anyhow::Result<()> {
        let data = self.nodes[i]
            .data
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        std::fs::write(self.dir.join(format!("policy-{data}.toml")), text)?;
        Ok(())
    }

    /// Issues a department certificate `department-<region>-<dept>` (if not made yet).
    pub fn issue_department(&self, region: Region, dept: &str) -> anyhow::Result<String> {
        let name = format!("department-{region}-{dept}");
        let certs = certs_dir(&self.dir);
        if !certs.join(format!("{name}.pem")).exists() {
            issue(
                &certs,
                Identity::Department {
                    region,
                    dept: dept.to_string(),
                },
                &name,
            )?;
        }
        Ok(name)
    }

    /// A feed client of node `i`, authenticated with certificate `name` (e.g. from
    /// `issue_department`).
    pub async fn feed_client(
        &self,
        i: usize,
        name: &str,
    ) -> anyhow::Result<pb::feed_client::FeedClient<tonic::transport::Channel>> {
        let channel = connect(&self.nodes[i].addr.to_string(), &self.files(name), Some("localhost")).await?;
        Ok(pb::feed_client::FeedClient::new(channel))
    }

    /// An operations client of node `i`, authenticated as the demo operator.
    pub async fn operations_client(
        &self,
        i: usize,
    ) -> anyhow::Result<pb::operations_client::OperationsClient<tonic::transport::Channel>> {
        let channel = connect(
            &self.nodes[i].addr.to_string(),
            &self.files("operator-demo"),
            Some("localhost"),
        )
        .await?;
        Ok(pb::operations_client::OperationsClient::new(channel))
    }

    /// Node `i`'s sync status, asked as an operator.
    pub async fn sync_status(&self, i: usize) -> anyhow::Result<pb::SyncStatusResponse> {
        let channel = connect(
            &self.nodes[i].addr.to_string(),
            &self.files("operator-demo"),
            Some("localhost"),
        )
        .await?;
        let mut client = pb::operations_client::OperationsClient::new(channel);
        Ok(client.sync_status(pb::SyncStatusRequest {}).await?.into_inner())
    }

    /// Replaces node `i`'s peers (takes effect at its next start).
    pub fn set_peers(&mut self, i: usize, peers: &[usize]) {
        let mut text = self.nodes[i].config_text.clone();
        if let Some(at) = text.find("[[peers]]") {
            text.truncate(at);
        }
        for j in peers {
            let p = &self.nodes[*j];
            text.push_str(&format!(
                "[[peers]]\naddress = \"{}\"\nregion = \"{}\"\nserver_name = \"localhost\"\n",
                p.addr, p.region
            ));
        }
        self.nodes[i].config_text = text;
    }

    /// Per origin, (entries, digest of their operation bytes) in node `i`'s journal.
    pub fn contents(&self, i: usize) -> anyhow::Result<BTreeMap<Region, (u64, crate::log::Hash)>> {
        let journal = self.nodes[i].data.join("journal");
        Ok(crate::store::verify::content_digests(&journal)?)
    }

    /// True if every node holds the same head (seq and hash) for every origin, each origin's own
    /// node is among them (nothing published is missing anywhere), and every node holds the
    /// same operation bytes (a relay cannot have blanked or swapped a record's content).
    pub async fn converged(&self) -> anyhow::Result<bool> {
        let mut all = Vec::new();
        for i in 0..self.nodes.len() {
            all.push(self.heads(i).await?);
        }
        let first = &all[0];
        let own_complete = self.nodes.iter().enumerate().all(|(i, n)| {
            all[i].get(&n.region.code()).map(|h| h.0).unwrap_or(0)
                == first.get(&n.region.code()).map(|h| h.0).unwrap_or(0)
        });
        if !(own_complete && all.iter().all(|h| h == first)) {
            return Ok(false);
        }
        let mut contents = Vec::new();
        for i in 0..self.nodes.len() {
            contents.push(self.contents(i)?);
        }
        Ok(contents.iter().all(|c| c == &contents[0]))
    }

    /// Waits until converged, or `within` passes.
    pub async fn wait_converged(&self, within: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.converged().await? {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.converged().await
    }
}

/// Every node's heads, asked of all nodes at once (an unreachable node counts as holding nothing).
async fn all_heads(fed: &std::sync::Arc<LocalFederation>) -> Vec<Heads> {
    let mut asking = tokio::task::JoinSet::new();
    for i in 0..fed.nodes.len() {
        let fed = fed.clone();
        asking.spawn(async move { (i, fed.heads(i).await.unwrap_or_default()) });
    }
    let mut heads = vec![Heads::default(); fed.nodes.len()];
    while let Some(Ok((i, h))) = asking.join_next().await {
        heads[i] = h;
    }
    heads
}

/// One line per tick, readable at 32 nodes: how many nodes hold every origin's newest head, the
/// worst lag and where, and how much has been published.
fn print_tick(fed: &LocalFederation, heads: &[Heads], elapsed: Duration) {
    let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
    for h in heads {
        for (origin, v) in h {
            let e = newest.entry(*origin).or_default();
            *e = (*e).max(v.0);
        }
    }
    let mut complete = 0;
    let mut worst: Option<(u64, u32, Region)> = None;
    for (i, h) in heads.iter().enumerate() {
        let mut all = true;
        for (origin, top) in &newest {
            let have = h.get(origin).map_or(0, |v| v.0);
            let lag = top - have;
            if lag > 0 {
                all = false;
                if worst.is_none_or(|w| lag > w.0) {
                    worst = Some((lag, *origin, fed.nodes[i].region));
                }
            }
        }
        complete += usize::from(all);
    }
    let entries: u64 = newest.values().sum();
    let lag = match worst {
        Some((lag, origin, node)) => format!("worst lag {lag} entries of origin {origin:06} at node {node}"),
        None => "no lag".to_string(),
    };
    println!(
        "t={:>4.0}s | {complete}/{} nodes hold every origin's newest head | {lag} | {entries} entries in {} origins",
        elapsed.as_secs_f64(),
        fed.nodes.len(),
        newest.len()
    );
}

/// What a department sees: at the last node, the first origin's penalties through a feed, and
/// the merged profile of one company.
async fn show_department(fed: &LocalFederation) -> anyhow::Result<()> {
    let at = fed.nodes.len() - 1;
    let Some(origin) = fed.nodes.iter().map(|n| n.region).find(|r| !r.is_national_hub()) else {
        return Ok(());
    };
    let node = fed.nodes[at].region;
    let mut client = fed.feed_client(at, &format!("department-{node}-demo")).await?;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::FeedFilter {
                categories: vec!["administrative_penalty".to_string()],
                regions: vec![origin.code()],
                ..Default::default()
            }),
            resume_from: None,
            follow: false,
        })
        .await?
        .into_inner();
    let (mut records, mut withdrawn, mut subject) = (0u64, 0u64, None);
    while let Some(event) = stream.message().await? {
        if let Some(pb::feed_event::Body::Record(r)) = event.body {
            records += 1;
            if r.change == pb::FeedChange::WithdrawnRepaired as i32 {
                withdrawn += 1;
            }
            if subject.is_none() {
                subject = r
                    .entry
                    .as_ref()
                    .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.op_bytes).ok())
                    .and_then(|v| v.get("subject_uscc").and_then(|s| s.as_str()).map(str::to_string));
            }
        }
    }
    println!(
        "department cx://department/{node}/demo at node {node}: {records} penalty events from {origin} ({withdrawn} withdrawn by repairs)"
    );
    if let Some(s) = subject {
        let p = client
            .profile(pb::ProfileRequest { subject: s.clone() })
            .await?
            .into_inner();
        println!(
            "profile of {s} at node {node}: {} records, merged across origins",
            p.records.len()
        );
    }
    Ok(())
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = std::env::temp_dir().join(format!("cxnode-demo-{}", std::process::id()));
            std::fs::create_dir_all(&temp)?;
            temp.clone()
        }
    };
    // The nodes' logs go to a file, not the terminal: nodes starting and stopping together warn
    // about peers not up yet, which is expected and would scroll the ticks away.
    let log = match &args.dir {
        Some(d) => d.join("nodes.log"),
        None => std::env::temp_dir().join(format!("cxnode-demo-{}.log", std::process::id())),
    };
    crate::telemetry::init_to_file(&log, "info")?;
    println!("node logs: {}", log.display());
    let rt = super::runtime()?;
    let converged = rt.block_on(demo(&args, &dir))?;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<bool> {
    println!(
        "starting {} nodes ({:?}) on loopback in {}",
        args.nodes,
        args.topology,
        dir.display()
    );
    let fed = LocalFederation::start_with_admin(dir, args.nodes, args.topology).await?;
    if let Some(page) = fed.nodes.first().and_then(|n| n.admin) {
        println!(
            "status page of node {}: http://{page}/ (metrics at /metrics; every node has one: nodes.log lists them)",
            fed.nodes[0].region
        );
    }
    let names: Vec<String> = fed
        .nodes
        .iter()
        .map(|n| format!("{} {}", n.region, n.region.name_en()))
        .collect();
    println!("nodes: {}", names.join(", "));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut publishers = Vec::new();
    // Each province publishes PUBLISH_TICKS_PER_SECOND batches a second: every batch is a group
    // commit and a signed checkpoint that every other node verifies, so a large federation on one
    // machine publishes fewer, larger batches.
    let ticks = if fed_size_large(args.nodes) {
        1
    } else {
        PUBLISH_TICKS_PER_SECOND
    };
    let per_tick = (args.rate / ticks).max(1) as usize;
    let fed = std::sync::Arc::new(fed);
    // The national hub relays; it has no records of its own to publish.
    for i in (0..fed.nodes.len()).filter(|i| !fed.nodes[*i].region.is_national_hub()) {
        let fed = fed.clone();
        let mut stop = stop_rx.clone();
        let mut gen = RecordGenerator::new(i as u64 + 1, fed.nodes[i].region);
        publishers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / ticks));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let lines = (0..per_tick).map(|_| gen.next_line()).collect();
                if let Err(e) = fed.publish(i, lines).await {
                    eprintln!("publish at node {} failed: {e:#}", fed.nodes[i].region);
                }
            }
        }));
    }
    let started = Instant::now();
    let duration = (args.duration > 0).then(|| Duration::from_secs(args.duration));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => { println!("Ctrl-C: stopping publishers"); break; }
        }
        let heads = all_heads(&fed).await;
        print_tick(&fed, &heads, started.elapsed());
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    let _ = stop_tx.send(true);
    for p in publishers {
        let _ = p.await;
    }
    println!("publishers stopped; waiting for every node to hold every origin's whole log");
    let within = CONVERGE_WITHIN + CONVERGE_PER_NODE * fed.nodes.len() as u32;
    let converged = fed.wait_converged(within).await?;
    let heads = all_heads(&fed).await;
    print_tick(&fed, &heads, started.elapsed());
    let total: u64 = heads.first().map(|h| h.values().map(|v| v.0).sum()).unwrap_or(0);
    if converged {
        println!(
            "CONVERGED: all {} nodes hold identical logs (same head seq and hash) for {} origins, {total} entries",
            fed.nodes.len(),
            heads.first().map_or(0, |h| h.len())
        );
        show_department(&fed).await?;
    } else {
        println!("NOT CONVERGED within {within:?}");
    }
    let fed = std::sync::Arc::try_unwrap(fed).map_err(|_| anyhow::anyhow!("publishers still hold the federation"))?;
    fed.shutdown().await?;
    Ok(converged)
}
