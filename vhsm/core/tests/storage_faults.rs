//! Storage faults (issue 11): every state-changing facade operation, its n-th commit failing.
//!
//! For n = 1, 2, ... until the operation succeeds without reaching the fault: the call returns
//! `StorageFailed`, the live facade has stopped (sealed, refusing everything: fail-stop), a
//! fresh facade over the same store shows what was there before (nothing half-written), the
//! audit chain verifies, and the operation retried after the restart works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use vhsm_core::crypto::{aes_kwp_wrap, SecretKey};
use vhsm_core::storage::KeyValues;
use vhsm_core::{
    DecryptInput, Durability, EncryptOutput, EncryptedShare, Error, InitRequest, InvocationUse,
    KeyInfo, KeyState, MemoryStorage, Options, OsRandom, Readiness, RekeyAuth, SealState, Status,
    Storage, StorageError, Tree, Vhsm, WriteBatch,
};

/// A storage that fails the n-th commit from the moment it is armed (nothing of that batch is
/// applied), and counts the faults it injected.
struct FaultStorage {
    mem: Arc<MemoryStorage>,
    /// Commits left until the failing one (1 = the next commit fails); `None`: disarmed.
    countdown: Mutex<Option<u64>>,
    fired: AtomicBool,
}

impl fmt::Debug for FaultStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStorage").finish_non_exhaustive()
    }
}

impl FaultStorage {
    fn new(mem: Arc<MemoryStorage>) -> Arc<Self> {
        Arc::new(FaultStorage {
            mem,
            countdown: Mutex::new(None),
            fired: AtomicBool::new(false),
        })
    }
    fn arm(&self, n: u64) {
        assert!(n >= 1);
        *self.countdown.lock().unwrap() = Some(n);
        self.fired.store(false, Ordering::SeqCst);
    }
    fn disarm(&self) {
        *self.countdown.lock().unwrap() = None;
    }
    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Storage for FaultStorage {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.mem.get(tree, key)
    }
    fn scan_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<KeyValues, StorageError> {
        self.mem.scan_prefix(tree, prefix)
    }
    fn commit(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        // Every state change of the core is committed flushed (fsync) before it is reported.
        assert_eq!(
            durability,
            Durability::Flushed,
            "a state change was not flushed"
        );
        {
            let mut c = self.countdown.lock().unwrap();
            match *c {
                Some(1) => {
                    *c = None;
                    self.fired.store(true, Ordering::SeqCst);
                    return Err(StorageError::Io("injected fault".into()));
                }
                Some(k) => *c = Some(k - 1),
                None => {}
            }
        }
        self.mem.commit(batch, durability)
    }
}

const NEW_PASS: &str = "a brand new unseal passphrase";

/// How a fresh facade over the store is unsealed.
#[derive(Clone)]
enum Cred {
    None,
    Pass(String),
    Shares(Vec<EncryptedShare>, Vec<String>),
}

/// One store under test: the facade runs over the fault-injecting storage.
struct Fx {
    mem: Arc<MemoryStorage>,
    fs: Arc<FaultStorage>,
    clock: Arc<TestClock>,
    opts: Options,
    v: Vhsm,
    cred: RefCell<Cred>,
    /// A ciphertext made under `k1` before the operation, and its plaintext.
    ct: Option<(EncryptOutput, Vec<u8>)>,
    /// Operation input prepared by the set-up (staging id, import key, backup blob, ...).
    arg: RefCell<Vec<Vec<u8>>>,
    /// The keys as listed while unsealed, for set-ups that end sealed.
    ref_keys: Option<Vec<KeyInfo>>,
}

fn open_over(fs: &Arc<FaultStorage>, clock: &Arc<TestClock>, opts: &Options) -> Vhsm {
    Vhsm::open(fs.clone(), Arc::new(OsRandom), clock.clone(), opts.clone()).unwrap()
}

fn unseal(v: &Vhsm, cred: &Cred) {
    match cred {
        Cred::None => panic!("no credentials"),
        Cred::Pass(p) => {
            v.unseal_with_passphrase(&pw(p), "admin").unwrap();
        }
        Cred::Shares(shares, pass) => {
            v.reset_unseal("c").unwrap();
            for (s, p) in shares.iter().zip(pass) {
                if v.status().seal_state == SealState::Unsealed {
                    break;
                }
                v.submit_share(&s.bytes, &pw(p), "c").unwrap();
            }
        }
    }
    assert_eq!(v.status().seal_state, SealState::Unsealed);
}

