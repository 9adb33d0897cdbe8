//! Rekey: replacing the unseal passphrase or the custodian set, in two phases.
//!
//! `rekey_stage` (authorized by the current passphrase or a quorum of current shares) makes the
//! new configuration (new epoch, root key rewrapped under a new master key, new shares) and
//! stores it as a *staging record* next to the header, without touching the header: the
//! current configuration stays in force. `rekey_commit` takes the staging id and proof that the
//! custodians hold the new material (the new passphrase, or at least M new shares with their
//! passphrases); it checks that this material unwraps the staged root key and that it is the
//! store's root key, then swaps the header and deletes the staging record in one batch. A lost
//! response, a crash or an abandoned staging at any point leaves either the old or the new
//! configuration fully usable; a staging not committed within `Options::rekey_staging_ttl_ms`
//! is refused and discarded. The one-shot `rekey` is kept for older clients.

use secrecy::ExposeSecret;

use crate::audit_log::details;
use crate::ceremony::{self, UnsealConfig};
use crate::crypto::{ct_eq, SecretKey};
use crate::error::Error;
use crate::header::{Header, HEADER_KEY};
use crate::shamir::{self, Share};
use crate::staging::{Staging, STAGING_ID_LEN, STAGING_KEY};
use crate::storage::{Tree, WriteBatch};
use crate::types::{InitOutcome, InitRequest, RekeyAuth, RekeyCommitted, RekeyStaged, UnsealMode};
use crate::vhsm::{Inner, Vhsm};

/// Request field names used in errors, per use of the unseal material.
struct Fields {
    passphrase: &'static str,
    shares: &'static str,
    rejected_event: &'static str,
}

const AUTHORIZE: Fields = Fields {
    passphrase: "old_passphrase",
    shares: "old_shares",
    rejected_event: "rekey.rejected",
};
const PROVE: Fields = Fields {
    passphrase: "new_passphrase",
    shares: "shares",
    rejected_event: "rekey.commit_rejected",
};

/// What is stored under `STAGING_KEY`, if anything.
enum Stored {
    None,
    Unreadable,
    Some(Box<Staging>),
}

impl Vhsm {
    fn stored_staging(&self) -> Result<Stored, Error> {
        Ok(match self.storage.get(Tree::Header, STAGING_KEY)? {
            None => Stored::None,
            Some(bytes) => match Staging::parse(&bytes) {
                Ok(s) => Stored::Some(Box::new(s)),
                Err(_) => Stored::Unreadable,
            },
        })
    }

    /// Recovers the root key that `material` unlocks under `header`. Wrong passphrases or
    /// shares go through the unseal-attempt limiter (and are audited as `fields.rejected_event`).
    fn root_from_material(
        &self,
        inner: &mut Inner,
        header: &Header,
        material: RekeyAuth,
        fields: &Fields,
        actor: &str,
    ) -> Result<SecretKey, Error> {
        self.pre_attempt(inner)?;
        let mk = match (header.mode, material) {
            (UnsealMode::Passphrase, RekeyAuth::Passphrase(p)) => {
                ceremony::master_from_passphrase(&p, header)?
            }
            (UnsealMode::Shares, RekeyAuth::Shares(list)) => {
                let mut parts: Vec<Share> = Vec::new();
                for (bytes, pass) in &list {
                    let file = Self::check_share(header, bytes)?;
                    if parts.iter().any(|s| s.x == file.index) {
                        return Err(Error::InvalidShare(format!(
                            "share {} was given twice",
                            file.index
                        )));
                    }
                    match file.decrypt(pass.expose_secret().as_bytes())? {
                        Some(s) => parts.push(s),
                        None => return Err(self.reject(inner, fields.rejected_event, actor)),
                    }
                }
                if parts.len() < usize::from(header.threshold) {
                    return Err(Error::InvalidArgument(fields.shares));
                }
                let secret = shamir::combine(&parts)
                    .map_err(|_| Error::Internal("share combination failed".into()))?;
                ceremony::master_from_secret(&secret)?
            }
            (UnsealMode::Passphrase, _) => return Err(Error::InvalidArgument(fields.passphrase)),
            (UnsealMode::Shares, _) => return Err(Error::InvalidArgument(fields.shares)),
        };
        match ceremony::unwrap_root(&mk, header) {
            Some(root) => Ok(root),
            None => Err(self.reject(inner, fields.rejected_event, actor)),
        }
    }

