//! Writes output files with safe permissions: secrets 0o600, directories 0o700, never half-written.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::errors::{CliError, CliResult, ExitKind};

/// Mode of files holding secrets or secret-derived data.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of public files (certificates, public keys, audit logs).
pub const PUBLIC_FILE: u32 = 0o644;

/// Creates `dir` (and parents) if missing; the last component is created 0o700.
pub fn ensure_dir(dir: &Path) -> CliResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::io("create directory", dir, &e))
}

/// Creates `dir` if missing and forces its mode to 0o700 (for directories that hold private keys).
pub fn ensure_private_dir(dir: &Path) -> CliResult<()> {
    ensure_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| CliError::io("set permissions of", dir, &e))
}

/// Refuses with exit 7 when `path` exists (use before a ceremony whose output must not be lost).
pub fn refuse_existing(path: &Path, flag_hint: &str) -> CliResult<()> {
    if path.exists() {
        return Err(CliError::new(
            ExitKind::InvalidState,
            format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ),
        )
        .with_hint(flag_hint.to_string()));
    }
    Ok(())
}

/// Writes `bytes` to `path` with `mode`. Without `overwrite` an existing file is an error
/// (exit 7); with it, the new content goes to a temporary file that is renamed over the old one,
/// so the file is never seen half-written or with a wider mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> CliResult<()> {
    if !overwrite {
        refuse_existing(path, "remove it first or choose another path")?;
        return write_new(path, bytes, mode);
    }
    let tmp = temp_sibling(path)?;
    if let Err(e) = write_new(&tmp, bytes, mode) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CliError::io("replace", path, &e)
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> CliResult<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CliError::io("create", path, &e))?;
    // The umask may have narrowed the mode; never widen beyond `mode` but make it exact.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| CliError::io("set permissions of", path, &e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::io("write", path, &e))
}

fn temp_sibling(path: &Path) -> CliResult<PathBuf> {
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd)
        .map_err(|e| CliError::usage(format!("operating system randomness failed: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::usage(format!("{} is not a file path", path.display())))?;
    Ok(path.with_file_name(format!(".{name}.tmp-{}", hex::encode(rnd))))
}

/// Flushes a directory's entries to disk (after creating files in it), so the new names survive
/// a crash as well as their contents.
pub fn sync_dir(dir: &Path) -> CliResult<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CliError::io("sync directory", dir, &e))
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> CliResult<Vec<u8>> {
    fs::read(path).map_err(|e| CliError::io("read", path, &e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_file_is_0600_and_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_file(&p, b"one", PRIVATE_FILE, false).unwrap();
        assert_eq!(mode_of(&p), 0o600);
        let err = write_file(&p, b"two", PRIVATE_FILE, false).unwrap_err();
        assert_eq!(err.kind(), ExitKind::InvalidState);
        assert_eq!(fs::read(&p).unwrap(), b"one");
    }

    #[test]
    fn overwrite_replaces_atomically_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        write_file(&p, b"new", PRIVATE_FILE, true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(mode_of(&p), 0o600);
        // no temporary file left behind
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dir_is_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        ensure_private_dir(&p).unwrap();
        assert_eq!(mode_of(&p), 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&p).unwrap();
        assert_eq!(mode_of(&p), 0o700);
    }

    #[test]
    fn write_into_missing_dir_fails_with_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing/f");
        let err = write_file(&p, b"x", PUBLIC_FILE, false).unwrap_err();
        assert!(err.to_string().contains("missing/f"), "{err}");
        assert!(read_file(&p).is_err());
    }
}
