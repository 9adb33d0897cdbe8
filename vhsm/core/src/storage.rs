//! The storage seam: the only way the core touches persistence, plus an in-memory backend.
//!
//! A backend stores opaque byte values under byte keys in a few named trees and applies a
//! [`WriteBatch`] atomically. The core encrypts everything secret before it reaches a backend.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

/// A named keyspace. Keys of one tree never collide with keys of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// The plaintext, MAC-protected store header.
    Header,
    /// Keyring terms, encrypted under the root key.
    Keyring,
    /// Customer key records, encrypted under the keyring.
    Keys,
    /// The audit log: key = seq (u64 big endian), value = one JSON line.
    Audit,
    /// Other encrypted records (audit signing seed, ...).
    Meta,
}

impl Tree {
    /// Every tree, in a fixed order.
    pub const ALL: [Tree; 5] = [
        Tree::Header,
        Tree::Keyring,
        Tree::Keys,
        Tree::Audit,
        Tree::Meta,
    ];

    /// Stable name, used as the backend's tree name and bound into record AADs.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Header => "header",
            Tree::Keyring => "keyring",
            Tree::Keys => "keys",
            Tree::Audit => "audit",
            Tree::Meta => "meta",
        }
    }

    /// The tree with this [`Tree::name`], if any.
    pub fn from_name(name: &str) -> Option<Tree> {
        Tree::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One write of a batch.
#[derive(Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace `key` in `tree`.
    Put {
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove `key` from `tree` (no error if absent).
    Delete { tree: Tree, key: Vec<u8> },
}

impl fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are never printed: they may be (encrypted) key records.
        match self {
            WriteOp::Put { tree, key, value } => f
                .debug_struct("Put")
                .field("tree", tree)
                .field("key_len", &key.len())
                .field("value_len", &value.len())
                .finish(),
            WriteOp::Delete { tree, key } => f
                .debug_struct("Delete")
                .field("tree", tree)
                .field("key_len", &key.len())
                .finish(),
        }
    }
}

/// A set of writes applied atomically by [`Storage::commit`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue an insert/replace.
    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put {
            tree,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Queue a removal.
    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete {
            tree,
            key: key.into(),
        });
    }

    /// The queued writes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Consume the batch into its writes.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Append every write of `other` after this batch's writes.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of queued writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// How far a commit must get before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Return only once the data is on stable storage (fsync).
    Flushed,
    /// May return before the data is on stable storage.
    Buffered,
}

/// A backend failure. Messages name the operation, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The backend could not read or write.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The store is in use by another process.
    #[error("storage locked: {0}")]
    Locked(String),
    /// The backend found its own files damaged.
    #[error("storage corrupt: {0}")]
    Corrupt(String),
    /// A replicated backend refused the batch: another write changed the store after the state
    /// this batch was computed from. Nothing was applied; the caller may retry.
    #[error("a concurrent write changed the store first (applied up to {applied_index})")]
    Conflict {
        /// The replicated log index the store had reached when the batch was refused.
        applied_index: u64,
    },
    /// A replicated backend found the batch's request id already applied; nothing was applied.
    #[error("this request was already applied")]
    AlreadyApplied,
    /// A replicated backend could not commit the batch on a majority in time. Its outcome is
    /// unknown: it may still be applied (retry with the same request id).
    #[error("no quorum: {0}")]
    NoQuorum(String),
}

/// The (key, value) pairs returned by [`Storage::scan_prefix`], in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// What a replicated backend tells the core after it applied writes the core did not make
/// itself (another node's, or its own after an uncertain outcome), so the core can reload the
/// in-memory state derived from them. Single-node backends never send one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The whole store may have changed (a snapshot was installed).
    All,
    /// Only these (tree, key) pairs changed.
    Keys(Vec<(Tree, Vec<u8>)>),
}

impl Changes {
    /// Both sets together.
    pub fn merge(self, other: Changes) -> Changes {
        match (self, other) {
            (Changes::Keys(mut a), Changes::Keys(b)) => {
                a.extend(b);
                Changes::Keys(a)
            }
            _ => Changes::All,
        }
    }

    /// True if `tree` may have changed.
    pub fn touches(&self, tree: Tree) -> bool {
        match self {
            Changes::All => true,
            Changes::Keys(k) => k.iter().any(|(t, _)| *t == tree),
        }
    }

    /// True if `tree` may have changed at a key other than `key`.
    pub fn touches_other_than(&self, tree: Tree, key: &[u8]) -> bool {
        match self {
            Changes::All => true,
            Changes::Keys(k) => k.iter().any(|(t, k)| *t == tree && k != key),
        }
    }

    /// True if a key of `tree` for which `pred` holds changed (always, for [`Changes::All`]).
    pub fn touches_matching(&self, tree: Tree, pred: impl Fn(&[u8]) -> bool) -> bool {
        match self {
            Changes::All => true,
            Changes::Keys(k) => k.iter().any(|(t, k)| *t == tree && pred(k)),
        }
    }

    /// The (tree, key) pairs that changed (all of a batch's writes).
    pub fn of_batch(batch: &WriteBatch) -> Changes {
        Changes::Keys(
            batch
                .ops()
                .iter()
                .map(|op| match op {
                    WriteOp::Put { tree, key, .. } | WriteOp::Delete { tree, key } => {
                        (*tree, key.clone())
                    }
                })
                .collect(),
        )
    }
}

