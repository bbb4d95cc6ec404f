//! Multi-host: three `cxnode` processes in three network namespaces joined by a bridge (in a
//! fourth namespace), each reaching the others only over its veth. One node's link is cut while
//! records keep being published everywhere, then healed; every node must end with identical,
//! gap-free logs that verify offline. Skips, saying why, only where namespaces cannot be created.

use crate::common::{bin, cxnode_ok, wait_for, Fed};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const REGIONS: [&str; 3] = ["330000", "320000", "310000"];
/// When set (as `.ci/run` does), being unable to create namespaces fails the test.
const REQUIRE_NETNS_VAR: &str = "CXNODE_REQUIRE_NETNS";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one test run; deleted (with their links) on drop.
struct Net {
    names: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn addr(i: usize) -> String {
    format!("10.213.{}.{}", std::process::id() % 200, i + 1)
}

fn build_net(tag: &str) -> Result<Net, String> {
    let bridge_ns = format!("cxbr{tag}");
    let mut net = Net {
        names: vec![bridge_ns.clone()],
    };
    ip(&["netns", "add", &bridge_ns])?;
    ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
    for i in 0..3 {
        let ns = format!("cx{tag}{i}");
        ip(&["netns", "add", &ns])?;
        net.names.push(ns.clone());
        let (inner, outer) = (format!("cxv{tag}{i}"), format!("cxb{tag}{i}"));
        ip(&[
            "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns", &bridge_ns,
        ])?;
        ip(&["-n", &bridge_ns, "link", "set", &outer, "master", "br0"])?;
        ip(&["-n", &bridge_ns, "link", "set", &outer, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", addr(i)), "dev", &inner])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    Ok(net)
}

fn in_ns(ns: &str, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, bin()])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

fn creds(region: &str) -> Vec<String> {
    [
        "--ca",
        "certs/ca.pem",
        "--cert",
        &format!("certs/publisher-{region}.pem"),
        "--key",
        &format!("certs/publisher-{region}.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Heads of the node in `ns` as origin -> (seq, hash), asked from inside its namespace; None if
/// it does not answer.
fn try_heads(fed: &Fed, ns: &str) -> Option<BTreeMap<String, (u64, String)>> {
    // Asked with the host's own node certificate: the policy lets nodes read heads.
    let i = ns.chars().last().and_then(|c| c.to_digit(10)).expect("namespace index") as usize;
    let (cert, key) = (
        format!("certs/host-{}.pem", REGIONS[i]),
        format!("certs/host-{}.key", REGIONS[i]),
    );
    let out = in_ns(
        ns,
        fed.path(),
        &[
            "heads",
            "--node",
            "127.0.0.1:7443",
            "--ca",
            "certs/ca.pem",
            "--cert",
            &cert,
            "--key",
            &key,
            "--server-name",
            "localhost",
        ],
    )
    .output()
    .expect("heads runs");
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["origin"].as_str().unwrap_or("").to_string(),
                    (
                        v["seq"].as_u64().unwrap_or(0),
                        v["head_hash"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .collect(),
    )
}

fn heads(fed: &Fed, ns: &str) -> BTreeMap<String, (u64, String)> {
    try_heads(fed, ns).unwrap_or_default()
}

fn publish(fed: &Fed, ns: &str, region: &str, seed: u64) {
    let file = fed.path().join(format!("netns-{region}-{seed}.jsonl"));
    let records = cxnode_ok(
        fed.path(),
        &["gen", "--region", region, "--count", "200", "--seed", &seed.to_string()],
    );
    std::fs::write(&file, records).expect("write");
    let mut args = vec![
        "publish".to_string(),
        "--node".into(),
        "127.0.0.1:7443".into(),
        "--server-name".into(),
        "localhost".into(),
        "--file".into(),
        file.display().to_string(),
    ];
    args.extend(creds(region));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_ns(ns, fed.path(), &args).output().expect("publish runs");
    assert!(
        out.status.success(),
        "publish in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn three_hosts_converge_after_a_cut_link_heals() {
    let tag = format!("{}", std::process::id() % 100_000);
    let net = match build_net(&tag) {
        Ok(n) => n,
        // CI can create namespaces (it runs as root with iproute2): there a failure here is a
        // failure, never a silent skip.
        Err(e) if std::env::var_os(REQUIRE_NETNS_VAR).is_some() => {
            panic!("{REQUIRE_NETNS_VAR} is set but network namespaces cannot be created: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED three_hosts_converge_after_a_cut_link_heals: network namespaces cannot be created here ({e}); set {REQUIRE_NETNS_VAR}=1 to make this a failure"
            );
            return;
        }
    };
    let nss: Vec<String> = net.names[1..].to_vec();
    let fed = Fed::new();
    for (i, r) in REGIONS.iter().enumerate() {
        if *r != "330000" {
            fed.issue(&["--kind", "publisher", "--region", r]);
        }
        fed.issue(&[
            "--kind",
            "node",
            "--region",
            r,
            "--name",
            &format!("host-{r}"),
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--ip",
            &addr(i),
        ]);
    }
    let mut nodes: Vec<Child> = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        let mut text = format!(
            "[node]\nregion = \"{r}\"\nlisten = \"0.0.0.0:7443\"\ndata_dir = \"netns-data-{r}\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/host-{r}.pem\"\nkey = \"certs/host-{r}.key\"\n\
             [sync]\nheartbeat_ms = 300\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nsilence_max_ms = 2000\n"
        );
        for (j, p) in REGIONS.iter().enumerate() {
            if j != i {
                text.push_str(&format!(
                    "[[peers]]\naddress = \"{}:7443\"\nregion = \"{p}\"\n",
                    addr(j)
                ));
            }
        }
        let config = fed.path().join(format!("netns-{r}.toml"));
        std::fs::write(&config, text).expect("config");
        let log = std::fs::File::create(fed.path().join(format!("netns-{r}.log"))).expect("log");
        nodes.push(
            in_ns(
                &nss[i],
                fed.path(),
                &["run", "--config", config.to_str().expect("utf-8")],
            )
            .stderr(log)
            .spawn()
            .expect("node starts"),
        );
    }
    for (i, ns) in nss.iter().enumerate() {
        wait_for(
            &format!("node {} to serve", REGIONS[i]),
            Duration::from_secs(60),
            || try_heads(&fed, ns).is_some(),
        );
    }
    let converged = |want: u64| {
        let all: Vec<_> = nss.iter().map(|ns| heads(&fed, ns)).collect();
        REGIONS.iter().all(|r| {
            all.iter()
                .all(|h| h.get(*r).map(|x| x.0) == Some(want) && h.get(*r) == all[0].get(*r))
        })
    };
    for (i, r) in REGIONS.iter().enumerate() {
        publish(&fed, &nss[i], r, 1);
    }
    wait_for("the three hosts to converge", Duration::from_secs(60), || {
        converged(200)
    });

    // Cut host 2 off; everyone keeps publishing.
    let cut = format!("cxb{tag}2");
    ip(&["-n", &net.names[0], "link", "set", &cut, "down"]).expect("cut the link");
    for (i, r) in REGIONS.iter().enumerate() {
        publish(&fed, &nss[i], r, 2);
    }
    std::thread::sleep(Duration::from_secs(2));
    let isolated = heads(&fed, &nss[2]);
    assert_eq!(
        isolated.get("330000").map(|x| x.0),
        Some(200),
        "the cut host cannot see new entries: {isolated:?}"
    );
    assert_eq!(
        isolated.get("310000").map(|x| x.0),
        Some(400),
        "it still publishes locally"
    );

    ip(&["-n", &net.names[0], "link", "set", &cut, "up"]).expect("heal the link");
    wait_for("convergence after the link heals", Duration::from_secs(90), || {
        converged(400)
    });

    for mut n in nodes {
        let _ = Command::new("kill").arg("-TERM").arg(n.id().to_string()).status();
        let _ = n.wait();
    }
    for r in REGIONS {
        let report = cxnode_ok(fed.path(), &["verify", "--data", &format!("netns-data-{r}")]);
        assert!(report.contains("OK: store verified"), "{r}: {report}");
        for o in REGIONS {
            assert!(
                report.contains(&format!("origin {o}: 400 entries")),
                "{r} holds every entry of {o} once, no gap: {report}"
            );
        }
    }
    drop(net);
}
