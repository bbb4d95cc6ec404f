//! The gRPC edge: the only module that imports tonic and prost types. Converts wire messages to
//! domain types (validating) and back, maps domain errors to status codes in one place, and runs
//! the mutual-TLS transport (`transport`) and the services.

pub mod client;
pub mod feed;
pub mod gate;
pub mod metrics;
pub mod operations;
pub mod publisher;
pub mod replication;
pub mod transport;

use crate::log::ledger::{OpKind, OpRejection};
use crate::log::{Checkpoint, Entry};
use crate::pki::Identity;
use crate::record::Rejection;
use crate::store::StoreError;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("cx.v1");
    /// The descriptor set that server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cx_descriptor.bin"));
}

/// Who is calling, as proven by the TLS handshake; put in every request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Identity,
    pub remote: std::net::SocketAddr,
    /// The CA its certificate chain verified to (for the policy's issuer bindings).
    pub issuer: Option<crate::pki::CaFingerprint>,
    /// The calls open on its connection (an idle connection is closed).
    pub activity: Option<std::sync::Arc<transport::Activity>>,
}

/// The caller of a request, or UNAUTHENTICATED (cannot happen behind our transport, which refuses
/// connections without an identity; checked anyway so a mistake fails closed).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no verified client certificate on this connection"))
}

impl From<&Entry> for pb::Entry {
    fn from(e: &Entry) -> Self {
        pb::Entry::from(e.clone())
    }
}

/// Moves the entry's bytes into the message (no copy): what a sync stream sends.
impl From<Entry> for pb::Entry {
    fn from(e: Entry) -> Self {
        pb::Entry {
            origin: e.origin.code(),
            seq: e.seq,
            prev_hash: e.prev_hash.to_vec().into(),
            appended_at_micros: e.appended_at_micros,
            op_digest: e.op_digest.to_vec().into(),
            op_bytes: e.op_bytes,
            hash: e.hash.to_vec().into(),
        }
    }
}

impl From<&Checkpoint> for pb::Checkpoint {
    fn from(c: &Checkpoint) -> Self {
        pb::Checkpoint {
            origin: c.origin.code(),
            seq: c.seq,
            head_hash: c.head_hash.to_vec().into(),
            at_unix_seconds: c.at_unix_seconds,
            signature_scheme: u32::from(c.signature_scheme),
            signature: c.signature.clone().into(),
            signer_chain: c.signer_chain.iter().map(|d| d.clone().into()).collect(),
        }
    }
}

impl From<OpKind> for pb::OpKind {
    fn from(k: OpKind) -> Self {
        match k {
            OpKind::Publish => pb::OpKind::Publish,
            OpKind::Amend => pb::OpKind::Amend,
            OpKind::Repair => pb::OpKind::Repair,
            OpKind::Revoke => pb::OpKind::Revoke,
            OpKind::Receipt => pb::OpKind::Receipt,
        }
    }
}

impl From<&Rejection> for pb::Rejection {
    fn from(r: &Rejection) -> Self {
        pb::Rejection {
            reason: r.reason.code().to_string(),
            field: r.field.clone(),
            detail: r.detail.clone(),
        }
    }
}

impl From<&OpRejection> for pb::Rejection {
    fn from(r: &OpRejection) -> Self {
        pb::Rejection {
            reason: r.reason.to_string(),
            field: r.field.to_string(),
            detail: r.detail.clone(),
        }
    }
}

/// The one mapping from store failures to gRPC status codes.
pub fn store_status(e: &StoreError) -> tonic::Status {
    match e {
        StoreError::WriterStopped => tonic::Status::unavailable(e.to_string()),
        StoreError::Locked { .. } => tonic::Status::unavailable(e.to_string()),
        _ => tonic::Status::internal(format!("store failure: {e}")),
    }
}

fn hash32(bytes: &[u8], what: &str) -> Result<crate::log::Hash, String> {
    bytes
        .try_into()
        .map_err(|_| format!("{what} must be 32 bytes, got {}", bytes.len()))
}

fn region(code: u32, what: &str) -> Result<crate::record::Region, String> {
    crate::record::Region::from_code(code).map_err(|e| format!("{what}: {e}"))
}

/// Largest signer chain and certificate accepted in a checkpoint from the wire.
const SIGNER_CHAIN_CERTS_MAX: usize = 8;
const CERT_BYTES_MAX: usize = 16 * 1024;

impl TryFrom<&pb::Entry> for Entry {
    type Error = String;
    fn try_from(e: &pb::Entry) -> Result<Self, String> {
        if e.op_bytes.len() > crate::record::RECORD_BYTES_MAX {
            return Err(format!(
                "entry op_bytes of {} bytes exceed {}",
                e.op_bytes.len(),
                crate::record::RECORD_BYTES_MAX
            ));
        }
        let entry = Entry {
            origin: region(e.origin, "entry origin")?,
            seq: e.seq,
            prev_hash: hash32(&e.prev_hash, "prev_hash")?,
            appended_at_micros: e.appended_at_micros,
            op_digest: hash32(&e.op_digest, "op_digest")?,
            // Copied: a slice of the received message would keep its whole buffer alive.
            op_bytes: bytes::Bytes::copy_from_slice(&e.op_bytes),
            hash: hash32(&e.hash, "hash")?,
        };
        // A blanked entry never gets past the wire conversion. The digest and hash are checked
        // once, by the link receiver (`ChainHead::advance`), right after this conversion.
        if entry.op_bytes.is_empty() {
            return Err(crate::log::LogError::MissingBytes {
                origin: entry.origin,
                seq: entry.seq,
            }
            .to_string());
        }
        Ok(entry)
    }
}

impl TryFrom<&pb::Checkpoint> for Checkpoint {
    type Error = String;
    fn try_from(c: &pb::Checkpoint) -> Result<Self, String> {
        if c.signer_chain.is_empty() || c.signer_chain.len() > SIGNER_CHAIN_CERTS_MAX {
            return Err(format!(
                "checkpoint signer chain must hold 1..={SIGNER_CHAIN_CERTS_MAX} certificates"
            ));
        }
        if c.signer_chain.iter().any(|d| d.len() > CERT_BYTES_MAX) || c.signature.len() > 1024 {
            return Err("checkpoint certificate or signature too large".to_string());
        }
        Ok(Checkpoint {
            origin: region(c.origin, "checkpoint origin")?,
            seq: c.seq,
            head_hash: hash32(&c.head_hash, "head_hash")?,
            at_unix_seconds: c.at_unix_seconds,
            signature_scheme: u16::try_from(c.signature_scheme)
                .map_err(|_| "signature scheme out of range".to_string())?,
            signature: c.signature.to_vec(),
            signer_chain: c.signer_chain.iter().map(|d| d.to_vec()).collect(),
        })
    }
}
