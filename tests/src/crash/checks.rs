//! The checks after every restart: keys as the model says, the audit chain verifies and keeps
//! every record seen before, and every enabled key still encrypts and decrypts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tonic::transport::Channel;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{DecryptRequest, EncryptRequest, Reason};

use super::model::{KeyState, Material, Model, Sealed, DISABLED, ENABLED, PENDING};
use super::rng::Rng;
use crate::admin::Admin;

/// `key list` as the model's map.
pub fn observed_keys(admin: &Admin) -> Result<BTreeMap<String, KeyState>> {
    let list = admin.json(&["key", "list"], "")?;
    let mut keys = BTreeMap::new();
    for k in list
        .as_array()
        .ok_or_else(|| anyhow!("key list is not an array: {list}"))?
    {
        let (id, state) = KeyState::from_json(k)?;
        keys.insert(id, state);
    }
    Ok(keys)
}

/// Every key id on which `model` and `seen` differ, with both sides.
pub fn key_diff(
    model: &BTreeMap<String, KeyState>,
    seen: &BTreeMap<String, KeyState>,
) -> Vec<String> {
    let mut ids: Vec<&String> = model.keys().chain(seen.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter(|id| model.get(*id) != seen.get(*id))
        .map(|id| {
            format!(
                "{id}: expected {:?}, found {:?}",
                model.get(id),
                seen.get(id)
            )
        })
        .collect()
}

/// Exports the audit log, verifies it offline with `vhsm-admin audit verify` against the head
/// `status` reported just before, and returns its records.
pub fn export_and_verify(admin: &Admin, out: &Path) -> Result<Vec<Value>> {
    export_and_verify_from(admin, out, None)
}

/// As [`export_and_verify`], for the records from seq `from` on (`--from`, and `--first-seq`
/// for the verification, which then trusts the link of record `from` to its predecessor).
pub fn export_and_verify_from(admin: &Admin, out: &Path, from: Option<u64>) -> Result<Vec<Value>> {
    let st = admin.json(&["status"], "")?;
    let head = format!(
        "{}:{}",
        st["audit_head_seq"].as_u64().unwrap_or(0),
        st["audit_head_hash"].as_str().unwrap_or_default()
    );
    let out_s = out.to_string_lossy().into_owned();
    let from_s = from.map(|n| n.to_string());
    let mut export = vec!["audit", "export", "--out", &out_s];
    if let Some(n) = &from_s {
        export.extend(["--from", n]);
    }
    admin.ok(&export, "")?;
    let public = format!("{out_s}.pub");
    let mut verify = vec![
        "audit",
        "verify",
        "--log",
        &out_s,
        "--public-key",
        &public,
        "--expect-head",
        &head,
    ];
    if let Some(n) = &from_s {
        verify.extend(["--first-seq", n]);
    }
    admin.ok(&verify, "").context("audit verify")?;
    let text = std::fs::read_to_string(out)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| anyhow!("audit line {l:?}: {e}")))
        .collect()
}

/// The whole log from `earlier` (verified before) and a verified export starting at
/// `earlier`'s last record, which must be unchanged in it.
pub fn extend_log(earlier: &[Value], suffix: Vec<Value>) -> Result<Vec<Value>> {
    let (Some(last), Some(first)) = (earlier.last(), suffix.first()) else {
        bail!("audit export from the last verified record came back empty");
    };
    if last != first {
        bail!("audit record changed: was {last}, now {first}");
    }
    let mut log = earlier[..earlier.len() - 1].to_vec();
    log.extend(suffix);
    Ok(log)
}

/// `earlier` must be a prefix of `now`: no record once exported is lost or changed.
pub fn check_prefix(earlier: &[Value], now: &[Value]) -> Result<()> {
    if now.len() < earlier.len() {
        bail!(
            "audit log shrank from {} to {} records",
            earlier.len(),
            now.len()
        );
    }
    if let Some((i, (a, b))) = earlier
        .iter()
        .zip(now)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        bail!("audit record {} changed: was {a}, now {b}", i + 1);
    }
    Ok(())
}

/// Records of `event` (for `key_id`, when given).
pub fn count_events(records: &[Value], event: &str, key_id: Option<&str>) -> usize {
    records
        .iter()
        .filter(|r| r["event"].as_str() == Some(event))
        .filter(|r| key_id.is_none_or(|id| r["details"]["key_id"].as_str() == Some(id)))
        .count()
}

/// A crypto client, retried while the node is still starting to serve.
pub async fn crypto_client(endpoint: &str, pki: &Path) -> Result<CryptoClient<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match crate::grpc::crypto(endpoint, pki).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn encrypt_request(key_id: &str, plaintext: &[u8], aad: &[u8], tag: &str) -> EncryptRequest {
    EncryptRequest {
        key_id: key_id.to_string(),
        plaintext: plaintext.to_vec(),
        aad: aad.to_vec(),
        request_id: tag.to_string(),
        integrity_check: false,
    }
}

/// One Encrypt under `key_id` (believed to be at `version`), with random input.
pub async fn encrypt_one(
    c: &mut CryptoClient<Channel>,
    key_id: &str,
    version: u32,
    rng: &mut Rng,
) -> std::result::Result<Sealed, tonic::Status> {
    let mut plaintext = vec![0u8; 1 + rng.index(64)];
    rng.fill(&mut plaintext);
    let aad = format!("crash aad {}", rng.below(1 << 20)).into_bytes();
    let r = c
        .encrypt(encrypt_request(key_id, &plaintext, &aad, "crash-enc"))
        .await?
        .into_inner();
    Ok(Sealed {
        key_id: key_id.to_string(),
        version,
        plaintext,
        aad,
        ciphertext: r.ciphertext,
        iv: r.iv,
        tag: r.tag,
        metadata: r.metadata,
    })
}

