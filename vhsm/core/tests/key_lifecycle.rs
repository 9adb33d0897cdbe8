//! Customer keys: create, rotate, min decryption version, states, destruction, usage, import,
//! and the crypto calls' argument checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use vhsm_core::crypto::{aes_kwp_wrap, SecretKey};
use vhsm_core::{
    DecryptInput, EncryptOutput, Error, KeyOrigin, KeyState, NewKey, Tree, Usage, UsageSet, Vhsm,
};

fn dec(v: &Vhsm, id: &str, ct: &EncryptOutput, aad: &[u8]) -> Result<Vec<u8>, Error> {
    v.decrypt(
        id,
        &DecryptInput {
            ciphertext: &ct.ciphertext,
            iv: &ct.iv,
            tag: &ct.tag,
            aad,
            metadata: &ct.metadata,
        },
    )
    .map(|p| p.to_vec())
}

#[test]
fn create_describe_list() {
    let (_s, _c, v) = unsealed();
    let labels = BTreeMap::from([("team".to_string(), "payments".to_string())]);
    let info = v
        .create_key(
            NewKey {
                id: "k.1_A-b".into(),
                usage: UsageSet::EMPTY,
                labels: labels.clone(),
            },
            "admin",
        )
        .unwrap();
    assert_eq!(info.usage, UsageSet::ENCRYPT_DECRYPT);
    assert_eq!(
        (
            info.state,
            info.current_version,
            info.min_decryption_version
        ),
        (KeyState::Enabled, 1, 1)
    );
    assert_eq!(
        (info.key_spec, info.origin, info.labels.clone()),
        ("AES_256", KeyOrigin::Generated, labels)
    );
    let rec = v.audit_records(info.created_by_audit_seq, 1).unwrap();
    assert_eq!(rec[0].event, "key.create");
    assert_eq!(rec[0].details["key_id"], "k.1_A-b");
    assert_eq!(v.describe_key("k.1_A-b").unwrap(), info);
    assert_eq!(v.key_metadata("k.1_A-b").unwrap(), info);
    assert_eq!(
        v.create_key(new_key("k.1_A-b", &[]), "admin").unwrap_err(),
        Error::KeyExists("k.1_A-b".into())
    );
    assert_eq!(
        v.create_key(new_key("bad/id", &[]), "admin").unwrap_err(),
        Error::InvalidArgument("key_id")
    );
    assert_eq!(
        v.create_key(new_key(&"x".repeat(129), &[]), "admin")
            .unwrap_err(),
        Error::InvalidArgument("key_id")
    );
    v.create_key(new_key("a", &[]), "admin").unwrap();
    let ids: Vec<String> = v
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(ids, vec!["a".to_string(), "k.1_A-b".to_string()]);
    assert_eq!(
        v.describe_key("missing"),
        Err(Error::KeyNotFound("missing".into()))
    );
}