    /// Checks the rekey authorization against the live header and the in-memory root key;
    /// returns the live header and the recovered root key.
    fn authorize_rekey(
        &self,
        inner: &mut Inner,
        auth: RekeyAuth,
        actor: &str,
    ) -> Result<(Header, SecretKey), Error> {
        Self::require_unsealed(inner)?;
        let header = inner.header.clone().ok_or(Error::Uninitialized)?;
        let root = self.root_from_material(inner, &header, auth, &AUTHORIZE, actor)?;
        let current = &Self::require_unsealed(inner)?.root;
        if !ct_eq(root.expose(), current.expose()) {
            return Err(Error::Corruption(
                "rekey authorization recovered a different root key".into(),
            ));
        }
        inner.limiter.reset();
        Ok((header, root))
    }

    /// The signed header of the next epoch for `new`, and its unseal material.
    fn next_header(
        &self,
        header: &Header,
        root: &SecretKey,
        new: &InitRequest,
    ) -> Result<(Header, UnsealConfig), Error> {
        let epoch = header
            .epoch
            .checked_add(1)
            .ok_or(Error::Internal("rekey epoch exhausted".into()))?;
        let cfg = ceremony::new_config(
            new,
            root,
            header.store_id,
            epoch,
            &self.options.kdf,
            &*self.rng,
        )?;
        let mut next = Header {
            epoch,
            mode: cfg.mode,
            threshold: cfg.threshold,
            count: cfg.count,
            kdf: self.options.kdf,
            salt: cfg.salt.clone(),
            wrapped_root: cfg.wrapped_root.clone(),
            ..header.clone()
        };
        next.sign(root);
        Ok((next, cfg))
    }

    /// Audit record(s) for a staging record that is about to be replaced or removed.
    fn discard_event(
        stored: &Stored,
        now_ms: u64,
        replaced_by: &str,
    ) -> Option<(&'static str, std::collections::BTreeMap<String, String>)> {
        match stored {
            Stored::None => None,
            Stored::Unreadable => Some((
                "rekey.discarded",
                details([("reason", "unreadable staging record".to_string())]),
            )),
            Stored::Some(old) if old.is_expired(now_ms) => Some((
                "rekey.expired",
                details([
                    ("staging_id", old.id_hex()),
                    ("expires_at_ms", old.expires_at_ms.to_string()),
                ]),
            )),
            Stored::Some(old) => Some((
                "rekey.replaced",
                details([
                    ("staging_id", old.id_hex()),
                    ("replaced_by", replaced_by.to_string()),
                ]),
            )),
        }
    }

