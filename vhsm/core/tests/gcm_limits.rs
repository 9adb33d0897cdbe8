//! AES-GCM invocation limits: every encryption is reserved ahead through storage, the stored
//! total survives restarts and bounds the version across "nodes", rotation resets it, and a
//! version at the limit refuses to encrypt but still decrypts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vhsm_core::{
    DecryptInput, Error, GcmLimits, MemoryStorage, Options, Readiness, Usage, Vhsm,
    GCM_RANDOM_IV_LIMIT,
};

fn limits(limit: u64, block: u64) -> Options {
    Options {
        gcm: GcmLimits {
            limit,
            block,
            warn_percent: 50,
        },
        ..opts()
    }
}

fn unsealed_with(options: Options) -> (Arc<MemoryStorage>, Arc<TestClock>, Vhsm) {
    let (s, c, v) = unsealed();
    drop(v);
    let v = restarted(&s, &c, options);
    (s, c, v)
}

/// The same store opened again and unsealed: nothing reserved in memory.
fn restarted(s: &Arc<MemoryStorage>, c: &Arc<TestClock>, options: Options) -> Vhsm {
    let v = open_with(s, c, options);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    v
}

fn decrypts(v: &Vhsm, out: &vhsm_core::EncryptOutput) -> bool {
    v.decrypt(
        "k",
        &DecryptInput {
            ciphertext: &out.ciphertext,
            iv: &out.iv,
            tag: &out.tag,
            aad: b"",
            metadata: &out.metadata,
        },
    )
    .is_ok()
}

#[test]
fn the_default_is_the_nist_bound_for_random_ivs() {
    let d = GcmLimits::default();
    assert_eq!(d.limit, GCM_RANDOM_IV_LIMIT);
    assert_eq!(GCM_RANDOM_IV_LIMIT, 1 << 32);
    assert!(d.block <= d.limit / 1024);
}

#[test]
fn without_inline_reservation_nothing_encrypts_before_a_reservation() {
    let no_inline = Options {
        gcm_reserve_inline: false,
        ..limits(100, 10)
    };
    let (s, c, v) = unsealed_with(no_inline.clone());
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    // The creating node reserved its first block with the key.
    assert_eq!(v.encrypt_readiness("k"), Readiness::Ready);
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 10);
    drop(v);
    let v = restarted(&s, &c, no_inline.clone());
    assert_eq!(v.encrypt_readiness("k"), Readiness::Empty);
    assert_eq!(v.encrypt_readiness("absent"), Readiness::Unknown);
    assert!(matches!(
        v.encrypt("k", b"x", b""),
        Err(Error::NotServing(_))
    ));

    let r = v.reserve_invocations("k", "system").unwrap().unwrap();
    assert_eq!(
        (r.version, r.granted, r.reserved_total, r.limit),
        (1, 10, 20, 100)
    );
    assert!(!r.warning);
    let rec = v.audit_records(v.status().audit_head_seq, 1).unwrap();
    assert_eq!(rec[0].event, "key.reserve_invocations");
    assert_eq!(rec[0].details["reserved_total"], "20");
    assert_eq!(v.encrypt_readiness("k"), Readiness::Ready);
    // Half a block or more left: a second reservation writes nothing.
    assert_eq!(v.reserve_invocations("k", "system").unwrap(), None);
    for _ in 0..5 {
        v.encrypt("k", b"x", b"").unwrap();
    }
    assert_eq!(v.encrypt_readiness("k"), Readiness::Ready);
    v.encrypt("k", b"x", b"").unwrap();
    assert_eq!(v.encrypt_readiness("k"), Readiness::Low);
    for _ in 0..4 {
        v.encrypt_verified("k", b"x", b"").unwrap();
    }
    assert_eq!(v.encrypt_readiness("k"), Readiness::Empty);
    assert!(matches!(
        v.encrypt("k", b"x", b""),
        Err(Error::NotServing(_))
    ));
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 20);
}

