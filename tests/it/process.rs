//! The real binary end to end: certificates made by `cxnode certs`, a node from `cxnode run`,
//! records from `cxnode publish` over mutual TLS, `cxnode verify`, SIGTERM and kill -9.

use crate::common::{cxnode, cxnode_ok, free_port, wait_for, Fed, NodeProc};
use cxnode::pki::TlsFiles;
use cxnode::record::{RecordGenerator, Region};
use cxnode::rpc::client::connect;
use cxnode::rpc::pb;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary is not json ({e}): {stdout}"))
}

/// Appended operations of every kind in a `publish --json` summary.
fn appended_total(summary: &serde_json::Value) -> u64 {
    summary["appended"]
        .as_object()
        .expect("map")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum()
}

fn publish_json(fed: &Fed, node: &NodeProc, file: &std::path::Path, cert: &str) -> std::process::Output {
    cxnode(
        fed.path(),
        &[
            "publish",
            "--node",
            &node.addr(),
            "--file",
            file.to_str().expect("utf-8 path"),
            "--ca",
            "certs/ca.pem",
            "--cert",
            &format!("certs/{cert}.pem"),
            "--key",
            &format!("certs/{cert}.key"),
            "--batch",
            "250",
            "--region",
            "330000",
            "--json",
        ],
    )
}

