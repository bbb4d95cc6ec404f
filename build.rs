//! Compiles proto/cx/v1/*.proto with protox (pure Rust, so no system protoc is needed) and
//! generates the tonic services; also writes the descriptor set that server reflection serves.
use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "cx/v1/types.proto",
    "cx/v1/publisher.proto",
    "cx/v1/replication.proto",
    "cx/v1/feed.proto",
    "cx/v1/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("cx_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .bytes(".cx.v1")
        // Maps encode in key order, so equal answers are equal bytes (profiles, progress marks).
        .btree_map(".cx.v1")
        .compile_fds(fds)?;
    Ok(())
}
