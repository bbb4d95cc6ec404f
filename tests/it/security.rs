//! Holding the door (issue 10), against a real `cxnode run` process on loopback: idle sockets
//! cannot starve handshakes, hundreds of open Sync streams hold no threads, a revoked node's live
//! stream is cut at the CRL reload, and clients refuse a server that is not the node they meant.

use crate::common::{cxnode, cxnode_ok, free_port, rt, wait_for, Fed, NodeProc};
use cxnode::pki::TlsFiles;
use cxnode::rpc::client::connect;
use cxnode::rpc::pb;
use std::time::Duration;

/// Threads of a process, from /proc.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}

async fn heads(addr: &str, files: &TlsFiles) -> Result<usize, String> {
    let channel = connect(addr, files, None).await.map_err(|e| e.to_string())?;
    let mut client = pb::replication_client::ReplicationClient::new(channel);
    let heads = client
        .heads(pb::HeadsRequest::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(heads.into_inner().heads.len())
}

/// A Sync stream asking for everything, over `channel`.
async fn open_sync(channel: tonic::transport::Channel) -> tonic::Streaming<pb::SyncMessage> {
    pb::replication_client::ReplicationClient::new(channel)
        .sync(pb::SyncRequest::default())
        .await
        .expect("sync stream opens")
        .into_inner()
}

#[test]
fn idle_connections_from_one_address_do_not_lock_out_a_valid_client() {
    let fed = Fed::new();
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let addr = node.addr();
    let node_files = fed.files("node-330000");
    rt().block_on(async {
        // 200 TCP connections from 127.0.0.2 that never send a TLS byte.
        let target: std::net::SocketAddr = addr.parse().expect("addr");
        let mut idle = Vec::new();
        for _ in 0..200 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.2:0".parse().expect("source"))
                .expect("bind 127.0.0.2");
            if let Ok(s) = socket.connect(target).await {
                idle.push(s);
            }
        }
        assert!(idle.len() >= 64, "only {} idle connections opened", idle.len());
        // Let the node take them from its accept queue before the valid client comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let served = tokio::time::timeout(Duration::from_secs(2), heads(&addr, &node_files)).await;
        match served {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("valid client refused while idle sockets are open: {e}"),
            Err(_) => panic!("valid client not served within 2 s while 200 idle sockets are open"),
        }
        drop(idle);
    });
}

#[test]
fn five_hundred_open_sync_streams_hold_no_threads_and_stall_nothing() {
    let fed = Fed::new();
    fed.issue(&["--kind", "node", "--region", "320000"]);
    fed.issue(&["--kind", "publisher", "--region", "330000", "--name", "to-revoke"]);
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let addr = node.addr();
    let peer = fed.files("node-320000");
    let pid = node.child.id();
    let before = threads(pid);
    let rt = rt();
    let streams = rt.block_on(async {
        let mut streams = Vec::new();
        for _ in 0..5 {
            let channel = connect(&addr, &peer, None).await.expect("connect");
            for _ in 0..100 {
                streams.push(open_sync(channel.clone()).await);
            }
        }
        streams
    });
    assert_eq!(streams.len(), 500);
    std::thread::sleep(Duration::from_secs(1));
    let during = threads(pid);
    eprintln!("node threads: {before} before, {during} with 500 sync streams open");
    assert!(
        during < before + 50,
        "500 open sync streams took threads: {before} before, {during} with them open"
    );
    // Publishing, Heads and the CRL reload still work while they are open.
    let file = fed.records("few.jsonl", 20, 7);
    let out = crate::common::publish(&fed, &addr, &file, &["--json"]);
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), heads(&addr, &peer)).await });
    assert!(
        matches!(served, Ok(Ok(_))),
        "heads while 500 streams are open: {served:?}"
    );
    fed.revoke("to-revoke");
    wait_for(
        "the CRL reload while 500 streams are open",
        Duration::from_secs(15),
        || node.log().contains("certificate revocation list reloaded"),
    );
    rt.block_on(async move { drop(streams) });
}

