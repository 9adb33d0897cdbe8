//! Backup and staged restore: round trip, tampering, wrong unseal material, state checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vhsm_core::{
    DecryptInput, Error, InitRequest, MemoryStorage, Reason, SealState, Tree, UnsealMode,
};

#[test]
fn round_trip_onto_a_fresh_store() {
    let (_s, _c, src) = unsealed();
    src.create_key(new_key("k", &[]), "admin").unwrap();
    src.rotate_key("k", "admin").unwrap();
    let ct = src.encrypt("k", b"cloned", b"aad").unwrap();
    let src_status = src.status();
    let blob = src.backup("admin").unwrap();
    assert!(blob.starts_with(b"VHSMBAK1"));
    // The "backup" audit record names the blob's hash, so it follows the snapshot.
    let backup_rec = src.audit_records(src_status.audit_head_seq + 1, 1).unwrap();
    assert_eq!(backup_rec[0].event, "backup");
    assert_eq!(
        backup_rec[0].details["sha256"],
        hex::encode(vhsm_core::crypto::sha256(&blob))
    );

    let dst_storage = Arc::new(MemoryStorage::new());
    let dst = open(&dst_storage, &TestClock::new());
    let st = dst.stage_restore(&blob, "admin").unwrap();
    assert!(st.restore_pending);
    assert_eq!(st.seal_state, SealState::Uninitialized);
    assert_eq!(
        (st.unseal_mode, st.threshold),
        (Some(UnsealMode::Passphrase), 1)
    );
    assert_eq!(st.store_id, src_status.store_id);
    assert!(dst_storage.dump().is_empty(), "staging writes nothing");

    let p = dst.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(p.state, SealState::Unsealed);
    let st = dst.status();
    assert!(!st.restore_pending);
    assert_eq!(st.key_count, 1);
    assert_eq!(st.audit_head_seq, src_status.audit_head_seq + 1);
    let input = DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag,
        aad: b"aad",
        metadata: &ct.metadata,
    };
    assert_eq!(&*dst.decrypt("k", &input).unwrap(), b"cloned");
    assert_eq!(dst.describe_key("k").unwrap().current_version, 2);
    assert_eq!(
        dst.audit_public_key().unwrap(),
        src.audit_public_key().unwrap()
    );
    let last = dst.audit_records(st.audit_head_seq, 1).unwrap();
    assert_eq!(last[0].event, "restore");
    // The restored store survives a restart and verifies end to end.
    let c = TestClock::new();
    drop(dst);
    let dst = open(&dst_storage, &c);
    dst.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let all = dst.audit_records(1, 10_000).unwrap();
    let pk = dst.audit_public_key().unwrap();
    vhsm_audit::verify_chain(&all, &pk, None).unwrap();
}

#[test]
fn quorum_backup_restores_with_shares() {
    let (_s, _c, src, shares) = quorum(2, 3);
    let cust = custodians(3);
    src.submit_share(&shares[0].bytes, &pw(&cust[0]), "c")
        .unwrap();
    src.submit_share(&shares[1].bytes, &pw(&cust[1]), "c")
        .unwrap();
    src.create_key(new_key("q", &[]), "admin").unwrap();
    let blob = src.backup("admin").unwrap();
    let dst = open(&Arc::new(MemoryStorage::new()), &TestClock::new());
    let st = dst.stage_restore(&blob, "admin").unwrap();
    assert_eq!(
        (st.unseal_mode, st.threshold, st.share_count),
        (Some(UnsealMode::Shares), 2, 3)
    );
    assert_eq!(
        dst.submit_share(&shares[2].bytes, &pw(&cust[2]), "c")
            .unwrap()
            .progress,
        1
    );
    dst.submit_share(&shares[1].bytes, &pw(&cust[1]), "c")
        .unwrap();
    assert_eq!(dst.status().seal_state, SealState::Unsealed);
    dst.encrypt("q", b"x", b"").unwrap();
}

