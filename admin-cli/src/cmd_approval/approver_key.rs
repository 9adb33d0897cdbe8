//! An approver's Ed25519 signing key on disk: the seed sealed under the approver's passphrase
//! (Argon2id, then AES-256-GCM), and the public half the policy registers.
//!
//! Key file (`NAME.key`, mode 0600), JSON:
//! `{"format":"vhsm-approver-key-v1","name":..,"public_key":hex,"kdf":{"m_cost_kib":..,
//! "t_cost":..,"p_cost":..,"salt":hex},"nonce":hex,"sealed_seed":hex}`. The AEAD's associated
//! data is `format \n name \n public_key`, so a key file cannot be renamed to another approver or
//! given another public key without failing to open. Public file (`NAME.pub`):
//! `{"format":"vhsm-approver-pub-v1","name":..,"public_key":hex}`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vhsm_audit::approval::{is_valid_approver_name, parse_public_key};
use zeroize::Zeroizing;

use crate::errors::{CliError, CliResult, ExitKind};

/// `format` of a key file.
pub const KEY_FORMAT: &str = "vhsm-approver-key-v1";
/// `format` of a public file.
pub const PUB_FORMAT: &str = "vhsm-approver-pub-v1";

/// Argon2id costs of a key file: what the appliance uses for its root key (RFC 9106's second
/// recommended option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfCosts {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfCosts {
    /// 64 MiB, 3 passes, 4 lanes.
    pub const RECOMMENDED: KdfCosts = KdfCosts {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 4,
    };

    /// A file may ask for more work than this only if it was crafted to stall the reader.
    fn is_within_reading_bounds(&self) -> bool {
        (8..=1 << 20).contains(&self.m_cost_kib)
            && (1..=16).contains(&self.t_cost)
            && (1..=16).contains(&self.p_cost)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfField {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    name: String,
    public_key: String,
    kdf: KdfField,
    nonce: String,
    sealed_seed: String,
}

/// An approver's public file: who, and the key the policy registers for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverPublic {
    /// `vhsm-approver-pub-v1`.
    pub format: String,
    /// The approver's name (`[a-z0-9._-]{1,64}`).
    pub name: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
}

impl ApproverPublic {
    /// Parses a public file; refuses another format, a bad name or an invalid key.
    pub fn parse(text: &str) -> CliResult<ApproverPublic> {
        let p: ApproverPublic = serde_json::from_str(text)
            .map_err(|_| CliError::usage("not an approver public file (vhsm-approver-pub-v1)"))?;
        if p.format != PUB_FORMAT
            || !is_valid_approver_name(&p.name)
            || parse_public_key(&p.public_key).is_none()
        {
            return Err(CliError::usage(
                "not a valid approver public file (format, name or public key)",
            ));
        }
        Ok(p)
    }
}

/// A newly generated approver: the key file (sealed) and the public file, both as JSON text.
#[derive(Debug)]
pub struct NewApprover {
    /// Contents of `NAME.key`.
    pub key_file: String,
    /// The public half.
    pub public: ApproverPublic,
}

fn aad(name: &str, public_key: &str) -> Vec<u8> {
    format!("{KEY_FORMAT}\n{name}\n{public_key}").into_bytes()
}

fn derive(
    passphrase: &SecretString,
    salt: &[u8],
    costs: KdfCosts,
) -> CliResult<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(costs.m_cost_kib, costs.t_cost, costs.p_cost, Some(32))
        .map_err(|_| CliError::usage("invalid Argon2id costs in the key file"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.expose_secret().as_bytes(), salt, out.as_mut())
        .map_err(|_| CliError::usage("cannot derive the key file's key (Argon2id)"))?;
    Ok(out)
}

fn random<const N: usize>() -> CliResult<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| CliError::usage(format!("the OS random generator failed: {e}")))?;
    Ok(b)
}

