//! Seal state machine: init, passphrase and share unseal, back-off, partial expiry, rekey, self-test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vhsm_core::{
    Error, InitRequest, KdfParams, MemoryStorage, Options, Reason, RekeyAuth, SealState, Storage,
    Tree, UnsealMode, Usage,
};

#[test]
fn fresh_store_is_uninitialized_and_refuses_everything() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    let st = v.status();
    assert_eq!(st.seal_state, SealState::Uninitialized);
    assert_eq!(
        (st.unseal_mode, st.threshold, st.store_id.as_str()),
        (None, 0, "")
    );
    assert_eq!(
        v.unseal_with_passphrase(&pw(PASS), "a"),
        Err(Error::Uninitialized)
    );
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Uninitialized));
    assert_eq!(v.seal("a"), Err(Error::Uninitialized));
    assert_eq!(v.audit_public_key(), Err(Error::Uninitialized));
    assert_eq!(
        v.create_key(new_key("k", &[]), "a").unwrap_err(),
        Error::Uninitialized
    );
}

#[test]
fn passphrase_init_unseal_seal_cycle() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    let out = v
        .initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    assert!(out.shares.is_empty());
    assert_eq!(out.store_id.len(), 32);
    assert_eq!(
        out.audit_key_fingerprint,
        vhsm_audit::public_key_fingerprint(&v.audit_public_key().unwrap())
    );
    let st = v.status();
    assert_eq!(st.seal_state, SealState::Sealed);
    assert_eq!(
        (st.unseal_mode, st.threshold, st.share_count),
        (Some(UnsealMode::Passphrase), 1, 1)
    );
    assert_eq!(st.store_id, out.store_id);
    assert_eq!(
        v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
            .unwrap_err(),
        Error::AlreadyInitialized
    );
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Sealed));

    let p = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(p.state, SealState::Unsealed);
    assert_eq!(
        v.unseal_with_passphrase(&pw(PASS), "admin"),
        Err(Error::AlreadyUnsealed)
    );
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let ct = v.encrypt("k", b"hello", b"").unwrap();
    assert_eq!(v.status().key_count, 1);

    v.seal("admin").unwrap();
    assert_eq!(v.status().seal_state, SealState::Sealed);
    assert_eq!(v.status().key_count, 0);
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Sealed));
    assert_eq!(v.describe_key("k"), Err(Error::Sealed));
    v.seal("admin").unwrap(); // idempotent

    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let input = vhsm_core::DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag,
        aad: b"",
        metadata: &ct.metadata,
    };
    assert_eq!(&*v.decrypt("k", &input).unwrap(), b"hello");
}

#[test]
fn wrong_passphrase_stays_sealed_with_growing_delay() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    let mut delays = Vec::new();
    for _ in 0..5 {
        match v.unseal_with_passphrase(&pw("wrong passphrase"), "mallory") {
            Err(Error::UnsealRejected { retry_after_ms }) => delays.push(retry_after_ms),
            other => panic!("{other:?}"),
        }
        // Trying again before the delay elapsed is refused without running the KDF.
        if let Some(&d) = delays.last() {
            if d > 0 {
                let e = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
                assert_eq!(e.reason(), Reason::RateLimited);
                assert!(e.retry_after_ms().unwrap() <= d);
                c.advance(d);
            }
        }
        assert_eq!(v.status().seal_state, SealState::Sealed);
    }
    assert_eq!(delays, vec![0, 1000, 2000, 4000, 8000]);
    // The right passphrase still works after the delay, and resets the back-off.
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    v.seal("admin").unwrap();
    assert_eq!(
        v.unseal_with_passphrase(&pw("nope nope"), "x"),
        Err(Error::UnsealRejected { retry_after_ms: 0 })
    );
    // Error messages never contain the passphrase.
    let msg = Error::UnsealRejected { retry_after_ms: 0 }.to_string();
    assert!(!msg.contains("nope"));
}

