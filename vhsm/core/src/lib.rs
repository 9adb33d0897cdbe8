//! The vhsm core: sealed, encrypted key store with ceremonies built in (no I/O).
//!
//! Storage, randomness and time reach the core through the traits in [`storage`] and
//! [`env`]; nothing here opens a file or a socket. The facade is [`Vhsm`].
//!
//! # Deviation from docs/contracts.md: the `actor` parameter
//!
//! Every state-changing method of [`Vhsm`] takes a trailing `actor: &str` (the caller's
//! certificate identity, e.g. `"admin"`), recorded in the audit record of the change:
//! `initialize`, `unseal_with_passphrase`, `submit_share`, `reset_unseal`, `seal`, `rekey`,
//! `rekey_stage`, `rekey_commit`, `rekey_abort`,
//! `create_key`, `new_import_key`, `import_key`, `rotate_key`, `set_min_decryption_version`,
//! `enable_key`, `disable_key`, `schedule_key_deletion`, `cancel_key_deletion`, `backup`,
//! `stage_restore`. `destroy_due_keys` is run by the daemon itself (actor `"system"`), and
//! `record_denied(who, operation)` already names its actor. Read-only and crypto calls have none.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod selftest;
pub mod shamir;

mod approvals;
mod audit_log;
mod backup;
mod ceremony;
mod codec;
mod cryptoops;
mod envelope;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
mod header;
mod invocations;
mod keyops;
mod keyring;
mod keys;
mod limiter;
mod provenance;
mod share;
mod staging;

pub mod env;
pub mod error;
mod rekey;
mod reload;
pub mod storage;
#[cfg(any(test, feature = "conformance"))]
pub mod storage_conformance;
pub mod types;
mod vhsm;

pub use crate::crypto::KdfParams;
pub use approvals::{Decided, Proposal, ProposalState, Signoff};
pub use cryptoops::{METADATA_FORMAT, METADATA_LEN};
pub use env::{Clock, OsRandom, RandomSource, SystemClock};
pub use error::{Error, Reason};
pub use invocations::{GcmLimits, InvocationUse, Readiness, Reservation, GCM_RANDOM_IV_LIMIT};
pub use keyops::MAX_DELETION_WAITING_DAYS;
pub use secrecy::SecretString;
pub use storage::{
    Changes, Durability, MemoryStorage, Storage, StorageError, Tree, WriteBatch, WriteOp,
};
pub use types::{
    is_valid_key_id, AnchorMismatch, DecryptInput, EncryptOutput, EncryptedShare, ImportKey,
    ImportedUnder, InitOutcome, InitRequest, KeyInfo, KeyOrigin, KeyState, NewKey, Options,
    RekeyAuth, RekeyCommitted, RekeyStaged, SealState, SecretBytes, Status, UnsealMode,
    UnsealProgress, Usage, UsageSet, VersionCreated,
};
pub use vhsm::{Vhsm, MAX_AUDIT_PAGE};
pub use vhsm_audit::approval;
pub use vhsm_audit::AuditRecord;
pub use zeroize::Zeroizing;

/// Largest plaintext `encrypt` accepts (64 KiB).
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Largest caller AAD `encrypt`/`decrypt` accept.
pub const MAX_AAD_LEN: usize = 65_535;
/// Largest key material `wrap_key` accepts.
pub const MAX_WRAP_MATERIAL_LEN: usize = 64 * 1024;
/// Largest `random` request.
pub const MAX_RANDOM_LEN: usize = 1024;