fn empty_fx() -> Fx {
    let mem = Arc::new(MemoryStorage::new());
    let fs = FaultStorage::new(mem.clone());
    let clock = TestClock::new();
    let opts = opts();
    let v = open_over(&fs, &clock, &opts);
    Fx {
        mem,
        fs,
        clock,
        opts,
        v,
        cred: RefCell::new(Cred::None),
        ct: None,
        arg: RefCell::new(Vec::new()),
        ref_keys: None,
    }
}

/// An unsealed passphrase store with keys `k1`, `k2` and a ciphertext under `k1`.
fn base() -> Fx {
    let mut fx = empty_fx();
    fx.v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    *fx.cred.borrow_mut() = Cred::Pass(PASS.into());
    unseal(&fx.v, &Cred::Pass(PASS.into()));
    for id in ["k1", "k2"] {
        fx.v.create_key(new_key(id, &[]), "admin").unwrap();
    }
    let pt = b"fault injection plaintext".to_vec();
    fx.ct = Some((fx.v.encrypt("k1", &pt, b"aad").unwrap(), pt));
    fx
}

/// `base()` restarted (a fresh facade over the same storage, unsealed): no invocations are
/// reserved on this node, so the first encrypt or reservation writes.
fn restarted() -> Fx {
    let mut fx = base();
    fx.opts.gcm_reserve_inline = true;
    fx.v = open_over(&fx.fs, &fx.clock, &fx.opts);
    unseal(&fx.v, &fx.cred.borrow());
    fx
}

/// A 2-of-3 quorum store with keys `k1`, `k2`, sealed again.
fn quorum_sealed() -> Fx {
    let mut fx = empty_fx();
    let out =
        fx.v.initialize(
            InitRequest::Shares {
                threshold: 2,
                custodian_passphrases: custodians(3).iter().map(|p| pw(p)).collect(),
            },
            "admin",
        )
        .unwrap();
    let cred = Cred::Shares(out.shares, custodians(3));
    unseal(&fx.v, &cred);
    *fx.cred.borrow_mut() = cred;
    for id in ["k1", "k2"] {
        fx.v.create_key(new_key(id, &[]), "admin").unwrap();
    }
    let pt = b"quorum plaintext".to_vec();
    fx.ct = Some((fx.v.encrypt("k1", &pt, b"aad").unwrap(), pt));
    fx.ref_keys = Some(fx.v.list_keys().unwrap());
    fx.v.seal("admin").unwrap();
    fx
}

fn decrypt(v: &Vhsm, ct: &EncryptOutput) -> Result<Vec<u8>, Error> {
    let input = DecryptInput {
        ciphertext: &ct.ciphertext,
        iv: &ct.iv,
        tag: &ct.tag,
        aad: b"aad",
        metadata: &ct.metadata,
    };
    v.decrypt("k1", &input).map(|p| p.to_vec())
}

/// Everything the live facade shows.
#[derive(Debug, PartialEq)]
struct View {
    status: Status,
    keys: Result<Vec<KeyInfo>, Error>,
    uses: Vec<Result<InvocationUse, Error>>,
    readiness: Vec<Readiness>,
    decrypt: Option<Result<Vec<u8>, Error>>,
    audit_records: usize,
}

fn view(fx: &Fx) -> View {
    let v = &fx.v;
    let keys = v.list_keys();
    let ids: Vec<String> = keys
        .as_ref()
        .map(|k| k.iter().map(|k| k.key_id.clone()).collect())
        .unwrap_or_default();
    View {
        status: v.status(),
        uses: ids.iter().map(|id| v.invocation_use(id)).collect(),
        readiness: ids.iter().map(|id| v.encrypt_readiness(id)).collect(),
        keys,
        decrypt: fx.ct.as_ref().map(|(ct, _)| decrypt(v, ct)),
        audit_records: v.audit_records(1, 10_000).unwrap().len(),
    }
}

