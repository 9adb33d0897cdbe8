//! The replicated state machine on sled: applies committed commands to the core's trees
//! (compare-and-apply on the base index, once per request id), builds and installs snapshots,
//! and tells the node what changed.
//!
//! Data lives in the sled default tree under the same `tree || 0 || key` names the
//! single-node backend uses, next to the machine's own records (`_sm`, `_rq`, `_ro`), so one
//! sled batch applies an entry's writes and the new applied index atomically.
// openraft's StorageError (large) is the error type its storage traits require; the
// helpers here return it unboxed to hand it straight back to openraft.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageIOError, StoredMembership,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use vhsm_core::{Changes, WriteOp};

use super::snapshot_file::SnapshotFile;
use super::types::{Applied, NodeId, RaftStorageError, TypeConfig};
use crate::storage::prefixed;

const APPLIED: &[u8] = b"_sm\0applied";
const MEMBERSHIP: &[u8] = b"_sm\0membership";
const LAST_DATA: &[u8] = b"_sm\0last_data";
const REQUEST_PREFIX: &[u8] = b"_rq\0";
const ORDER_PREFIX: &[u8] = b"_ro\0";
const SNAPSHOT_MAGIC: &[u8] = b"VHSMSNP1";
/// Request ids are remembered for this many log entries after they were applied.
pub const DEDUPE_WINDOW: u64 = 100_000;

/// What the state machine applied: the node reloads the core's memory from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Last log index applied.
    pub index: u64,
    /// What may have changed.
    pub changes: Changes,
}

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

/// The state machine. `Clone` shares everything (openraft takes it by value).
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: sled::Db,
    /// The current snapshot, in its own file (not in sled, whose cache would hold it).
    snapshots: SnapshotFile,
    /// Held while applying and while a snapshot reads the trees, so a snapshot is consistent.
    apply_lock: Arc<Mutex<()>>,
    notify: mpsc::UnboundedSender<Notice>,
    applied_tx: Arc<watch::Sender<u64>>,
}

fn sm_err(verb: ErrorVerb, e: impl ToString) -> RaftStorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl ToString) -> RaftStorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn request_key(id: &str) -> Vec<u8> {
    [REQUEST_PREFIX, id.as_bytes()].concat()
}