#[test]
fn a_revoked_nodes_live_sync_stream_is_cut_at_the_crl_reload() {
    let fed = Fed::new();
    fed.issue(&["--kind", "node", "--region", "320000"]);
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let addr = node.addr();
    let peer = fed.files("node-320000");
    rt().block_on(async {
        let channel = connect(&addr, &peer, None).await.expect("connect");
        let mut stream = open_sync(channel).await;
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        assert!(matches!(first, Ok(Ok(Some(_)))), "a first message: {first:?}");
        fed.revoke("node-320000");
        // Heartbeats keep an open stream busy; the reload (every second here) must end it.
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return "ended".to_string(),
                    Err(status) => return format!("{status}"),
                }
            }
        })
        .await;
        let how = ended.expect("the revoked node's stream was not cut within 15 s of its revocation");
        eprintln!("revoked node's stream ended: {how}");
        // And it cannot come back.
        let again = heads(&addr, &peer).await;
        assert!(again.is_err(), "a revoked node reconnected: {again:?}");
    });
    assert!(
        node.log().contains("closing a live connection"),
        "the node says why it cut the connection: {}",
        node.log()
    );
}

/// A TLS server holding `files`' identity that accepts handshakes and then says nothing: stands
/// in for whoever answers at an address.
fn impostor(files: TlsFiles) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = std::thread::spawn(move || {
        rt().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config = cxnode::pki::server_config(&files).expect("impostor tls");
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut held = Vec::new();
            while let Ok(Ok((tcp, _))) = tokio::time::timeout_at(deadline, listener.accept()).await {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    held.push(tls);
                }
                if held.len() >= 8 {
                    return;
                }
            }
        });
    });
    (port, handle)
}

fn publish_to(fed: &Fed, port: u16, extra: &[&str]) -> std::process::Output {
    let file = fed.records("to-impostor.jsonl", 3, 1);
    crate::common::publish(fed, &format!("127.0.0.1:{port}"), &file, extra)
}

#[test]
fn clients_refuse_a_server_that_is_not_the_node_they_meant() {
    let fed = Fed::new();
    fed.issue(&["--kind", "department", "--region", "330000", "--dept", "amr"]);
    fed.issue(&["--kind", "node", "--region", "320000"]);
    fed.issue(&["--kind", "node", "--region", "330000", "--name", "revoked-node"]);
    fed.issue(&["--kind", "operator", "--operator", "alice"]);

    // A department's certificate chains to the same CA: it must not receive records.
    let (port, _t) = impostor(fed.files("department-330000-amr"));
    let out = publish_to(&fed, port, &[]);
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "published to a department");
    assert!(
        e.contains("cx://department/330000/amr") && e.contains("not the expected cx://node/330000"),
        "{e}"
    );
    // Another region's node is not ours to publish to either.
    let (port, _t) = impostor(fed.files("node-320000"));
    let out = publish_to(&fed, port, &[]);
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && e.contains("not the expected cx://node/330000"),
        "{e}"
    );
    // Operator commands want a node too.
    let (port, _t) = impostor(fed.files("department-330000-amr"));
    let out = cxnode(
        fed.path(),
        &[
            "status",
            "--node",
            &format!("127.0.0.1:{port}"),
            "--cert",
            "certs/operator-alice.pem",
            "--key",
            "certs/operator-alice.key",
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && e.contains("not a node of the federation"),
        "{e}"
    );

    // A revoked node certificate is refused by a client given the CRL.
    fed.revoke("revoked-node");
    let (port, _t) = impostor(fed.files("revoked-node"));
    let out = publish_to(&fed, port, &["--crl", "certs/crl.pem"]);
    let e = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success() && e.contains("revoked"), "{e}");
}

