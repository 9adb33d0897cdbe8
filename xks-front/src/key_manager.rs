//! The seam between the XKS router and the key manager: the `KeyManager` trait and its types.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use vhsm_proto::v1::Reason;
use zeroize::Zeroizing;

/// A boxed, sendable future (keeps the trait object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a key-manager call failed. Carries no message text from the node (nothing to leak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VhsmError {
    /// A node answered with an error carrying this stable reason.
    #[error("key manager rejected the request: {0:?}")]
    Rejected(Reason),
    /// The request deadline passed before any node answered.
    #[error("key manager deadline exceeded")]
    Timeout,
    /// No node could be reached.
    #[error("no key manager node reachable")]
    Unavailable,
}

/// A result plus the id of the node that produced it (for the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served<T> {
    /// The answer.
    pub value: T,
    /// Id of the node that served the call.
    pub node: Arc<str>,
}

/// What vhsm's Encrypt returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// Same length as the plaintext; tag not appended.
    pub ciphertext: Vec<u8>,
    /// 12-byte GCM IV.
    pub iv: Vec<u8>,
    /// 16-byte GCM tag.
    pub tag: Vec<u8>,
    /// Our key-version blob (≤ 20 bytes), bound into the GCM AAD by vhsm.
    pub metadata: Vec<u8>,
    /// The CDIV digest vhsm computed at the source (32 bytes) when the integrity check was
    /// asked for, else empty.
    pub integrity_value: Vec<u8>,
}

/// Inputs of a Decrypt.
#[derive(Debug, Clone, Copy)]
pub struct DecryptInput<'a> {
    /// Ciphertext without tag.
    pub ciphertext: &'a [u8],
    /// IV returned by Encrypt.
    pub iv: &'a [u8],
    /// Tag returned by Encrypt.
    pub tag: &'a [u8],
    /// Caller AAD (may be empty).
    pub aad: &'a [u8],
    /// Metadata returned by Encrypt (may be empty).
    pub metadata: &'a [u8],
}

/// The lifecycle state of a key as the front needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Disabled by an operator.
    Disabled,
    /// Scheduled for deletion.
    PendingDeletion,
    /// Material destroyed.
    Destroyed,
}

/// Public metadata of a key (no material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    /// e.g. "AES_256".
    pub key_spec: String,
    /// Key allows ENCRYPT.
    pub encrypt: bool,
    /// Key allows DECRYPT.
    pub decrypt: bool,
    /// Lifecycle state.
    pub state: KeyState,
}

/// The key manager as the router sees it: an HA group of vhsm nodes, or a fake in tests.
/// Every call must finish by `deadline`, else `VhsmError::Timeout`.
pub trait KeyManager: Send + Sync + 'static {
    /// AES-256-GCM encrypt under the key's current version. With `integrity_check`, vhsm
    /// also returns the CDIV digest (computed right after encrypting) in `integrity_value`,
    /// after decrypting its own output as a self-check, all in one call.
    fn encrypt<'a>(
        &'a self,
        key_id: &'a str,
        plaintext: &'a [u8],
        aad: &'a [u8],
        integrity_check: bool,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<EncryptOutput>, VhsmError>>;

    /// AES-256-GCM decrypt.
    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        input: DecryptInput<'a>,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<Zeroizing<Vec<u8>>>, VhsmError>>;

    /// Public metadata of a key.
    fn key_metadata<'a>(
        &'a self,
        key_id: &'a str,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<KeyMetadata>, VhsmError>>;
}