    /// Phase one of a rekey: stages the new configuration (returned, with the new shares in
    /// quorum mode) under a fresh staging id, valid for `Options::rekey_staging_ttl_ms`. The
    /// current passphrase or shares stay in force until [`Vhsm::rekey_commit`]. Needs Unsealed
    /// and the current passphrase or a quorum of current shares. Replaces (and audits) an
    /// earlier staging.
    pub fn rekey_stage(
        &self,
        auth: RekeyAuth,
        new: InitRequest,
        actor: &str,
    ) -> Result<RekeyStaged, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        ceremony::validate(&new)?;
        let (header, root) = self.authorize_rekey(&mut inner, auth, actor)?;
        let (next, cfg) = self.next_header(&header, &root, &new)?;
        let now = self.clock.now_ms();
        let mut id = [0u8; STAGING_ID_LEN];
        self.rng.fill(&mut id)?;
        let mut staging = Staging {
            id,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(self.options.rekey_staging_ttl_ms),
            header: next,
            mac: [0; 32],
        };
        staging.sign(&root);
        let mut events = Vec::new();
        if let Some(e) = Self::discard_event(&self.stored_staging()?, now, &staging.id_hex()) {
            events.push(e);
        }
        let mut d = cfg.audit_details();
        d.insert("staging_id".to_string(), staging.id_hex());
        d.insert("epoch".to_string(), staging.header.epoch.to_string());
        d.insert(
            "expires_at_ms".to_string(),
            staging.expires_at_ms.to_string(),
        );
        events.push(("rekey.staged", d));
        let mut batch = WriteBatch::new();
        batch.put(Tree::Header, STAGING_KEY.to_vec(), staging.encode());
        self.commit_audited_events(&mut inner, batch, events, actor)?;
        Ok(RekeyStaged {
            outcome: InitOutcome {
                store_id: staging.header.store_id_hex(),
                shares: cfg.shares,
                audit_key_fingerprint: vhsm_audit::public_key_fingerprint(
                    &staging.header.audit_public_key,
                ),
            },
            staging_id: staging.id_hex(),
            expires_at_ms: staging.expires_at_ms,
            unseal_mode: staging.header.mode,
            threshold: staging.header.threshold,
            share_count: staging.header.count,
        })
    }

    /// Phase two: proves possession of the staged material (the new passphrase, or at least M
    /// of the new shares with their passphrases) and puts the staged configuration in force;
    /// the old passphrase/shares stop working. Needs Unsealed. Refuses an unknown id
    /// (`RekeyNotStaged`) and an expired staging (`RekeyStagingExpired`, which also discards
    /// it); wrong material counts as a failed unseal attempt. On any refusal nothing changes
    /// but the audit log.
    pub fn rekey_commit(
        &self,
        staging_id: &str,
        proof: RekeyAuth,
        actor: &str,
    ) -> Result<RekeyCommitted, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        let header = inner.header.clone().ok_or(Error::Uninitialized)?;
        let staging = match self.stored_staging()? {
            Stored::None => return Err(Error::RekeyNotStaged("no rekey is staged")),
            Stored::Unreadable => {
                return Err(Error::Corruption(
                    "rekey staging record is malformed".into(),
                ))
            }
            Stored::Some(s) => *s,
        };
        if !staging.matches(staging_id) {
            return Err(Error::RekeyNotStaged(
                "the staging id does not name the staged rekey",
            ));
        }
        staging.verify(&Self::require_unsealed(&inner)?.root)?;
        let now = self.clock.now_ms();
        if staging.is_expired(now) {
            let mut batch = WriteBatch::new();
            batch.delete(Tree::Header, STAGING_KEY.to_vec());
            let stored = Stored::Some(Box::new(staging));
            let events = Self::discard_event(&stored, now, "").into_iter().collect();
            self.commit_audited_events(&mut inner, batch, events, actor)?;
            return Err(Error::RekeyStagingExpired);
        }
        let next = staging.header.clone();
        if header.epoch.checked_add(1) != Some(next.epoch)
            || next.store_id != header.store_id
            || next.audit_public_key != header.audit_public_key
        {
            return Err(Error::RekeyNotStaged(
                "the staged rekey was superseded by another rekey",
            ));
        }
        let staged_root = self.root_from_material(&mut inner, &next, proof, &PROVE, actor)?;
        let current = &Self::require_unsealed(&inner)?.root;
        if !ct_eq(staged_root.expose(), current.expose()) {
            return Err(Error::Corruption(
                "the staged rekey wraps a different root key".into(),
            ));
        }
        inner.limiter.reset();
        let mut batch = WriteBatch::new();
        batch.put(Tree::Header, HEADER_KEY.to_vec(), next.encode());
        batch.delete(Tree::Header, STAGING_KEY.to_vec());
        let d = details([
            ("staging_id", staging.id_hex()),
            ("epoch", next.epoch.to_string()),
            ("mode", next.mode.as_str().to_string()),
            ("threshold", next.threshold.to_string()),
            ("share_count", next.count.to_string()),
        ]);
        self.commit_audited(&mut inner, batch, "rekey.committed", actor, d)?;
        let out = RekeyCommitted {
            store_id: next.store_id_hex(),
            epoch: next.epoch,
            unseal_mode: next.mode,
            threshold: next.threshold,
            share_count: next.count,
        };
        inner.header = Some(next);
        inner.partial.clear();
        Ok(out)
    }

    /// Discards the staged rekey named `staging_id` (audited `rekey.aborted`); the current
    /// configuration is unchanged. Works sealed or unsealed.
    pub fn rekey_abort(&self, staging_id: &str, actor: &str) -> Result<(), Error> {
        let mut inner = self.lock()?;
        if inner.header.is_none() {
            return Err(Error::Uninitialized);
        }
        let reason = match self.stored_staging()? {
            Stored::None => return Err(Error::RekeyNotStaged("no rekey is staged")),
            Stored::Unreadable => "unreadable staging record".to_string(),
            Stored::Some(s) if s.matches(staging_id) => s.id_hex(),
            Stored::Some(_) => {
                return Err(Error::RekeyNotStaged(
                    "the staging id does not name the staged rekey",
                ))
            }
        };
        let mut batch = WriteBatch::new();
        batch.delete(Tree::Header, STAGING_KEY.to_vec());
        let d = details([("staging_id", reason)]);
        self.commit_audited(&mut inner, batch, "rekey.aborted", actor, d)?;
        Ok(())
    }

    /// The staged rekey, if one is stored and readable: `(staging id, expires_at_ms)`.
    /// Expired stagings are still reported (they are discarded at the next stage or commit).
    pub fn rekey_staging(&self) -> Result<Option<(String, u64)>, Error> {
        let _inner = self.lock()?;
        self.staging_summary()
    }

    /// [`Vhsm::rekey_staging`] for a caller that holds the state-change lock.
    pub(crate) fn staging_summary(&self) -> Result<Option<(String, u64)>, Error> {
        Ok(match self.stored_staging()? {
            Stored::Some(s) => Some((s.id_hex(), s.expires_at_ms)),
            Stored::None | Stored::Unreadable => None,
        })
    }

    /// One-shot rekey (kept for older clients; prefer [`Vhsm::rekey_stage`] +
    /// [`Vhsm::rekey_commit`]): rewraps the root key under new unseal material and puts it in
    /// force at once, so the new shares exist only in the returned value. Needs Unsealed and
    /// the current passphrase or a quorum of current shares. Discards a staged rekey.
    pub fn rekey(
        &self,
        auth: RekeyAuth,
        new: InitRequest,
        actor: &str,
    ) -> Result<InitOutcome, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        ceremony::validate(&new)?;
        let (header, root) = self.authorize_rekey(&mut inner, auth, actor)?;
        let (next, cfg) = self.next_header(&header, &root, &new)?;
        let mut d = cfg.audit_details();
        d.insert("epoch".to_string(), next.epoch.to_string());
        let mut batch = WriteBatch::new();
        batch.put(Tree::Header, HEADER_KEY.to_vec(), next.encode());
        let now = self.clock.now_ms();
        let stored = self.stored_staging()?;
        let mut events = Vec::new();
        if let Some(e) = Self::discard_event(&stored, now, "one-shot rekey") {
            batch.delete(Tree::Header, STAGING_KEY.to_vec());
            events.push(e);
        }
        events.push(("rekey", d));
        self.commit_audited_events(&mut inner, batch, events, actor)?;
        let outcome = InitOutcome {
            store_id: next.store_id_hex(),
            shares: cfg.shares,
            audit_key_fingerprint: vhsm_audit::public_key_fingerprint(&next.audit_public_key),
        };
        inner.header = Some(next);
        inner.partial.clear();
        Ok(outcome)
    }
}
