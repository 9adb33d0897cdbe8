//! Two-phase rekey: a staged configuration is not in force until committed with proof of the
//! new material; lost responses, restarts, failed commits and expiry leave one usable config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use vhsm_core::{
    EncryptedShare, Error, InitRequest, MemoryStorage, Reason, RekeyAuth, RekeyStaged, SealState,
    UnsealMode, Vhsm,
};

fn new_custodians(n: usize, tag: &str) -> Vec<String> {
    (1..=n).map(|i| format!("{tag} custodian {i}")).collect()
}

fn stage_shares(v: &Vhsm, auth: RekeyAuth, m: u8, pass: &[String]) -> RekeyStaged {
    v.rekey_stage(
        auth,
        InitRequest::Shares {
            threshold: m,
            custodian_passphrases: pass.iter().map(|p| pw(p)).collect(),
        },
        "admin",
    )
    .unwrap()
}

fn proof(shares: &[EncryptedShare], pass: &[String], which: &[usize]) -> RekeyAuth {
    RekeyAuth::Shares(
        which
            .iter()
            .map(|&i| (shares[i].bytes.clone(), pw(&pass[i])))
            .collect(),
    )
}

fn events(v: &Vhsm) -> Vec<String> {
    v.audit_records(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect()
}

/// Restarts on the same storage (the old instance is dropped: a crash or a lost response).
fn restart(s: &Arc<MemoryStorage>, c: &Arc<TestClock>, v: Vhsm) -> Vhsm {
    drop(v);
    open(s, c)
}

fn unseal_with(v: &Vhsm, shares: &[EncryptedShare], pass: &[String], which: &[usize]) {
    for &i in which {
        v.submit_share(&shares[i].bytes, &pw(&pass[i]), "c")
            .unwrap();
    }
    assert_eq!(v.status().seal_state, SealState::Unsealed);
}

#[test]
fn a_staged_rekey_is_not_in_force_until_committed() {
    let (s, c, v) = unsealed();
    v.create_key(new_key("k", &[]), "admin").unwrap();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    assert_eq!(staged.outcome.shares.len(), 3);
    assert_eq!((staged.threshold, staged.share_count), (2, 3));
    assert_eq!(staged.unseal_mode, UnsealMode::Shares);
    assert_eq!(staged.staging_id.len(), 32);
    assert_eq!(staged.expires_at_ms, c.now() + 900_000);
    let new_shares = staged.outcome.shares.clone();
    // The status still shows the configuration in force, and the staging.
    let st = v.status();
    assert_eq!(st.unseal_mode, Some(UnsealMode::Passphrase));
    assert_eq!(st.rekey_staging_id, staged.staging_id);
    assert_eq!(st.rekey_staging_expires_at_ms, staged.expires_at_ms);

    // The response is "lost": restart. The old passphrase unseals; the new shares do not.
    let v = restart(&s, &c, v);
    assert_eq!(v.status().seal_state, SealState::Sealed);
    assert_eq!(
        v.submit_share(&new_shares[0].bytes, &pw(&three[0]), "c"),
        Err(Error::InvalidArgument("share"))
    );
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    // The staging survived the restart and the seal/unseal.
    assert_eq!(
        v.rekey_staging().unwrap(),
        Some((staged.staging_id.clone(), staged.expires_at_ms))
    );
    v.seal("admin").unwrap();
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();

    // Commit it with a quorum of the new shares: now the new shares apply, the old passphrase not.
    let done = v
        .rekey_commit(
            &staged.staging_id,
            proof(&new_shares, &three, &[2, 0]),
            "admin",
        )
        .unwrap();
    assert_eq!((done.threshold, done.share_count, done.epoch), (2, 3, 1));
    assert_eq!(v.rekey_staging().unwrap(), None);
    assert_eq!(v.status().unseal_mode, Some(UnsealMode::Shares));
    assert_eq!(v.status().rekey_staging_id, "");
    let v = restart(&s, &c, v);
    assert_eq!(
        v.unseal_with_passphrase(&pw(PASS), "admin"),
        Err(Error::InvalidArgument("share"))
    );
    unseal_with(&v, &new_shares, &three, &[1, 2]);
    assert_eq!(v.describe_key("k").unwrap().key_id, "k");
    let ev = events(&v);
    for want in ["rekey.staged", "rekey.committed"] {
        assert!(ev.iter().any(|e| e == want), "{want} in {ev:?}");
    }
    // A second commit finds nothing staged.
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&new_shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::RekeyNotStaged("no rekey is staged"))
    );
}

