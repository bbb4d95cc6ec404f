//! Shared helpers: a federation's certificates made by the real `cxnode certs`, real node processes
//! on loopback, and waiting for conditions with deadlines (never a fixed sleep and hope).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cxnode")
}

/// Runs `cxnode ARGS` in `dir` and returns its output.
pub fn cxnode(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("cxnode runs")
}

/// Runs `cxnode ARGS` and fails the test with its output unless it succeeds.
pub fn cxnode_ok(dir: &Path, args: &[&str]) -> String {
    let out = cxnode(dir, args);
    assert!(
        out.status.success(),
        "cxnode {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The runtime the in-process federation tests run on (two workers, like the machine).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits until `cond` holds, or panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A temporary federation: a CA and certificates made by `cxnode certs`.
pub struct Fed {
    pub dir: tempfile::TempDir,
}

impl Fed {
    pub fn new() -> Fed {
        let dir = tempfile::tempdir().expect("tempdir");
        cxnode_ok(dir.path(), &["certs", "init", "--dir", "certs"]);
        let fed = Fed { dir };
        fed.issue(&["--kind", "node", "--region", "330000"]);
        fed.issue(&["--kind", "publisher", "--region", "330000"]);
        fed
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn certs(&self) -> PathBuf {
        self.path().join("certs")
    }

    /// `cxnode certs issue --ca-dir certs ARGS`.
    pub fn issue(&self, args: &[&str]) {
        let mut all = vec!["certs", "issue", "--ca-dir", "certs"];
        all.extend_from_slice(args);
        cxnode_ok(self.path(), &all);
    }

    /// The TLS files of `certs/<name>.pem` / `.key`, trusting the federation CA (no CRL).
    pub fn files(&self, name: &str) -> cxnode::pki::TlsFiles {
        let certs = self.certs();
        cxnode::pki::TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("{name}.pem")),
            key: certs.join(format!("{name}.key")),
            crl: None,
        }
    }

    /// `cxnode certs revoke` of `certs/<name>.pem`, re-publishing the CRL.
    pub fn revoke(&self, name: &str) {
        let cert = format!("certs/{name}.pem");
        cxnode_ok(self.path(), &["certs", "revoke", "--ca-dir", "certs", "--cert", &cert]);
    }

    /// Writes `count` generated records to `name` and returns its path.
    pub fn records(&self, name: &str, count: u64, seed: u64) -> PathBuf {
        let out = cxnode_ok(
            self.path(),
            &[
                "gen",
                "--region",
                "330000",
                "--count",
                &count.to_string(),
                "--seed",
                &seed.to_string(),
            ],
        );
        let path = self.path().join(name);
        std::fs::write(&path, out).expect("write records");
        path
    }
}

/// Copies a directory tree (a store, to fake a backup or an index from the past).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `cxnode run` process.
pub struct NodeProc {
    pub child: Child,
    pub port: u16,
    pub stderr: PathBuf,
}

impl NodeProc {
    /// Writes a config for region 330000 with data in `data` and starts the node.
    pub fn start(fed: &Fed, data: &Path, port: u16) -> NodeProc {
        let config = fed.path().join(format!("node-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nregion = \"330000\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
                 [tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-330000.pem\"\nkey = \"certs/node-330000.key\"\n\
                 crl = \"certs/crl.pem\"\ncrl_reload_seconds = 1\n[log]\nlevel = \"info\"\n",
                data.display()
            ),
        )
        .expect("write config");
        NodeProc::start_with(fed, &config, port)
    }

    pub fn start_with(fed: &Fed, config: &Path, port: u16) -> NodeProc {
        let stderr = fed.path().join(format!("node-{port}-{}.log", std::process::id()));
        let log = std::fs::File::create(&stderr).expect("log file");
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            .current_dir(fed.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node");
        let mut node = NodeProc { child, port, stderr };
        let mut exited = None;
        wait_for("the node to listen", Duration::from_secs(60), || {
            if let Ok(Some(status)) = node.child.try_wait() {
                exited = Some(status);
                return true;
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if let Some(status) = exited {
            panic!("node exited at start with {status}: {}", node.log());
        }
        node
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let mut status = None;
        wait_for("the node to stop after SIGTERM", Duration::from_secs(60), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status.expect("waited for exit")
    }

    /// SIGKILL: the process dies at whatever instant it is in.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cxnode publish` of `file` to `addr` as Zhejiang's publisher, with `extra` arguments.
pub fn publish(fed: &Fed, addr: &str, file: &Path, extra: &[&str]) -> Output {
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec![
        "publish",
        "--node",
        addr,
        "--file",
        file,
        "--cert",
        "certs/publisher-330000.pem",
        "--key",
        "certs/publisher-330000.key",
    ];
    args.extend_from_slice(extra);
    cxnode(fed.path(), &args)
}

/// Whether `program` can be run; when it cannot, says SKIPPED, or fails when CXNODE_REQUIRE_TOOLS
/// is set (`.ci/run` installs every tool and sets it, so CI cannot skip).
pub fn have_tool(program: &str, version_arg: &str) -> bool {
    match Command::new(program).arg(version_arg).output() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CXNODE_REQUIRE_TOOLS").is_none() => {
            eprintln!("SKIPPED: {program} is not installed ({e}); see .ci/run for how to install it");
            false
        }
        Err(e) => panic!("{program} is required here (CXNODE_REQUIRE_TOOLS is set): {e}"),
    }
}

/// GET `path` from a plain HTTP/1.1 server at `addr`: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The DOM of `url` as headless Chromium renders it (Debian's chromium, flags for a closed
/// network and a fresh profile).
pub fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