#[test]
fn reopen_comes_back_sealed_with_keys() {
    let (s, c, v) = unsealed();
    v.create_key(new_key("k1", &[]), "admin").unwrap();
    let ct = v.encrypt("k1", b"persisted", b"aad").unwrap();
    drop(v);
    let v = open(&s, &c);
    assert_eq!(v.status().seal_state, SealState::Sealed);
    assert!(v.status().audit_head_seq > 0);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let input = vhsm_core::DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag,
        aad: b"aad",
        metadata: &ct.metadata,
    };
    assert_eq!(&*v.decrypt("k1", &input).unwrap(), b"persisted");
}

#[test]
fn quorum_unseal_needs_threshold_shares() {
    let (_s, _c, v, shares) = quorum(3, 5);
    assert_eq!(shares.len(), 5);
    assert_eq!(
        shares.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let st = v.status();
    assert_eq!(
        (st.unseal_mode, st.threshold, st.share_count),
        (Some(UnsealMode::Shares), 3, 5)
    );
    let cust = custodians(5);
    // A passphrase alone is not how this store unseals.
    assert_eq!(
        v.unseal_with_passphrase(&pw(&cust[0]), "a"),
        Err(Error::InvalidArgument("share"))
    );
    // M-1 shares do not unseal.
    let p = v
        .submit_share(&shares[4].bytes, &pw(&cust[4]), "c5")
        .unwrap();
    assert_eq!(
        (p.state, p.progress, p.threshold),
        (SealState::Sealed, 1, 3)
    );
    let p = v
        .submit_share(&shares[1].bytes, &pw(&cust[1]), "c2")
        .unwrap();
    assert_eq!((p.state, p.progress), (SealState::Sealed, 2));
    assert_eq!(v.status().unseal_progress, 2);
    assert_eq!(v.encrypt("k", b"", b""), Err(Error::Sealed));
    let p = v
        .submit_share(&shares[2].bytes, &pw(&cust[2]), "c3")
        .unwrap();
    assert_eq!((p.state, p.progress), (SealState::Unsealed, 0));
    assert_eq!(v.status().seal_state, SealState::Unsealed);
}

#[test]
fn bad_shares_are_refused() {
    let (_s, _c, v, shares) = quorum(2, 3);
    let (_s2, _c2, _other, foreign) = quorum(2, 3);
    let cust = custodians(3);
    // Another store's share.
    let e = v
        .submit_share(&foreign[0].bytes, &pw(&cust[0]), "c")
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidShare(m) if m.contains("another store")),
        "{e}"
    );
    // A corrupt share (checksum).
    let mut bad = shares[0].bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let e = v.submit_share(&bad, &pw(&cust[0]), "c").unwrap_err();
    assert!(
        matches!(&e, Error::InvalidShare(m) if m.contains("checksum")),
        "{e}"
    );
    // Garbage and truncation.
    assert!(matches!(
        v.submit_share(b"garbage", &pw(&cust[0]), "c"),
        Err(Error::InvalidShare(_))
    ));
    assert!(matches!(
        v.submit_share(&shares[0].bytes[..50], &pw(&cust[0]), "c"),
        Err(Error::InvalidShare(_))
    ));
    // A duplicate share.
    v.submit_share(&shares[0].bytes, &pw(&cust[0]), "c1")
        .unwrap();
    let e = v
        .submit_share(&shares[0].bytes, &pw(&cust[0]), "c1")
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidShare(m) if m.contains("already submitted")),
        "{e}"
    );
    assert_eq!(v.status().unseal_progress, 1);
    // A wrong custodian passphrase: rejected, same error as a wrong passphrase, progress kept.
    let e = v
        .submit_share(&shares[1].bytes, &pw(&cust[2]), "c2")
        .unwrap_err();
    assert_eq!(e, Error::UnsealRejected { retry_after_ms: 0 });
    assert_eq!(v.status().unseal_progress, 1);
    v.submit_share(&shares[1].bytes, &pw(&cust[1]), "c2")
        .unwrap();
    assert_eq!(v.status().seal_state, SealState::Unsealed);
}