/// The audit chain in storage verifies and ends at the facade's head.
fn check_chain(name: &str, v: &Vhsm) {
    let st = v.status();
    let records = v.audit_records(1, 10_000).unwrap();
    if st.seal_state == SealState::Uninitialized {
        assert!(
            records.is_empty(),
            "{name}: audit records on an empty store"
        );
        assert_eq!(st.audit_head_seq, 0, "{name}");
        return;
    }
    vhsm_audit::verify_chain(&records, &v.audit_public_key().unwrap(), None)
        .unwrap_or_else(|e| panic!("{name}: audit chain does not verify: {e:?}"));
    assert_eq!(records.len() as u64, st.audit_head_seq, "{name}: audit gap");
    assert_eq!(
        records.last().map(|r| r.seq).unwrap_or(0),
        st.audit_head_seq,
        "{name}: head seq"
    );
}

/// A copy of the store's contents.
fn copy_store(fx: &Fx) -> Arc<MemoryStorage> {
    let copy = Arc::new(MemoryStorage::new());
    for (t, k, v) in fx.mem.dump() {
        copy.raw_put(t, &k, &v);
    }
    copy
}

/// A fresh facade over a copy of the store's contents (so it cannot disturb the live one)
/// shows the same audit head and, once unsealed with `cred`, the same keys as `expect_keys`.
fn check_fresh(name: &str, fx: &Fx, live: &Status, expect_keys: &Result<Vec<KeyInfo>, Error>) {
    let copy = copy_store(fx);
    let fresh = open_with(&copy, &fx.clock, fx.opts.clone());
    let st = fresh.status();
    assert_eq!(
        (st.audit_head_seq, &st.audit_head_hash),
        (live.audit_head_seq, &live.audit_head_hash),
        "{name}: audit head in storage differs from the live facade's"
    );
    check_chain(name, &fresh);
    if st.seal_state == SealState::Uninitialized {
        // A staged restore lives in memory only; nothing may have reached the store.
        assert_eq!(live.seal_state, SealState::Uninitialized, "{name}");
        assert!(copy.dump().is_empty(), "{name}: half-written store");
        return;
    }
    assert_eq!(st.store_id, live.store_id, "{name}: store id");
    assert_eq!(
        st.rekey_staging_id, live.rekey_staging_id,
        "{name}: staging"
    );
    assert_eq!(
        (st.unseal_mode, st.threshold, st.share_count),
        (live.unseal_mode, live.threshold, live.share_count),
        "{name}: unseal configuration in storage differs"
    );
    unseal(&fresh, &fx.cred.borrow());
    let expect_keys = match (expect_keys, &fx.ref_keys) {
        (Err(Error::Sealed), Some(k)) => &Ok(k.clone()),
        _ => expect_keys,
    };
    assert_eq!(
        &fresh.list_keys(),
        expect_keys,
        "{name}: keys in storage differ"
    );
    if let Some((ct, pt)) = &fx.ct {
        if let Ok(got) = decrypt(&fresh, ct) {
            assert_eq!(&got, pt, "{name}");
        }
    }
    check_chain(name, &fresh);
}

/// What the live facade must show after a failed call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Exactly what it showed before the call.
    Unchanged,
    /// Sealed (sealing happens even when its audit record cannot be written).
    Sealed,
    /// The first `n - 1` due keys are destroyed (one commit per key), nothing else changed.
    DestroyedPrefix,
}

type Op<'a> = &'a dyn Fn(&Fx) -> Result<(), Error>;

static INJECTED: AtomicU64 = AtomicU64::new(0);
static OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// Runs `op` on a fresh `setup()` with its n-th commit failing, for n = 1, 2, ... until it
/// succeeds without a fault. Returns the number of faults injected.
static FAILED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// [`exercise_one`], recording a failing case instead of stopping at it.
fn exercise(name: &str, setup: &dyn Fn() -> Fx, op: Op<'_>, retry: Option<Op<'_>>, after: After) {
    if catch_unwind(AssertUnwindSafe(|| {
        exercise_one(name, setup, op, retry, after)
    }))
    .is_err()
    {
        FAILED.lock().unwrap().push(name.to_string());
    }
}