#[test]
fn a_version_never_exceeds_its_limit_and_rotation_starts_a_new_count() {
    let (_s, _c, v) = unsealed_with(limits(25, 10));
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    let mut last = None;
    for _ in 0..25 {
        last = Some(v.encrypt("k", b"x", b"").unwrap());
    }
    // Reserved 10 + 10 + the last 5: exactly the limit.
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 25);
    assert_eq!(
        v.encrypt("k", b"x", b""),
        Err(Error::KeyVersionExhausted("k".into()))
    );
    assert_eq!(
        v.reserve_invocations("k", "system"),
        Err(Error::KeyVersionExhausted("k".into()))
    );
    // Still decrypts.
    assert!(decrypts(&v, last.as_ref().unwrap()));
    let info = v.rotate_key("k", "admin").unwrap();
    assert_eq!(info.current_version, 2);
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 10);
    v.encrypt("k", b"x", b"").unwrap();
    assert_eq!(v.invocation_use("k").unwrap().version, 2);
    assert!(decrypts(&v, last.as_ref().unwrap()));
}

#[test]
fn reservations_survive_a_restart_and_unspent_ones_are_forfeited() {
    let (s, c, v) = unsealed_with(limits(1000, 100));
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    for _ in 0..3 {
        v.encrypt("k", b"x", b"").unwrap();
    }
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 100);
    drop(v);
    // "Kill" and restart: the 97 unspent invocations are never handed out again.
    let v = open_with(&s, &c, limits(1000, 100));
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 100);
    v.encrypt("k", b"x", b"").unwrap();
    assert_eq!(v.invocation_use("k").unwrap().reserved_total, 200);
}

#[test]
fn two_nodes_on_one_store_share_the_limit() {
    // Two facades over one store stand in for two cluster nodes: each reserves its own
    // blocks, and the stored total bounds them together.
    let (s, c, a) = unsealed_with(limits(30, 10));
    a.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    let b = open_with(&s, &c, limits(30, 10));
    b.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let mut made = 0;
    loop {
        let ra = a.encrypt("k", b"x", b"");
        let rb = b.encrypt("k", b"x", b"");
        made += u32::from(ra.is_ok()) + u32::from(rb.is_ok());
        if ra.is_err() && rb.is_err() {
            assert_eq!(ra, Err(Error::KeyVersionExhausted("k".into())));
            assert_eq!(rb, Err(Error::KeyVersionExhausted("k".into())));
            break;
        }
    }
    assert_eq!(made, 30);
}

#[test]
fn destroying_a_key_removes_its_invocation_records() {
    let (s, c, v) = unsealed_with(limits(1000, 100));
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    v.encrypt("k", b"x", b"").unwrap();
    v.schedule_key_deletion("k", 0, "admin").unwrap();
    c.advance(1);
    assert_eq!(v.destroy_due_keys().unwrap(), vec!["k".to_string()]);
    let left: Vec<_> = s
        .dump()
        .into_iter()
        .filter(|(_, k, _)| k.starts_with(b"use/"))
        .collect();
    assert!(left.is_empty(), "{} invocation records left", left.len());
    drop(v);
    // And the store still opens (no orphaned record).
    let v = open_with(&s, &c, limits(1000, 100));
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
}

#[test]
fn an_orphaned_or_tampered_invocation_record_is_corruption() {
    let (s, c, v) = unsealed_with(limits(1000, 100));
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    v.encrypt("k", b"x", b"").unwrap();
    drop(v);
    let (tree, key, value) = s
        .dump()
        .into_iter()
        .find(|(_, k, _)| k.starts_with(b"use/"))
        .unwrap();
    // Lowering the count by hand fails authentication; so does a copy under another key.
    let mut flipped = value.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    s.raw_put(tree, &key, &flipped);
    let v = open_with(&s, &c, limits(1000, 100));
    assert!(matches!(
        v.unseal_with_passphrase(&pw(PASS), "admin"),
        Err(Error::Corruption(_))
    ));
    drop(v);
    s.raw_put(tree, &key, &value);
    s.raw_put(tree, b"use/other/\x00\x00\x00\x01", &value);
    let v = open_with(&s, &c, limits(1000, 100));
    assert!(matches!(
        v.unseal_with_passphrase(&pw(PASS), "admin"),
        Err(Error::Corruption(_))
    ));
}