#[test]
fn partial_unseal_expires_and_resets() {
    let (_s, c, v, shares) = quorum(2, 3);
    let cust = custodians(3);
    v.submit_share(&shares[0].bytes, &pw(&cust[0]), "c1")
        .unwrap();
    assert_eq!(v.status().unseal_progress, 1);
    c.advance(opts().partial_unseal_timeout_ms + 1);
    assert_eq!(v.status().unseal_progress, 0);
    // The expired share is gone: the next one starts again at 1 (and may be the same share).
    let p = v
        .submit_share(&shares[0].bytes, &pw(&cust[0]), "c1")
        .unwrap();
    assert_eq!(p.progress, 1);
    let p = v.reset_unseal("admin").unwrap();
    assert_eq!(
        (p.state, p.progress, p.threshold),
        (SealState::Sealed, 0, 2)
    );
    assert_eq!(v.status().unseal_progress, 0);
    v.submit_share(&shares[2].bytes, &pw(&cust[2]), "c3")
        .unwrap();
    c.advance(1000);
    let p = v
        .submit_share(&shares[1].bytes, &pw(&cust[1]), "c2")
        .unwrap();
    assert_eq!(p.state, SealState::Unsealed);
}

#[test]
fn rekey_passphrase_to_shares_then_to_two_of_three() {
    let (s, c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let ct = v.encrypt("k", b"survives rekeys", b"").unwrap();
    let keys_before: Vec<_> = s
        .dump()
        .into_iter()
        .filter(|(t, _, _)| *t == Tree::Keys)
        .collect();

    // Wrong old passphrase: rejected.
    let e = v
        .rekey(
            RekeyAuth::Passphrase(pw("not the passphrase")),
            InitRequest::Passphrase(pw("new passphrase 1")),
            "admin",
        )
        .unwrap_err();
    assert_eq!(e.reason(), Reason::UnsealRejected);
    // Passphrase -> 3-of-5 shares.
    let five = custodians(5);
    let out = v
        .rekey(
            RekeyAuth::Passphrase(pw(PASS)),
            InitRequest::Shares {
                threshold: 3,
                custodian_passphrases: five.iter().map(|p| pw(p)).collect(),
            },
            "admin",
        )
        .unwrap();
    assert_eq!(out.shares.len(), 5);
    let first_set = out.shares;
    // No stored record was re-encrypted.
    let keys_after: Vec<_> = s
        .dump()
        .into_iter()
        .filter(|(t, _, _)| *t == Tree::Keys)
        .collect();
    assert_eq!(keys_before, keys_after);

    // The old passphrase no longer unseals.
    v.seal("admin").unwrap();
    assert_eq!(
        v.unseal_with_passphrase(&pw(PASS), "admin"),
        Err(Error::InvalidArgument("share"))
    );
    for i in [0, 2, 4] {
        v.submit_share(&first_set[i].bytes, &pw(&five[i]), "c")
            .unwrap();
    }
    assert_eq!(v.status().seal_state, SealState::Unsealed);

    // Shares -> 2-of-3 with a quorum of the current shares.
    let three: Vec<String> = (1..=3)
        .map(|i| format!("second set custodian {i}"))
        .collect();
    let auth: Vec<_> = [1usize, 3, 4]
        .iter()
        .map(|&i| (first_set[i].bytes.clone(), pw(&five[i])))
        .collect();
    let out = v
        .rekey(
            RekeyAuth::Shares(auth),
            InitRequest::Shares {
                threshold: 2,
                custodian_passphrases: three.iter().map(|p| pw(p)).collect(),
            },
            "admin",
        )
        .unwrap();
    let second_set = out.shares;
    assert_eq!((v.status().threshold, v.status().share_count), (2, 3));
    // Too few old shares are refused.
    let auth: Vec<_> = vec![(second_set[0].bytes.clone(), pw(&three[0]))];
    assert_eq!(
        v.rekey(
            RekeyAuth::Shares(auth),
            InitRequest::Passphrase(pw("whatever123")),
            "admin"
        )
        .unwrap_err(),
        Error::InvalidArgument("old_shares")
    );

    // Old shares are refused after the rekey, even after a restart.
    v.seal("admin").unwrap();
    drop(v);
    let v = open(&s, &c);
    let e = v
        .submit_share(&first_set[0].bytes, &pw(&five[0]), "c")
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidShare(m) if m.contains("rekeyed")),
        "{e}"
    );
    v.submit_share(&second_set[2].bytes, &pw(&three[2]), "c")
        .unwrap();
    v.submit_share(&second_set[0].bytes, &pw(&three[0]), "c")
        .unwrap();
    assert_eq!(v.status().seal_state, SealState::Unsealed);
    let input = vhsm_core::DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag,
        aad: b"",
        metadata: &ct.metadata,
    };
    assert_eq!(&*v.decrypt("k", &input).unwrap(), b"survives rekeys");
}