fn exercise_one(
    name: &str,
    setup: &dyn Fn() -> Fx,
    op: Op<'_>,
    retry: Option<Op<'_>>,
    after: After,
) {
    let mut n = 1;
    loop {
        let mut fx = setup();
        let before = view(&fx);
        fx.fs.arm(n);
        let r = catch_unwind(AssertUnwindSafe(|| op(&fx)))
            .unwrap_or_else(|_| panic!("{name}: panicked with commit {n} failing"));
        fx.fs.disarm();
        if !fx.fs.fired() {
            r.unwrap_or_else(|e| panic!("{name}: failed without a fault: {e:?}"));
            check_chain(name, &fx.v);
            let live = view(&fx);
            if live.status.seal_state == SealState::Unsealed {
                check_fresh(name, &fx, &live.status, &live.keys);
            }
            eprintln!("{name}: {} fault point(s)", n - 1);
            assert!(
                n > 1 || name.contains("writes nothing"),
                "{name}: wrote nothing"
            );
            INJECTED.fetch_add(n - 1, Ordering::SeqCst);
            OPERATIONS.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let name = &format!("{name} (commit {n} failing)");
        let e = r.expect_err("succeeded although its commit failed");
        assert!(
            matches!(&e, Error::StorageFailed(m) if m.contains("injected fault")),
            "{name}: unexpected error {e:?}"
        );
        // Fail-stop: the live facade sealed itself and refuses everything until restarted.
        let live = view(&fx);
        assert!(fx.v.storage_failure().is_some(), "{name}: not stopped");
        assert_ne!(live.status.seal_state, SealState::Unsealed, "{name}");
        assert!(
            matches!(live.keys, Err(Error::Sealed | Error::Uninitialized)),
            "{name}: {:?}",
            live.keys
        );
        assert!(
            matches!(fx.v.reset_unseal("c"), Err(Error::StorageFailed(_))),
            "{name}: a stopped facade accepted a call"
        );
        let persisted = |s: &Status| {
            (
                s.audit_head_seq,
                s.audit_head_hash.clone(),
                s.store_id.clone(),
                s.rekey_staging_id.clone(),
                (s.unseal_mode, s.threshold, s.share_count),
            )
        };
        let expect_keys = match after {
            After::Unchanged | After::Sealed => {
                if before.status.seal_state != SealState::Uninitialized {
                    assert_eq!(
                        persisted(&live.status),
                        persisted(&before.status),
                        "{name}: persisted state changed"
                    );
                }
                before.keys.clone()
            }
            After::DestroyedPrefix => {
                let mut want = before.keys.clone().unwrap();
                let mut left = n - 1;
                for k in &mut want {
                    if left > 0 && k.state == KeyState::PendingDeletion {
                        k.state = KeyState::Destroyed;
                        left -= 1;
                    }
                }
                assert_eq!(left, 0, "{name}");
                assert_eq!(
                    live.status.audit_head_seq,
                    before.status.audit_head_seq + n - 1,
                    "{name}: audit head"
                );
                Ok(want)
            }
        };
        check_chain(name, &fx.v);
        check_fresh(name, &fx, &live.status, &expect_keys);
        // Restarted over the same store (and unsealed if it was), the same operation, retried,
        // succeeds and leaves a consistent store.
        fx.v = open_over(&fx.fs, &fx.clock, &fx.opts);
        if before.status.seal_state == SealState::Unsealed {
            unseal(&fx.v, &fx.cred.borrow());
        }
        (retry.unwrap_or(op))(&fx).unwrap_or_else(|e| panic!("{name}: retry failed: {e:?}"));
        check_chain(name, &fx.v);
        let now = view(&fx);
        if now.status.seal_state == SealState::Sealed && fx.ct.is_some() {
            unseal(&fx.v, &fx.cred.borrow());
        }
        let now = view(&fx);
        if now.status.seal_state == SealState::Unsealed {
            check_fresh(name, &fx, &now.status, &now.keys);
            // Encrypt/decrypt still work (when the operation left k1 usable).
            if let Some((ct, pt)) = &fx.ct {
                if let Ok(got) = decrypt(&fx.v, ct) {
                    assert_eq!(&got, pt, "{name}");
                    let out = fx.v.encrypt("k1", b"after", b"aad").unwrap();
                    assert_eq!(decrypt(&fx.v, &out).unwrap(), b"after", "{name}");
                }
            }
            check_chain(name, &fx.v);
        }
        n += 1;
    }
}

fn ok<T>(r: Result<T, Error>) -> Result<(), Error> {
    r.map(|_| ())
}

fn with_import_key(fx: Fx) -> Fx {
    let ik = fx.v.new_import_key("admin").unwrap();
    let wrapped = aes_kwp_wrap(&SecretKey::from_slice(ik.key.expose()).unwrap(), &[7; 32]).unwrap();
    *fx.arg.borrow_mut() = vec![ik.id.into_bytes(), wrapped];
    fx
}

fn import(fx: &Fx) -> Result<(), Error> {
    let (id, wrapped) = {
        let a = fx.arg.borrow();
        (String::from_utf8(a[0].clone()).unwrap(), a[1].clone())
    };
    ok(fx.v.import_key(new_key("imp", &[]), &id, &wrapped, "admin"))
}

fn staged(fx: Fx) -> Fx {
    let s =
        fx.v.rekey_stage(
            RekeyAuth::Passphrase(pw(PASS)),
            InitRequest::Passphrase(pw(NEW_PASS)),
            "admin",
        )
        .unwrap();
    *fx.arg.borrow_mut() = vec![s.staging_id.into_bytes()];
    fx
}

fn staging_id(fx: &Fx) -> String {
    String::from_utf8(fx.arg.borrow()[0].clone()).unwrap()
}

fn stage(fx: &Fx) -> Result<(), Error> {
    ok(fx.v.rekey_stage(
        RekeyAuth::Passphrase(pw(PASS)),
        InitRequest::Passphrase(pw(NEW_PASS)),
        "admin",
    ))
}

/// A rekey that put the new passphrase in force: a fresh facade needs it from now on, and the
/// old one no longer unseals.
fn rekeyed(fx: &Fx) {
    *fx.cred.borrow_mut() = Cred::Pass(NEW_PASS.into());
    let fresh = open(&copy_store(fx), &fx.clock);
    assert!(fresh.unseal_with_passphrase(&pw(PASS), "admin").is_err());
}

fn due_keys() -> Fx {
    let fx = base();
    for id in ["d1", "d2", "d3"] {
        fx.v.create_key(new_key(id, &[]), "admin").unwrap();
        fx.v.schedule_key_deletion(id, 1, "admin").unwrap();
    }
    fx.clock.advance(2 * 86_400_000);
    fx
}

/// A backup of `base()` staged on an empty destination store.
fn restore_staged() -> Fx {
    let src = base();
    let blob = src.v.backup("admin").unwrap();
    let mut fx = empty_fx();
    fx.v.stage_restore(&blob, "admin").unwrap();
    *fx.cred.borrow_mut() = Cred::Pass(PASS.into());
    *fx.arg.borrow_mut() = vec![blob];
    fx.ct = src.ct;
    fx
}

/// A backup of a 2-of-3 quorum store staged on an empty destination, one share submitted.
fn restore_staged_quorum() -> Fx {
    let src = quorum_sealed();
    unseal(&src.v, &src.cred.borrow());
    let blob = src.v.backup("admin").unwrap();
    let mut fx = empty_fx();
    fx.v.stage_restore(&blob, "admin").unwrap();
    *fx.arg.borrow_mut() = vec![blob];
    let cred = src.cred.borrow().clone();
    let Cred::Shares(shares, pass) = &cred else {
        unreachable!()
    };
    fx.v.submit_share(&shares[0].bytes, &pw(&pass[0]), "c")
        .unwrap();
    *fx.cred.borrow_mut() = cred.clone();
    fx.ct = src.ct.clone();
    fx
}

#[test]
fn every_state_change_fails_closed_on_a_storage_fault() {
    use After::*;
    let base = &base;
    // Key management.
    exercise(
        "create_key",
        base,
        &|fx| ok(fx.v.create_key(new_key("new", &[]), "admin")),
        None,
        Unchanged,
    );
    exercise(
        "new_import_key",
        base,
        &|fx| ok(fx.v.new_import_key("admin")),
        None,
        Unchanged,
    );
    // The import key is consumed by the failed attempt (documented): the retry uses a new one.
    exercise(
        "import_key",
        &|| with_import_key(base()),
        &import,
        Some(&|fx: &Fx| {
            let ik = fx.v.new_import_key("admin")?;
            let wrapped =
                aes_kwp_wrap(&SecretKey::from_slice(ik.key.expose()).unwrap(), &[7; 32]).unwrap();
            ok(fx
                .v
                .import_key(new_key("imp", &[]), &ik.id, &wrapped, "admin"))
        }),
        Unchanged,
    );
    exercise(
        "rotate_key",
        base,
        &|fx| ok(fx.v.rotate_key("k1", "admin")),
        None,
        Unchanged,
    );
    exercise(
        "set_min_decryption_version",
        &|| {
            let fx = base();
            fx.v.rotate_key("k2", "admin").unwrap();
            fx
        },
        &|fx| ok(fx.v.set_min_decryption_version("k2", 2, "admin")),
        None,
        Unchanged,
    );
    exercise(
        "disable_key",
        base,
        &|fx| ok(fx.v.disable_key("k1", "admin")),
        None,
        Unchanged,
    );
    exercise(
        "enable_key",
        &|| {
            let fx = base();
            fx.v.disable_key("k1", "admin").unwrap();
            fx
        },
        &|fx| ok(fx.v.enable_key("k1", "admin")),
        None,
        Unchanged,
    );
    exercise(
        "schedule_key_deletion",
        base,
        &|fx| ok(fx.v.schedule_key_deletion("k2", 1, "admin")),
        None,
        Unchanged,
    );
    exercise(
        "cancel_key_deletion",
        &|| {
            let fx = base();
            fx.v.schedule_key_deletion("k2", 1, "admin").unwrap();
            fx
        },
        &|fx| ok(fx.v.cancel_key_deletion("k2", "admin")),
        None,
        Unchanged,
    );
    // One commit per destroyed key: a fault at the n-th leaves the first n - 1 destroyed.
    exercise(
        "destroy_due_keys",
        &due_keys,
        &|fx| {
            fx.v.destroy_due_keys()?;
            let keys = fx.v.list_keys().unwrap();
            assert!(keys.iter().all(|k| k.state != KeyState::PendingDeletion));
            Ok(())
        },
        None,
        DestroyedPrefix,
    );
    exercise(
        "record_denied",
        base,
        &|fx| fx.v.record_denied("intruder", "CreateKey"),
        None,
        Unchanged,
    );
    // Seal state machine.
    exercise(
        "initialize (passphrase)",
        &empty_fx,
        &|fx| ok(fx.v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")),
        None,
        Unchanged,
    );
    exercise(
        "initialize (shares)",
        &empty_fx,
        &|fx| {
            ok(fx.v.initialize(
                InitRequest::Shares {
                    threshold: 2,
                    custodian_passphrases: custodians(3).iter().map(|p| pw(p)).collect(),
                },
                "admin",
            ))
        },
        None,
        Unchanged,
    );
    exercise("seal", base, &|fx| fx.v.seal("admin"), None, Sealed);
    exercise(
        "unseal_with_passphrase",
        &|| {
            let mut fx = base();
            fx.ref_keys = Some(fx.v.list_keys().unwrap());
            fx.v.seal("admin").unwrap();
            fx
        },
        &|fx| ok(fx.v.unseal_with_passphrase(&pw(PASS), "admin")),
        None,
        Unchanged,
    );
    let share = |fx: &Fx, i: usize| {
        let Cred::Shares(shares, pass) = fx.cred.borrow().clone() else {
            panic!("quorum store expected");
        };
        ok(fx.v.submit_share(&shares[i].bytes, &pw(&pass[i]), "c"))
    };
    exercise(
        "submit_share (first of 2)",
        &quorum_sealed,
        &|fx| share(fx, 0),
        None,
        Unchanged,
    );
    exercise(
        "submit_share (last of 2: unseals)",
        &|| {
            let fx = quorum_sealed();
            share(&fx, 0).unwrap();
            fx
        },
        &|fx| share(fx, 1),
        // The restart discarded the first share (partial unseals live in memory only).
        Some(&|fx: &Fx| {
            share(fx, 0)?;
            share(fx, 1)
        }),
        Unchanged,
    );
    // Backup and restore.
    exercise(
        "backup",
        base,
        &|fx| ok(fx.v.backup("admin")),
        None,
        Unchanged,
    );
    exercise(
        "stage_restore (writes nothing)",
        &|| {
            let fx = empty_fx();
            let src = base();
            *fx.arg.borrow_mut() = vec![src.v.backup("admin").unwrap()];
            fx
        },
        &|fx| ok(fx.v.stage_restore(&fx.arg.borrow()[0], "admin")),
        None,
        Unchanged,
    );
    exercise(
        "restore (unseal of a staged backup)",
        &restore_staged,
        &|fx| ok(fx.v.unseal_with_passphrase(&pw(PASS), "admin")),
        // A staged backup lives in memory only: stage it again after the restart.
        Some(&|fx: &Fx| {
            fx.v.stage_restore(&fx.arg.borrow()[0], "admin")?;
            ok(fx.v.unseal_with_passphrase(&pw(PASS), "admin"))
        }),
        Unchanged,
    );
    exercise(
        "restore (last share of a staged backup)",
        &restore_staged_quorum,
        &|fx| share(fx, 1),
        Some(&|fx: &Fx| {
            fx.v.stage_restore(&fx.arg.borrow()[0], "admin")?;
            share(fx, 0)?;
            share(fx, 1)
        }),
        Unchanged,
    );
    // Rekey, two-phase and one-shot. A fresh facade still unseals with the OLD passphrase
    // after every failed stage or commit (check_fresh unseals with it).
    exercise("rekey_stage", base, &stage, None, Unchanged);
    exercise(
        "rekey_stage (replacing a staging)",
        &|| staged(base()),
        &stage,
        None,
        Unchanged,
    );
    exercise(
        "rekey_commit",
        &|| staged(base()),
        &|fx| {
            let r = fx.v.rekey_commit(
                &staging_id(fx),
                RekeyAuth::Passphrase(pw(NEW_PASS)),
                "admin",
            );
            if r.is_ok() {
                rekeyed(fx);
            }
            ok(r)
        },
        None,
        Unchanged,
    );
    exercise(
        "rekey_abort",
        &|| staged(base()),
        &|fx| fx.v.rekey_abort(&staging_id(fx), "admin"),
        None,
        Unchanged,
    );
    exercise(
        "rekey (one-shot)",
        &|| staged(base()),
        &|fx| {
            let r = fx.v.rekey(
                RekeyAuth::Passphrase(pw(PASS)),
                InitRequest::Passphrase(pw(NEW_PASS)),
                "admin",
            );
            if r.is_ok() {
                rekeyed(fx);
            }
            ok(r)
        },
        None,
        Unchanged,
    );
    // AES-GCM reservations on a restarted store (nothing reserved on this node yet).
    exercise(
        "reserve_invocations",
        &restarted,
        &|fx| {
            let r = fx.v.reserve_invocations("k1", "admin")?;
            assert!(r.is_some(), "a reservation was due");
            Ok(())
        },
        None,
        Unchanged,
    );
    exercise(
        "reserve_pending",
        &restarted,
        &|fx| {
            let r = fx.v.reserve_pending(10, true, "system")?;
            assert_eq!(r.len(), 2);
            Ok(())
        },
        None,
        Unchanged,
    );
    exercise(
        "first encrypt after restart (gcm_reserve_inline)",
        &restarted,
        &|fx| {
            assert_eq!(fx.v.encrypt_readiness("k1"), Readiness::Empty);
            let out = fx.v.encrypt("k1", b"first", b"aad")?;
            assert_eq!(decrypt(&fx.v, &out).unwrap(), b"first");
            Ok(())
        },
        None,
        Unchanged,
    );
    let ops = OPERATIONS.load(Ordering::SeqCst);
    let faults = INJECTED.load(Ordering::SeqCst);
    eprintln!("storage faults: {faults} injected faults over {ops} operations");
    let failed = FAILED.lock().unwrap().clone();
    assert!(failed.is_empty(), "failing operations: {failed:?}");
}
