//! Shared helpers of the vhsm-core integration tests: a settable clock and store set-up.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vhsm_core::{
    Clock, EncryptedShare, InitRequest, MemoryStorage, NewKey, Options, OsRandom, SecretString,
    Usage, UsageSet, Vhsm,
};

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct TestClock(AtomicU64);

impl TestClock {
    pub fn new() -> Arc<Self> {
        Arc::new(TestClock(AtomicU64::new(1_750_000_000_000)))
    }
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub const PASS: &str = "correct horse battery staple";

pub fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

pub fn opts() -> Options {
    Options {
        min_deletion_waiting_days: 0,
        ..Options::insecure_for_tests()
    }
}

pub fn open(storage: &Arc<MemoryStorage>, clock: &Arc<TestClock>) -> Vhsm {
    open_with(storage, clock, opts())
}

pub fn open_with(storage: &Arc<MemoryStorage>, clock: &Arc<TestClock>, options: Options) -> Vhsm {
    Vhsm::open(storage.clone(), Arc::new(OsRandom), clock.clone(), options).unwrap()
}

/// A fresh, initialized (passphrase mode) and unsealed store.
pub fn unsealed() -> (Arc<MemoryStorage>, Arc<TestClock>, Vhsm) {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    v.initialize(InitRequest::Passphrase(pw(PASS)), "admin")
        .unwrap();
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    (s, c, v)
}

pub fn custodians(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("custodian passphrase {i}"))
        .collect()
}

/// A fresh store initialized in M-of-N mode; returns the shares.
pub fn quorum(
    m: u8,
    n: usize,
) -> (
    Arc<MemoryStorage>,
    Arc<TestClock>,
    Vhsm,
    Vec<EncryptedShare>,
) {
    let s = Arc::new(MemoryStorage::new());
    let c = TestClock::new();
    let v = open(&s, &c);
    let out = v
        .initialize(
            InitRequest::Shares {
                threshold: m,
                custodian_passphrases: custodians(n).iter().map(|p| pw(p)).collect(),
            },
            "admin",
        )
        .unwrap();
    (s, c, v, out.shares)
}

pub fn new_key(id: &str, usages: &[Usage]) -> NewKey {
    NewKey {
        id: id.to_string(),
        usage: UsageSet::of(usages),
        labels: BTreeMap::new(),
    }
}