#[test]
fn rekey_needs_unsealed_store() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    assert_eq!(
        v.rekey(
            RekeyAuth::Passphrase(pw(PASS)),
            InitRequest::Passphrase(pw("another passphrase")),
            "a"
        )
        .unwrap_err(),
        Error::Sealed
    );
}

#[test]
fn init_request_validation() {
    let s = Arc::new(MemoryStorage::new());
    let v = open(&s, &TestClock::new());
    assert_eq!(
        v.initialize(InitRequest::Passphrase(pw("short")), "a")
            .unwrap_err(),
        Error::InvalidArgument("passphrase")
    );
    let too_many = InitRequest::Shares {
        threshold: 2,
        custodian_passphrases: custodians(17).iter().map(|p| pw(p)).collect(),
    };
    assert_eq!(
        v.initialize(too_many, "a").unwrap_err(),
        Error::InvalidArgument("custodian_passphrases")
    );
    let bad_m = InitRequest::Shares {
        threshold: 4,
        custodian_passphrases: custodians(3).iter().map(|p| pw(p)).collect(),
    };
    assert_eq!(
        v.initialize(bad_m, "a").unwrap_err(),
        Error::InvalidArgument("threshold")
    );
    assert_eq!(v.status().seal_state, SealState::Uninitialized);
    assert!(s.dump().is_empty(), "a refused init writes nothing");
}

#[test]
fn one_of_one_and_sixteen_of_sixteen() {
    let (_s, _c, v, shares) = quorum(1, 1);
    v.submit_share(&shares[0].bytes, &pw(&custodians(1)[0]), "c")
        .unwrap();
    assert_eq!(v.status().seal_state, SealState::Unsealed);
    let (_s, _c, v, shares) = quorum(16, 16);
    let cust = custodians(16);
    for (i, sh) in shares.iter().enumerate() {
        let p = v.submit_share(&sh.bytes, &pw(&cust[i]), "c").unwrap();
        assert_eq!(p.progress, if i == 15 { 0 } else { i as u8 + 1 });
    }
    assert_eq!(v.status().seal_state, SealState::Unsealed);
}

#[test]
fn self_test_failure_refuses_unseal() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    open(&s, &c)
        .initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    let faulty = open_with(
        &s,
        &c,
        Options {
            inject_selftest_failure: true,
            ..opts()
        },
    );
    let e = faulty
        .unseal_with_passphrase(&pw(PASS), "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::SelfTestFailed);
    assert!(
        e.to_string().contains("AES-GCM") || e.to_string().to_lowercase().contains("gcm"),
        "{e}"
    );
    assert_eq!(faulty.status().seal_state, SealState::Sealed);
    // Still refuses (it does not remember a pass it never had).
    assert_eq!(
        faulty
            .unseal_with_passphrase(&pw(PASS), "admin")
            .unwrap_err()
            .reason(),
        Reason::SelfTestFailed
    );
    // The failure is in the audit log.
    let events: Vec<String> = faulty
        .audit_records(1, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert!(events.contains(&"selftest.failed".to_string()));
    // A healthy instance unseals the same store.
    open(&s, &c)
        .unseal_with_passphrase(&pw(PASS), "admin")
        .unwrap();
}

#[test]
fn self_test_failure_refuses_init() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let faulty = open_with(
        &s,
        &c,
        Options {
            inject_selftest_failure: true,
            ..opts()
        },
    );
    let e = faulty
        .initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::SelfTestFailed);
    assert_eq!(faulty.status().seal_state, SealState::Uninitialized);
    assert!(s.dump().is_empty());
}

