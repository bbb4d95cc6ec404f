//! The command line: one file per subcommand. The only place (with tests) where `anyhow` is used;
//! errors reach the user as one readable chain and a non-zero exit code.

mod audit;
mod bench;
mod bench_eval;
mod bench_feed;
mod bench_kit;
mod bench_mesh;
mod bench_sync;
mod bench_validate;
mod certs;
pub mod demo;
mod department;
mod evaluate;
mod gen;
mod heads;
mod health;
mod publish;
mod recover;
mod run;
mod status;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cxnode", version, about = "Cross-regional credit information exchange node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from a TOML config file.
    Run(run::RunArgs),
    /// Make and manage the federation's certificates (CA, node, publisher, department, operator).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Publish a JSON Lines file of credit records to a node.
    Publish(publish::PublishArgs),
    /// Re-check a whole store offline: frames, chains, checkpoints, indexes.
    Verify(verify::VerifyArgs),
    /// Rebuild a store's indexes from its journal alone.
    Reindex(verify::ReindexArgs),
    /// Bring a stopped node's store back from a replica: its own log after a restore from an old
    /// backup, or a damaged journal.
    Recover(recover::RecoverArgs),
    /// A node's sync health: peers, per-origin lag (stalled vs lagging), forks, certificate expiry.
    Status(status::StatusArgs),
    /// A node's per-origin heads (seq, head hash, forked) as JSON lines.
    Heads(heads::HeadsArgs),
    /// Probe a node with its own config and certificate: exit 0 if it serves (for orchestrators).
    Health(health::HealthArgs),
    /// One subject's merged cross-regional record, as a department sees it.
    Profile(department::ProfileArgs),
    /// A department's filtered, resumable feed (exits once caught up unless --follow).
    Feed(department::FeedArgs),
    /// Sign, as a department, for records received and applied (a receipt in the node's log).
    Acknowledge(department::AcknowledgeArgs),
    /// Who has stopped showing a record, and who is overdue against its repair deadline.
    Receipts(department::ReceiptsArgs),
    /// The regional performance evaluation of a period (signed), or --verify of a report file.
    Evaluate(evaluate::EvaluateArgs),
    /// Who accessed which credit data: the node's audit log.
    Audit(audit::AuditArgs),
    /// A complete local federation on loopback: certificates, nodes, publishers, live heads.
    Demo(demo::DemoArgs),
    /// Write realistic, valid records (for trying things out).
    Gen(gen::GenArgs),
    /// Benchmarks (not tests): print medians and ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Certs(c) => certs::run(c),
        Command::Publish(a) => publish::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Reindex(a) => verify::reindex(a),
        Command::Recover(a) => recover::run(a),
        Command::Gen(a) => gen::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Heads(a) => heads::run(a),
        Command::Health(a) => health::run(a),
        Command::Status(a) => status::run(a),
        Command::Profile(a) => department::profile(a),
        Command::Feed(a) => department::feed(a),
        Command::Audit(a) => audit::run(a),
        Command::Acknowledge(a) => department::acknowledge(a),
        Command::Receipts(a) => department::receipts(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Bench(b) => bench::run(b),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text the message already
/// holds (an error that prints its source, and the source again as the next link) is left out.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// How a command reaches a node: its address and our TLS identity.
#[derive(clap::Args)]
struct NodeClientArgs {
    /// The node's gRPC address, host:port.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// How a command authenticates to nodes and checks them.
#[derive(clap::Args)]
struct ClientTlsArgs {
    #[arg(long, default_value = "certs/ca.pem")]
    ca: std::path::PathBuf,
    #[arg(long)]
    cert: std::path::PathBuf,
    #[arg(long)]
    key: std::path::PathBuf,
    /// Name the node's certificate must carry (default: the host of --node).
    #[arg(long)]
    server_name: Option<String>,
    /// The federation CRL: a node whose certificate it revokes is refused.
    #[arg(long)]
    crl: Option<std::path::PathBuf>,
}

impl ClientTlsArgs {
    fn files(&self) -> crate::pki::TlsFiles {
        crate::pki::TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            crl: self.crl.clone(),
        }
    }

    async fn channel(&self, node: &str) -> anyhow::Result<tonic::transport::Channel> {
        Ok(crate::rpc::client::connect(node, &self.files(), self.server_name.as_deref()).await?)
    }
}

impl NodeClientArgs {
    async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.tls.channel(&self.node).await
    }
}

/// Checks a node's signature as a third party would: `chain` (leaf first) must be a
/// `cx://node/*` certificate chaining to the federation CA, valid at `at`; returns the signer's
/// URI. `what` names the signed thing in errors.
fn verify_node_signature(
    verifier: &crate::pki::SignatureVerifier,
    what: &str,
    chain: &[Vec<u8>],
    at: i64,
    scheme: u32,
    message: &[u8],
    signature: &[u8],
) -> anyhow::Result<String> {
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("{what} without a signer"))?;
    let signer = crate::pki::identity_from_cert_der(leaf)?;
    anyhow::ensure!(
        matches!(signer, crate::pki::Identity::Node(_)),
        "{what} signed by {signer}, not a node"
    );
    let scheme = u16::try_from(scheme).map_err(|_| anyhow::anyhow!("{what}: bad signature scheme"))?;
    verifier
        .verify(chain, &signer, at, scheme, message, signature)
        .map_err(|e| anyhow::anyhow!("{what}: the signature does not verify: {e}"))?;
    Ok(signer.uri())
}

/// A multi-threaded runtime for subcommands that talk to the network.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context;

    #[test]
    fn an_error_chain_says_each_thing_once() {
        // A node error that displays its source, and the source again as the next cause.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let pki = crate::pki::PkiError::Read {
            path: "certs/node.pem".into(),
            source: io,
        };
        let node = crate::node::NodeError::Pki(pki);
        let e = Err::<(), _>(node).context("node failed").expect_err("an error");
        let text = error_text(&e);
        assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
        assert_eq!(text.matches("cannot read certs/node.pem").count(), 1, "{text}");
        assert!(text.starts_with("node failed: cannot read certs/node.pem"), "{text}");
        // Different causes are all kept.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_text(&e), "outer: middle: inner");
    }
}
