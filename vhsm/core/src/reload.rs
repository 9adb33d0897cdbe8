//! Reloading the in-memory state (header, audit head, key cache) after a replicated backend
//! applied writes that this node's core did not make itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::approvals::APPROVAL_META_PREFIX;
use crate::audit_log;
use crate::error::Error;
use crate::header::{Header, HEADER_KEY};
use crate::keys;
use crate::storage::{Changes, Tree};
use crate::vhsm::{load_secrets, Hot, Inner, Vhsm};

impl Vhsm {
    /// Brings the header, the audit head and (while unsealed) the key cache in line with what
    /// storage now holds, for the parts `changes` names. Idempotent: it reads the current
    /// stored state, so a late or repeated call never moves anything backwards.
    ///
    /// Fails closed: if what storage holds cannot be authenticated with this node's root key
    /// (another store was installed, or a record is corrupt), the node seals itself and the
    /// error is returned.
    pub fn reload(&self, changes: &Changes) -> Result<(), Error> {
        let mut inner = self.lock()?;
        let result = self.reload_locked(&mut inner, changes);
        if result.is_err() && inner.unsealed.is_some() {
            inner.unsealed = None;
            inner.imports.clear();
            self.set_hot(Hot::Sealed);
        }
        result
    }

    fn reload_locked(&self, inner: &mut Inner, changes: &Changes) -> Result<(), Error> {
        if changes.touches(Tree::Header) {
            let header = match self.storage.get(Tree::Header, HEADER_KEY)? {
                Some(bytes) => Some(Header::parse(&bytes)?),
                None => None,
            };
            match &header {
                None if inner.header.is_some() => {
                    inner.unsealed = None;
                    inner.imports.clear();
                    self.set_hot(Hot::Uninitialized);
                }
                None => {}
                Some(h) => {
                    if let Some(u) = &inner.unsealed {
                        h.verify(&u.root).map_err(|_| {
                            Error::Corruption(
                                "the replicated store header does not verify with this node's \
                                 root key"
                                    .into(),
                            )
                        })?;
                    } else {
                        self.set_hot(Hot::Sealed);
                    }
                    // A backup staged on this (then empty) node is superseded by the cluster's.
                    inner.staged = None;
                }
            }
            inner.header = header;
        }
        if changes.touches(Tree::Audit) {
            inner.audit_head = audit_log::load_head(&*self.storage)?;
        }
        let Some(unsealed) = inner.unsealed.as_mut() else {
            return Ok(());
        };
        // The audit anchor moves with every signed record and is read only at unseal; approval
        // records are read from storage on every use; any other Meta record (the signing seed)
        // or a keyring term means reloading every secret.
        if changes.touches(Tree::Keyring)
            || changes.touches_matching(Tree::Meta, |k| {
                k != audit_log::ANCHOR_KEY && !k.starts_with(APPROVAL_META_PREFIX)
            })
        {
            let header = inner.header.clone().ok_or(Error::Uninitialized)?;
            let (keyring, signer, all) = load_secrets(&*self.storage, &unsealed.root, &header)?;
            unsealed.keyring = keyring;
            unsealed.signer = signer;
            self.set_hot(Hot::Unsealed(all));
            return Ok(());
        }
        let Changes::Keys(list) = changes else {
            return Ok(());
        };
        let ids: BTreeSet<String> = list
            .iter()
            .filter(|(t, _)| *t == Tree::Keys)
            .filter_map(|(_, k)| keys::id_of_storage_key(k))
            .collect();
        for id in ids {
            let previous = self.cached(&id).ok();
            match keys::load_one(&*self.storage, &unsealed.keyring, &id, previous.as_deref())? {
                Some(cached) => self.put_hot(cached),
                None => self.remove_hot(&id),
            }
        }
        Ok(())
    }

    /// Removes one key from the hot cache (no-op unless unsealed).
    pub(crate) fn remove_hot(&self, id: &str) {
        let mut guard = match self.hot.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Hot::Unsealed(map) = &mut *guard {
            map.remove(id);
        }
    }

    /// True if this node is unsealed but its key cache lacks `id` (or, given a ciphertext's
    /// `metadata`, the key version it names): the node may be behind the cluster, and should
    /// catch up once before it answers "not found" or "invalid ciphertext".
    pub fn needs_catch_up(&self, id: &str, metadata: Option<&[u8]>) -> bool {
        let version = match metadata.map(crate::cryptoops::parse_metadata) {
            Some(Ok(v)) => Some(v),
            // Unparseable metadata is the caller's error, not this node's lag.
            Some(Err(_)) => return false,
            None => None,
        };
        let guard = match self.hot.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*guard {
            Hot::Unsealed(map) => match map.get(id) {
                None => true,
                Some(k) => {
                    let k: &Arc<keys::CachedKey> = k;
                    version.is_some_and(|v| v > k.info.current_version)
                }
            },
            _ => false,
        }
    }
}