fn status(fed: &Fed, addr: &str) -> (bool, String) {
    let out = cxnode(
        fed.path(),
        &[
            "status",
            "--node",
            addr,
            "--cert",
            "certs/operator-ops.pem",
            "--key",
            "certs/operator-ops.key",
        ],
    );
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn a_malformed_crl_at_reload_keeps_the_last_good_list_and_raises_an_alarm() {
    let fed = Fed::new();
    fed.issue(&["--kind", "operator", "--operator", "ops"]);
    fed.issue(&["--kind", "node", "--region", "320000", "--name", "gone"]);
    fed.revoke("gone");
    let node = NodeProc::start(&fed, &fed.path().join("data"), free_port());
    let addr = node.addr();
    let (ok, text) = status(&fed, &addr);
    assert!(
        ok && !text.contains("ALARM") && text.contains("revocation list: next update due in"),
        "{text}"
    );

    let crl = fed.certs().join("crl.pem");
    let good = std::fs::read(&crl).expect("crl");
    std::fs::write(&crl, b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n").expect("spoil crl");
    wait_for("the node to refuse the malformed list", Duration::from_secs(15), || {
        node.log().contains("new revocation list refused")
    });
    let (ok, text) = status(&fed, &addr);
    assert!(!ok, "status must fail while an alarm is raised: {text}");
    assert!(
        text.contains("ALARM") && text.contains("could not be reloaded"),
        "{text}"
    );
    assert!(node.log().contains("ERROR"), "an ERROR in the log: {}", node.log());
    // The last good list stays in force: the revoked certificate is still refused.
    let rt = rt();
    let refused = rt.block_on(heads(&addr, &fed.files("gone")));
    assert!(
        refused.is_err(),
        "a revoked certificate got in while the new list was malformed"
    );
    let served = rt.block_on(heads(&addr, &fed.files("node-330000")));
    assert!(
        served.is_ok(),
        "a valid certificate was refused while the new list was malformed: {served:?}"
    );

    // A good list again clears the alarm.
    std::fs::write(&crl, good).expect("restore crl");
    wait_for("the alarm to clear with a good list", Duration::from_secs(15), || {
        let (ok, text) = status(&fed, &addr);
        ok && !text.contains("ALARM")
    });
}

#[test]
fn another_provinces_ca_cannot_mint_this_provinces_node() {
    let fed = Fed::new();
    // Jiangsu's own CA, trusted beside the federation CA, with a node of its own and one that
    // claims to be Zhejiang's.
    cxnode_ok(
        fed.path(),
        &["certs", "init", "--dir", "js", "--name", "Jiangsu credit CA"],
    );
    for (region, name) in [("320000", "js-node"), ("330000", "js-minted-zj-node")] {
        cxnode_ok(
            fed.path(),
            &[
                "certs", "issue", "--ca-dir", "js", "--kind", "node", "--region", region, "--out", "certs", "--name",
                name,
            ],
        );
    }
    let cat = |parts: &[&str], to: &str| {
        let mut all = Vec::new();
        for p in parts {
            all.extend(std::fs::read(fed.path().join(p)).expect("read pem"));
        }
        std::fs::write(fed.path().join(to), all).expect("write pem");
    };
    cat(&["certs/ca.pem", "js/ca.pem"], "cas.pem");
    cat(&["certs/crl.pem", "js/crl.pem"], "crls.pem");
    std::fs::write(
        fed.path().join("policy.toml"),
        "[[issuer]]\nca = \"certs/ca.pem\"\nidentities = [\"cx://*\"]\n\n\
         [[issuer]]\nca = \"js/ca.pem\"\nidentities = [\"cx://node/320000\"]\n",
    )
    .expect("policy");
    let port = free_port();
    let config = fed.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\npolicy = \"policy.toml\"\n\
             [tls]\nca = \"cas.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\ncrl = \"crls.pem\"\n"
        ),
    )
    .expect("config");
    let node = NodeProc::start_with(&fed, &config, port);
    let addr = node.addr();
    let rt = rt();
    let js_node = rt.block_on(heads(&addr, &fed.files("js-node")));
    assert!(js_node.is_ok(), "Jiangsu's CA may issue Jiangsu's node: {js_node:?}");
    let minted = rt.block_on(heads(&addr, &fed.files("js-minted-zj-node")));
    let e = minted.expect_err("Jiangsu's CA minted Zhejiang's node");
    assert!(e.contains("cx://node/330000") && e.contains("does not allow"), "{e}");
    assert!(
        rt.block_on(heads(&addr, &fed.files("node-330000"))).is_ok(),
        "the genuine node"
    );
}

#[test]
fn an_idle_connection_is_closed_and_one_with_an_open_stream_is_not() {
    let fed = Fed::new();
    fed.issue(&["--kind", "node", "--region", "320000"]);
    let port = free_port();
    let config = fed.path().join("idle.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nidle_connection_seconds = 1\n\
             [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\n\
             crl = \"certs/crl.pem\"\n[log]\nlevel = \"debug\"\n"
        ),
    )
    .expect("config");
    let node = NodeProc::start_with(&fed, &config, port);
    let addr = node.addr();
    let peer = fed.files("node-320000");
    rt().block_on(async {
        use tokio::io::AsyncReadExt;
        // A connection that completes its handshake and then calls nothing.
        let config = cxnode::pki::client_config(&peer).expect("client tls");
        let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut idle = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake");
        // A connection with a Sync stream open: heartbeats flow, no call ends.
        let channel = connect(&addr, &peer, None).await.expect("connect");
        let mut stream = open_sync(channel).await;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            loop {
                match idle.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "an idle connection was still open 10 s past a 1 s idle timeout"
        );
        // The stream outlived the idle connection by seconds, and still delivers.
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let m = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
            assert!(matches!(m, Ok(Ok(Some(_)))), "the open sync stream was cut: {m:?}");
        }
    });
    assert!(node.log().contains("closing an idle connection"), "{}", node.log());
}