#[test]
fn staged_shares_are_refused_at_unseal_with_a_clear_message() {
    let (s, c, v, five) = quorum(3, 5);
    let old = custodians(5);
    unseal_with(&v, &five, &old, &[0, 1, 2]);
    let three = new_custodians(3, "next");
    let staged = stage_shares(&v, proof(&five, &old, &[2, 3, 4]), 2, &three);
    let v = restart(&s, &c, v);
    let e = v
        .submit_share(&staged.outcome.shares[0].bytes, &pw(&three[0]), "c")
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidShare(m) if m.contains("not committed")),
        "{e}"
    );
    // The old quorum still unseals after the restart.
    unseal_with(&v, &five, &old, &[4, 0, 3]);
}

#[test]
fn too_few_new_shares_are_refused_and_the_old_config_stays() {
    let (s, c, v) = unsealed();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    let new_shares = &staged.outcome.shares;
    assert_eq!(
        v.rekey_commit(&staged.staging_id, proof(new_shares, &three, &[1]), "admin"),
        Err(Error::InvalidArgument("shares"))
    );
    // Duplicates do not count twice.
    let e = v
        .rekey_commit(
            &staged.staging_id,
            proof(new_shares, &three, &[1, 1]),
            "admin",
        )
        .unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidShare);
    // Old shares are not proof of the new ones.
    let e = v
        .rekey_commit(&staged.staging_id, RekeyAuth::Passphrase(pw(PASS)), "admin")
        .unwrap_err();
    assert_eq!(e, Error::InvalidArgument("shares"));
    let v = restart(&s, &c, v);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    // The staging is still there and can still be committed.
    v.rekey_commit(
        &staged.staging_id,
        proof(new_shares, &three, &[0, 1]),
        "admin",
    )
    .unwrap();
}

#[test]
fn wrong_new_passphrases_go_through_the_attempt_limiter() {
    let (_s, c, v) = unsealed();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    let new_shares = &staged.outcome.shares;
    let wrong = RekeyAuth::Shares(vec![
        (new_shares[0].bytes.clone(), pw(&three[0])),
        (
            new_shares[1].bytes.clone(),
            pw("not this custodian's passphrase"),
        ),
    ]);
    let e = v
        .rekey_commit(&staged.staging_id, wrong, "admin")
        .unwrap_err();
    assert_eq!(e, Error::UnsealRejected { retry_after_ms: 0 });
    let wrong = RekeyAuth::Shares(vec![
        (new_shares[0].bytes.clone(), pw("still not the passphrase")),
        (new_shares[1].bytes.clone(), pw(&three[1])),
    ]);
    assert_eq!(
        v.rekey_commit(&staged.staging_id, wrong, "admin"),
        Err(Error::UnsealRejected {
            retry_after_ms: 1000
        })
    );
    // Even the right shares wait for the back-off.
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(new_shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::RateLimited {
            retry_after_ms: 1000
        })
    );
    assert_eq!(
        events(&v)
            .iter()
            .filter(|e| *e == "rekey.commit_rejected")
            .count(),
        2
    );
    c.advance(1000);
    v.rekey_commit(
        &staged.staging_id,
        proof(new_shares, &three, &[0, 1]),
        "admin",
    )
    .unwrap();
}