async fn decrypt(
    c: &mut CryptoClient<Channel>,
    s: &Sealed,
) -> std::result::Result<Vec<u8>, tonic::Status> {
    Ok(c.decrypt(DecryptRequest {
        key_id: s.key_id.clone(),
        ciphertext: s.ciphertext.clone(),
        iv: s.iv.clone(),
        tag: s.tag.clone(),
        aad: s.aad.clone(),
        metadata: s.metadata.clone(),
        request_id: "crash-dec".into(),
    })
    .await?
    .into_inner()
    .plaintext
    .clone())
}

/// Decrypts `s` locally with the material the test imported (version 1 of an imported key):
/// vhsmd encrypted with exactly those bytes, under the documented AAD framing.
pub fn open_locally(material: &Material, s: &Sealed) -> Result<Vec<u8>> {
    let iv: [u8; 12] = s.iv.as_slice().try_into().context("iv length")?;
    let tag: [u8; 16] = s.tag.as_slice().try_into().context("tag length")?;
    let aad_len = u16::try_from(s.aad.len()).context("aad length")?;
    let md_len = u8::try_from(s.metadata.len()).context("metadata length")?;
    let mut aad = aad_len.to_be_bytes().to_vec();
    aad.extend_from_slice(&s.aad);
    aad.push(md_len);
    aad.extend_from_slice(&s.metadata);
    let mut buf = s.ciphertext.clone();
    Aes256Gcm::new((&material.0).into())
        .decrypt_inout_detached(
            &Nonce::from(iv),
            &aad,
            buf.as_mut_slice().into(),
            &Tag::from(tag),
        )
        .map_err(|_| anyhow!("the imported material does not open vhsmd's ciphertext"))?;
    Ok(buf)
}

/// Not serving yet (sealed, no lease or quorum, connection not ready): worth a retry.
fn transient(s: &tonic::Status) -> bool {
    match vhsm_proto::reason_of(s) {
        Reason::NotServing | Reason::NoQuorum | Reason::Sealed => true,
        Reason::Unspecified => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

fn refused_with(r: std::result::Result<Vec<u8>, tonic::Status>, want: Reason) -> Result<()> {
    match r {
        Ok(_) => bail!("accepted, expected {want:?}"),
        Err(s) if vhsm_proto::reason_of(&s) == want => Ok(()),
        Err(s) => bail!(
            "refused with {:?} ({}), expected {want:?}",
            vhsm_proto::reason_of(&s),
            s.message()
        ),
    }
}

/// Encrypt + decrypt under every enabled key (the new ciphertexts join the model), refusals
/// for disabled and pending keys, and every acknowledged ciphertext decrypts exactly when its
/// key and version allow it.
pub async fn check_crypto(
    endpoint: &str,
    pki: &Path,
    model: &mut Model,
    rng: &mut Rng,
) -> Result<()> {
    let mut c = crypto_client(endpoint, pki).await?;
    let keys = model.keys.clone();
    for (id, k) in &keys {
        // Right after an unseal (or a leader change) a node may wait for its read lease.
        let deadline = Instant::now() + Duration::from_secs(10);
        let attempt = loop {
            match encrypt_one(&mut c, id, k.current_version, rng).await {
                Err(s) if transient(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        match (k.state, attempt) {
            (ENABLED, Ok(s)) => {
                let back = decrypt(&mut c, &s)
                    .await
                    .map_err(|e| anyhow!("decrypt of a fresh ciphertext under {id}: {e}"))?;
                if back != s.plaintext {
                    bail!("{id}: fresh round trip returned other bytes");
                }
                model.sealed.push(s);
            }
            (ENABLED, Err(e)) => bail!("encrypt under enabled {id} failed: {e}"),
            (state, r) => {
                let want = if state == DISABLED {
                    Reason::KeyDisabled
                } else {
                    Reason::KeyPendingDeletion
                };
                refused_with(r.map(|s| s.ciphertext), want)
                    .with_context(|| format!("encrypt under {state} key {id}"))?;
            }
        }
    }
    for s in model.sealed.clone() {
        let Some(k) = model.keys.get(&s.key_id) else {
            bail!("ciphertext of unknown key {}", s.key_id);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = loop {
            match decrypt(&mut c, &s).await {
                Err(e) if transient(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        let what = || format!("decrypt of {} v{} ({})", s.key_id, s.version, k.state);
        match k.state {
            ENABLED if s.version >= k.min_decryption_version => {
                let pt = r.map_err(|e| anyhow!("{}: {e}", what()))?;
                if pt != s.plaintext {
                    bail!("{}: other plaintext", what());
                }
            }
            ENABLED => refused_with(r, Reason::KeyVersionNotAllowed).with_context(what)?,
            DISABLED => refused_with(r, Reason::KeyDisabled).with_context(what)?,
            PENDING => refused_with(r, Reason::KeyPendingDeletion).with_context(what)?,
            other => bail!("model state {other}"),
        }
        if let (Some(m), 1) = (model.imported.get(&s.key_id), s.version) {
            if open_locally(m, &s)? != s.plaintext {
                bail!("{}: local decrypt gave other bytes", what());
            }
        }
    }
    Ok(())
}