#[test]
fn encrypt_decrypt_and_opaque_failures() {
    let (_s, _c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let ct = v.encrypt("k", b"attack at dawn", b"context").unwrap();
    assert_eq!(ct.metadata, vec![1, 0, 0, 0, 1]);
    assert_eq!(ct.ciphertext.len(), 14);
    assert_eq!(dec(&v, "k", &ct, b"context").unwrap(), b"attack at dawn");
    let ct2 = v.encrypt("k", b"attack at dawn", b"context").unwrap();
    assert_ne!(ct.iv, ct2.iv, "fresh IV per call");
    // Any change → the same opaque InvalidCiphertext.
    assert_eq!(dec(&v, "k", &ct, b"other"), Err(Error::InvalidCiphertext));
    let mut t = ct.clone();
    t.ciphertext[0] ^= 1;
    assert_eq!(dec(&v, "k", &t, b"context"), Err(Error::InvalidCiphertext));
    let mut t = ct.clone();
    t.tag[15] ^= 1;
    assert_eq!(dec(&v, "k", &t, b"context"), Err(Error::InvalidCiphertext));
    let mut t = ct.clone();
    t.iv[0] ^= 1;
    assert_eq!(dec(&v, "k", &t, b"context"), Err(Error::InvalidCiphertext));
    for md in [
        vec![],
        vec![2, 0, 0, 0, 1],
        vec![1, 0, 0, 0, 9],
        vec![1, 0, 0, 0, 1, 0],
        vec![1, 0, 0, 0, 0],
    ] {
        let t = EncryptOutput {
            metadata: md,
            ..ct.clone()
        };
        assert_eq!(dec(&v, "k", &t, b"context"), Err(Error::InvalidCiphertext));
    }
    v.create_key(new_key("other", &[]), "admin").unwrap();
    assert_eq!(
        dec(&v, "other", &ct, b"context"),
        Err(Error::InvalidCiphertext)
    );
    // Argument checks.
    let bad_iv = DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv[..11],
        tag: &ct.tag,
        aad: b"",
        metadata: &ct.metadata,
    };
    assert_eq!(
        v.decrypt("k", &bad_iv).unwrap_err(),
        Error::InvalidArgument("iv")
    );
    let bad_tag = DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag[..8],
        aad: b"",
        metadata: &ct.metadata,
    };
    assert_eq!(
        v.decrypt("k", &bad_tag).unwrap_err(),
        Error::InvalidArgument("tag")
    );
    assert_eq!(
        v.encrypt("k", &vec![0; 64 * 1024 + 1], b""),
        Err(Error::TooLarge("plaintext"))
    );
    assert_eq!(
        v.encrypt("k", b"", &vec![0; 65536]),
        Err(Error::TooLarge("aad"))
    );
    let big = v
        .encrypt("k", &vec![7; 64 * 1024], &vec![1; 65535])
        .unwrap();
    assert_eq!(
        dec(&v, "k", &big, &vec![1; 65535]).unwrap(),
        vec![7; 64 * 1024]
    );
    let empty = v.encrypt("k", b"", b"").unwrap();
    assert_eq!(dec(&v, "k", &empty, b"").unwrap(), b"");
    assert_eq!(
        v.encrypt("nope", b"", b""),
        Err(Error::KeyNotFound("nope".into()))
    );
    assert_eq!(v.random(1024).unwrap().len(), 1024);
    assert_eq!(v.random(1025), Err(Error::TooLarge("len")));
}

