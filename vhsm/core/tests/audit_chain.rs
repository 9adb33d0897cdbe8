//! The audit log of a whole session verifies with `vhsm_audit::verify_chain`, covers sealed-time
//! unseal attempts, and carries no secrets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vhsm_core::{InitRequest, MemoryStorage, RekeyAuth};

#[test]
fn whole_session_chain_verifies() {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    let pk = v.audit_public_key().unwrap();
    // Sealed-time attempts are recorded (unsigned) ...
    v.unseal_with_passphrase(&pw("wrong passphrase 1"), "mallory")
        .unwrap_err();
    v.record_denied("auditor", "CreateKey").unwrap();
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    v.rotate_key("k", "admin").unwrap();
    v.set_min_decryption_version("k", 2, "admin").unwrap();
    v.disable_key("k", "admin").unwrap();
    v.enable_key("k", "admin").unwrap();
    v.schedule_key_deletion("k", 0, "admin").unwrap();
    v.cancel_key_deletion("k", "admin").unwrap();
    v.schedule_key_deletion("k", 0, "admin").unwrap();
    v.destroy_due_keys().unwrap();
    let ik = v.new_import_key("admin").unwrap();
    let kek = vhsm_core::crypto::SecretKey::from_slice(ik.key.expose()).unwrap();
    let wrapped = vhsm_core::crypto::aes_kwp_wrap(&kek, &[9; 32]).unwrap();
    v.import_key(new_key("imp", &[]), &ik.id, &wrapped, "admin")
        .unwrap();
    v.backup("admin").unwrap();
    v.record_denied("xks-front", "Seal").unwrap();
    v.rekey(
        RekeyAuth::Passphrase(pw(PASS)),
        InitRequest::Passphrase(pw("the new passphrase")),
        "admin",
    )
    .unwrap();
    v.seal("admin").unwrap();
    // ... and after the seal, unsigned until the next unseal covers them.
    v.unseal_with_passphrase(&pw(PASS), "mallory").unwrap_err();
    v.unseal_with_passphrase(&pw(PASS), "mallory").unwrap_err();
    let e = v
        .unseal_with_passphrase(&pw("the new passphrase"), "admin")
        .unwrap_err();
    assert_eq!(
        e.reason(),
        vhsm_core::Reason::RateLimited,
        "rate limited, not recorded"
    );
    c.advance(1000);
    v.unseal_with_passphrase(&pw("the new passphrase"), "admin")
        .unwrap();

    let st = v.status();
    let records = v.audit_records(0, 10_000).unwrap();
    assert_eq!(records.len() as u64, st.audit_head_seq);
    let verified = vhsm_audit::verify_chain(
        &records,
        &pk,
        Some((st.audit_head_seq, &st.audit_head_hash)),
    )
    .unwrap();
    assert_eq!(
        verified.unsigned_tail, 0,
        "the final unseal record is signed and covers the rest"
    );
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    for e in [
        "init",
        "unseal.rejected",
        "access.denied",
        "unseal",
        "key.create",
        "key.rotate",
        "key.min_decryption_version",
        "key.disable",
        "key.enable",
        "key.schedule_deletion",
        "key.cancel_deletion",
        "key.destroy",
        "import_key.create",
        "key.import",
        "backup",
        "rekey",
        "seal",
    ] {
        assert!(events.contains(&e), "missing {e} in {events:?}");
    }
    let rejected: Vec<_> = records
        .iter()
        .filter(|r| r.event == "unseal.rejected")
        .collect();
    assert_eq!(rejected.len(), 3);
    assert!(rejected
        .iter()
        .all(|r| r.signature.is_none() && r.actor == "mallory"));
    assert!(records
        .iter()
        .find(|r| r.event == "init")
        .unwrap()
        .signature
        .is_some());
    // No secret ever reaches the log.
    for r in &records {
        let line = r.to_json_line();
        assert!(
            !line.contains(PASS)
                && !line.contains("wrong passphrase")
                && !line.contains("the new passphrase")
        );
        assert!(!line.contains(&hex::encode(ik.key.expose())));
    }
    // A tampered stored record breaks verification.
    let mut edited = records.clone();
    edited[3].actor = "someone else".into();
    assert!(vhsm_audit::verify_chain(&edited, &pk, None).is_err());
    // Paging.
    let page = v.audit_records(3, 2).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(v
        .audit_records(st.audit_head_seq + 1, 10)
        .unwrap()
        .is_empty());
    // Readable while sealed, and after a restart.
    v.seal("admin").unwrap();
    drop(v);
    let v = open(&s, &c);
    assert_eq!(v.audit_public_key().unwrap(), pk);
    let again = v.audit_records(1, 10_000).unwrap();
    vhsm_audit::verify_chain(&again, &pk, None).unwrap();
    assert_eq!(v.status().audit_head_seq, again.len() as u64);
}

#[test]
fn quorum_progress_is_audited() {
    let (_s, _c, v, shares) = quorum(2, 2);
    let cust = custodians(2);
    v.submit_share(&shares[0].bytes, &pw(&cust[0]), "custodian-1")
        .unwrap();
    v.reset_unseal("admin");
    v.submit_share(&shares[1].bytes, &pw(&cust[1]), "custodian-2")
        .unwrap();
    v.submit_share(&shares[0].bytes, &pw(&cust[0]), "custodian-1")
        .unwrap();
    let records = v.audit_records(1, 100).unwrap();
    let events: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.event.as_str(), r.actor.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("init", "admin"),
            ("unseal.share_accepted", "custodian-1"),
            ("unseal.reset", "admin"),
            ("unseal.share_accepted", "custodian-2"),
            ("unseal", "custodian-1"),
        ]
    );
    vhsm_audit::verify_chain(&records, &v.audit_public_key().unwrap(), None).unwrap();
}

#[test]
fn denied_on_uninitialized_store_is_not_persisted() {
    let s = Arc::new(MemoryStorage::new());
    let v = open(&s, &TestClock::new());
    v.record_denied("x", "Init").unwrap();
    assert!(s.dump().is_empty());
    assert_eq!(v.status().audit_head_seq, 0);
    assert_eq!(v.status().audit_head_hash, "");
}

#[test]
fn damaged_audit_record_is_reported_not_fatal() {
    let (s, c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let head = v.status().audit_head_seq;
    assert!(head >= 3);
    s.raw_put(vhsm_core::Tree::Audit, &2u64.to_be_bytes(), b"{not json");
    drop(v);
    // The store still opens and unseals; reading over the damaged record is Corruption.
    let v = open(&s, &c);
    assert_eq!(v.status().audit_head_seq, head);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(
        v.audit_records(1, 10).unwrap_err().reason(),
        vhsm_core::Reason::Corruption
    );
    assert_eq!(v.audit_records(3, 10).unwrap()[0].seq, 3);
}

#[test]
fn suppressed_denials_are_counted_in_the_next_record() {
    let (_s, _c, v) = unsealed();
    v.record_denied_with_suppressed("mallory", "Admin/Init", 0)
        .unwrap();
    v.record_denied_with_suppressed("mallory", "Admin/Init", 41)
        .unwrap();
    let head = v.status().audit_head_seq;
    let records = v.audit_records(head - 1, 2).unwrap();
    assert_eq!(records[0].event, "access.denied");
    assert!(!records[0].details.contains_key("suppressed_since_last"));
    assert_eq!(records[1].details["suppressed_since_last"], "41");
    assert_eq!(records[1].details["operation"], "Admin/Init");
    assert_eq!(records[1].actor, "mallory");
}