#[test]
fn publish_over_mtls_then_republish_is_all_duplicates_and_the_store_verifies() {
    let fed = Fed::new();
    let data = fed.path().join("data");
    let node = NodeProc::start(&fed, &data, free_port());
    let file = fed.records("records.jsonl", 3000, 1);

    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert!(
        out.status.success(),
        "publish failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    let first = summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(first["lines"], 3000);
    let appended = appended_total(&first);
    assert_eq!(
        appended, 3000,
        "every generated line is new or a valid amendment: {first}"
    );
    assert_eq!(first["last_seq"], 3000);
    assert!(
        first["appended"]["repair"].as_u64().unwrap_or(0) > 0,
        "the generator makes repairs: {first}"
    );
    assert!(
        first["appended"]["amend"].as_u64().unwrap_or(0) > 0,
        "the generator makes amendments: {first}"
    );

    let out = publish_json(&fed, &node, &file, "publisher-330000");
    let again = summary(&String::from_utf8_lossy(&out.stdout));
    // Re-publishing is idempotent: every line is a duplicate, except the first versions of amended
    // records, which a newer version has superseded.
    let amended = first["appended"]["amend"].as_u64().expect("amendments");
    assert_eq!(again["duplicates"], 3000 - amended, "{again}");
    assert_eq!(again["rejected"]["stale_version"], amended, "{again}");
    assert_eq!(again["appended"], serde_json::json!({}));
    assert_eq!(out.status.code(), Some(2), "stale lines count as rejected");

    fed.issue(&["--kind", "operator", "--operator", "ops"]);
    let table = cxnode_ok(
        fed.path(),
        &[
            "status",
            "--node",
            &node.addr(),
            "--cert",
            "certs/operator-ops.pem",
            "--key",
            "certs/operator-ops.key",
            "--server-name",
            "localhost",
        ],
    );
    assert!(table.contains("node 330000") && table.contains("in sync"), "{table}");
    assert!(table.contains("fed by") && table.contains("(this node)"), "{table}");
    assert!(table.contains("certificate cx://node/330000 expires in 36"), "{table}");
    let status = node.stop();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let report = cxnode_ok(fed.path(), &["verify", "--data", data.to_str().expect("utf-8")]);
    assert!(report.contains("OK: store verified"), "{report}");
    assert!(report.contains("origin 330000: 3000 entries"), "{report}");
}

#[test]
fn bad_lines_are_rejected_one_by_one_with_reason_field_and_line() {
    let fed = Fed::new();
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let mut gen = RecordGenerator::new(5, Region::parse("330000").expect("province"));
    let mut lines = Vec::new();
    for _ in 0..10 {
        lines.push(gen.next_line());
    }
    // Line 4: a wrong USCC check character; line 8: not JSON at all.
    let mut bad: serde_json::Value = serde_json::from_str(&lines[3]).expect("json");
    bad["data_source_unit_uscc"] = "91110000600037341N".into();
    lines[3] = bad.to_string();
    lines[7] = "{not json".to_string();
    let file = fed.path().join("mixed.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");

    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert_eq!(
        out.status.code(),
        Some(2),
        "some lines rejected -> exit 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    let appended = appended_total(&s);
    assert_eq!(appended, 8, "the good lines are not held back by the bad ones: {s}");
    assert_eq!(s["rejected"]["uscc_bad_check_digit"], 1);
    assert_eq!(s["rejected"]["invalid_json"], 1);
    let rejects = std::fs::read_to_string(fed.path().join("mixed.jsonl.rejects.jsonl")).expect("rejects file");
    let rows: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect();
    assert_eq!(rows.len(), 2, "{rejects}");
    assert_eq!(rows[0]["line"], 4);
    assert_eq!(rows[0]["reason"], "uscc_bad_check_digit");
    assert_eq!(rows[0]["field"], "data_source_unit_uscc");
    assert_eq!(rows[1]["line"], 8);
    assert_eq!(rows[1]["reason"], "invalid_json");
}

/// Publishes through the library client, one batch at a time, recording every ack, until the
/// node goes away. Returns {(seq) -> entry hash} of everything acknowledged, and the lines sent.
async fn publish_until_killed(addr: String, files: TlsFiles, seed: u64) -> (BTreeMap<u64, Vec<u8>>, Vec<String>) {
    let mut acked = BTreeMap::new();
    let mut sent = Vec::new();
    let Ok(channel) = connect(&addr, &files, Some("localhost")).await else {
        return (acked, sent);
    };
    let mut client = pb::publisher_client::PublisherClient::new(channel);
    let mut gen = RecordGenerator::new(seed, Region::parse("330000").expect("province"));
    for _ in 0..2000 {
        let lines: Vec<String> = (0..200).map(|_| gen.next_line()).collect();
        let operations = lines
            .iter()
            .map(|l| pb::Operation {
                json: l.clone().into_bytes().into(),
            })
            .collect();
        match client.publish(pb::PublishRequest { operations }).await {
            Ok(resp) => {
                for r in resp.into_inner().results {
                    match r.outcome {
                        Some(pb::operation_result::Outcome::Appended(a)) => {
                            acked.insert(a.seq, a.entry_hash.to_vec());
                        }
                        other => panic!("unexpected outcome before the kill: {other:?}"),
                    }
                }
                sent.extend(lines);
            }
            Err(_) => return (acked, sent),
        }
    }
    (acked, sent)
}

#[test]
fn kill_9_mid_publish_loses_nothing_acknowledged() {
    let fed = Fed::new();
    let data = fed.path().join("data");
    let port = free_port();
    let node = NodeProc::start(&fed, &data, port);
    let files = TlsFiles {
        ca: fed.certs().join("ca.pem"),
        cert: fed.certs().join("publisher-330000.pem"),
        key: fed.certs().join("publisher-330000.key"),
        crl: None,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let publisher = rt.spawn(publish_until_killed(node.addr(), files.clone(), 77));
    // Kill once a good number of batches are acknowledged: somewhere inside a group commit.
    let seg = data.join("journal");
    wait_for("some records to reach the journal", Duration::from_secs(120), || {
        std::fs::read_dir(&seg)
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                    .sum::<u64>()
            })
            .unwrap_or(0)
            > 2_000_000
    });
    node.kill9();
    let (acked, sent) = rt.block_on(publisher).expect("publisher task");
    assert!(
        acked.len() >= 1000,
        "enough was acknowledged before the kill to make the test mean something: {}",
        acked.len()
    );

    let status = cxnode(fed.path(), &["verify", "--data", data.to_str().expect("utf-8")]);
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "verify after kill -9: {report}");

    // Restart and re-send every acknowledged line: each must come back as a duplicate with the same
    // seq and entry hash, i.e. the node still holds exactly what it acknowledged.
    let node = NodeProc::start(&fed, &data, port);
    let acked_lines: Vec<String> = sent.into_iter().take(acked.len()).collect();
    let results = rt.block_on(async {
        let channel = connect(&node.addr(), &files, Some("localhost"))
            .await
            .expect("connect after restart");
        let mut client = pb::publisher_client::PublisherClient::new(channel);
        let mut results = Vec::new();
        for chunk in acked_lines.chunks(500) {
            let operations = chunk
                .iter()
                .map(|l| pb::Operation {
                    json: l.clone().into_bytes().into(),
                })
                .collect();
            results.extend(
                client
                    .publish(pb::PublishRequest { operations })
                    .await
                    .expect("publish")
                    .into_inner()
                    .results,
            );
        }
        results
    });
    assert_eq!(results.len(), acked.len());
    // The batch in flight at the kill may be durable without its ack: regenerate it too.
    let mut gen = RecordGenerator::new(77, Region::parse("330000").expect("province"));
    let generated: Vec<String> = (0..acked.len() + 200).map(|_| gen.next_line()).collect();
    assert_eq!(
        generated[..acked.len()],
        acked_lines[..],
        "the generator is deterministic"
    );
    let id_of = |line: &str| serde_json::from_str::<serde_json::Value>(line).expect("json")["record_id"].clone();
    for (i, (r, (seq, hash))) in results.iter().zip(&acked).enumerate() {
        match &r.outcome {
            Some(pb::operation_result::Outcome::Duplicate(a)) => {
                assert_eq!(
                    (a.seq, a.entry_hash.to_vec()),
                    (*seq, hash.clone()),
                    "acknowledged entry changed after kill -9"
                );
            }
            // A version that a later acknowledged amendment superseded is stale, not lost.
            Some(pb::operation_result::Outcome::Rejected(rej)) if rej.reason == "stale_version" => {
                let id = id_of(&acked_lines[i]);
                assert!(
                    generated[i + 1..].iter().any(|l| id_of(l) == id),
                    "seq {seq} reported stale with no later amendment"
                );
            }
            other => panic!("acknowledged seq {seq} is not in the log after kill -9: {other:?}"),
        }
    }
    assert!(node.stop().success());
}