#[test]
fn weak_kdf_is_refused_unless_allowed() {
    let weak_opts = Options {
        allow_weak_kdf: false,
        ..opts()
    };
    assert_eq!(weak_opts.validate(), Err(Error::WeakKdf));
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    assert_eq!(
        vhsm_core::Vhsm::open(
            s.clone(),
            Arc::new(vhsm_core::OsRandom),
            c.clone(),
            weak_opts
        )
        .unwrap_err(),
        Error::WeakKdf
    );
    // A store created with weak parameters cannot be opened by production options.
    open(&s, &c)
        .initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    let prod = Options {
        min_deletion_waiting_days: 0,
        ..Options::default()
    };
    let e = vhsm_core::Vhsm::open(s.clone(), Arc::new(vhsm_core::OsRandom), c, prod).unwrap_err();
    assert_eq!(e, Error::WeakKdf);
    assert!(e.to_string().contains("allow_weak_kdf"));
}

#[test]
fn recommended_kdf_real_init_and_unseal() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let options = Options {
        kdf: KdfParams::RECOMMENDED,
        allow_weak_kdf: false,
        ..Options::default()
    };
    let v = open_with(&s, &c, options.clone());
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    let header = s.get(Tree::Header, b"header").unwrap().unwrap();
    assert!(
        header
            .windows(12)
            .any(|w| w == [0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4]),
        "header records 64 MiB/3/4"
    );
    drop(v);
    let v = open_with(&s, &c, options);
    assert_eq!(
        v.unseal_with_passphrase(&pw("wrong wrong wrong"), "x")
            .unwrap_err()
            .reason(),
        Reason::UnsealRejected
    );
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    v.create_key(new_key("k", &[Usage::Encrypt]), "admin")
        .unwrap();
}

#[test]
fn a_failed_commit_is_fail_stop_and_the_disk_keeps_the_previous_state() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let failed = |e: Error| {
        assert_eq!(e.reason(), Reason::StorageFailed, "{e:?}");
        assert!(e.to_string().contains("must be restarted"), "{e}");
    };
    let v = open(&s, &c);
    s.fail_commits(1);
    failed(
        v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
            .unwrap_err(),
    );
    assert_eq!(v.status().seal_state, SealState::Uninitialized);
    assert!(v.storage_failure().is_some());
    // Every later call is refused until the process restarts, even with storage healthy.
    failed(
        v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
            .unwrap_err(),
    );
    let v = open(&s, &c);
    assert_eq!(v.storage_failure(), None);
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    s.fail_commits(1);
    failed(v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err());
    assert_eq!(v.status().seal_state, SealState::Sealed);
    failed(v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err());
    let v = open(&s, &c);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let head = v.status().audit_head_seq;
    s.fail_commits(1);
    failed(v.create_key(new_key("k", &[]), "admin").unwrap_err());
    // The node sealed itself: no crypto, no reads of keys, until restarted.
    assert_eq!(v.status().seal_state, SealState::Sealed);
    assert_eq!(v.health().0, SealState::Sealed);
    assert_eq!(v.list_keys(), Err(Error::Sealed));
    failed(v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err());
    let v = open(&s, &c);
    assert_eq!(v.status().audit_head_seq, head);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(v.describe_key("k"), Err(Error::KeyNotFound("k".into())));
    v.create_key(new_key("k", &[]), "admin").unwrap();
    s.fail_commits(1);
    failed(v.disable_key("k", "admin").unwrap_err());
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Sealed));
    let v = open(&s, &c);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    v.encrypt("k", b"still enabled", b"").unwrap();
    // Seal is a kill switch: it seals even when its audit record cannot be written.
    s.fail_commits(1);
    failed(v.seal("admin").unwrap_err());
    assert_eq!(v.status().seal_state, SealState::Sealed);
    assert_eq!(v.encrypt("k", b"x", b""), Err(Error::Sealed));
}