/// Generates a fresh signing key for `name` and seals its seed under `passphrase`.
pub fn generate(name: &str, passphrase: &SecretString, costs: KdfCosts) -> CliResult<NewApprover> {
    if !is_valid_approver_name(name) {
        return Err(CliError::usage(format!(
            "invalid approver name {name:?}: use 1-64 characters of a-z 0-9 . _ -"
        )));
    }
    let seed = Zeroizing::new(random::<32>()?);
    let signing = SigningKey::from_bytes(&seed);
    let public_key = hex::encode(signing.verifying_key().as_bytes());
    let salt = random::<16>()?;
    let nonce = random::<12>()?;
    let kek = derive(passphrase, &salt, costs)?;
    let cipher = Aes256Gcm::new_from_slice(kek.as_ref())
        .map_err(|_| CliError::usage("AES-256-GCM key setup failed"))?;
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: seed.as_ref(),
                aad: &aad(name, &public_key),
            },
        )
        .map_err(|_| CliError::usage("sealing the approver key failed"))?;
    let file = KeyFile {
        format: KEY_FORMAT.into(),
        name: name.into(),
        public_key: public_key.clone(),
        kdf: KdfField {
            m_cost_kib: costs.m_cost_kib,
            t_cost: costs.t_cost,
            p_cost: costs.p_cost,
            salt: hex::encode(salt),
        },
        nonce: hex::encode(nonce),
        sealed_seed: hex::encode(sealed),
    };
    let key_file = serde_json::to_string_pretty(&file)
        .map_err(|_| CliError::usage("cannot encode the key file"))?;
    Ok(NewApprover {
        key_file: key_file + "\n",
        public: ApproverPublic {
            format: PUB_FORMAT.into(),
            name: name.into(),
            public_key,
        },
    })
}

/// A key file as read, before its passphrase is known.
#[derive(Debug)]
pub struct SealedApproverKey {
    file: KeyFile,
}

/// An opened approver key: it signs, and its public key is known.
pub struct ApproverKey {
    name: String,
    signing: SigningKey,
}

impl std::fmt::Debug for ApproverKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproverKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SealedApproverKey {
    /// Parses a key file (no passphrase needed yet).
    pub fn parse(text: &str) -> CliResult<SealedApproverKey> {
        let file: KeyFile = serde_json::from_str(text)
            .map_err(|_| CliError::usage("not an approver key file (vhsm-approver-key-v1)"))?;
        let costs = KdfCosts {
            m_cost_kib: file.kdf.m_cost_kib,
            t_cost: file.kdf.t_cost,
            p_cost: file.kdf.p_cost,
        };
        if file.format != KEY_FORMAT
            || !is_valid_approver_name(&file.name)
            || parse_public_key(&file.public_key).is_none()
            || !costs.is_within_reading_bounds()
        {
            return Err(CliError::usage(
                "not a valid approver key file (format, name, public key or KDF costs)",
            ));
        }
        Ok(SealedApproverKey { file })
    }

    /// The approver's name.
    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// The hex public key the file claims (checked against the seed when opened).
    pub fn public_key(&self) -> &str {
        &self.file.public_key
    }

    /// Opens the seed with `passphrase`. A wrong passphrase or a modified file is refused
    /// (exit 4) without saying which.
    pub fn open(&self, passphrase: &SecretString) -> CliResult<ApproverKey> {
        let rejected = || {
            CliError::new(
                ExitKind::Rejected,
                format!(
                    "cannot open the key of approver {}: wrong passphrase or modified key file",
                    self.file.name
                ),
            )
        };
        let salt = hex::decode(&self.file.kdf.salt).map_err(|_| rejected())?;
        let nonce: [u8; 12] = hex::decode(&self.file.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(rejected)?;
        let sealed = hex::decode(&self.file.sealed_seed).map_err(|_| rejected())?;
        let costs = KdfCosts {
            m_cost_kib: self.file.kdf.m_cost_kib,
            t_cost: self.file.kdf.t_cost,
            p_cost: self.file.kdf.p_cost,
        };
        let kek = derive(passphrase, &salt, costs)?;
        let cipher = Aes256Gcm::new_from_slice(kek.as_ref()).map_err(|_| rejected())?;
        let seed = Zeroizing::new(
            cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &sealed,
                        aad: &aad(&self.file.name, &self.file.public_key),
                    },
                )
                .map_err(|_| rejected())?,
        );
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(seed.as_slice().try_into().map_err(|_| rejected())?);
        let signing = SigningKey::from_bytes(&seed);
        if hex::encode(signing.verifying_key().as_bytes()) != self.file.public_key {
            return Err(rejected());
        }
        Ok(ApproverKey {
            name: self.file.name.clone(),
            signing,
        })
    }
}

