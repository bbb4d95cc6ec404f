//! `cxnode bench sync --mesh`: N node processes in a full mesh on loopback, every province
//! publishing (the rate spread over all origins), with feeder choice off (every peer streams every
//! origin, duplicates dropped at the store) and on (one feeder per origin) in turn, in the same
//! run. Per mode: entries received per entry needed (the duplicate ratio), duplicates dropped,
//! bytes received, the live latency of the first origin's entries as seen on Sync streams from two
//! other nodes, and how long the federation took to converge once publishing stopped. Not a test.

use super::bench_kit::{
    filesystem_of, free_port, median, observe, operator_status, percentile_ms, publish_paced, report, start_node_keys,
    NodeProcess,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// Provinces of the mesh, in order (the observer's 440000 is not among them).
pub(super) const MESH_REGIONS: [&str; 8] = [
    "330000", "320000", "310000", "110000", "510000", "420000", "370000", "120000",
];
/// The nodes' heartbeat: the default of `sync.heartbeat_ms`.
const MESH_HEARTBEAT_MS: u64 = 1000;
/// How long a run may take to converge once publishing stops.
const CONVERGE_WITHIN: Duration = Duration::from_secs(180);

/// What to run: `nodes` processes, `rate` records/s over all origins for `seconds`, `runs` of
/// each mode.
pub(super) struct Mesh {
    pub(super) nodes: usize,
    pub(super) runs: usize,
    pub(super) rate: u64,
    pub(super) seconds: u64,
    pub(super) json: bool,
}

struct MeshRun {
    received: u64,
    needed: u64,
    duplicates: u64,
    bytes: u64,
    /// Feeder changes at all nodes (after the first choice).
    switches: u64,
    p50_ms: f64,
    p99_ms: f64,
    converge_s: f64,
}

fn one_run(
    args: &Mesh,
    work: &Path,
    certs: &Path,
    rt: &tokio::runtime::Runtime,
    feeder_choice: bool,
) -> anyhow::Result<MeshRun> {
    let regions = &MESH_REGIONS[..args.nodes];
    let n = regions.len();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut nodes: Vec<NodeProcess> = Vec::new();
    // The default heartbeat (feeder choice judges feeders on announced heads).
    let sync_keys = format!("feeder_choice = {feeder_choice}\nheartbeat_ms = {MESH_HEARTBEAT_MS}\n");
    for i in 0..n {
        let data = work.join(format!("data-mesh-{i}"));
        let _ = std::fs::remove_dir_all(&data);
        let peers: Vec<(&str, u16)> = (0..n).filter(|j| *j != i).map(|j| (regions[j], ports[j])).collect();
        nodes.push(start_node_keys(
            work, &data, ports[i], regions[i], &peers, "", &sync_keys,
        )?);
    }
    // Live means steady state: publishing starts once every link of every node is up.
    rt.block_on(async {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            let mut up = true;
            for port in &ports {
                up &= match operator_status(certs, *port).await {
                    Ok(s) => s.peers.iter().all(|p| p.connected),
                    Err(_) => false,
                };
            }
            if up {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the mesh's links did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let per_origin = (args.rate / n as u64).max(1);
    let total = per_origin * args.seconds;
    let until = Instant::now() + Duration::from_secs(args.seconds * 3 + 20);
    let result = rt.block_on(async {
        let watch: Vec<_> = [1, 2 % n]
            .into_iter()
            .map(|i| {
                tokio::spawn(observe(
                    certs.to_path_buf(),
                    ports[i],
                    MESH_REGIONS[0],
                    total as usize,
                    until,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let publishers: Vec<_> = (0..n)
            .map(|i| {
                let certs = certs.to_path_buf();
                let (port, region) = (ports[i], regions[i]);
                tokio::spawn(
                    async move { publish_paced(&certs, port, region, per_origin, total, 500 + i as u64).await },
                )
            })
            .collect();
        for p in publishers {
            p.await??;
        }
        let stopped = Instant::now();
        // Converged: every node holds `total` entries of every origin.
        loop {
            let mut done = true;
            for port in &ports {
                let s = operator_status(certs, *port).await?;
                done &= s.origins.len() == n && s.origins.iter().all(|o| o.local_head >= total);
            }
            if done {
                break;
            }
            anyhow::ensure!(
                stopped.elapsed() < CONVERGE_WITHIN,
                "the mesh did not converge within {CONVERGE_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let converge_s = stopped.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        for w in watch {
            latencies.extend(w.await??);
        }
        let mut run = MeshRun {
            received: 0,
            needed: 0,
            duplicates: 0,
            bytes: 0,
            switches: 0,
            p50_ms: percentile_ms(&latencies, 0.5),
            p99_ms: percentile_ms(&latencies, 0.99),
            converge_s,
        };
        for port in &ports {
            let s = operator_status(certs, *port).await?;
            for p in &s.peers {
                run.received += p.entries_received;
                run.duplicates += p.duplicates_dropped;
                run.bytes += p.bytes_received;
            }
            run.switches += s.origins.iter().map(|o| o.feeder_switches).sum::<u64>();
            run.needed += s
                .origins
                .iter()
                .filter(|o| o.origin != s.region)
                .map(|o| o.local_head)
                .sum::<u64>();
        }
        anyhow::Ok(run)
    });
    for node in nodes {
        node.stop()?;
    }
    for i in 0..n {
        let _ = std::fs::remove_dir_all(work.join(format!("data-mesh-{i}")));
    }
    result
}

pub(super) fn mesh(args: &Mesh, work: &Path, certs: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let n = args.nodes;
    if !args.json {
        println!(
            "# bench sync --mesh: {n} node processes in a full mesh, {} records/s spread over {n} origins for {} s, heartbeat {MESH_HEARTBEAT_MS} ms, feeder choice off and on in turn; data on {}",
            args.rate,
            args.seconds,
            filesystem_of(work)
        );
    }
    let mut by_mode: [Vec<MeshRun>; 2] = [Vec::new(), Vec::new()];
    for run in 0..args.runs {
        for (m, on) in [false, true].into_iter().enumerate() {
            let r = one_run(args, work, certs, rt, on)?;
            let ratio = r.received as f64 / r.needed.max(1) as f64;
            report(
                args.json,
                format!(
                    "run {run} feeder choice {}: received {} entries for {} needed ({ratio:.2}x), {} duplicates dropped, {} feeder switches, {:.1} MB received; live p50 {:.1} ms, p99 {:.1} ms; converged {:.1} s after publishing stopped",
                    if on { "on " } else { "off" },
                    r.received,
                    r.needed,
                    r.duplicates,
                    r.switches,
                    r.bytes as f64 / 1e6,
                    r.p50_ms,
                    r.p99_ms,
                    r.converge_s
                ),
                serde_json::json!({
                    "bench": "sync_mesh", "run": run, "feeder_choice": on, "nodes": n,
                    "rate": args.rate, "received": r.received, "needed": r.needed,
                    "ratio": ratio, "duplicates": r.duplicates, "switches": r.switches, "bytes": r.bytes,
                    "live_p50_ms": r.p50_ms, "live_p99_ms": r.p99_ms, "converge_s": r.converge_s,
                }),
            );
            by_mode[m].push(r);
        }
    }
    let summary = |runs: &[MeshRun]| {
        let mut ratio: Vec<f64> = runs
            .iter()
            .map(|r| r.received as f64 / r.needed.max(1) as f64)
            .collect();
        let mut p99: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
        let mut p50: Vec<f64> = runs.iter().map(|r| r.p50_ms).collect();
        let mut mb: Vec<f64> = runs.iter().map(|r| r.bytes as f64 / 1e6).collect();
        (median(&mut ratio), median(&mut p50), median(&mut p99), median(&mut mb))
    };
    let (off, on) = (summary(&by_mode[0]), summary(&by_mode[1]));
    report(
        args.json,
        format!(
            "medians of {} runs: received per needed off {:.2}x, on {:.2}x; live p50 off {:.1} ms, on {:.1} ms; p99 off {:.1} ms, on {:.1} ms (on/off {:.2}); MB received off {:.1}, on {:.1} (on/off {:.2})",
            args.runs,
            off.0,
            on.0,
            off.1,
            on.1,
            off.2,
            on.2,
            on.2 / off.2,
            off.3,
            on.3,
            on.3 / off.3
        ),
        serde_json::json!({
            "bench": "sync_mesh", "summary": true, "runs": args.runs, "nodes": n, "rate": args.rate,
            "ratio_off": off.0, "ratio_on": on.0, "live_p50_off_ms": off.1, "live_p50_on_ms": on.1,
            "live_p99_off_ms": off.2, "live_p99_on_ms": on.2, "p99_on_over_off": on.2 / off.2,
            "mb_off": off.3, "mb_on": on.3, "bytes_on_over_off": on.3 / off.3,
        }),
    );
    Ok(())
}
