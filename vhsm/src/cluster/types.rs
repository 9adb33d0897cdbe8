//! The replicated store's Raft types: the command one log entry carries and what applying it
//! returns.
//!
//! A command holds only sealed records (the core encrypts every secret before it reaches
//! storage) and the log index of the state it was computed from. Applying it is
//! deterministic: no clock, no randomness, no decryption.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use vhsm_core::{Tree, WriteBatch, WriteOp};

openraft::declare_raft_types!(
    /// The vhsm cluster's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a vhsm node.
pub type VhsmRaft = openraft::Raft<TypeConfig>;
/// A raft node id.
pub type NodeId = u64;
/// openraft's storage error for our type configuration.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// Longest request id a command may carry.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// One write of a replicated batch (the wire form of a core `WriteOp`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_debug_implementations)] // values are never printed; see Command's Debug
pub enum Write {
    /// Insert or replace.
    Put {
        /// Core tree name.
        tree: String,
        /// Key within the tree.
        #[serde(with = "b64")]
        key: Vec<u8>,
        /// Sealed value.
        #[serde(with = "b64")]
        value: Vec<u8>,
    },
    /// Remove.
    Delete {
        /// Core tree name.
        tree: String,
        /// Key within the tree.
        #[serde(with = "b64")]
        key: Vec<u8>,
    },
}

impl Write {
    /// The core write this stands for; `None` for an unknown tree name (a newer peer).
    pub fn to_op(&self) -> Option<WriteOp> {
        match self {
            Write::Put { tree, key, value } => Some(WriteOp::Put {
                tree: Tree::from_name(tree)?,
                key: key.clone(),
                value: value.clone(),
            }),
            Write::Delete { tree, key } => Some(WriteOp::Delete {
                tree: Tree::from_name(tree)?,
                key: key.clone(),
            }),
        }
    }
}

/// What one normal log entry asks the state machine to do.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The caller's request id (empty: none). A second command with the same id is not
    /// applied again.
    pub request_id: String,
    /// The log index whose state the writes were computed from: the command is refused
    /// (nothing applied) if any data-changing entry after it was applied first.
    pub base_index: u64,
    /// The sealed records to write, in order, atomically.
    pub writes: Vec<Write>,
}

impl Command {
    /// A command for a core batch.
    pub fn from_batch(batch: &WriteBatch, base_index: u64, request_id: String) -> Command {
        let writes = batch
            .ops()
            .iter()
            .map(|op| match op {
                WriteOp::Put { tree, key, value } => Write::Put {
                    tree: tree.name().to_owned(),
                    key: key.clone(),
                    value: value.clone(),
                },
                WriteOp::Delete { tree, key } => Write::Delete {
                    tree: tree.name().to_owned(),
                    key: key.clone(),
                },
            })
            .collect();
        Command {
            request_id,
            base_index,
            writes,
        }
    }
}

impl Command {
    /// SHA-256 over the writes in a canonical framing (tree, key, value, each length-prefixed).
    pub fn writes_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for w in &self.writes {
            let (tag, tree, key, value): (u8, &str, &[u8], &[u8]) = match w {
                Write::Put { tree, key, value } => (1, tree, key, value),
                Write::Delete { tree, key } => (2, tree, key, &[]),
            };
            h.update([tag]);
            for part in [tree.as_bytes(), key, value] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        h.finalize().into()
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are sealed records; still, never print them.
        f.debug_struct("Command")
            .field("request_id", &self.request_id)
            .field("base_index", &self.base_index)
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A blank or membership entry: no data changed.
    Nothing,
    /// The writes were applied at this index.
    Done {
        /// Log index of the entry.
        index: u64,
    },
    /// Refused: a data-changing entry after the command's base was applied first.
    Conflict {
        /// Index of the last data-changing entry.
        applied_index: u64,
    },
    /// Refused: a command with the same request id was applied at `index`.
    Duplicate {
        /// Where the first one was applied.
        index: u64,
        /// The first one carried exactly these writes (so this is a retry of the same
        /// proposal, which did take effect).
        same_writes: bool,
    },
    /// Refused: the command names a tree this node does not know (a newer peer wrote it).
    Unsupported,
}

/// What a node says about itself to its peers (`Peer/NodeInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its raft id.
    pub raft_id: NodeId,
    /// Highest log index whose changes its key cache reflects.
    pub applied_index: u64,
    /// A witness never unseals.
    pub witness: bool,
    /// False until it formed or joined a cluster.
    pub initialized: bool,
}

/// A member asking the leader for its read index (`Peer/ReadIndex`). Members before this
/// field sent JSON `null`, read as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexAsk {
    /// The asker's `[cluster] lease_ms`: the leader refuses one that differs from its own,
    /// because the kill switch's lease bound assumes one lease length on every member.
    pub lease_ms: u64,
}

/// The kinds of peer call (one gRPC method each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRpc {
    /// openraft AppendEntries.
    Append,
    /// openraft Vote.
    Vote,
    /// openraft InstallSnapshot (one chunk).
    Snapshot,
    /// Forward a [`Command`] to the leader.
    Propose,
    /// The leader's read index.
    ReadIndex,
    /// [`NodeInfo`].
    NodeInfo,
}

/// Base64 (standard, padded) for byte fields in JSON.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_json_and_back_to_core_writes() {
        let mut b = WriteBatch::new();
        b.put(Tree::Keys, b"key/k".to_vec(), vec![0, 255, 7]);
        b.delete(Tree::Audit, 9u64.to_be_bytes().to_vec());
        let c = Command::from_batch(&b, 41, "req-1".into());
        let json = serde_json::to_vec(&c).unwrap();
        let back: Command = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, c);
        let ops: Vec<_> = back.writes.iter().map(|w| w.to_op().unwrap()).collect();
        assert_eq!(ops, b.ops());
    }

    #[test]
    fn debug_never_shows_values() {
        let mut b = WriteBatch::new();
        b.put(Tree::Meta, b"m".to_vec(), b"SECRETVALUE".to_vec());
        let c = Command::from_batch(&b, 0, String::new());
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn an_unknown_tree_is_not_a_write() {
        let w = Write::Delete {
            tree: "future".into(),
            key: vec![1],
        };
        assert_eq!(w.to_op(), None);
    }
}
