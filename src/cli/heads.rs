//! `cxnode heads --node ADDR`: a node's per-origin heads (seq, head hash, forked), one JSON object
//! per line, for operators and scripts. Needs a certificate the node's policy grants `Heads`
//! (nodes and operators by default).

use crate::record::Region;
use crate::rpc::client::explain_status;
use crate::rpc::pb;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
}

pub fn run(args: HeadsArgs) -> anyhow::Result<ExitCode> {
    let heads = super::runtime()?.block_on(async {
        let channel = args.node.channel().await?;
        let mut client = pb::replication_client::ReplicationClient::new(channel);
        client
            .heads(pb::HeadsRequest {})
            .await
            .map(|r| r.into_inner().heads)
            .map_err(|s| anyhow::anyhow!("heads from {}: {}", args.node.node, explain_status(&s)))
    })?;
    for h in heads {
        let origin = Region::from_code(h.origin)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| h.origin.to_string());
        let v = serde_json::json!({"origin": origin, "seq": h.seq, "head_hash": hex::encode(&h.head_hash), "forked": h.forked});
        println!("{v}");
    }
    Ok(ExitCode::SUCCESS)
}