#[test]
fn an_expired_staging_is_refused_and_discarded() {
    let (s, c, v) = unsealed();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    c.advance(900_000);
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::RekeyStagingExpired)
    );
    assert_eq!(Error::RekeyStagingExpired.reason(), Reason::RekeyExpired);
    assert!(events(&v).iter().any(|e| e == "rekey.expired"));
    assert_eq!(v.rekey_staging().unwrap(), None);
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::RekeyNotStaged
    );
    let v = restart(&s, &c, v);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    // An expired staging is also discarded (audited) when the next one is staged.
    let again = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    c.advance(900_001);
    let third = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    assert_ne!(again.staging_id, third.staging_id);
    assert_eq!(
        events(&v).iter().filter(|e| *e == "rekey.expired").count(),
        2
    );
}

#[test]
fn shares_of_another_staging_do_not_commit_this_one() {
    let (_s, _c, v) = unsealed();
    let three = new_custodians(3, "new");
    let first = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    let second = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    assert!(events(&v).iter().any(|e| e == "rekey.replaced"));
    // The first staging was replaced.
    assert_eq!(
        v.rekey_commit(
            &first.staging_id,
            proof(&first.outcome.shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::RekeyNotStaged(
            "the staging id does not name the staged rekey"
        ))
    );
    // Same epoch, same custodian passphrases, but another unseal secret: rejected.
    assert_eq!(
        v.rekey_commit(
            &second.staging_id,
            proof(&first.outcome.shares, &three, &[0, 1]),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::UnsealRejected
    );
    assert_eq!(
        v.rekey_commit(
            "zz",
            proof(&second.outcome.shares, &three, &[0, 1]),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::RekeyNotStaged
    );
    assert_eq!(v.status().unseal_mode, Some(UnsealMode::Passphrase));
}

#[test]
fn failed_storage_commits_leave_the_old_configuration_usable() {
    let (s, c, v) = unsealed();
    let three = new_custodians(3, "new");
    let head = v.status().audit_head_seq;
    s.fail_commits(1);
    let e = v
        .rekey_stage(
            RekeyAuth::Passphrase(pw(PASS)),
            InitRequest::Shares {
                threshold: 2,
                custodian_passphrases: three.iter().map(|p| pw(p)).collect(),
            },
            "admin",
        )
        .unwrap_err();
    // Fail-stop: the node sealed itself; after a restart nothing was staged.
    assert_eq!(e.reason(), Reason::StorageFailed);
    assert_eq!(v.status().seal_state, SealState::Sealed);
    let v = restart(&s, &c, v);
    assert_eq!(v.status().audit_head_seq, head);
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert_eq!(v.rekey_staging().unwrap(), None);

    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    let head = v.status().audit_head_seq;
    s.fail_commits(1);
    let e = v
        .rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 2]),
            "admin",
        )
        .unwrap_err();
    assert_eq!(e.reason(), Reason::StorageFailed);
    // Still the old configuration after a restart.
    let v = restart(&s, &c, v);
    assert_eq!(v.status().audit_head_seq, head);
    assert_eq!(v.status().unseal_mode, Some(UnsealMode::Passphrase));
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    // The retry succeeds.
    v.rekey_commit(
        &staged.staging_id,
        proof(&staged.outcome.shares, &three, &[0, 2]),
        "admin",
    )
    .unwrap();
    let v = restart(&s, &c, v);
    unseal_with(&v, &staged.outcome.shares, &three, &[0, 2]);
}

#[test]
fn shares_to_passphrase_and_back() {
    let (s, c, v, five) = quorum(3, 5);
    let old = custodians(5);
    unseal_with(&v, &five, &old, &[0, 1, 2]);
    // Shares -> passphrase: authorize with old shares, prove with the new passphrase.
    let staged = v
        .rekey_stage(
            proof(&five, &old, &[0, 3, 4]),
            InitRequest::Passphrase(pw("the new appliance passphrase")),
            "admin",
        )
        .unwrap();
    assert!(staged.outcome.shares.is_empty());
    assert_eq!(staged.unseal_mode, UnsealMode::Passphrase);
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            RekeyAuth::Passphrase(pw("not the new passphrase")),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::UnsealRejected
    );
    assert_eq!(
        v.rekey_commit(&staged.staging_id, proof(&five, &old, &[0, 1, 2]), "admin"),
        Err(Error::InvalidArgument("new_passphrase"))
    );
    c.advance(1000);
    v.rekey_commit(
        &staged.staging_id,
        RekeyAuth::Passphrase(pw("the new appliance passphrase")),
        "admin",
    )
    .unwrap();
    let v = restart(&s, &c, v);
    assert_eq!(
        v.submit_share(&five[0].bytes, &pw(&old[0]), "c"),
        Err(Error::InvalidArgument("share"))
    );
    v.unseal_with_passphrase(&pw("the new appliance passphrase"), "admin")
        .unwrap();

    // Passphrase -> shares again.
    let two = new_custodians(2, "final");
    let staged = stage_shares(
        &v,
        RekeyAuth::Passphrase(pw("the new appliance passphrase")),
        2,
        &two,
    );
    v.rekey_commit(
        &staged.staging_id,
        proof(&staged.outcome.shares, &two, &[1, 0]),
        "admin",
    )
    .unwrap();
    let v = restart(&s, &c, v);
    unseal_with(&v, &staged.outcome.shares, &two, &[0, 1]);
}

