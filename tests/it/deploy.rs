//! Running it for real (issue 12): a node that stops cleanly whatever it is doing when SIGTERM
//! comes, against a real `cxnode run` process.

use crate::common::{bin, cxnode_ok, free_port, rt, wait_for, Fed, NodeProc};
use cxnode::pki::TlsFiles;
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
    let certs = fed.certs();
    let publisher = TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join("publisher-330000.pem"),
        key: certs.join("publisher-330000.key"),
        crl: None,
    };
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
    cxnode_ok(
        fed.path(),
        &[
            "publish",
            "--node",
            &node.addr(),
            "--file",
            file.to_str().expect("utf-8"),
            "--cert",
            "certs/publisher-330000.pem",
            "--key",
            "certs/publisher-330000.key",
        ],
    );
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
    let heads = rt().block_on(async {
        let node_files = TlsFiles {
            ca: fed.certs().join("ca.pem"),
            cert: fed.certs().join("node-330000.pem"),
            key: fed.certs().join("node-330000.key"),
            crl: None,
        };
        let channel = connect(&node.addr(), &node_files, None).await.expect("connect");
        pb::replication_client::ReplicationClient::new(channel)
            .heads(pb::HeadsRequest::default())
            .await
            .expect("heads")
            .into_inner()
    });
    let seq = heads.heads.iter().map(|h| h.seq).max().unwrap_or(0);
    assert!(seq >= 20_000, "everything is served after the next start: head {seq}");
}