/// The merged view's position as the store holds it (the node must not be running).
fn view_entries(data: &std::path::Path) -> u64 {
    let db = cxnode::store::index::open_sled(&data.join("view"), 8 << 20, 1000).expect("view db");
    let view = cxnode::store::view::View::open(&db, &data.join("view"), Default::default()).expect("view");
    view.position().entries
}

/// Waits until a running node's merged view holds at least `target` entries, asking its
/// `SyncStatus` without a pause (a catch-up batch takes milliseconds; the admin port's metrics
/// are a second stale by design).
async fn wait_view_entries(addr: String, files: TlsFiles, target: u64) {
    let channel = connect(&addr, &files, Some("localhost")).await.expect("connect");
    let mut client = pb::operations_client::OperationsClient::new(channel);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .sync_status(pb::SyncStatusRequest {})
            .await
            .expect("SyncStatus")
            .into_inner();
        if status.index.expect("index status").indexed_entries >= target {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "the view never passed {target} entries"
        );
    }
}

#[test]
fn the_indexer_killed_twenty_times_mid_indexing_ends_equal_to_a_fresh_rebuild() {
    let fed = Fed::new();
    let data = fed.path().join("data");
    let port = free_port();
    // Small catch-up batches, so a rebuild is many batches long, and sled pages written every
    // 20 ms, so a kill mid-indexing leaves a position short of the end however fast this machine
    // indexes (with sled's default second, a fast machine rebuilt everything between two flushes).
    let config = fed.path().join("node-small-batches.toml");
    let text = format!(
        "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
         [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\n\
         [store]\nindex_batch_entries_max = 1000\nindex_flush_ms = 20\n\
         [log]\nlevel = \"info\"\n",
        data.display()
    );
    std::fs::write(&config, text).expect("config");
    let node = NodeProc::start_with(&fed, &config, port);
    let total = 20_000u64;
    let file = fed.records("records.jsonl", total, 11);
    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.stop().success());
    assert_eq!(view_entries(&data), total, "a clean stop leaves the view caught up");
    // Without its indexes the node rebuilds the chain index at open and the merged view behind
    // it, while serving. Kill it at random instants of that rebuild: in even rounds after a random
    // delay (mostly while it opens), in odd rounds once its view has passed a random number of
    // entries (as the node reports it), so that kills land mid-indexing on a machine of any speed.
    std::fs::remove_dir_all(data.join("index")).expect("rm index");
    std::fs::remove_dir_all(data.join("view")).expect("rm view");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    fed.issue(&["--kind", "operator", "--operator", "ops"]);
    let operator = TlsFiles {
        ca: fed.certs().join("ca.pem"),
        cert: fed.certs().join("operator-ops.pem"),
        key: fed.certs().join("operator-ops.key"),
        crl: None,
    };
    let mut seen = Vec::new();
    for round in 0..20 {
        let node = NodeProc::start_with(&fed, &config, port);
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        } else {
            let target = rng.random_range(total / 10..total * 9 / 10);
            rt.block_on(wait_view_entries(node.addr(), operator.clone(), target));
        }
        node.kill9();
        seen.push(view_entries(&data));
    }
    assert!(
        seen.iter().any(|n| *n > 0 && *n < total),
        "some kills landed mid-indexing: positions seen {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the view only moves forward: {seen:?}"
    );
    let node = NodeProc::start_with(&fed, &config, port);
    assert!(node.stop().success());
    assert_eq!(view_entries(&data), total);
    let report = cxnode_ok(fed.path(), &["verify", "--data", data.to_str().expect("utf-8")]);
    assert!(report.contains("OK: store verified"), "{report}");
    assert!(
        report.contains(&format!("merged view: {total} entries indexed (0 undecodable)")),
        "{report}"
    );
}

