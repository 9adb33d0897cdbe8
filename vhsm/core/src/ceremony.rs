//! Master-key derivation and the unseal configuration made at init and rekey.
//!
//! Passphrase mode: `MK = Argon2id(passphrase, salt, kdf)`. Quorum mode: a random 256-bit
//! unseal secret is split M-of-N with Shamir and `MK = subkey(secret, "master-key")`. Either
//! way `header.wrapped_root = AES-KW(MK, root key)`.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::crypto::{
    aes_kw_unwrap, aes_kw_wrap, argon2id, derive_subkey, KdfParams, SecretKey, KEY_LEN,
};
use crate::env::RandomSource;
use crate::error::Error;
use crate::header::Header;
use crate::shamir;
use crate::share::ShareFile;
use crate::types::{EncryptedShare, InitRequest, UnsealMode};

/// Shortest accepted passphrase, in bytes.
pub(crate) const MIN_PASSPHRASE_LEN: usize = 8;
/// Longest accepted passphrase, in bytes.
pub(crate) const MAX_PASSPHRASE_LEN: usize = 1024;
const SALT_LEN: usize = 16;
const MASTER_LABEL: &str = "master-key";

/// The unseal-related header fields made by [`new_config`], plus the custodians' shares.
#[derive(Debug)]
pub(crate) struct UnsealConfig {
    pub(crate) mode: UnsealMode,
    pub(crate) threshold: u8,
    pub(crate) count: u8,
    pub(crate) salt: Vec<u8>,
    pub(crate) wrapped_root: Vec<u8>,
    pub(crate) shares: Vec<EncryptedShare>,
}

