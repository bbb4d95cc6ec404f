//! Running it for real (issue 12): a node that stops cleanly whatever it is doing when SIGTERM
//! comes, against a real `cxnode run` process.

use crate::common::{bin, cxnode_ok, free_port, rt, wait_for, Fed, NodeProc};
use cxnode::rpc::client::connect;
use cxnode::rpc::pb;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM {pid}");
}

#[test]
fn a_held_publish_stream_does_not_delay_the_stop() {
    let fed = Fed::new();
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let addr = node.addr();
    let publisher = fed.files("publisher-330000");
    let lines = std::fs::read_to_string(fed.records("held.jsonl", 5, 11)).expect("records");
    let operations: Vec<pb::Operation> = lines
        .lines()
        .map(|l| pb::Operation {
            json: l.as_bytes().to_vec().into(),
        })
        .collect();
    let pid = node.child.id();
    let rt = rt();
    let (requests, mut responses) = rt.block_on(async {
        let channel = connect(&addr, &publisher, None).await.expect("connect");
        let mut client = pb::publisher_client::PublisherClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::PublishRequest { operations }).await.expect("send");
        let mut responses = client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), responses.message()).await;
        assert!(
            matches!(first, Ok(Ok(Some(_)))),
            "the first batch is answered: {first:?}"
        );
        // The sender stays alive: the stream is held open, as a publisher between batches holds it.
        (tx, responses)
    });
    let started = Instant::now();
    sigterm(pid);
    let ended = rt.block_on(async { tokio::time::timeout(Duration::from_secs(15), responses.message()).await });
    let status = node.stop();
    let took = started.elapsed();
    eprintln!("stopped in {took:?} with a PublishStream held open; the stream ended with {ended:?}");
    assert!(status.success(), "the node exits cleanly: {status}");
    assert!(
        took < Duration::from_secs(10),
        "a held PublishStream delayed the stop to {took:?}"
    );
    match ended {
        Ok(Err(s)) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s}"),
        Ok(Ok(None)) => {}
        other => panic!("the held stream was not ended at the stop: {other:?}"),
    }
    drop(requests);
}

#[test]
fn sigterm_during_store_recovery_stops_the_node_cleanly() {
    let fed = Fed::new();
    let data = fed.path().join("data");
    let port = free_port();
    let node = NodeProc::start(&fed, &data, port);
    let file = fed.records("many.jsonl", 20_000, 5);
    assert!(crate::common::publish(&fed, &node.addr(), &file, &[]).status.success());
    assert!(node.stop().success());
    // Without its index and view the node rebuilds them from the journal before it serves.
    std::fs::remove_dir_all(data.join("index")).expect("remove index");
    std::fs::remove_dir_all(data.join("view")).expect("remove view");
    let config = fed.path().join(format!("node-{port}.toml"));
    let log = fed.path().join("recovering.log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(fed.path())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    // Rebuilding 20,000 records' index takes seconds: the signal comes in the middle of it.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    sigterm(child.id());
    let mut status = None;
    wait_for(
        "the node to stop after SIGTERM during recovery",
        Duration::from_secs(30),
        || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        },
    );
    let status = status.expect("exited");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("stopped in {:?}: {status}\n{text}", started.elapsed());
    assert!(
        status.success(),
        "SIGTERM during recovery must end the node cleanly, not kill it: {status}\n{text}"
    );
    assert!(
        text.contains("stopped during start-up") && !text.contains("node serving"),
        "the signal came during recovery and the node said so: {text}"
    );
    // The next start finishes the recovery and serves everything.
    let node = NodeProc::start_with(&fed, &config, port);
    let seq = highest_head(&fed, &node.addr());
    assert!(seq >= 20_000, "everything is served after the next start: head {seq}");
}