#[test]
fn tampered_blob_is_refused_and_target_untouched() {
    let (_s, _c, src) = unsealed();
    src.create_key(new_key("k", &[]), "admin").unwrap();
    let blob = src.backup("admin").unwrap();
    // Flip a byte inside a record (after the header): structure parses, the MAC does not verify.
    let mut bad = blob.clone();
    let pos = blob.len() - 40;
    bad[pos] ^= 0x01;
    let dst_storage = Arc::new(MemoryStorage::new());
    let dst = open(&dst_storage, &TestClock::new());
    dst.stage_restore(&bad, "admin").unwrap();
    let e = dst.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidBackup, "{e}");
    assert!(dst_storage.dump().is_empty(), "nothing written");
    let st = dst.status();
    assert_eq!(st.seal_state, SealState::Uninitialized);
    assert!(!st.restore_pending, "the bad backup is dropped");
    // Truncated or garbled blobs are refused at stage time.
    for cut in [0, 8, 20, blob.len() / 2, blob.len() - 1] {
        assert_eq!(
            dst.stage_restore(&blob[..cut], "admin")
                .unwrap_err()
                .reason(),
            Reason::InvalidBackup
        );
    }
    assert_eq!(
        dst.stage_restore(
            b"VHSMBAK1 but garbage follows here......................",
            "a"
        )
        .unwrap_err()
        .reason(),
        Reason::InvalidBackup
    );
    let mut trailing = blob.clone();
    trailing.insert(blob.len() - 32, 0);
    assert_eq!(
        dst.stage_restore(&trailing, "admin").unwrap_err().reason(),
        Reason::InvalidBackup
    );
    // The good blob still restores on the same target.
    dst.stage_restore(&blob, "admin").unwrap();
    dst.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(dst.list_keys().unwrap().len(), 1);
}

#[test]
fn wrong_passphrase_on_staged_restore() {
    let (_s, c, src) = unsealed();
    let blob = src.backup("admin").unwrap();
    let dst_storage = Arc::new(MemoryStorage::new());
    let dst = open(&dst_storage, &c);
    dst.stage_restore(&blob, "admin").unwrap();
    assert_eq!(
        dst.unseal_with_passphrase(&pw("wrong passphrase!"), "x")
            .unwrap_err(),
        Error::UnsealRejected { retry_after_ms: 0 }
    );
    assert!(
        dst.status().restore_pending,
        "a wrong passphrase keeps the stage"
    );
    assert!(dst_storage.dump().is_empty());
    let e = dst
        .unseal_with_passphrase(&pw("wrong passphrase!"), "x")
        .unwrap_err();
    assert_eq!(
        e,
        Error::UnsealRejected {
            retry_after_ms: 1000
        }
    );
    assert_eq!(
        dst.unseal_with_passphrase(&pw(PASS), "x")
            .unwrap_err()
            .reason(),
        Reason::RateLimited
    );
    c.advance(1000);
    dst.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
}

#[test]
fn state_checks() {
    let (_s, _c, v) = unsealed();
    let blob = v.backup("admin").unwrap();
    assert_eq!(
        v.stage_restore(&blob, "admin").unwrap_err(),
        Error::AlreadyInitialized
    );
    v.seal("admin").unwrap();
    assert_eq!(v.backup("admin").unwrap_err(), Error::Sealed);
    let fresh = open(&Arc::new(MemoryStorage::new()), &TestClock::new());
    assert_eq!(fresh.backup("admin").unwrap_err(), Error::Uninitialized);
    fresh.stage_restore(&blob, "admin").unwrap();
    assert_eq!(
        fresh
            .initialize(InitRequest::Passphrase(pw(PASS)), "admin")
            .unwrap_err(),
        Error::AlreadyInitialized
    );
}

#[test]
fn backup_holds_no_plaintext_secrets() {
    let (s, _c, v) = unsealed();
    let ik = v.new_import_key("admin").unwrap();
    let material = [0x37u8; 32];
    let kek = vhsm_core::crypto::SecretKey::from_slice(ik.key.expose()).unwrap();
    let wrapped = vhsm_core::crypto::aes_kwp_wrap(&kek, &material).unwrap();
    v.import_key(new_key("k", &[]), &ik.id, &wrapped, "admin")
        .unwrap();
    let blob = v.backup("admin").unwrap();
    assert!(!blob.windows(32).any(|w| w == material));
    assert!(!blob.windows(PASS.len()).any(|w| w == PASS.as_bytes()));
    // Every encrypted record of the store is in the blob verbatim (but the audit anchor, which
    // the "backup" record written after the blob moved on).
    for (t, k, value) in s.dump() {
        if matches!(t, Tree::Keys | Tree::Keyring | Tree::Meta) && k != b"audit-anchor" {
            assert!(blob.windows(value.len()).any(|w| w == value.as_slice()));
        }
    }
}