#[test]
fn rotation_and_min_decryption_version() {
    let (_s, _c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let c1 = v.encrypt("k", b"one", b"").unwrap();
    let info = v.rotate_key("k", "admin").unwrap();
    assert_eq!(info.current_version, 2);
    let c2 = v.encrypt("k", b"two", b"").unwrap();
    assert_eq!(c2.metadata, vec![1, 0, 0, 0, 2]);
    v.rotate_key("k", "admin").unwrap();
    let c3 = v.encrypt("k", b"three", b"").unwrap();
    // Old ciphertexts still decrypt.
    assert_eq!(dec(&v, "k", &c1, b"").unwrap(), b"one");
    assert_eq!(dec(&v, "k", &c2, b"").unwrap(), b"two");
    // Min decryption version refuses older versions.
    let info = v.set_min_decryption_version("k", 2, "admin").unwrap();
    assert_eq!(info.min_decryption_version, 2);
    assert_eq!(dec(&v, "k", &c1, b""), Err(Error::KeyVersionNotAllowed));
    assert_eq!(dec(&v, "k", &c2, b"").unwrap(), b"two");
    assert_eq!(dec(&v, "k", &c3, b"").unwrap(), b"three");
    assert_eq!(
        v.set_min_decryption_version("k", 4, "admin").unwrap_err(),
        Error::InvalidArgument("min_decryption_version")
    );
    assert_eq!(
        v.set_min_decryption_version("k", 0, "admin").unwrap_err(),
        Error::InvalidArgument("min_decryption_version")
    );
    // Lowering is allowed: the material of every version is kept until destruction.
    v.set_min_decryption_version("k", 1, "admin").unwrap();
    assert_eq!(dec(&v, "k", &c1, b"").unwrap(), b"one");
}

#[test]
fn states_refuse_crypto_with_the_right_errors() {
    let (s, c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let ct = v.encrypt("k", b"x", b"").unwrap();
    let info = v.disable_key("k", "admin").unwrap();
    assert_eq!(info.state, KeyState::Disabled);
    assert_eq!(
        v.encrypt("k", b"x", b""),
        Err(Error::KeyDisabled("k".into()))
    );
    assert_eq!(dec(&v, "k", &ct, b""), Err(Error::KeyDisabled("k".into())));
    assert_eq!(
        v.key_metadata("k").unwrap().state,
        KeyState::Disabled,
        "metadata works for disabled keys"
    );
    v.disable_key("k", "admin").unwrap(); // idempotent
    v.enable_key("k", "admin").unwrap();
    assert_eq!(dec(&v, "k", &ct, b"").unwrap(), b"x");

    // Waiting period below the configured minimum is refused.
    let strict = open_with(
        &s,
        &c,
        vhsm_core::Options {
            min_deletion_waiting_days: 7,
            ..opts()
        },
    );
    assert_eq!(
        strict.schedule_key_deletion("k", 6, "admin").unwrap_err(),
        Error::InvalidArgument("waiting_days")
    );
    drop(strict);
    assert_eq!(
        v.schedule_key_deletion("k", 3651, "admin").unwrap_err(),
        Error::InvalidArgument("waiting_days")
    );

    let info = v.schedule_key_deletion("k", 7, "admin").unwrap();
    assert_eq!(info.state, KeyState::PendingDeletion);
    assert_eq!(info.deletion_due_at_ms, c.now() + 7 * 86_400_000);
    assert_eq!(
        v.encrypt("k", b"x", b""),
        Err(Error::KeyPendingDeletion("k".into()))
    );
    assert_eq!(
        dec(&v, "k", &ct, b""),
        Err(Error::KeyPendingDeletion("k".into()))
    );
    assert_eq!(
        v.enable_key("k", "admin").unwrap_err(),
        Error::KeyPendingDeletion("k".into())
    );
    assert_eq!(
        v.rotate_key("k", "admin").unwrap_err(),
        Error::KeyPendingDeletion("k".into())
    );
    // Not yet due: nothing destroyed.
    assert!(v.destroy_due_keys().unwrap().is_empty());
    // Cancel returns it to DISABLED (as AWS KMS does).
    let info = v.cancel_key_deletion("k", "admin").unwrap();
    assert_eq!(
        (info.state, info.deletion_due_at_ms),
        (KeyState::Disabled, 0)
    );
    assert_eq!(
        v.cancel_key_deletion("k", "admin").unwrap_err(),
        Error::InvalidArgument("key_state")
    );
    v.schedule_key_deletion("k", 7, "admin").unwrap();
    c.advance(7 * 86_400_000);
    assert_eq!(v.destroy_due_keys().unwrap(), vec!["k".to_string()]);
    assert_eq!(v.describe_key("k").unwrap().state, KeyState::Destroyed);
    assert_eq!(
        v.encrypt("k", b"x", b""),
        Err(Error::KeyDestroyed("k".into()))
    );
    assert_eq!(dec(&v, "k", &ct, b""), Err(Error::KeyDestroyed("k".into())));
    assert_eq!(
        v.enable_key("k", "admin").unwrap_err(),
        Error::KeyDestroyed("k".into())
    );
    assert_eq!(
        v.cancel_key_deletion("k", "admin").unwrap_err(),
        Error::KeyDestroyed("k".into())
    );
    // The id is never reused.
    assert_eq!(
        v.create_key(new_key("k", &[]), "admin").unwrap_err(),
        Error::KeyExists("k".into())
    );
    // Still destroyed after a restart.
    drop(v);
    let v = open(&s, &c);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(v.describe_key("k").unwrap().state, KeyState::Destroyed);
    assert_eq!(
        v.encrypt("k", b"x", b""),
        Err(Error::KeyDestroyed("k".into()))
    );
}

#[test]
fn destroyed_material_is_gone_from_storage() {
    let (s, _c, v) = unsealed();
    v.create_key(new_key("doomed", &[]), "admin").unwrap();
    v.rotate_key("doomed", "admin").unwrap();
    v.create_key(new_key("keeper", &[]), "admin").unwrap();
    let material_records = |s: &vhsm_core::MemoryStorage| {
        s.dump()
            .into_iter()
            .filter(|(t, k, _)| *t == Tree::Keys && k.starts_with(b"mat/doomed/"))
            .count()
    };
    assert_eq!(material_records(&s), 2);
    // The material records (envelopes) must be deleted, not just hidden.
    let before: Vec<_> = s
        .dump()
        .into_iter()
        .filter(|(_, k, _)| k.starts_with(b"mat/doomed/"))
        .map(|(_, _, v)| v)
        .collect();
    v.schedule_key_deletion("doomed", 0, "admin").unwrap();
    assert_eq!(v.destroy_due_keys().unwrap(), vec!["doomed".to_string()]);
    assert_eq!(material_records(&s), 0);
    for (_, _, value) in s.dump() {
        for old in &before {
            assert!(
                !value.windows(old.len()).any(|w| w == old.as_slice()),
                "old material envelope still stored"
            );
        }
    }
    assert_eq!(v.encrypt("keeper", b"ok", b"").unwrap().ciphertext.len(), 2);
}

#[test]
fn imported_material_is_gone_from_storage_after_destroy() {
    let (s, _c, v) = unsealed();
    let ik = v.new_import_key("admin").unwrap();
    let material = [0xA5u8; 32];
    let wrapped =
        aes_kwp_wrap(&SecretKey::from_slice(ik.key.expose()).unwrap(), &material).unwrap();
    v.import_key(new_key("imp", &[]), &ik.id, &wrapped, "admin")
        .unwrap();
    let scan = |s: &vhsm_core::MemoryStorage| {
        s.dump()
            .into_iter()
            .any(|(_, _, val)| val.windows(32).any(|w| w == material))
    };
    assert!(!scan(&s), "material is never stored in clear");
    v.schedule_key_deletion("imp", 0, "admin").unwrap();
    v.destroy_due_keys().unwrap();
    assert!(!scan(&s));
    assert!(s.dump().iter().all(|(_, k, _)| !k.starts_with(b"mat/imp/")));
}

#[test]
fn usage_is_enforced() {
    let (_s, _c, v) = unsealed();
    v.create_key(new_key("enc-only", &[Usage::Encrypt]), "admin")
        .unwrap();
    v.create_key(new_key("wrapper", &[Usage::Wrap, Usage::Unwrap]), "admin")
        .unwrap();
    let ct = v.encrypt("enc-only", b"x", b"").unwrap();
    assert_eq!(
        dec(&v, "enc-only", &ct, b""),
        Err(Error::UsageNotAllowed {
            key: "enc-only".into(),
            usage: "DECRYPT"
        })
    );
    assert_eq!(
        v.wrap_key("enc-only", &[1; 32]),
        Err(Error::UsageNotAllowed {
            key: "enc-only".into(),
            usage: "WRAP"
        })
    );
    assert_eq!(
        v.encrypt("wrapper", b"x", b""),
        Err(Error::UsageNotAllowed {
            key: "wrapper".into(),
            usage: "ENCRYPT"
        })
    );
    let (w, ver) = v.wrap_key("wrapper", b"some key material!").unwrap();
    assert_eq!(ver, 1);
    assert_eq!(
        &*v.unwrap_key("wrapper", &w, 1).unwrap(),
        b"some key material!"
    );
    v.rotate_key("wrapper", "admin").unwrap();
    let (w2, ver2) = v.wrap_key("wrapper", b"other").unwrap();
    assert_eq!(ver2, 2);
    assert_eq!(
        &*v.unwrap_key("wrapper", &w, 1).unwrap(),
        b"some key material!"
    );
    assert_eq!(
        v.unwrap_key("wrapper", &w2, 1),
        Err(Error::InvalidCiphertext)
    );
    assert_eq!(
        v.unwrap_key("wrapper", &w, 9),
        Err(Error::InvalidCiphertext)
    );
    v.set_min_decryption_version("wrapper", 2, "admin").unwrap();
    assert_eq!(
        v.unwrap_key("wrapper", &w, 1),
        Err(Error::KeyVersionNotAllowed)
    );
    assert_eq!(
        v.wrap_key("wrapper", b""),
        Err(Error::InvalidArgument("material"))
    );
    assert_eq!(
        v.wrap_key("wrapper", &vec![0; 64 * 1024 + 1]),
        Err(Error::TooLarge("material"))
    );
}

#[test]
fn import_round_trip_and_single_use() {
    let (_s, c, v) = unsealed();
    let ik = v.new_import_key("admin").unwrap();
    assert_eq!(ik.key.expose().len(), 32);
    let material = [0x42u8; 32];
    let kek = SecretKey::from_slice(ik.key.expose()).unwrap();
    let wrapped = aes_kwp_wrap(&kek, &material).unwrap();
    let info = v
        .import_key(new_key("imported", &[]), &ik.id, &wrapped, "admin")
        .unwrap();
    assert_eq!(info.origin, KeyOrigin::Imported);
    // Encrypting with the imported key matches an independent AES-GCM under the material.
    let ct = v.encrypt("imported", b"hello", b"a").unwrap();
    let gcm = vhsm_core::crypto::GcmKey::new(&SecretKey::from_bytes(material));
    let aad = vhsm_core::crypto::xks_gcm_aad(b"a", &ct.metadata).unwrap();
    assert_eq!(
        &*gcm.open(&ct.iv, &aad, &ct.ciphertext, &ct.tag).unwrap(),
        b"hello"
    );
    // Single use.
    assert_eq!(
        v.import_key(new_key("again", &[]), &ik.id, &wrapped, "admin")
            .unwrap_err(),
        Error::InvalidArgument("import_key_id")
    );
    // A wrong wrapping is refused and still consumes the import key.
    let ik2 = v.new_import_key("admin").unwrap();
    assert_eq!(
        v.import_key(new_key("x", &[]), &ik2.id, &wrapped, "admin")
            .unwrap_err(),
        Error::InvalidCiphertext
    );
    let wrapped2 =
        aes_kwp_wrap(&SecretKey::from_slice(ik2.key.expose()).unwrap(), &material).unwrap();
    assert_eq!(
        v.import_key(new_key("x", &[]), &ik2.id, &wrapped2, "admin")
            .unwrap_err(),
        Error::InvalidArgument("import_key_id")
    );
    // Wrong material length.
    let ik3 = v.new_import_key("admin").unwrap();
    let short = aes_kwp_wrap(&SecretKey::from_slice(ik3.key.expose()).unwrap(), &[1; 16]).unwrap();
    assert_eq!(
        v.import_key(new_key("x", &[]), &ik3.id, &short, "admin")
            .unwrap_err(),
        Error::InvalidArgument("wrapped_key")
    );
    // Expired.
    let ik4 = v.new_import_key("admin").unwrap();
    let w4 = aes_kwp_wrap(&SecretKey::from_slice(ik4.key.expose()).unwrap(), &material).unwrap();
    c.advance(opts().import_key_ttl_ms);
    assert_eq!(
        v.import_key(new_key("x", &[]), &ik4.id, &w4, "admin")
            .unwrap_err(),
        Error::InvalidArgument("import_key_id")
    );
    // Sealing drops import keys.
    let ik5 = v.new_import_key("admin").unwrap();
    let w5 = aes_kwp_wrap(&SecretKey::from_slice(ik5.key.expose()).unwrap(), &material).unwrap();
    v.seal("admin").unwrap();
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(
        v.import_key(new_key("x", &[]), &ik5.id, &w5, "admin")
            .unwrap_err(),
        Error::InvalidArgument("import_key_id")
    );
    assert_eq!(v.describe_key("x"), Err(Error::KeyNotFound("x".into())));
}

#[test]
fn import_key_debug_is_redacted() {
    let (_s, _c, v) = unsealed();
    let ik = v.new_import_key("admin").unwrap();
    let shown = format!("{ik:?}");
    assert!(shown.contains("REDACTED"));
    assert!(!shown.contains(&hex::encode(ik.key.expose())));
}