/// Every `deploy/**/*.toml`, with its absolute paths moved under `root` (where the files they
/// name are made, empty), as (path in the repository, rewritten text).
fn deploy_tomls(root: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut found = Vec::new();
    let mut dirs = vec![deploy];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("read deploy dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read toml");
            let moved = text.replace("= \"/", &format!("= \"{}/", root.display()));
            // The files a config names must exist for the loader: empty stand-ins.
            for line in moved.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                if ["ca", "cert", "key", "crl", "policy"].contains(&key) {
                    let path = value.trim().trim_matches('"');
                    if let Some(parent) = std::path::Path::new(path).parent() {
                        std::fs::create_dir_all(parent).expect("mkdir");
                    }
                    std::fs::write(path, b"").expect("stand-in file");
                }
            }
            (p, moved)
        })
        .collect()
}

#[test]
fn every_deploy_toml_loads_with_the_real_config_loader() {
    let root = tempfile::tempdir().expect("tempdir");
    let tomls = deploy_tomls(root.path());
    assert!(tomls.len() >= 5, "deploy configs found: {tomls:?}");
    for (path, text) in &tomls {
        let config = cxnode::config::Config::parse(text, root.path())
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        assert!(
            !config.peers.is_empty(),
            "{} has no [[peers]]: it would start an isolated node",
            path.display()
        );
        for p in &config.peers {
            assert_ne!(p.region, config.region, "{} peers with itself", path.display());
        }
    }
}

