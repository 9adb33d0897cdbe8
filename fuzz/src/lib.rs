//! Shared fixtures of the fuzz targets in `fuzz_targets/` (see docs/fuzzing.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Directory the config seeds name files in (`/tmp/vhsm-fuzz`), created on first use with:
/// `secret` (a valid SigV4 secret, mode 0600), `bad-secret` (too short), and `pki/ca.crt`,
/// `pki/server.crt`, `pki/server.key` (placeholders: validation only checks that they exist).
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from("/tmp/vhsm-fuzz");
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(dir.join("pki"))?;
            std::fs::write(
                dir.join("secret"),
                "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz\n",
            )?;
            std::fs::write(dir.join("bad-secret"), "short\n")?;
            for f in ["pki/ca.crt", "pki/server.crt", "pki/server.key"] {
                std::fs::write(dir.join(f), "placeholder\n")?;
            }
            use std::os::unix::fs::PermissionsExt;
            for f in ["secret", "bad-secret", "pki/server.key"] {
                std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            panic!("cannot create the fuzz fixture directory /tmp/vhsm-fuzz: {e}");
        }
        dir
    })
}
