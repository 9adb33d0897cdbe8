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
    v.reset_unseal("admin").unwrap();
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

/// A store with signed history, sealed, with some legitimate sealed-time records.
fn sealed_with_history() -> (Arc<MemoryStorage>, Arc<TestClock>, vhsm_core::Vhsm) {
    let (s, c, v) = unsealed();
    for id in ["a", "b", "c"] {
        v.create_key(new_key(id, &[]), "admin").unwrap();
    }
    v.seal("admin").unwrap();
    v.unseal_with_passphrase(&pw("wrong"), "mallory")
        .unwrap_err();
    c.advance(10_000);
    v.record_denied("auditor", "CreateKey").unwrap();
    (s, c, v)
}

fn record(s: &MemoryStorage, seq: u64) -> vhsm_core::AuditRecord {
    let raw = vhsm_core::Storage::get(s, vhsm_core::Tree::Audit, &seq.to_be_bytes())
        .unwrap()
        .unwrap();
    vhsm_core::AuditRecord::from_json_line(std::str::from_utf8(&raw).unwrap()).unwrap()
}

fn put_record(s: &MemoryStorage, r: &vhsm_core::AuditRecord) {
    s.raw_put(
        vhsm_core::Tree::Audit,
        &r.seq.to_be_bytes(),
        r.to_json_line().as_bytes(),
    );
}

#[test]
fn sealed_time_records_after_the_anchor_unseal_normally() {
    let (_s, _c, v) = sealed_with_history();
    let head = v.status().audit_head_seq;
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let records = v.audit_records(1, 1000).unwrap();
    assert_eq!(records.len() as u64, head + 1);
    assert_eq!(records.last().unwrap().event, "unseal");
    vhsm_audit::verify_chain(&records, &v.audit_public_key().unwrap(), None).unwrap();
}

#[test]
fn a_cut_and_refilled_log_is_refused_at_unseal_and_nothing_is_written() {
    use vhsm_core::{Error, Tree};
    let (s, c, v) = sealed_with_history();
    let head = v.status().audit_head_seq;
    drop(v);
    // Someone with the disk cuts the signed records after "create a" and appends unsigned
    // sealed-time forgeries so the log is as long as before.
    let keep = 3; // init, unseal, key.create a
    for seq in keep + 1..=head {
        s.raw_delete(Tree::Audit, &seq.to_be_bytes());
    }
    let mut prev = record(&s, keep);
    for seq in keep + 1..=head {
        let r = vhsm_core::AuditRecord::new(
            seq,
            prev.hash_hex(),
            1,
            "unseal.rejected",
            "nobody",
            Default::default(),
        );
        put_record(&s, &r);
        prev = r;
    }
    let v = open(&s, &c);
    let e = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
    assert!(
        matches!(&e, Error::AuditMismatch(m) if m.contains("anchored")),
        "{e:?}"
    );
    assert_eq!(e.reason(), vhsm_core::Reason::AuditMismatch);
    assert_eq!(v.status().audit_head_seq, head, "the refusal wrote nothing");
    assert_eq!(v.status().seal_state, vhsm_core::SealState::Sealed);
    // The operator may choose to unseal anyway: the break is then recorded, signed.
    let alarm = vhsm_core::Options {
        audit_anchor_mismatch: vhsm_core::AnchorMismatch::Alarm,
        ..opts()
    };
    let v = open_with(&s, &c, alarm);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let r = v.audit_records(head + 1, 10).unwrap();
    assert_eq!(
        r.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["audit.anchor_mismatch", "unseal"]
    );
    assert!(r[0].signature.is_some());
    assert_eq!(r[0].details["stored_head_seq"], head.to_string());
    assert!(r[0].details["problem"].contains("anchored"));
    // From then on the log continues the new anchor: the next unseal is normal.
    v.seal("admin").unwrap();
    let v = open(&s, &c);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
}

#[test]
fn forged_unsigned_events_and_gaps_after_the_anchor_are_refused() {
    use vhsm_core::{Error, Tree};
    // A forged unsigned "key.destroy" appended while sealed.
    let (s, c, v) = sealed_with_history();
    let head = v.status().audit_head_seq;
    drop(v);
    let forged = vhsm_core::AuditRecord::new(
        head + 1,
        record(&s, head).hash_hex(),
        1,
        "key.destroy",
        "admin",
        Default::default(),
    );
    put_record(&s, &forged);
    let v = open(&s, &c);
    let e = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
    assert!(
        matches!(&e, Error::AuditMismatch(m) if m.contains("must be signed")),
        "{e:?}"
    );
    // A deleted sealed-time record after the anchor: a gap, and the head stays the last
    // record (the next append never overwrites one).
    let (s, c, v) = sealed_with_history();
    let head = v.status().audit_head_seq;
    drop(v);
    s.raw_delete(Tree::Audit, &(head - 1).to_be_bytes());
    let v = open(&s, &c);
    assert_eq!(v.status().audit_head_seq, head);
    let e = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
    assert!(
        matches!(&e, Error::AuditMismatch(m) if m.contains("missing")),
        "{e:?}"
    );
    // A sealed-time record edited: the link of the next one breaks.
    let (s, c, v) = sealed_with_history();
    let head = v.status().audit_head_seq;
    drop(v);
    let mut r = record(&s, head - 1);
    r.actor = "someone else".into();
    put_record(&s, &r);
    let v = open(&s, &c);
    let e = v.unseal_with_passphrase(&pw(PASS), "admin").unwrap_err();
    assert!(
        matches!(&e, Error::AuditMismatch(m) if m.contains(&format!("seq {head}"))),
        "{e:?}"
    );
}