#[test]
fn the_compose_nodes_form_a_connected_federation() {
    let root = tempfile::tempdir().expect("tempdir");
    let compose =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/compose.yaml"))
            .expect("compose.yaml");
    let nodes: Vec<cxnode::config::Config> = deploy_tomls(root.path())
        .into_iter()
        .filter(|(p, _)| p.parent().is_some_and(|d| d.ends_with("compose")))
        .map(|(p, text)| {
            cxnode::config::Config::parse(&text, root.path()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    assert_eq!(nodes.len(), 3, "three compose nodes");
    let regions: std::collections::BTreeSet<_> = nodes.iter().map(|n| n.region).collect();
    for n in &nodes {
        assert!(
            compose.contains(&format!("  node-{}:", n.region)),
            "compose.yaml has a service node-{}",
            n.region
        );
        let peers: std::collections::BTreeSet<_> = n.peers.iter().map(|p| p.region).collect();
        let others: std::collections::BTreeSet<_> = regions.iter().copied().filter(|r| *r != n.region).collect();
        assert_eq!(peers, others, "node-{} peers with every other compose node", n.region);
        for p in &n.peers {
            assert_eq!(
                p.address,
                format!("node-{}:7443", p.region),
                "peers are dialled by service name"
            );
        }
    }
}

#[test]
fn the_compose_federation_converges_from_its_own_configs() {
    let fed = Fed::new();
    let regions = ["330000", "320000", "310000"];
    let ports: Vec<u16> = regions.iter().map(|_| free_port()).collect();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose");
    let mut nodes = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        // What make-certs.sh lays out: certs/<region>/ with ca.pem, crl.pem, node.pem, node.key,
        // the node certificate naming its service.
        let dir = fed.path().join(format!("certs-{region}"));
        let service = format!("node-{region}");
        cxnode_ok(
            fed.path(),
            &[
                "certs",
                "issue",
                "--ca-dir",
                "certs",
                "--kind",
                "node",
                "--region",
                region,
                "--dns",
                &service,
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--out",
                dir.to_str().expect("utf-8"),
                "--name",
                "node",
            ],
        );
        for f in ["ca.pem", "crl.pem"] {
            std::fs::copy(fed.certs().join(f), dir.join(f)).expect("copy ca/crl");
        }
        // The compose file's mounts, as rewritten paths; service names, as loopback ports.
        let mut text = std::fs::read_to_string(deploy.join(format!("node-{region}.toml"))).expect("compose toml");
        text = text
            .replace("/etc/cxnode/certs", dir.to_str().expect("utf-8"))
            .replace(
                "\"/data\"",
                &format!("\"{}\"", fed.path().join(format!("data-{region}")).display()),
            )
            .replace("0.0.0.0:7443", &format!("127.0.0.1:{}", ports[i]));
        for (j, other) in regions.iter().enumerate() {
            text = text.replace(&format!("node-{other}:7443"), &format!("127.0.0.1:{}", ports[j]));
        }
        let config = fed.path().join(format!("compose-{region}.toml"));
        std::fs::write(&config, text).expect("write config");
        nodes.push((region, config, ports[i]));
    }
    let procs: Vec<NodeProc> = nodes
        .iter()
        .map(|(_, c, p)| NodeProc::start_with(&fed, c, *p))
        .collect();
    let file = fed.records("compose.jsonl", 300, 21);
    assert!(crate::common::publish(&fed, &procs[0].addr(), &file, &[])
        .status
        .success());
    fed.issue(&["--kind", "operator", "--operator", "ops"]);
    // Every node holds Zhejiang's 300 records, by `cxnode status` (exit 0: nothing stalled,
    // forked or behind).
    for p in &procs {
        wait_for("the compose federation to converge", Duration::from_secs(60), || {
            let out = crate::common::cxnode(
                fed.path(),
                &[
                    "status",
                    "--node",
                    &p.addr(),
                    "--cert",
                    "certs/operator-ops.pem",
                    "--key",
                    "certs/operator-ops.key",
                    "--server-name",
                    "localhost",
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            // The origin's row: "330000  <local head> ... in sync".
            out.status.success()
                && text.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.first().is_some_and(|o| o.starts_with("330000"))
                        && f.get(1).and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 300)
                        && l.trim_end().ends_with("in sync")
                })
        });
    }
}

#[test]
fn the_health_probe_uses_the_nodes_own_config_and_says_why_it_fails() {
    let fed = Fed::new();
    let port = free_port();
    let node = NodeProc::start(&fed, &fed.path().join("data"), port);
    let config = fed.path().join(format!("node-{port}.toml"));
    let probe = || crate::common::cxnode(fed.path(), &["health", "--config", config.to_str().expect("utf-8")]);
    let out = probe();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("SERVING"),
        "a serving node: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.stop().success());
    let out = probe();
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a stopped node is not healthy");
    assert!(
        e.contains("cx://node/330000") && e.contains("not healthy") && e.contains("connect"),
        "{e}"
    );
}

#[test]
fn every_deploy_probe_asks_the_node_itself() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let read = |p: &str| std::fs::read_to_string(deploy.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // Each probe runs `cxnode health` on the config file its `cxnode run` reads.
    for (file, config) in [
        ("compose/compose.yaml", "/etc/cxnode/node.toml"),
        ("container/Containerfile", "/etc/cxnode/node.toml"),
        ("k8s/statefulset-330000.yaml", "/etc/cxnode/config/node.toml"),
    ] {
        let text = read(file);
        let probe = format!("\"cxnode\", \"health\", \"--config\", \"{config}\"");
        assert!(text.contains(&probe), "{file} probes with {probe}");
        assert!(
            !text.contains("/dev/tcp") && !text.contains("tcpSocket"),
            "{file} still has a bare TCP probe"
        );
    }
}

/// Runs a validation tool, or says it skipped when the tool is missing and CXNODE_REQUIRE_TOOLS
/// is unset (`.ci/run` installs every tool and sets it, so CI cannot skip).
fn tool(program: &str, args: &[std::ffi::OsString]) -> Option<(bool, String)> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) if std::env::var_os("CXNODE_REQUIRE_TOOLS").is_none() => {
            eprintln!("SKIPPED: {program} is not installed ({e}); see .ci/run for how to install it");
            None
        }
        Err(e) => panic!("{program} is required here (CXNODE_REQUIRE_TOOLS is set): {e}"),
    }
}