impl ApproverKey {
    /// The approver's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hex signature of `message`.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    const FAST: KdfCosts = KdfCosts {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    fn pass(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn a_generated_key_opens_and_signs_verifiably() {
        let new = generate("alice", &pass("correct horse battery"), FAST).unwrap();
        let sealed = SealedApproverKey::parse(&new.key_file).unwrap();
        assert_eq!(sealed.name(), "alice");
        assert_eq!(sealed.public_key(), new.public.public_key);
        let key = sealed.open(&pass("correct horse battery")).unwrap();
        let sig = key.sign_hex(b"message");
        let vk_bytes: [u8; 32] = hex::decode(&new.public.public_key)
            .unwrap()
            .try_into()
            .unwrap();
        let vk = VerifyingKey::from_bytes(&vk_bytes).unwrap();
        let sig_bytes: [u8; 64] = hex::decode(sig).unwrap().try_into().unwrap();
        vk.verify(b"message", &Signature::from_bytes(&sig_bytes))
            .unwrap();
        let public = serde_json::to_string(&new.public).unwrap();
        assert_eq!(ApproverPublic::parse(&public).unwrap(), new.public);
    }

    #[test]
    fn the_key_file_holds_no_seed_in_clear_and_debug_shows_no_key() {
        let new = generate("bob", &pass("correct horse battery"), FAST).unwrap();
        let key = SealedApproverKey::parse(&new.key_file)
            .unwrap()
            .open(&pass("correct horse battery"))
            .unwrap();
        let seed_hex = hex::encode(key.signing.to_bytes());
        assert!(!new.key_file.contains(&seed_hex));
        assert!(!format!("{key:?}").contains(&seed_hex));
    }

    #[test]
    fn a_wrong_passphrase_is_rejected() {
        let new = generate("alice", &pass("correct horse battery"), FAST).unwrap();
        let e = SealedApproverKey::parse(&new.key_file)
            .unwrap()
            .open(&pass("wrong horse battery"))
            .unwrap_err();
        assert_eq!(e.kind(), ExitKind::Rejected);
    }

    #[test]
    fn a_renamed_or_rekeyed_file_does_not_open() {
        let alice = generate("alice", &pass("correct horse battery"), FAST).unwrap();
        let bob = generate("bob", &pass("correct horse battery"), FAST).unwrap();
        let renamed = alice.key_file.replace("\"alice\"", "\"mallory\"");
        let e = SealedApproverKey::parse(&renamed)
            .unwrap()
            .open(&pass("correct horse battery"))
            .unwrap_err();
        assert_eq!(e.kind(), ExitKind::Rejected);
        let rekeyed = alice
            .key_file
            .replace(&alice.public.public_key, &bob.public.public_key);
        let e = SealedApproverKey::parse(&rekeyed)
            .unwrap()
            .open(&pass("correct horse battery"))
            .unwrap_err();
        assert_eq!(e.kind(), ExitKind::Rejected);
    }

    #[test]
    fn malformed_files_and_absurd_costs_are_refused_before_any_work() {
        assert!(SealedApproverKey::parse("{}").is_err());
        assert!(SealedApproverKey::parse("not json").is_err());
        let new = generate("alice", &pass("correct horse battery"), FAST).unwrap();
        let greedy = new
            .key_file
            .replace("\"m_cost_kib\": 8", "\"m_cost_kib\": 4294967295");
        assert!(SealedApproverKey::parse(&greedy).is_err());
        assert!(generate("Alice!", &pass("correct horse battery"), FAST).is_err());
        assert!(ApproverPublic::parse(
            "{\"format\":\"vhsm-approver-pub-v1\",\"name\":\"a\",\"public_key\":\"00\"}"
        )
        .is_err());
    }
}
