//! The dependency rule of docs/ARCHITECTURE.md, enforced: the pure modules (`record`, `log`) import
//! no runtime, network, storage or TLS crate, and only `rpc` imports tonic or prost.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn offenders(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut files = Vec::new();
    if root.is_dir() {
        rust_files(&root, &mut files);
    } else {
        files.push(root.with_extension("rs"));
    }
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for crate_name in forbidden {
                if code.contains(&format!("{crate_name}::")) {
                    found.push(format!("{}:{}: uses {crate_name}", f.display(), i + 1));
                }
            }
        }
    }
    found
}

/// What a pure module never names: I/O crates, the file system, the network, the clock.
const IO: [&str; 8] = [
    "tokio",
    "tonic",
    "prost",
    "sled",
    "rustls",
    "std::fs",
    "std::net",
    "SystemTime",
];

#[test]
fn pure_modules_do_no_io() {
    let forbidden = IO;
    let mut all = offenders("record", &forbidden);
    all.extend(offenders("log", &forbidden));
    assert!(all.is_empty(), "pure modules must stay pure:\n{}", all.join("\n"));
}

#[test]
fn only_rpc_knows_the_wire_types() {
    let mut all = Vec::new();
    for dir in [
        "record", "log", "store", "pki", "policy", "config", "feed", "delivery", "sync",
    ] {
        all.extend(offenders(dir, &["tonic", "prost"]));
    }
    assert!(all.is_empty(), "tonic/prost outside rpc:\n{}", all.join("\n"));
}

#[test]
fn the_sync_engine_imports_no_io_crate() {
    // Every file of src/sync is pure: the driver that does the I/O lives in src/link, the wire
    // conversions in src/rpc, and the engine reaches neither (nor the store it feeds).
    let mut forbidden = vec!["crate::store", "crate::rpc", "crate::link"];
    forbidden.extend(IO);
    let found = offenders("sync", &forbidden);
    assert!(
        found.is_empty(),
        "the sync engine must stay pure:\n{}",
        found.join("\n")
    );
}

/// What a pure core (`evaluate`, `feed`) must not reach: the store, the wire, the delivery
/// driver, the links and the node.
const OUTER_LAYERS: [&str; 5] = [
    "crate::store",
    "crate::rpc",
    "crate::delivery",
    "crate::link",
    "crate::node",
];

#[test]
fn the_evaluation_core_is_pure() {
    // The indicators, the report and its rendering: no I/O crate, neither the store, the wire nor
    // the node (the clock and the calendar are inputs). The one exception: the calendar loads
    // its directory of `calendar-<year>.toml` files.
    let mut forbidden = OUTER_LAYERS.to_vec();
    forbidden.extend(IO);
    let found: Vec<String> = offenders("evaluate", &forbidden)
        .into_iter()
        .filter(|f| !(f.contains("evaluate/calendar.rs") && f.ends_with("uses std::fs")))
        .collect();
    assert!(
        found.is_empty(),
        "the evaluation core must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_feed_core_is_pure() {
    // Filters, scopes, cursors, events and progress marks: no I/O crate, and neither the store,
    // the wire nor the delivery driver that feeds it.
    let mut forbidden = OUTER_LAYERS.to_vec();
    forbidden.extend(IO);
    let found = offenders("feed", &forbidden);
    assert!(found.is_empty(), "the feed core must stay pure:\n{}", found.join("\n"));
}

#[test]
fn delivery_does_not_reach_the_wire_and_rpc_feed_only_converts() {
    // The delivery driver speaks domain types; the RPC layer converts and maps errors, and
    // neither reads the store nor decides what a department may see.
    let found = offenders("delivery", &["tonic", "prost", "crate::rpc", "sled"]);
    assert!(
        found.is_empty(),
        "delivery must not know the wire:\n{}",
        found.join("\n")
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rpc/feed.rs");
    let text = std::fs::read_to_string(root).expect("read");
    for forbidden in ["crate::store", "sled::", ".scope(", "Plan::new", "summarize("] {
        assert!(
            !text.contains(forbidden),
            "src/rpc/feed.rs must only convert, found {forbidden}"
        );
    }
}