fn deploy_files(under: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(under);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Every Kubernetes manifest is valid against the Kubernetes schemas (`kubernetes-validate`,
/// from PyPI, which bundles them).
#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let manifests: Vec<_> = deploy_files("k8s", "yaml")
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    assert!(manifests.len() >= 4, "manifests: {manifests:?}");
    let mut args: Vec<std::ffi::OsString> = vec!["--strict".into()];
    args.extend(manifests.iter().map(|p| p.clone().into_os_string()));
    let Some((ok, text)) = tool("kubernetes-validate", &args) else {
        return;
    };
    assert!(ok, "manifests do not validate:\n{text}");
    for m in &manifests {
        let name = m.to_string_lossy();
        assert!(
            text.lines().any(|l| l.contains(&*name) && l.contains("passed")),
            "{name} was not validated:\n{text}"
        );
    }
}

/// The YAML files that are not Kubernetes objects (compose, kustomization) parse, and name what
/// the rest of deploy/ expects.
#[test]
fn the_compose_and_kustomization_files_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let check = "import sys, yaml\n\
        c = yaml.safe_load(open(sys.argv[1]))\n\
        assert sorted(c['services']) == ['node-310000', 'node-320000', 'node-330000'], c['services'].keys()\n\
        for s in c['services'].values(): assert s['healthcheck']['test'][1:3] == ['cxnode', 'health'], s\n\
        k = yaml.safe_load(open(sys.argv[2]))\n\
        import os\n\
        for r in k['resources']: assert os.path.exists(os.path.join(os.path.dirname(sys.argv[2]), r)), r\n\
        print('parsed')\n";
    let args = vec![
        "-c".into(),
        check.into(),
        root.join("compose/compose.yaml").into_os_string(),
        root.join("k8s/kustomization.yaml").into_os_string(),
    ];
    let Some((ok, text)) = tool("python3", &args) else {
        return;
    };
    if !ok && text.contains("No module named 'yaml'") && std::env::var_os("CXNODE_REQUIRE_TOOLS").is_none() {
        eprintln!("SKIPPED: PyYAML is not installed for python3 (.ci/run puts it in its venv)");
        return;
    }
    assert!(ok && text.contains("parsed"), "{text}");
}

/// The shell scripts pass shellcheck.
#[test]
fn the_shell_scripts_pass_shellcheck() {
    let mut scripts = deploy_files("scripts", "sh");
    scripts.extend(deploy_files("compose", "sh"));
    assert!(scripts.len() >= 3, "scripts: {scripts:?}");
    let args: Vec<std::ffi::OsString> = scripts.iter().map(|p| p.clone().into_os_string()).collect();
    let Some((ok, text)) = tool("shellcheck", &args) else {
        return;
    };
    assert!(ok, "shellcheck:\n{text}");
}

/// The systemd units pass `systemd-analyze verify` (with the binary they start where they say).
#[test]
fn the_systemd_units_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for unit in deploy_files("systemd", "service")
        .into_iter()
        .chain(deploy_files("systemd", "timer"))
    {
        let text = std::fs::read_to_string(&unit)
            .expect("unit")
            .replace("/usr/local/bin/cxnode", bin());
        let copy = dir.path().join(unit.file_name().expect("name"));
        std::fs::write(&copy, text).expect("write unit");
        units.push(copy.into_os_string());
    }
    assert!(units.len() >= 3, "units: {units:?}");
    let mut args: Vec<std::ffi::OsString> = vec!["verify".into()];
    args.extend(units);
    let Some((ok, text)) = tool("systemd-analyze", &args) else {
        return;
    };
    assert!(ok, "systemd-analyze verify:\n{text}");
}

/// Runs `deploy/scripts/<name> FROM TO` with sh.
fn script(name: &str, from: &std::path::Path, to: &std::path::Path) -> std::process::Output {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/scripts")
        .join(name);
    Command::new("sh").arg(path).arg(from).arg(to).output().expect(name)
}

