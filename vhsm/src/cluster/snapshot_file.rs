//! The current Raft snapshot as one file beside the store (`data_dir/raft-snapshot/current`),
//! replaced atomically, so the store's cache never holds a copy of the whole state.
//!
//! Format: `VHSMSNF1 || u64be meta_len || meta (JSON) || data || SHA-256(all before)`. The data
//! keeps its own frame and hash (`state_machine::dump`); the outer hash ties the meta to it, so
//! a snapshot is never read with another's data. Written as `current.tmp` (0o600), fsynced,
//! renamed over `current`, then the directory is fsynced: a crash leaves the old snapshot or the
//! new one, never a mix. A file that fails its checks is an error (fail closed), not "none".

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::storage::create_private_dir;

const MAGIC: &[u8] = b"VHSMSNF1";
const CURRENT: &str = "current";
const PARTIAL: &str = "current.tmp";

/// Why the snapshot file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file system refused (names the step).
    #[error("snapshot file: {what}: {source}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one this code wrote, or it was damaged.
    #[error("snapshot file {path}: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotFileError {
    move |source| SnapshotFileError::Io { what, source }
}

/// A stored snapshot: openraft's meta (JSON) and the state data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// `SnapshotMeta` as JSON.
    pub meta: Vec<u8>,
    /// The framed, hashed state (`state_machine::dump`).
    pub data: Vec<u8>,
}

/// The snapshot directory of one node.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    dir: PathBuf,
}

impl SnapshotFile {
    /// Uses `dir` (created 0o700 if missing).
    pub fn open(dir: &Path) -> Result<SnapshotFile, SnapshotFileError> {
        create_private_dir(dir).map_err(|e| SnapshotFileError::Io {
            what: "create directory",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(SnapshotFile {
            dir: dir.to_owned(),
        })
    }

    /// The stored snapshot, if one was written.
    pub fn read(&self) -> Result<Option<StoredSnapshot>, SnapshotFileError> {
        let path = self.dir.join(CURRENT);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read")(e)),
        };
        let corrupt = |why| SnapshotFileError::Corrupt {
            path: path.display().to_string(),
            why,
        };
        let body_len = bytes
            .len()
            .checked_sub(32)
            .ok_or_else(|| corrupt("too short"))?;
        let (body, digest) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("hash mismatch"));
        }
        let rest = body
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("unknown format"))?;
        let (len, rest) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("truncated"))?;
        let meta_len = usize::try_from(u64::from_be_bytes(*len))
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or_else(|| corrupt("meta length out of range"))?;
        // The data stays in the buffer it was read into (a snapshot can be tens of MiB): the
        // hash is cut off the end and the header drained off the front.
        let meta_start = MAGIC.len() + 8;
        let data_start = meta_start + meta_len;
        let meta = bytes[meta_start..data_start].to_vec();
        let mut data = bytes;
        data.truncate(body_len);
        data.drain(..data_start);
        Ok(Some(StoredSnapshot { meta, data }))
    }

    /// Replaces the stored snapshot with `meta` and `data`, durably, before it returns.
    pub fn write(&self, meta: &[u8], data: &[u8]) -> Result<(), SnapshotFileError> {
        let partial = self.dir.join(PARTIAL);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io("create"))?;
        let meta_len = u64::try_from(meta.len()).unwrap_or(u64::MAX);
        let mut hash = Sha256::new();
        for part in [MAGIC, &meta_len.to_be_bytes(), meta, data] {
            hash.update(part);
            f.write_all(part).map_err(io("write"))?;
        }
        f.write_all(&hash.finalize()).map_err(io("write"))?;
        f.sync_all().map_err(io("fsync"))?;
        drop(f);
        std::fs::rename(&partial, self.dir.join(CURRENT)).map_err(io("rename"))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_written_snapshot_reads_back_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(&dir.path().join("snap")).unwrap();
        assert!(f.read().unwrap().is_none());
        f.write(b"{\"m\":1}", b"first data").unwrap();
        f.write(b"{\"m\":2}", b"second").unwrap();
        let s = f.read().unwrap().unwrap();
        assert_eq!(
            (s.meta.as_slice(), s.data.as_slice()),
            (b"{\"m\":2}".as_slice(), b"second".as_slice())
        );
        let file = dir.path().join("snap").join(CURRENT);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(dir.path().join("snap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert!(!dir.path().join("snap").join(PARTIAL).exists());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        f.write(b"{}", b"data").unwrap();
        let path = dir.path().join(CURRENT);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(f.read(), Err(SnapshotFileError::Corrupt { .. })),
                "byte {i}"
            );
            std::fs::write(&path, &good[..i]).unwrap();
            assert!(f.read().is_err(), "cut at {i}");
        }
    }

    #[test]
    fn a_partial_write_left_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        f.write(b"{}", b"kept").unwrap();
        std::fs::write(dir.path().join(PARTIAL), b"half a snap").unwrap();
        assert_eq!(f.read().unwrap().unwrap().data, b"kept");
    }
}