#[test]
fn a_reservation_that_fails_to_commit_grants_nothing() {
    let no_inline = Options {
        gcm_reserve_inline: false,
        ..limits(1000, 100)
    };
    let (s, c, v) = unsealed_with(no_inline.clone());
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    drop(v);
    let v = restarted(&s, &c, no_inline.clone());
    assert_eq!(v.encrypt_readiness("k"), Readiness::Empty);
    assert!(matches!(
        v.encrypt("k", b"x", b""),
        Err(Error::NotServing(_))
    ));
    s.fail_commits(1);
    // A failed write is fail-stop: the node seals itself and grants nothing.
    assert!(matches!(
        v.reserve_invocations("k", "system"),
        Err(Error::StorageFailed(_))
    ));
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Sealed));
    assert!(matches!(
        v.reserve_invocations("k", "system"),
        Err(Error::StorageFailed(_))
    ));
    drop(v);
    let v = restarted(&s, &c, no_inline);
    assert!(v.reserve_invocations("k", "system").unwrap().is_some());
    v.encrypt("k", b"x", b"").unwrap();
}

#[test]
fn disabled_keys_get_no_reservation() {
    let (_s, _c, v) = unsealed_with(limits(1000, 100));
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    v.disable_key("k", "admin").unwrap();
    assert_eq!(
        v.reserve_invocations("k", "system"),
        Err(Error::KeyDisabled("k".into()))
    );
}

#[test]
fn warnings_start_at_the_configured_share() {
    let (_s, _c, v) = unsealed_with(Options {
        gcm_reserve_inline: false,
        ..limits(50, 10)
    });
    v.create_key(new_key("k", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    for _ in 0..10 {
        v.encrypt("k", b"x", b"").unwrap();
    }
    let mut warnings = Vec::new();
    for _ in 0..4 {
        let r = v.reserve_invocations("k", "system").unwrap().unwrap();
        warnings.push(r.warning);
        for _ in 0..10 {
            v.encrypt("k", b"x", b"").unwrap();
        }
    }
    assert_eq!(warnings, [false, true, true, true]);
}

#[test]
fn the_sweep_reserves_for_every_encryptable_key_in_batches() {
    let no_inline = Options {
        gcm_reserve_inline: false,
        ..limits(1000, 100)
    };
    let (s, c, v) = unsealed_with(no_inline.clone());
    for id in ["a", "b", "c", "off", "wrap-only"] {
        let usage: &[Usage] = if id == "wrap-only" {
            &[Usage::Wrap]
        } else {
            &[Usage::Encrypt, Usage::Decrypt]
        };
        v.create_key(new_key(id, usage), "admin").unwrap();
    }
    v.disable_key("off", "admin").unwrap();
    drop(v);
    let v = restarted(&s, &c, no_inline);
    // Versions never used here are swept only when asked to (after an unseal).
    assert!(v.reserve_pending(2, false, "system").unwrap().is_empty());
    let first = v.reserve_pending(2, true, "system").unwrap();
    assert_eq!(first.len(), 2);
    let rec = v.audit_records(v.status().audit_head_seq, 1).unwrap();
    assert_eq!(rec[0].event, "key.reserve_invocations");
    assert_eq!(rec[0].details["versions"], "2");
    let second = v.reserve_pending(2, true, "system").unwrap();
    assert_eq!(second.len(), 1, "only a, b and c are encryptable");
    assert!(v.reserve_pending(2, true, "system").unwrap().is_empty());
    for id in ["a", "b", "c"] {
        assert_eq!(v.encrypt_readiness(id), Readiness::Ready, "{id}");
        v.encrypt(id, b"x", b"").unwrap();
    }
    // Running low (below half a block) is swept again.
    for _ in 0..50 {
        v.encrypt("a", b"x", b"").unwrap();
    }
    assert_eq!(v.encrypt_readiness("a"), Readiness::Low);
    let again = v.reserve_pending(10, false, "system").unwrap();
    assert_eq!(
        (
            again.len(),
            again[0].key_id.as_str(),
            again[0].reserved_total
        ),
        (1, "a", 300)
    );
    assert_eq!(v.encrypt_readiness("a"), Readiness::Ready);
}