#[test]
fn wrong_callers_are_refused_with_the_right_error() {
    let fed = Fed::new();
    fed.issue(&["--kind", "department", "--region", "330000", "--dept", "amr"]);
    fed.issue(&["--kind", "publisher", "--region", "320000"]);
    fed.issue(&[
        "--kind",
        "publisher",
        "--region",
        "330000",
        "--name",
        "revoked-publisher",
    ]);
    fed.issue(&[
        "--kind",
        "publisher",
        "--region",
        "330000",
        "--name",
        "expired-publisher",
        "--not-before",
        "2020-01-01T00:00:00Z",
        "--not-after",
        "2020-06-01T00:00:00Z",
    ]);
    // A second, foreign CA with a publisher certificate that claims the right identity.
    cxnode_ok(fed.path(), &["certs", "init", "--dir", "foreign"]);
    cxnode_ok(
        fed.path(),
        &[
            "certs",
            "issue",
            "--ca-dir",
            "foreign",
            "--kind",
            "publisher",
            "--region",
            "330000",
            "--out",
            "certs",
            "--name",
            "foreign-publisher",
        ],
    );

    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let file = fed.records("few.jsonl", 5, 3);
    let stderr_of = |cert: &str| {
        let out = publish_json(&fed, &node, &file, cert);
        assert!(!out.status.success(), "{cert} must be refused, but publish succeeded");
        String::from_utf8_lossy(&out.stderr).to_lowercase()
    };

    let e = stderr_of("department-330000-amr");
    assert!(
        e.contains("permissiondenied") || e.contains("permission"),
        "department: {e}"
    );
    assert!(
        e.contains("cx://department/330000/amr") && e.contains("may not publish"),
        "department: {e}"
    );
    let e = stderr_of("publisher-320000");
    assert!(
        e.contains("cx://publisher/320000") && e.contains("may not publish"),
        "other region: {e}"
    );
    let e = stderr_of("foreign-publisher");
    assert!(
        e.contains("unknown") || e.contains("issuer") || e.contains("federation ca"),
        "foreign CA: {e}"
    );
    let e = stderr_of("expired-publisher");
    assert!(e.contains("expired"), "expired: {e}");

    // Good before revocation, refused after (the node reloads the CRL on its own).
    let out = publish_json(&fed, &node, &file, "revoked-publisher");
    assert!(
        out.status.success(),
        "before revocation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl_before = std::fs::read(fed.path().join("certs/crl.pem")).expect("crl");
    fed.revoke("revoked-publisher");
    let mut last = String::new();
    wait_for(
        "the node to reload the CRL and refuse the revoked certificate",
        Duration::from_secs(30),
        || {
            // A call that was open when the list reloaded is cut (its connection closes); the
            // next handshake is refused, saying why.
            let out = publish_json(&fed, &node, &file, "revoked-publisher");
            last = String::from_utf8_lossy(&out.stderr).to_lowercase();
            !out.status.success() && (last.contains("revoked") || !last.contains("close_notify"))
        },
    );
    assert!(last.contains("revoked"), "revoked: {last}");
    // The older list put back (a rollback would un-revoke): refused, the revocation stays.
    std::fs::write(fed.path().join("certs/crl.pem"), &crl_before).expect("old crl");
    wait_for("the node to refuse the older CRL", Duration::from_secs(30), || {
        node.log().contains("is lower than")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let out = publish_json(&fed, &node, &file, "revoked-publisher");
    assert!(!out.status.success(), "still revoked after a CRL rollback attempt");

    // A client with no certificate at all gets no HTTP/2 service.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let refused = rt.block_on(no_certificate_client(node.port, &fed.certs().join("ca.pem")));
    assert!(refused, "a client without a certificate must be refused");
    // The honest publisher still works after all that.
    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        node.log().contains("tls handshake refused"),
        "refusals are logged by the node"
    );
}

/// Connects with TLS but no client certificate; true if the node refuses (no HTTP/2 SETTINGS).
async fn no_certificate_client(port: u16, ca: &std::path::Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let roots = cxnode::pki::load_roots(ca).expect("roots");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return true;
    };
    if tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.is_err() {
        return true;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => {
            panic!("the node neither refused nor served a certificate-less client within 10 s")
        }
    }
}

#[test]
fn a_bad_config_is_refused_before_any_port_is_bound() {
    let fed = Fed::new();
    fed.issue(&["--kind", "node", "--region", "320000"]);
    let port = free_port();
    let config = fed.path().join("bad.toml");
    // Runs a node from `text`, which must be refused; returns what it said.
    let refused = |text: String| -> String {
        std::fs::write(&config, text).expect("write");
        let out = cxnode(fed.path(), &["run", "--config", config.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "a bad config must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let node = |region: &str, cert: &str| {
        format!(
            "[node]\nregion = \"{region}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{cert}.pem\"\nkey = \"certs/{cert}.key\"\n"
        )
    };
    let e = refused(node("990000", "node-330000"));
    assert!(
        e.contains("node.region") && e.contains("330000"),
        "names the key and the fix: {e}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the port was never bound"
    );
    let e = refused(node("330000", "node-330000") + "[store]\nbogus = 1\n");
    assert!(e.contains("bogus"), "unknown keys are named: {e}");
    let e = refused(node("330000", "node-320000"));
    assert!(
        e.contains("cx://node/320000"),
        "a node certificate of another region: {e}"
    );
    // Each cause is said once (not "node failed: X: X"): a data directory that is a file.
    std::fs::write(fed.path().join("data"), "not a directory").expect("write");
    let e = refused(node("330000", "node-330000"));
    assert!(e.contains("data"), "{e}");
    assert_eq!(e.matches("File exists").count(), 1, "said once: {e}");
}

/// Every directory and file under `dir` with its permission bits.
fn modes(dir: &std::path::Path) -> Vec<(String, u32, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let m = std::fs::metadata(&d).expect("metadata");
        out.push((d.display().to_string(), m.permissions().mode() & 0o777, true));
        for item in std::fs::read_dir(&d).expect("read dir") {
            let item = item.expect("entry");
            let m = item.metadata().expect("metadata");
            if m.is_dir() {
                pending.push(item.path());
            } else {
                out.push((item.path().display().to_string(), m.permissions().mode() & 0o777, false));
            }
        }
    }
    out
}

#[test]
fn a_node_without_a_crl_says_that_revocation_is_off() {
    let fed = Fed::new();
    let port = free_port();
    let config = fed.path().join("no-crl.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\n"
        ),
    )
    .expect("write config");
    let node = NodeProc::start_with(&fed, &config, port);
    let mut said = false;
    wait_for("the warning", Duration::from_secs(10), || {
        said = node.log().contains("revocation is off");
        said
    });
    assert!(said, "{}", node.log());
    node.stop();
}

#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let fed = Fed::new();
    let data = fed.path().join("data");
    // A store directory left readable by others (an older release, a copy with umask 022).
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(data.join("notes.txt"), "left here").expect("write");
    std::fs::set_permissions(data.join("notes.txt"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let node = NodeProc::start(&fed, &data, free_port());
    let file = fed.records("records.jsonl", 200, 3);
    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = modes(&data);
    assert!(all.len() > 5, "the store has its files: {all:?}");
    for (path, mode, dir) in &all {
        let want = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} is {mode:o}");
    }
    assert!(
        node.log().contains("made them private"),
        "the tightening is logged: {}",
        node.log()
    );
    node.stop();
}

#[test]
fn the_demo_federation_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cxnode(
        dir.path(),
        &[
            "demo",
            "--nodes",
            "3",
            "--topology",
            "hub",
            "--duration",
            "20",
            "--rate",
            "100",
            "--dir",
            "fed",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo did not converge: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CONVERGED: all 3 nodes hold identical logs"),
        "{stdout}"
    );
    // One compact line per tick, the last one with every node complete; node logs in a file.
    let last_tick = stdout.lines().rfind(|l| l.starts_with("t=")).unwrap_or_default();
    assert!(
        last_tick.contains("3/3 nodes hold every origin's newest head | no lag"),
        "{stdout}"
    );
    assert!(dir.path().join("fed").join("nodes.log").is_file(), "{stdout}");
    // The stores it leaves verify offline: the national hub's and the two provinces'.
    for region in ["100000", "330000", "320000"] {
        let data = dir.path().join("fed").join(format!("data-{region}"));
        let report = cxnode_ok(dir.path(), &["verify", "--data", data.to_str().expect("utf-8")]);
        assert!(report.contains("OK: store verified"), "{region}: {report}");
    }
}

/// The department clients end to end on the real binary: `cxnode feed` exits once caught up and
/// resumes from the cursor it printed; `cxnode profile` answers with a resident ID masked;
/// `cxnode acknowledge` writes a receipt; every call leaves an audit row that `cxnode audit`
/// finds by subject and by caller, also after the node is killed with SIGKILL.
#[test]
fn department_clients_work_and_audit_rows_survive_kill_9() {
    let fed = Fed::new();
    fed.issue(&["--kind", "department", "--region", "330000", "--dept", "amr"]);
    std::fs::write(
        fed.path().join("policy.toml"),
        "[[grant]]\nidentity = \"cx://department/330000/amr\"\nrpcs = [\"Subscribe\", \"Profile\", \"Acknowledge\"]\ncategories = [\"*\"]\nregions = [\"*\"]\nsharing = [\"*\"]\ndisclosure = [\"*\"]\nnatural_persons = true\n",
    )
    .expect("policy");
    let data = fed.path().join("data");
    let port = free_port();
    let config = fed.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\npolicy = \"policy.toml\"\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\ncrl = \"certs/crl.pem\"\n",
            data.display()
        ),
    )
    .expect("config");
    let node = NodeProc::start_with(&fed, &config, port);
    let file = fed.records("records.jsonl", 300, 4);
    let out = publish_json(&fed, &node, &file, "publisher-330000");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).expect("records");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let person = lines
        .iter()
        .find_map(|l| l.get("subject_id_number").and_then(|s| s.as_str()).map(str::to_string))
        .expect("the generator makes natural persons");
    let company = lines
        .iter()
        .find_map(|l| l.get("subject_uscc").and_then(|s| s.as_str()).map(str::to_string))
        .expect("and companies");
    let dept = [
        "--node",
        &node.addr(),
        "--cert",
        "certs/department-330000-amr.pem",
        "--key",
        "certs/department-330000-amr.key",
        "--server-name",
        "localhost",
    ];
    let with = |cmd: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        all.extend(dept.iter().map(|s| s.to_string()));
        all
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cxnode_ok(fed.path(), &refs)
    };
    // Wait until the view has indexed everything (the feed ends once caught up with the view).
    let mut json_lines = Vec::new();
    wait_for("the feed to show every record", Duration::from_secs(30), || {
        let out = run(with(&["feed", "--json"]));
        json_lines = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .collect();
        json_lines.iter().filter(|l| l.get("event").is_some()).count() == 300
    });
    let last = json_lines.last().expect("a summary line");
    assert_eq!(last["caught_up"], true);
    let marks: Vec<&serde_json::Value> = json_lines.iter().filter(|l| l.get("progress").is_some()).collect();
    assert!(!marks.is_empty(), "progress marks arrive");
    assert!(
        marks
            .iter()
            .all(|m| m["verified"] == true && m["signed_by"] == "cx://node/330000"),
        "every mark verifies against the federation CA: {marks:?}"
    );
    let cursor = last["cursor"].as_str().expect("a cursor").to_string();
    // Resuming from the last cursor: nothing more.
    let again = run(with(&["feed", "--json", "--resume", &cursor]));
    let resumed: Vec<serde_json::Value> = again.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(
        resumed.iter().filter(|l| l.get("event").is_some()).count(),
        0,
        "{again}"
    );
    let profile = run(with(&["profile", "--json", &person]));
    let rows: Vec<serde_json::Value> = profile
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert!(rows.len() >= 2, "at least one record and the summary: {profile}");
    // The records themselves go to a department granted natural persons; the client's own
    // summary line masks the number.
    let shown = rows.last().expect("summary")["subject"]
        .as_str()
        .expect("subject")
        .to_string();
    assert_eq!(shown, format!("{}**********{}", &person[..4], &person[14..]));
    run(with(&["profile", &company]));
    let ack = run(with(&["acknowledge", "--json", "--applied", &cursor]));
    let ack: serde_json::Value = serde_json::from_str(ack.trim()).expect("json");
    assert_eq!(ack["origin"], "330000");
    node.kill9();
    let audit = |args: &[&str]| {
        let mut all = vec!["audit", "--data", data.to_str().expect("utf-8"), "--json"];
        all.extend_from_slice(args);
        cxnode_ok(fed.path(), &all)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .collect::<Vec<_>>()
    };
    let by_person = audit(&["--subject", &person]);
    assert_eq!(by_person.len(), 1, "one profile of the person: {by_person:?}");
    assert_eq!(by_person[0]["call"], "Profile");
    let log = std::fs::read_to_string(data.join("audit/audit.jsonl")).expect("audit file");
    assert!(!log.contains(&person), "the audit log holds no resident ID in clear");
    let by_caller = audit(&["--caller", "cx://department/330000/amr"]);
    let calls: Vec<&str> = by_caller.iter().filter_map(|r| r["call"].as_str()).collect();
    assert!(calls.iter().filter(|c| **c == "Subscribe").count() >= 2, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == "Profile").count(), 2, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == "Acknowledge").count(), 1, "{calls:?}");
    // The node restarts on its store and the receipt is in its own log.
    let node = NodeProc::start_with(&fed, &config, port);
    let again = run(with(&["profile", &company]));
    assert!(again.contains("records about"), "{again}");
    drop(node);
}