fn order_key(index: u64) -> Vec<u8> {
    [ORDER_PREFIX, &index.to_be_bytes()].concat()
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

impl StateMachine {
    /// The state machine inside `db`, its snapshot in `snapshot_dir`; it reports applied
    /// indexes on `applied_tx` and changes on `notify`.
    pub fn open(
        db: &sled::Db,
        snapshot_dir: &std::path::Path,
        notify: mpsc::UnboundedSender<Notice>,
        applied_tx: Arc<watch::Sender<u64>>,
    ) -> Result<StateMachine, String> {
        let snapshots = SnapshotFile::open(snapshot_dir).map_err(|e| e.to_string())?;
        move_legacy_snapshot(db, &snapshots)?;
        Ok(StateMachine {
            db: db.clone(),
            snapshots,
            apply_lock: Arc::new(Mutex::new(())),
            notify,
            applied_tx,
        })
    }

    /// The index the machine has applied up to, from its own records.
    pub fn applied_index(&self) -> Result<u64, RaftStorageError> {
        Ok(self.applied_log_id()?.map_or(0, |l| l.index))
    }

    fn applied_log_id(&self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        match self
            .db
            .get(APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(v) => serde_json::from_slice(&v).map_err(|e| sm_err(ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    fn last_data_index(&self) -> Result<u64, RaftStorageError> {
        Ok(self
            .db
            .get(LAST_DATA)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// True if the store holds core data but was never under Raft (a store from before the
    /// cluster, or a restored one): the first snapshot must carry it to new members.
    pub fn has_unlogged_data(&self) -> Result<bool, RaftStorageError> {
        if self.applied_log_id()?.is_some() {
            return Ok(false);
        }
        let any = self
            .db
            .iter()
            .keys()
            .next()
            .transpose()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(any.is_some_and(|k| !k.starts_with(b"_")))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, RaftStorageError> {
        self.apply_lock
            .lock()
            .map_err(|_| sm_err(ErrorVerb::Write, "state machine lock poisoned"))
    }

    fn announce(&self, index: u64, changes: Changes) {
        self.applied_tx.send_replace(index);
        // The receiver lives as long as the node; if it is gone, the node is stopping.
        let _ = self.notify.send(Notice { index, changes });
    }
}

/// Every (key, value) of the default tree except the machine's applied/membership records
/// (the snapshot's meta carries them), framed and hashed.
fn dump(db: &sled::Db) -> Result<Vec<u8>, RaftStorageError> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for kv in db.iter() {
        let (k, v) = kv.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        if k.as_ref() == APPLIED || k.as_ref() == MEMBERSHIP {
            continue;
        }
        for part in [k.as_ref(), v.as_ref()] {
            let len = u32::try_from(part.len())
                .map_err(|_| snap_err(ErrorVerb::Read, "record too large"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// Moves a snapshot kept by an earlier version in the sled tree `raft_snapshot` into its file,
/// then empties the tree (again after a crash between the two steps: the file wins).
fn move_legacy_snapshot(db: &sled::Db, file: &SnapshotFile) -> Result<(), String> {
    const LEGACY_TREE: &str = "raft_snapshot";
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == LEGACY_TREE.as_bytes())
    {
        return Ok(());
    }
    let tree = db.open_tree(LEGACY_TREE).map_err(|e| e.to_string())?;
    let meta = tree.get("meta").map_err(|e| e.to_string())?;
    let data = tree.get("data").map_err(|e| e.to_string())?;
    if let (Some(m), Some(d)) = (meta, data) {
        if file.read().map_err(|e| e.to_string())?.is_none() {
            file.write(&m, &d).map_err(|e| e.to_string())?;
            tracing::info!("raft snapshot moved from the store into its own file");
        }
    }
    db.drop_tree(LEGACY_TREE).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    Ok(())
}

/// The (key, value) pairs of a snapshot, after checking its frame and hash.
fn parse_snapshot(data: &[u8]) -> Result<vhsm_core::storage::KeyValues, RaftStorageError> {
    let bad = |m: &str| snap_err(ErrorVerb::Read, format!("snapshot: {m}"));
    let body_len = data.len().checked_sub(32).ok_or_else(|| bad("too short"))?;
    let (body, digest) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(bad("hash mismatch"));
    }
    let mut rest = body
        .strip_prefix(SNAPSHOT_MAGIC)
        .ok_or_else(|| bad("unknown format"))?;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, RaftStorageError> {
        let (len, tail) = rest.split_at_checked(4).ok_or_else(|| bad("truncated"))?;
        let len = usize::try_from(u32::from_be_bytes(
            len.try_into().map_err(|_| bad("truncated"))?,
        ))
        .map_err(|_| bad("length"))?;
        let (part, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
        *rest = tail;
        Ok(part.to_vec())
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Ok(out)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), RaftStorageError> {
        let membership = match self
            .db
            .get(MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(v) => serde_json::from_slice(&v).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => Membership::default(),
        };
        Ok((self.applied_log_id()?, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, RaftStorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let guard = self.lock()?;
        let mut batch = sled::Batch::default();
        let mut last_data = self.last_data_index()?;
        let mut fresh_ids: HashMap<String, Vec<u8>> = HashMap::new();
        let mut changed = Vec::new();
        let mut results = Vec::new();
        let mut last: Option<LogId<NodeId>> = None;
        let mut membership: Option<Membership> = None;
        for entry in entries {
            let index = entry.log_id.index;
            last = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Applied::Nothing,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m));
                    Applied::Nothing
                }
                EntryPayload::Normal(cmd) => {
                    let digest = cmd.writes_digest();
                    let earlier = if cmd.request_id.is_empty() {
                        None
                    } else if let Some(v) = fresh_ids.get(&cmd.request_id) {
                        Some(v.clone())
                    } else {
                        self.db
                            .get(request_key(&cmd.request_id))
                            .map_err(|e| sm_err(ErrorVerb::Read, e))?
                            .map(|v| v.to_vec())
                    };
                    // Stored as index (u64 BE) || writes digest.
                    let earlier = earlier.and_then(|v| {
                        let (i, d) = v.split_at_checked(8)?;
                        Some((be_u64(i)?, d == digest.as_slice()))
                    });
                    let ops: Option<Vec<WriteOp>> = cmd.writes.iter().map(|w| w.to_op()).collect();
                    match (earlier, ops) {
                        (Some((first, same_writes)), _) => Applied::Duplicate {
                            index: first,
                            same_writes,
                        },
                        (None, _) if cmd.base_index < last_data => Applied::Conflict {
                            applied_index: last_data,
                        },
                        (None, None) => Applied::Unsupported,
                        (None, Some(ops)) => {
                            for op in ops {
                                match op {
                                    WriteOp::Put { tree, key, value } => {
                                        batch.insert(prefixed(tree, &key), value);
                                        changed.push((tree, key));
                                    }
                                    WriteOp::Delete { tree, key } => {
                                        batch.remove(prefixed(tree, &key));
                                        changed.push((tree, key));
                                    }
                                }
                            }
                            last_data = index;
                            if !cmd.request_id.is_empty() {
                                let record = [index.to_be_bytes().as_slice(), &digest].concat();
                                batch.insert(request_key(&cmd.request_id), record.clone());
                                batch.insert(order_key(index), cmd.request_id.as_bytes());
                                fresh_ids.insert(cmd.request_id.clone(), record);
                            }
                            Applied::Done { index }
                        }
                    }
                }
            };
            results.push(result);
        }
        let Some(last) = last else {
            return Ok(results);
        };
        // Forget request ids older than the window (decided by log index only: deterministic).
        if let Some(horizon) = last.index.checked_sub(DEDUPE_WINDOW) {
            for kv in self.db.range(order_key(0)..order_key(horizon)) {
                let (k, id) = kv.map_err(|e| sm_err(ErrorVerb::Read, e))?;
                batch.remove(k);
                batch.remove([REQUEST_PREFIX, id.as_ref()].concat());
            }
        }
        batch.insert(LAST_DATA, &last_data.to_be_bytes());
        batch.insert(
            APPLIED,
            serde_json::to_vec(&Some(last)).map_err(|e| sm_err(ErrorVerb::Write, e))?,
        );
        if let Some(m) = &membership {
            batch.insert(
                MEMBERSHIP,
                serde_json::to_vec(m).map_err(|e| sm_err(ErrorVerb::Write, e))?,
            );
        }
        // Not flushed here: the log is durable, and on restart openraft re-applies every entry
        // after the applied index this batch stored atomically with the data.
        self.db
            .apply_batch(batch)
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        drop(guard);
        self.announce(last.index, Changes::Keys(changed));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_inner();
        let records = parse_snapshot(&data)?;
        let sm = self.clone();
        let meta_json = serde_json::to_vec(meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let applied =
            serde_json::to_vec(&meta.last_log_id).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let membership =
            serde_json::to_vec(&meta.last_membership).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        tokio::task::spawn_blocking(move || -> Result<(), RaftStorageError> {
            let guard = sm.lock()?;
            let mut batch = sled::Batch::default();
            for k in sm.db.iter().keys() {
                batch.remove(k.map_err(|e| snap_err(ErrorVerb::Write, e))?);
            }
            for (k, v) in records {
                batch.insert(k, v);
            }
            batch.insert(APPLIED, applied);
            batch.insert(MEMBERSHIP, membership);
            sm.db
                .apply_batch(batch)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            // The installed state is durable before the snapshot that claims it.
            sm.db.flush().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            sm.snapshots
                .write(&meta_json, &data)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            drop(guard);
            Ok(())
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        self.announce(index, Changes::All);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let file = self.snapshots.clone();
        let stored = tokio::task::spawn_blocking(move || file.read())
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        match stored {
            Some(s) => Ok(Some(Snapshot {
                meta: serde_json::from_slice(&s.meta).map_err(|e| snap_err(ErrorVerb::Read, e))?,
                snapshot: Box::new(Cursor::new(s.data)),
            })),
            None => Ok(None),
        }
    }
}

/// Builds a snapshot of the state machine (a consistent copy: applies wait meanwhile).
#[derive(Debug)]
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let sm = self.sm.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let guard = sm.lock()?;
            let (last_log_id, last_membership) = {
                let applied = sm.applied_log_id()?;
                let membership: Membership = match sm
                    .db
                    .get(MEMBERSHIP)
                    .map_err(|e| snap_err(ErrorVerb::Read, e))?
                {
                    Some(v) => {
                        serde_json::from_slice(&v).map_err(|e| snap_err(ErrorVerb::Read, e))?
                    }
                    None => Membership::default(),
                };
                (applied, membership)
            };
            let data = dump(&sm.db)?;
            drop(guard);
            let snapshot_id = match last_log_id {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, data.len()),
                None => format!("0-0-{}", data.len()),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            };
            let meta_json = serde_json::to_vec(&meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            // The applied state the snapshot covers is durable before the snapshot, and the
            // snapshot before the log below it may be purged.
            sm.db.flush().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            sm.snapshots
                .write(&meta_json, &data)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok::<_, RaftStorageError>((meta, data))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_kept_in_the_store_by_an_earlier_version_moves_into_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("store")).unwrap();
        let legacy = db.open_tree("raft_snapshot").unwrap();
        legacy.insert("meta", b"{\"m\":1}".as_slice()).unwrap();
        legacy.insert("data", b"the data".as_slice()).unwrap();
        let snap_dir = dir.path().join("raft-snapshot");
        let open = || {
            let (tx, _rx) = mpsc::unbounded_channel();
            StateMachine::open(&db, &snap_dir, tx, Arc::new(watch::channel(0).0)).unwrap()
        };
        let sm = open();
        let moved = sm.snapshots.read().unwrap().unwrap();
        assert_eq!(moved.meta, b"{\"m\":1}");
        assert_eq!(moved.data, b"the data");
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"raft_snapshot"));
        // Opening again changes nothing.
        drop(sm);
        assert_eq!(open().snapshots.read().unwrap().unwrap(), moved);
    }

    #[test]
    fn snapshots_detect_any_flipped_byte_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.insert(b"keys\0key/a", b"sealed-a".to_vec()).unwrap();
        db.insert(b"audit\0\0\0\0\0\0\0\0\x01", b"{}".to_vec())
            .unwrap();
        let data = dump(&db).unwrap();
        assert_eq!(parse_snapshot(&data).unwrap().len(), 2);
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 1;
            assert!(parse_snapshot(&bad).is_err(), "byte {i}");
        }
        assert!(parse_snapshot(&data[..data.len() - 1]).is_err());
        assert!(parse_snapshot(&[]).is_err());
    }
}