/// The highest head a node at `addr` serves (of any origin), asked as Zhejiang's node.
fn highest_head(fed: &Fed, addr: &str) -> u64 {
    let files = fed.files("node-330000");
    let heads = rt().block_on(async {
        let channel = connect(addr, &files, None).await.expect("connect");
        pb::replication_client::ReplicationClient::new(channel)
            .heads(pb::HeadsRequest::default())
            .await
            .expect("heads")
            .into_inner()
    });
    heads.heads.iter().map(|h| h.seq).max().unwrap_or(0)
}

#[test]
fn a_backup_taken_while_publishing_restores_to_a_node_that_verifies() {
    let fed = Fed::new();
    let data = fed.path().join("data");
    let port = free_port();
    let node = NodeProc::start(&fed, &data, port);
    let first = fed.records("first.jsonl", 2_000, 31);
    assert!(crate::common::publish(&fed, &node.addr(), &first, &[]).status.success());
    // A backup while a second file is being published.
    let second = fed.records("second.jsonl", 20_000, 32);
    let addr = node.addr();
    let publishing = {
        let (dir, second, addr) = (fed.path().to_path_buf(), second.clone(), addr.clone());
        std::thread::spawn(move || {
            Command::new(bin())
                .args(["publish", "--node", &addr, "--file", second.to_str().expect("utf-8")])
                .args([
                    "--cert",
                    "certs/publisher-330000.pem",
                    "--key",
                    "certs/publisher-330000.key",
                ])
                .current_dir(dir)
                .output()
                .expect("publish")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let backup = fed.path().join("backup");
    let out = script("backup.sh", &data, &backup);
    assert!(
        out.status.success(),
        "backup.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(publishing.join().expect("publisher").status.success());
    assert!(node.stop().success());
    // Refused: restoring over a store.
    let out = script("restore.sh", &backup, &data);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let restored = fed.path().join("restored");
    let out = script("restore.sh", &backup, &restored);
    assert!(
        out.status.success(),
        "restore.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The restored store verifies offline, and a node on it serves at least what was
    // acknowledged before the backup began.
    crate::common::cxnode_ok(fed.path(), &["verify", "--data", restored.to_str().expect("utf-8")]);
    let port = free_port();
    let node = NodeProc::start(&fed, &restored, port);
    let seq = highest_head(&fed, &node.addr());
    assert!(
        seq >= 2_000,
        "the restored node holds what was acknowledged before the backup: {seq}"
    );
    assert!(node.stop().success());
}

/// The image (validated, not run: no container runtime runs here): a numeric non-root user, OCI
/// labels, fully qualified and version-pinned base images, the node as PID 1 with its probe.
#[test]
fn the_container_image_is_non_root_labelled_and_pinned() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/Containerfile"),
    )
    .expect("Containerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build and a runtime stage: {froms:?}");
    for f in &froms {
        let image = f.split_whitespace().nth(1).expect("image");
        assert!(image.starts_with("docker.io/"), "fully qualified: {image}");
        let tag = image.rsplit(':').next().expect("tag");
        assert!(
            tag != "latest" && tag != "1-bookworm" && !image.ends_with("/rust"),
            "pinned: {image}"
        );
    }
    assert!(
        text.lines().any(|l| l.trim() == "USER 10001:10001"),
        "numeric non-root user"
    );
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
    ] {
        assert!(text.contains(label), "label {label}");
    }
    assert!(text.contains("ENTRYPOINT [\"cxnode\"]") && text.contains("STOPSIGNAL SIGTERM"));
    // The build context is an allow-list: nothing but what the build copies (no key, store or
    // target/ can reach a layer), and everything the build copies.
    let ignore = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/Containerfile.dockerignore"),
    )
    .expect("dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "everything is excluded first");
    for copied in text
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
    {
        let words: Vec<&str> = copied.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                rules.contains(&format!("!{source}").as_str()),
                "COPY {source} is let into the build context"
            );
        }
    }
}
