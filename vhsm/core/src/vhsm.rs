//! The `Vhsm` facade: the seal state machine, key management, crypto and audit behind one API.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::env::{Clock, RandomSource};
use crate::error::Error;
use crate::storage::Storage;
use crate::types::{
    DecryptInput, EncryptOutput, ImportKey, InitOutcome, InitRequest, KeyInfo, NewKey, Options,
    RekeyAuth, SealState, Status, UnsealProgress,
};

/// The vhsm store. `Send + Sync`; share it as `Arc<Vhsm>`.
pub struct Vhsm {
    storage: Arc<dyn Storage>,
    rng: Arc<dyn RandomSource>,
    clock: Arc<dyn Clock>,
    options: Options,
}

impl fmt::Debug for Vhsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vhsm").finish_non_exhaustive()
    }
}

fn todo() -> Error {
    Error::Internal("not implemented yet".into())
}

#[allow(unused_variables)]
impl Vhsm {
    /// Opens the store on `storage`: comes up Uninitialized (no header) or Sealed.
    pub fn open(
        storage: Arc<dyn Storage>,
        rng: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Vhsm, Error> {
        options.validate()?;
        Ok(Vhsm {
            storage,
            rng,
            clock,
            options,
        })
    }

    /// A snapshot of the seal state, unseal progress, key count and audit head.
    pub fn status(&self) -> Status {
        let _ = (&self.storage, &self.rng, &self.clock, &self.options);
        Status {
            seal_state: SealState::Uninitialized,
            unseal_mode: None,
            threshold: 0,
            share_count: 0,
            unseal_progress: 0,
            key_count: 0,
            store_id: String::new(),
            audit_head_seq: 0,
            audit_head_hash: String::new(),
            restore_pending: false,
        }
    }

    /// Initializes an empty store; leaves it Sealed.
    pub fn initialize(&self, req: InitRequest, actor: &str) -> Result<InitOutcome, Error> {
        Err(todo())
    }

    /// Passphrase mode: unseals with the passphrase.
    pub fn unseal_with_passphrase(
        &self,
        passphrase: &SecretString,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        Err(todo())
    }

    /// Quorum mode: submits one encrypted share and its custodian passphrase.
    pub fn submit_share(
        &self,
        share: &[u8],
        passphrase: &SecretString,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        Err(todo())
    }

    /// Discards the shares of a partial unseal.
    pub fn reset_unseal(&self, actor: &str) -> UnsealProgress {
        UnsealProgress {
            state: SealState::Uninitialized,
            progress: 0,
            threshold: 0,
        }
    }

    /// Seals: every key in memory is zeroized.
    pub fn seal(&self, actor: &str) -> Result<(), Error> {
        Err(todo())
    }

    /// Rewraps the root key under new unseal material (old passphrase/shares stop working).
    pub fn rekey(
        &self,
        auth: RekeyAuth,
        new: InitRequest,
        actor: &str,
    ) -> Result<InitOutcome, Error> {
        Err(todo())
    }

    /// Creates a generated AES-256 key.
    pub fn create_key(&self, spec: NewKey, actor: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// A fresh single-use import (transport) key, kept in memory only while unsealed.
    pub fn new_import_key(&self, actor: &str) -> Result<ImportKey, Error> {
        Err(todo())
    }

    /// Imports AES-256 material wrapped with AES-KWP under an import key (consumed).
    pub fn import_key(
        &self,
        spec: NewKey,
        import_key_id: &str,
        wrapped: &[u8],
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Every key, destroyed tombstones included, by id.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, Error> {
        Err(todo())
    }

    /// One key's public description.
    pub fn describe_key(&self, id: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Adds a new version; encrypt uses it, old versions still decrypt.
    pub fn rotate_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Sets the lowest version decrypt/unwrap accept (1..=current).
    pub fn set_min_decryption_version(
        &self,
        id: &str,
        version: u32,
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Disabled → Enabled.
    pub fn enable_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Enabled → Disabled.
    pub fn disable_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Enabled/Disabled → PendingDeletion, due after `waiting_days`.
    pub fn schedule_key_deletion(
        &self,
        id: &str,
        waiting_days: u32,
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// PendingDeletion → Disabled.
    pub fn cancel_key_deletion(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// Destroys every key whose deletion is due; returns their ids (daemon calls it periodically).
    pub fn destroy_due_keys(&self) -> Result<Vec<String>, Error> {
        Err(todo())
    }

    /// Public metadata of a key for the crypto role (= `describe_key`).
    pub fn key_metadata(&self, id: &str) -> Result<KeyInfo, Error> {
        Err(todo())
    }

    /// AES-256-GCM encrypt under the key's current version.
    pub fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<EncryptOutput, Error> {
        Err(todo())
    }

    /// AES-256-GCM decrypt; the key version comes from the metadata.
    pub fn decrypt(&self, id: &str, input: &DecryptInput<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
        Err(todo())
    }

    /// AES-KWP wrap of `material` under the key's current version; returns (wrapped, version).
    pub fn wrap_key(&self, id: &str, material: &[u8]) -> Result<(Vec<u8>, u32), Error> {
        Err(todo())
    }

    /// AES-KWP unwrap under the given key version.
    pub fn unwrap_key(
        &self,
        id: &str,
        wrapped: &[u8],
        version: u32,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        Err(todo())
    }

    /// `len` (≤ 1024) bytes from the random source.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, Error> {
        Err(todo())
    }

    /// An integrity-protected backup of the whole (encrypted) store. Needs Unsealed.
    pub fn backup(&self, actor: &str) -> Result<Vec<u8>, Error> {
        Err(todo())
    }

    /// Stages a backup on an Uninitialized store, in memory; the next unseal restores it.
    pub fn stage_restore(&self, backup: &[u8], actor: &str) -> Result<Status, Error> {
        Err(todo())
    }

    // audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<vhsm_audit::AuditRecord>, Error>
    // lands as soon as vhsm-audit defines AuditRecord.

    /// The appliance's Ed25519 audit verification key. Works while sealed.
    pub fn audit_public_key(&self) -> Result<[u8; 32], Error> {
        Err(todo())
    }

    /// Appends an `access.denied` audit record (the daemon calls it on PERMISSION_DENIED).
    pub fn record_denied(&self, who: &str, operation: &str) -> Result<(), Error> {
        Err(todo())
    }
}
