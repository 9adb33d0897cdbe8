//! The vhsm audit record format and its offline verifier.
//!
//! Each [`AuditRecord`] carries the SHA-256 of its predecessor's canonical bytes (a hash
//! chain) and, when the store was unsealed, an Ed25519 signature over its own canonical bytes.
//! [`verify_chain`] checks an exported log with only the public key: deletion, insertion,
//! reordering, editing, forged signatures and (given the expected head) truncation are found.
//! [`provenance`] is the signed statement of a key version's origin, verified the same way.
//! This crate holds no key material: signing takes a key the caller owns.
#![forbid(unsafe_code)]

pub mod approval;
mod error;
mod fingerprint;
pub mod provenance;
mod record;
mod verify;

pub use error::{AuditError, VerifyError};
pub use fingerprint::public_key_fingerprint;
pub use provenance::{verify_provenance, ProvenanceError, ProvenanceStatement, SignedProvenance};
pub use record::{parse_log, AuditRecord, CANONICAL_PREFIX, GENESIS_PREV_HASH};
pub use verify::{may_be_unsigned, verify_chain, verify_suffix, Verified, UNSIGNED_EVENTS};
