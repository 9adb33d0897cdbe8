//! `SledStorage`: the core's `Storage` trait on a sled database (one tree, names as prefixes).
//!
//! Every core tree lives in sled's default tree under the prefix `name || 0x00`, so a whole
//! `WriteBatch` maps to one sled `Batch` and `apply_batch` makes it atomic across trees.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vhsm_core::storage::{Durability, Storage, StorageError, Tree, WriteBatch, WriteOp};

/// The message used when another process holds the store's lock.
pub const LOCKED_MESSAGE: &str = "store is in use by another process";

/// A sled-backed store. Drop it (or call [`SledStorage::flush`]) to persist buffered writes.
#[derive(Debug)]
pub struct SledStorage {
    db: sled::Db,
    path: PathBuf,
}

impl SledStorage {
    /// Opens (creating if needed) the store directory `path`: directory 0o700, files 0o600.
    pub fn open(path: &Path) -> Result<SledStorage, StorageError> {
        create_private_dir(path)?;
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(map_err)?;
        restrict_permissions(path)?;
        Ok(SledStorage {
            db,
            path: path.to_owned(),
        })
    }

    /// Writes every buffered change to stable storage.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(map_err)
    }

    /// The sled database (the replicated store keeps its Raft log and state beside the data).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The sled key of `key` in core tree `tree`: `name || 0x00 || key`.
pub fn prefixed(tree: Tree, key: &[u8]) -> Vec<u8> {
    let name = tree.name().as_bytes();
    let mut k = Vec::with_capacity(name.len() + 1 + key.len());
    k.extend_from_slice(name);
    k.push(0);
    k.extend_from_slice(key);
    k
}

impl Storage for SledStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get(prefixed(tree, key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(map_err)
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let strip = tree.name().len() + 1;
        self.db
            .scan_prefix(prefixed(tree, prefix))
            .map(|kv| {
                let (k, v) = kv.map_err(map_err)?;
                let key = k
                    .get(strip..)
                    .ok_or_else(|| StorageError::Corrupt("short key in scan".to_owned()))?;
                Ok((key.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn last_key(&self, tree: Tree) -> Result<Option<Vec<u8>>, StorageError> {
        let strip = tree.name().len() + 1;
        match self.db.scan_prefix(prefixed(tree, b"")).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, _) = kv.map_err(map_err)?;
                let key = k
                    .get(strip..)
                    .ok_or_else(|| StorageError::Corrupt("short key in scan".to_owned()))?;
                Ok(Some(key.to_vec()))
            }
        }
    }

    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut b = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { tree, key, value } => b.insert(prefixed(tree, &key), value),
                WriteOp::Delete { tree, key } => b.remove(prefixed(tree, &key)),
            }
        }
        self.db.apply_batch(b).map_err(map_err)?;
        if durability == Durability::Flushed {
            self.flush()?;
        }
        Ok(())
    }
}

fn map_err(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StorageError::Locked(LOCKED_MESSAGE.to_owned())
        }
        sled::Error::Io(io) => StorageError::Io(format!("sled: {}", io.kind())),
        sled::Error::Corruption { .. } => StorageError::Corrupt("sled reported corruption".into()),
        sled::Error::Unsupported(m) => StorageError::Io(format!("sled unsupported: {m}")),
        sled::Error::ReportableBug(_) => StorageError::Io("sled internal bug".to_owned()),
        sled::Error::CollectionNotFound(_) => StorageError::Io("sled tree not found".to_owned()),
    }
}

fn io_err(what: &str, e: &std::io::Error) -> StorageError {
    StorageError::Io(format!("{what}: {}", e.kind()))
}

/// Creates `path` (and parents) with mode 0o700, and tightens it if it already exists.
pub fn create_private_dir(path: &Path) -> Result<(), StorageError> {
    let mut b = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.recursive(true)
        .create(path)
        .map_err(|e| io_err("create store directory", &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("chmod store directory", &e))
}

/// Sets 0o600 on every file and 0o700 on every directory under `dir`.
fn restrict_permissions(dir: &Path) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err("read store directory", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("read store directory", &e))?;
        let ft = entry
            .file_type()
            .map_err(|e| io_err("stat store file", &e))?;
        let p = entry.path();
        if ft.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err("chmod store directory", &e))?;
            restrict_permissions(&p)?;
        } else if ft.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err("chmod store file", &e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn modes_under(dir: &Path, out: &mut Vec<(PathBuf, u32, bool)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            out.push((e.path(), m.permissions().mode() & 0o777, m.is_dir()));
            if m.is_dir() {
                modes_under(&e.path(), out);
            }
        }
    }

    #[test]
    fn passes_core_conformance_suite() {
        let d = tempfile::tempdir().unwrap();
        let s = SledStorage::open(&d.path().join("store")).unwrap();
        vhsm_core::storage_conformance::run_all(&s);
    }

    #[test]
    fn data_survives_reopen_after_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store");
        {
            let s = SledStorage::open(&p).unwrap();
            let mut b = WriteBatch::new();
            b.put(Tree::Keys, b"k1".to_vec(), b"v1".to_vec());
            b.put(Tree::Audit, b"k1".to_vec(), b"a1".to_vec());
            s.commit(b, Durability::Flushed).unwrap();
            let mut b = WriteBatch::new();
            b.put(Tree::Meta, b"m".to_vec(), b"buffered".to_vec());
            s.commit(b, Durability::Buffered).unwrap();
        }
        let s = SledStorage::open(&p).unwrap();
        assert_eq!(s.get(Tree::Keys, b"k1").unwrap().unwrap(), b"v1");
        assert_eq!(s.get(Tree::Audit, b"k1").unwrap().unwrap(), b"a1");
        assert_eq!(s.get(Tree::Meta, b"m").unwrap().unwrap(), b"buffered");
        assert_eq!(s.get(Tree::Header, b"k1").unwrap(), None);
    }

    #[test]
    fn second_open_reports_store_in_use() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store");
        let _first = SledStorage::open(&p).unwrap();
        let err = SledStorage::open(&p).unwrap_err();
        assert_eq!(err, StorageError::Locked(LOCKED_MESSAGE.to_owned()));
        assert!(err
            .to_string()
            .contains("store is in use by another process"));
    }

    #[test]
    fn store_files_are_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/store");
        let s = SledStorage::open(&p).unwrap();
        s.flush().unwrap();
        drop(s);
        let _s = SledStorage::open(&p).unwrap();
        let mut modes = Vec::new();
        modes_under(&p, &mut modes);
        assert!(!modes.is_empty());
        for (path, mode, is_dir) in modes {
            let want = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", path.display());
        }
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700);
    }

    #[test]
    fn scan_does_not_leak_across_tree_names() {
        let d = tempfile::tempdir().unwrap();
        let s = SledStorage::open(&d.path().join("store")).unwrap();
        let mut b = WriteBatch::new();
        b.put(Tree::Keys, b"".to_vec(), b"empty-key".to_vec());
        b.put(Tree::Keyring, b"1".to_vec(), b"term".to_vec());
        s.commit(b, Durability::Buffered).unwrap();
        let keys = s.scan_prefix(Tree::Keys, b"").unwrap();
        assert_eq!(keys, vec![(Vec::new(), b"empty-key".to_vec())]);
        let ring = s.scan_prefix(Tree::Keyring, b"").unwrap();
        assert_eq!(ring, vec![(b"1".to_vec(), b"term".to_vec())]);
    }

    #[test]
    fn unwritable_location_is_an_io_error() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = SledStorage::open(&file.join("store")).unwrap_err();
        assert!(matches!(err, StorageError::Io(_)), "{err:?}");
    }
}
