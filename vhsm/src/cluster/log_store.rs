//! The Raft log on sled: entries, vote, committed and purged ids, each write flushed (fsync)
//! before openraft is told it is durable.
// openraft's StorageError (large) is the error type its storage traits require; the
// helpers here return it unboxed to hand it straight back to openraft.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogId, RaftLogReader,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, RaftStorageError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// The log store: two sled trees of the node's database. Clones share the trees.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> RaftStorageError {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

fn read_err(e: impl ToString) -> RaftStorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl ToString) -> RaftStorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// The log store inside `db` (trees `raft_log` and `raft_meta`).
    pub fn open(db: &sled::Db) -> Result<LogStore, sled::Error> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, RaftStorageError> {
        match self.meta.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    async fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), RaftStorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.meta.insert(key, bytes).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        match self.log.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = serde_json::from_slice(&v).map_err(read_err)?;
                Ok(Some(*e.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftStorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for kv in self.log.range(start.to_be_bytes()..) {
            let (k, v) = kv.map_err(read_err)?;
            let idx = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| read_err("log key is not a u64"))?,
            );
            if !range.contains(&idx) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(PURGED)?;
        // Entries at or below the purge point may survive a crash during purge: ignore them.
        let last_log_id = std::cmp::max(self.last_entry_id()?, last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        self.put_meta(VOTE, vote)
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), RaftStorageError> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(write_err)?;
            batch.insert(&e.get_log_id().index.to_be_bytes(), bytes);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        // Durable before openraft may count this node's copy towards a commit.
        let flushed = self.db.flush_async().await;
        let result = flushed
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = result.is_err();
        callback.log_io_completed(result);
        if failed {
            return Err(write_err("flushing the log failed"));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(log_id.index.to_be_bytes()..) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        self.db.flush_async().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), RaftStorageError> {
        // The purge point first: a crash in between leaves entries below it, which are ignored.
        self.put_meta(PURGED, &log_id).await?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=log_id.index.to_be_bytes()) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(write_err)?;
        Ok(())
    }
}