#[test]
fn abort_discards_the_staging_and_one_shot_rekey_supersedes_it() {
    let (_s, _c, v) = unsealed();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    assert_eq!(
        v.rekey_abort(&"00".repeat(16), "admin")
            .unwrap_err()
            .reason(),
        Reason::RekeyNotStaged
    );
    v.rekey_abort(&staged.staging_id, "admin").unwrap();
    assert!(events(&v).iter().any(|e| e == "rekey.aborted"));
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::RekeyNotStaged
    );
    // A one-shot rekey removes a pending staging (whose epoch it takes).
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    v.rekey(
        RekeyAuth::Passphrase(pw(PASS)),
        InitRequest::Passphrase(pw("one-shot passphrase")),
        "admin",
    )
    .unwrap();
    assert_eq!(v.rekey_staging().unwrap(), None);
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        )
        .unwrap_err()
        .reason(),
        Reason::RekeyNotStaged
    );
}

#[test]
fn stage_and_commit_need_an_unsealed_store() {
    let (s, c, v) = unsealed();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&v, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    v.seal("admin").unwrap();
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::Sealed)
    );
    assert_eq!(
        v.rekey_stage(
            RekeyAuth::Passphrase(pw(PASS)),
            InitRequest::Passphrase(pw("another passphrase")),
            "admin"
        )
        .unwrap_err(),
        Error::Sealed
    );
    let v = restart(&s, &c, v);
    assert_eq!(
        v.rekey_commit(
            &staged.staging_id,
            proof(&staged.outcome.shares, &three, &[0, 1]),
            "admin"
        ),
        Err(Error::Sealed)
    );
}

#[test]
fn a_follower_sees_the_staging_and_the_committed_header_after_reload() {
    use vhsm_core::{Changes, Tree};
    // Two cores over one store: `a` makes the writes, `b` stands for a follower whose
    // replicated backend applied them and told it which records changed.
    let (s, c, a) = unsealed();
    let b = open(&s, &c);
    b.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    let three = new_custodians(3, "new");
    let staged = stage_shares(&a, RekeyAuth::Passphrase(pw(PASS)), 2, &three);
    b.reload(&Changes::Keys(vec![
        (Tree::Header, b"rekey-staging".to_vec()),
        (Tree::Audit, Vec::new()),
    ]))
    .unwrap();
    // The staging is not in force on the follower either, but it can be committed there.
    assert_eq!(b.status().unseal_mode, Some(UnsealMode::Passphrase));
    assert_eq!(b.status().audit_head_seq, a.status().audit_head_seq);
    b.rekey_commit(
        &staged.staging_id,
        proof(&staged.outcome.shares, &three, &[0, 1]),
        "admin",
    )
    .unwrap();
    a.reload(&Changes::All).unwrap();
    assert_eq!(a.status().seal_state, SealState::Unsealed);
    assert_eq!(a.status().unseal_mode, Some(UnsealMode::Shares));
    assert_eq!(a.rekey_staging().unwrap(), None);
    a.seal("admin").unwrap();
    unseal_with(&a, &staged.outcome.shares, &three, &[2, 1]);
}
