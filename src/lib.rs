//! cxnode: the cross-regional credit information exchange node. Each province runs one: it
//! publishes the province's credit records into a signed, hash-chained, append-only log, keeps
//! copies of every other province's log, and serves departments and operators. See
//! `docs/ARCHITECTURE.md` for the layout and its invariants.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod evaluate;
pub mod feed;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod health;
pub mod link;
pub mod log;
pub mod node;
pub mod pki;
pub mod policy;
pub mod record;
pub mod rpc;
pub mod store;
pub mod sync;
pub mod telemetry;
