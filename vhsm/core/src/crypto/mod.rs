//! Thin, misuse-resistant wrappers over the RustCrypto primitives the vhsm uses.
//!
//! Every secret lives in a zeroizing type with a redacted `Debug`; every failure that could
//! leak information (GCM tag, key-wrap integrity) is reported as the single opaque
//! [`CryptoError::AuthenticationFailed`].

mod aad;
mod error;
mod gcm;
mod hash;
mod kdf;
mod keywrap;
mod secret;

pub use aad::xks_gcm_aad;
pub use error::CryptoError;
pub use gcm::GcmKey;
pub use hash::{ct_eq, derive_subkey, hmac_sha256, sha256, sha256_parts};
pub use kdf::{argon2id, KdfParams, MIN_SALT_LEN};
pub use keywrap::{aes_kw_unwrap, aes_kw_wrap, aes_kwp_unwrap, aes_kwp_wrap};
pub use secret::SecretKey;

/// Length in bytes of every symmetric key the vhsm handles (AES-256).
pub const KEY_LEN: usize = 32;
/// Length in bytes of an AES-GCM initialisation vector (96 bits).
pub const GCM_IV_LEN: usize = 12;
/// Length in bytes of an AES-GCM authentication tag (128 bits).
pub const GCM_TAG_LEN: usize = 16;