impl UnsealConfig {
    /// The audit details every ceremony records about the unseal configuration it sets.
    pub(crate) fn audit_details(&self) -> std::collections::BTreeMap<String, String> {
        let fingerprints: Vec<&str> = self.shares.iter().map(|s| s.fingerprint.as_str()).collect();
        [
            ("mode", self.mode.as_str().to_string()),
            ("threshold", self.threshold.to_string()),
            ("share_count", self.count.to_string()),
            ("share_fingerprints", fingerprints.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn check_passphrase(p: &SecretString, field: &'static str) -> Result<(), Error> {
    let len = p.expose_secret().len();
    if !(MIN_PASSPHRASE_LEN..=MAX_PASSPHRASE_LEN).contains(&len) {
        return Err(Error::InvalidArgument(field));
    }
    Ok(())
}

/// Checks an init/rekey request without doing any work.
pub(crate) fn validate(req: &InitRequest) -> Result<(), Error> {
    match req {
        InitRequest::Passphrase(p) => check_passphrase(p, "passphrase"),
        InitRequest::Shares {
            threshold,
            custodian_passphrases,
        } => {
            let n = custodian_passphrases.len();
            if n == 0 || n > usize::from(shamir::MAX_SHARES) {
                return Err(Error::InvalidArgument("custodian_passphrases"));
            }
            if *threshold == 0 || usize::from(*threshold) > n {
                return Err(Error::InvalidArgument("threshold"));
            }
            custodian_passphrases
                .iter()
                .try_for_each(|p| check_passphrase(p, "custodian_passphrases"))
        }
    }
}

fn kdf_failed() -> Error {
    Error::Internal("key derivation failed".into())
}

/// Makes fresh unseal material for `root` as `req` asks.
pub(crate) fn new_config(
    req: &InitRequest,
    root: &SecretKey,
    store_id: [u8; 16],
    epoch: u32,
    kdf: &KdfParams,
    rng: &dyn RandomSource,
) -> Result<UnsealConfig, Error> {
    validate(req)?;
    let wrap = |mk: &SecretKey| {
        aes_kw_wrap(mk, root.expose()).map_err(|_| Error::Internal("root key wrap failed".into()))
    };
    match req {
        InitRequest::Passphrase(p) => {
            let mut salt = vec![0u8; SALT_LEN];
            rng.fill(&mut salt)?;
            let mk =
                argon2id(p.expose_secret().as_bytes(), &salt, kdf).map_err(|_| kdf_failed())?;
            Ok(UnsealConfig {
                mode: UnsealMode::Passphrase,
                threshold: 1,
                count: 1,
                salt,
                wrapped_root: wrap(&mk)?,
                shares: Vec::new(),
            })
        }
        InitRequest::Shares {
            threshold,
            custodian_passphrases,
        } => {
            let count = u8::try_from(custodian_passphrases.len())
                .map_err(|_| Error::InvalidArgument("custodian_passphrases"))?;
            let mut secret = Zeroizing::new([0u8; KEY_LEN]);
            rng.fill(secret.as_mut_slice())?;
            let mut fill = |buf: &mut [u8]| {
                rng.fill(buf)
                    .map_err(|_| crate::crypto::CryptoError::Random)
            };
            let parts = shamir::split(secret.as_slice(), *threshold, count, &mut fill)
                .map_err(|_| Error::Internal("share split failed".into()))?;
            let mut shares = Vec::with_capacity(parts.len());
            for (part, pass) in parts.iter().zip(custodian_passphrases) {
                shares.push(ShareFile::create(
                    store_id,
                    epoch,
                    part,
                    *threshold,
                    count,
                    kdf,
                    pass.expose_secret().as_bytes(),
                    rng,
                )?);
            }
            let mk = master_from_secret(secret.as_slice())?;
            Ok(UnsealConfig {
                mode: UnsealMode::Shares,
                threshold: *threshold,
                count,
                salt: Vec::new(),
                wrapped_root: wrap(&mk)?,
                shares,
            })
        }
    }
}

/// Passphrase mode: derives the master key with the header's salt and parameters.
pub(crate) fn master_from_passphrase(
    passphrase: &SecretString,
    header: &Header,
) -> Result<SecretKey, Error> {
    argon2id(
        passphrase.expose_secret().as_bytes(),
        &header.salt,
        &header.kdf,
    )
    .map_err(|_| kdf_failed())
}

/// Quorum mode: the master key from the combined unseal secret.
pub(crate) fn master_from_secret(secret: &[u8]) -> Result<SecretKey, Error> {
    let s = SecretKey::from_slice(secret)
        .map_err(|_| Error::Internal("unseal secret has a wrong length".into()))?;
    Ok(derive_subkey(&s, MASTER_LABEL))
}

/// Unwraps the root key; `None` when the master key is wrong.
pub(crate) fn unwrap_root(mk: &SecretKey, header: &Header) -> Option<SecretKey> {
    let raw = aes_kw_unwrap(mk, &header.wrapped_root).ok()?;
    SecretKey::from_slice(&raw).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::OsRandom;

    fn pw(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(
            validate(&InitRequest::Passphrase(pw("short"))),
            Err(Error::InvalidArgument("passphrase"))
        );
        assert_eq!(
            validate(&InitRequest::Passphrase(pw(&"x".repeat(1025)))),
            Err(Error::InvalidArgument("passphrase"))
        );
        let shares = |t: u8, n: usize| InitRequest::Shares {
            threshold: t,
            custodian_passphrases: (0..n).map(|i| pw(&format!("custodian-{i}"))).collect(),
        };
        assert_eq!(
            validate(&shares(0, 3)),
            Err(Error::InvalidArgument("threshold"))
        );
        assert_eq!(
            validate(&shares(4, 3)),
            Err(Error::InvalidArgument("threshold"))
        );
        assert_eq!(
            validate(&shares(1, 0)),
            Err(Error::InvalidArgument("custodian_passphrases"))
        );
        assert_eq!(
            validate(&shares(1, 17)),
            Err(Error::InvalidArgument("custodian_passphrases"))
        );
        assert_eq!(validate(&shares(16, 16)), Ok(()));
        let weak = InitRequest::Shares {
            threshold: 1,
            custodian_passphrases: vec![pw("ok-passphrase"), pw("x")],
        };
        assert_eq!(
            validate(&weak),
            Err(Error::InvalidArgument("custodian_passphrases"))
        );
    }

    #[test]
    fn shares_rebuild_the_master_key() {
        let root = SecretKey::from_bytes([1; 32]);
        let req = InitRequest::Shares {
            threshold: 2,
            custodian_passphrases: vec![pw("custodian-a"), pw("custodian-b"), pw("custodian-c")],
        };
        let cfg = new_config(
            &req,
            &root,
            [9; 16],
            0,
            &KdfParams::INSECURE_FAST_FOR_TESTS,
            &OsRandom,
        )
        .unwrap();
        assert_eq!((cfg.threshold, cfg.count, cfg.shares.len()), (2, 3, 3));
        let a = ShareFile::parse(&cfg.shares[0].bytes)
            .unwrap()
            .decrypt(b"custodian-a")
            .unwrap()
            .unwrap();
        let c = ShareFile::parse(&cfg.shares[2].bytes)
            .unwrap()
            .decrypt(b"custodian-c")
            .unwrap()
            .unwrap();
        let secret = shamir::combine(&[a.clone(), c]).unwrap();
        let mk = master_from_secret(&secret).unwrap();
        let header = Header {
            wrapped_root: cfg.wrapped_root.clone(),
            ..crate::header::tests::sample()
        };
        assert_eq!(unwrap_root(&mk, &header).unwrap().expose(), root.expose());
        // One share alone gives a wrong master key.
        let one = shamir::combine(&[a]).unwrap();
        assert!(unwrap_root(&master_from_secret(&one).unwrap(), &header).is_none());
    }

    #[test]
    fn passphrase_master_key() {
        let root = SecretKey::from_bytes([1; 32]);
        let cfg = new_config(
            &InitRequest::Passphrase(pw("a good passphrase")),
            &root,
            [9; 16],
            0,
            &KdfParams::INSECURE_FAST_FOR_TESTS,
            &OsRandom,
        )
        .unwrap();
        let header = Header {
            salt: cfg.salt,
            wrapped_root: cfg.wrapped_root,
            ..crate::header::tests::sample()
        };
        let mk = master_from_passphrase(&pw("a good passphrase"), &header).unwrap();
        assert_eq!(unwrap_root(&mk, &header).unwrap().expose(), root.expose());
        let wrong = master_from_passphrase(&pw("a bad passphrase!"), &header).unwrap();
        assert!(unwrap_root(&wrong, &header).is_none());
    }
}
