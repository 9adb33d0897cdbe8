//! `ReplicatedStorage`: the core's `Storage` on the replicated store. Reads are local (the
//! state machine's trees); a commit becomes a Raft command computed from the state the core
//! has seen, and returns once it is committed on a majority and applied on this node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use vhsm_core::storage::KeyValues;
use vhsm_core::{Durability, RandomSource, Storage, StorageError, Tree, WriteBatch};

use super::node::ClusterNode;
use super::types::{Applied, Command, MAX_REQUEST_ID_LEN};
use crate::storage::SledStorage;

/// Attempts of one store-changing call that lost to concurrent writes on other nodes.
pub const MAX_WRITE_ATTEMPTS: u32 = 3;

/// The client request id a thread's core call runs under, and how many commits it made.
#[derive(Debug)]
struct Scope {
    id: String,
    commits: u32,
}

/// The core's storage on a cluster node.
#[derive(Debug)]
pub struct ReplicatedStorage {
    local: Arc<SledStorage>,
    node: Arc<ClusterNode>,
    runtime: tokio::runtime::Handle,
    scopes: Mutex<HashMap<ThreadId, Scope>>,
}

impl ReplicatedStorage {
    /// Reads from `local`, writes through `node`; blocking waits run on `runtime`.
    pub fn new(
        local: Arc<SledStorage>,
        node: Arc<ClusterNode>,
        runtime: tokio::runtime::Handle,
    ) -> ReplicatedStorage {
        ReplicatedStorage {
            local,
            node,
            runtime,
            scopes: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` (a core call, on this thread) with the client's request id, so that every
    /// commit it makes carries a stable id (`c:<id>:<n>`) and a retried call is applied once.
    /// An empty id gets a fresh random one per commit.
    pub fn with_request_id<R>(&self, request_id: &str, f: impl FnOnce() -> R) -> R {
        let id: String = request_id.chars().take(MAX_REQUEST_ID_LEN - 16).collect();
        let thread = std::thread::current().id();
        if !id.is_empty() {
            if let Ok(mut s) = self.scopes.lock() {
                s.insert(thread, Scope { id, commits: 0 });
            }
        }
        let out = f();
        if let Ok(mut s) = self.scopes.lock() {
            s.remove(&thread);
        }
        out
    }

    /// Runs a store-changing core call (on this blocking thread) under `request_id`. If a
    /// concurrent write on another node won (`conflicted`: nothing was applied), catches up
    /// with the cluster and runs it again, at most [`MAX_WRITE_ATTEMPTS`] times. Each attempt
    /// numbers its commits from 1 again, so a later retry by the client is still recognised.
    pub fn write<T>(
        &self,
        request_id: &str,
        mut attempt: impl FnMut() -> T,
        conflicted: impl Fn(&T) -> bool,
    ) -> T {
        let wait = Duration::from_millis(self.node.config().write_timeout_ms);
        let mut n = 1;
        loop {
            let out = self.with_request_id(request_id, &mut attempt);
            if n >= MAX_WRITE_ATTEMPTS || !conflicted(&out) {
                return out;
            }
            if let Err(e) = self.runtime.block_on(self.node.catch_up(wait)) {
                tracing::warn!(error = %e, "cannot catch up after a write conflict");
                return out;
            }
            n += 1;
        }
    }

    fn next_request_id(&self) -> Result<String, StorageError> {
        let thread = std::thread::current().id();
        if let Ok(mut scopes) = self.scopes.lock() {
            if let Some(scope) = scopes.get_mut(&thread) {
                scope.commits += 1;
                return Ok(format!("c:{}:{}", scope.id, scope.commits));
            }
        }
        let mut raw = [0u8; 16];
        vhsm_core::OsRandom
            .fill(&mut raw)
            .map_err(|e| StorageError::Io(format!("request id: {e}")))?;
        Ok(format!("n:{}", hex::encode(raw)))
    }
}

impl Storage for ReplicatedStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.local.get(tree, key)
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<KeyValues, StorageError> {
        self.local.scan_prefix(tree, prefix)
    }

    fn last_key(&self, tree: Tree) -> Result<Option<Vec<u8>>, StorageError> {
        self.local.last_key(tree)
    }

    /// Durable by construction: the command is in the fsynced log of a majority before it
    /// applies, whatever `durability` asks.
    fn commit(&self, batch: WriteBatch, _durability: Durability) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let cmd = Command::from_batch(&batch, self.node.seen(), self.next_request_id()?);
        let node = Arc::clone(&self.node);
        let wait = Duration::from_millis(node.config().write_timeout_ms);
        // Core calls run on blocking threads (never an async worker), so this may block.
        let outcome = self.runtime.block_on(async move {
            let applied = node.propose(cmd).await;
            if let Ok(
                Applied::Done { index }
                | Applied::Duplicate {
                    index,
                    same_writes: true,
                },
            ) = &applied
            {
                // Acknowledged only once applied here too, so this node's reads see it.
                if !node.wait_applied(*index, Instant::now() + wait).await {
                    return Err(format!("committed at {index} but not applied here in time"));
                }
            }
            applied
        });
        match outcome {
            Ok(Applied::Done { index }) => {
                // The state machine applied this write only because no data write landed
                // between its base (what the core had seen) and it, and the core holds its own
                // write: the core now reflects everything up to `index`. Marking that here
                // lets the same call's next commit be based on it, instead of conflicting with
                // its own first commit until the reload task catches up.
                self.node.mark_seen(index);
                Ok(())
            }
            Ok(Applied::Duplicate {
                same_writes: true, ..
            }) => Ok(()),
            Ok(Applied::Duplicate { .. }) => Err(StorageError::AlreadyApplied),
            Ok(Applied::Conflict { applied_index }) => {
                Err(StorageError::Conflict { applied_index })
            }
            Ok(Applied::Unsupported) => Err(StorageError::Io(
                "the cluster refused a record type this node wrote".into(),
            )),
            Ok(Applied::Nothing) => Err(StorageError::Io("a write became a blank entry".into())),
            // A stopped Raft core (its log or state machine failed a write) never recovers in
            // this process: an I/O error, so the core fails stop. Anything else may resolve.
            Err(e) => match self.node.fatal() {
                Some(fatal) => Err(StorageError::Io(format!("replicated store: {fatal}"))),
                None => Err(StorageError::NoQuorum(e)),
            },
        }
    }
}