/// Persistence for the core. Implementations must be safe to share between threads.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// The value stored under `key` in `tree`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// All (key, value) pairs of `tree` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<KeyValues, StorageError>;
    /// Applies every write of the batch atomically; `Durability::Flushed` returns only after the
    /// data is on stable storage (fsync), `Durability::Buffered` may return before.
    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError>;
    /// The greatest key of `tree`, if any. The default scans the whole tree; backends with
    /// ordered iteration override it.
    fn last_key(&self, tree: Tree) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.scan_prefix(tree, b"")?.pop().map(|(k, _)| k))
    }
}

type TreeMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// In-memory backend for tests and benches. Clones share nothing; share it with `Arc`.
///
/// It can be told to fail its next commits ([`MemoryStorage::fail_commits`]) so tests can
/// check that the core rolls back its in-memory state when a commit fails.
#[derive(Default)]
pub struct MemoryStorage {
    trees: RwLock<BTreeMap<Tree, TreeMap>>,
    fail_commits: RwLock<u32>,
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the next `n` commits fail with [`StorageError::Io`] (test fault injection).
    pub fn fail_commits(&self, n: u32) {
        if let Ok(mut guard) = self.fail_commits.write() {
            *guard = n;
        }
    }

    /// Every (tree, key, value) currently stored (for tests that scan the whole store).
    pub fn dump(&self) -> Vec<(Tree, Vec<u8>, Vec<u8>)> {
        let Ok(trees) = self.trees.read() else {
            return Vec::new();
        };
        trees
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(k, v)| (*t, k.clone(), v.clone())))
            .collect()
    }

    /// Overwrite a value directly, bypassing the core (tests that simulate tampering).
    pub fn raw_put(&self, tree: Tree, key: &[u8], value: &[u8]) {
        if let Ok(mut trees) = self.trees.write() {
            trees
                .entry(tree)
                .or_default()
                .insert(key.to_vec(), value.to_vec());
        }
    }

    /// Remove a value directly, bypassing the core (tests that simulate tampering).
    pub fn raw_delete(&self, tree: Tree, key: &[u8]) {
        if let Ok(mut trees) = self.trees.write() {
            if let Some(m) = trees.get_mut(&tree) {
                m.remove(key);
            }
        }
    }
}

fn poisoned() -> StorageError {
    StorageError::Io("memory storage lock poisoned".into())
}

impl Storage for MemoryStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let trees = self.trees.read().map_err(|_| poisoned())?;
        Ok(trees.get(&tree).and_then(|m| m.get(key).cloned()))
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let trees = self.trees.read().map_err(|_| poisoned())?;
        Ok(trees
            .get(&tree)
            .map(|m| {
                m.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn last_key(&self, tree: Tree) -> Result<Option<Vec<u8>>, StorageError> {
        let trees = self.trees.read().map_err(|_| poisoned())?;
        Ok(trees.get(&tree).and_then(|m| m.keys().next_back().cloned()))
    }

    fn commit(&self, batch: WriteBatch, _durability: Durability) -> Result<(), StorageError> {
        {
            let mut fail = self.fail_commits.write().map_err(|_| poisoned())?;
            if *fail > 0 {
                *fail -= 1;
                return Err(StorageError::Io("injected commit failure".into()));
            }
        }
        // Holding the write lock for the whole batch makes it atomic for readers.
        let mut trees = self.trees.write().map_err(|_| poisoned())?;
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { tree, key, value } => {
                    trees.entry(tree).or_default().insert(key, value);
                }
                WriteOp::Delete { tree, key } => {
                    if let Some(m) = trees.get_mut(&tree) {
                        m.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_storage_passes_conformance_suite() {
        crate::storage_conformance::run_all(&MemoryStorage::new());
    }

    #[test]
    fn injected_failure_applies_nothing() {
        let s = MemoryStorage::new();
        s.fail_commits(1);
        let mut b = WriteBatch::new();
        b.put(Tree::Keys, b"a".to_vec(), b"1".to_vec());
        assert!(matches!(
            s.commit(b.clone(), Durability::Flushed),
            Err(StorageError::Io(_))
        ));
        assert_eq!(s.get(Tree::Keys, b"a").unwrap(), None);
        s.commit(b, Durability::Flushed).unwrap();
        assert_eq!(s.get(Tree::Keys, b"a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn changes_name_what_they_touch() {
        let c = Changes::Keys(vec![(Tree::Meta, b"audit-anchor".to_vec())]);
        assert!(c.touches(Tree::Meta) && !c.touches(Tree::Keys));
        assert!(!c.touches_other_than(Tree::Meta, b"audit-anchor"));
        assert!(c.touches_other_than(Tree::Meta, b"audit-signing-seed"));
        assert!(Changes::All.touches_other_than(Tree::Meta, b"audit-anchor"));
    }

    #[test]
    fn tree_names_round_trip_and_are_distinct() {
        for t in Tree::ALL {
            assert_eq!(Tree::from_name(t.name()), Some(t));
        }
        assert_eq!(Tree::from_name("nope"), None);
        let mut names: Vec<_> = Tree::ALL.iter().map(|t| t.name()).collect();
        names.dedup();
        assert_eq!(names.len(), 5);
    }

    #[test]
    fn write_op_debug_hides_values() {
        let mut b = WriteBatch::new();
        b.put(Tree::Meta, b"k".to_vec(), b"SECRETVALUE".to_vec());
        assert!(!format!("{b:?}").contains("SECRET"));
    }
}
