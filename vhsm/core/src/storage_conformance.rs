//! A conformance suite every [`Storage`] backend must pass (plain functions that panic on failure).
//!
//! Run it against a fresh, empty backend: `vhsm_core::storage_conformance::run_all(&backend)`.
//! Durability across a reopen cannot be checked through the trait; each persistent backend
//! tests that itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::storage::{Durability, Storage, Tree, WriteBatch};

fn put(s: &dyn Storage, tree: Tree, key: &[u8], value: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(tree, key.to_vec(), value.to_vec());
    s.commit(b, Durability::Flushed)
        .expect("commit of a single put");
}

fn del(s: &dyn Storage, tree: Tree, key: &[u8]) {
    let mut b = WriteBatch::new();
    b.delete(tree, key.to_vec());
    s.commit(b, Durability::Flushed)
        .expect("commit of a single delete");
}

/// Runs every check below, in order. The backend must start empty.
pub fn run_all(storage: &dyn Storage) {
    starts_empty(storage);
    get_put_delete(storage);
    overwrite_and_empty_values(storage);
    scan_prefix_order(storage);
    prefix_isolation_across_trees(storage);
    batch_applies_all_in_order(storage);
    buffered_commit_is_visible(storage);
    last_key_per_tree(storage);
    cleanup(storage);
}

/// The backend has no data in any tree.
pub fn starts_empty(s: &dyn Storage) {
    for t in Tree::ALL {
        assert!(
            s.scan_prefix(t, b"").unwrap().is_empty(),
            "tree {} is not empty",
            t.name()
        );
    }
}

/// A put is readable, a delete removes it, deleting a missing key is not an error.
pub fn get_put_delete(s: &dyn Storage) {
    assert_eq!(s.get(Tree::Keys, b"cf-a").unwrap(), None);
    put(s, Tree::Keys, b"cf-a", b"value-a");
    assert_eq!(
        s.get(Tree::Keys, b"cf-a").unwrap().as_deref(),
        Some(&b"value-a"[..])
    );
    del(s, Tree::Keys, b"cf-a");
    assert_eq!(s.get(Tree::Keys, b"cf-a").unwrap(), None);
    del(s, Tree::Keys, b"cf-never-existed");
}

/// A second put replaces the value; empty values and binary keys are stored exactly.
pub fn overwrite_and_empty_values(s: &dyn Storage) {
    put(s, Tree::Meta, b"cf-o", b"first");
    put(s, Tree::Meta, b"cf-o", b"second");
    assert_eq!(
        s.get(Tree::Meta, b"cf-o").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    put(s, Tree::Meta, b"cf-empty", b"");
    assert_eq!(
        s.get(Tree::Meta, b"cf-empty").unwrap().as_deref(),
        Some(&b""[..])
    );
    let bin_key = [0u8, 0xff, 0x00, 0x7f];
    let bin_val: Vec<u8> = (0..=255u8).collect();
    put(s, Tree::Meta, &bin_key, &bin_val);
    assert_eq!(s.get(Tree::Meta, &bin_key).unwrap(), Some(bin_val));
    for k in [&b"cf-o"[..], b"cf-empty", &bin_key] {
        del(s, Tree::Meta, k);
    }
    assert!(s.scan_prefix(Tree::Meta, b"").unwrap().is_empty());
}

/// `scan_prefix` returns exactly the keys with the prefix, in byte order (u64 be keys sort).
pub fn scan_prefix_order(s: &dyn Storage) {
    let seqs = [5u64, 1, 256, 0, 255, u64::MAX, 65536];
    for q in seqs {
        put(s, Tree::Audit, &q.to_be_bytes(), format!("r{q}").as_bytes());
    }
    let all = s.scan_prefix(Tree::Audit, b"").unwrap();
    let got: Vec<u64> = all
        .iter()
        .map(|(k, _)| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
        .collect();
    let mut want = seqs.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "scan order must be byte order of keys");
    for (k, v) in &all {
        let q = u64::from_be_bytes(k.as_slice().try_into().unwrap());
        assert_eq!(v, format!("r{q}").as_bytes());
    }

    for k in [
        &b"key/a"[..],
        b"key/b",
        b"key/",
        b"kez",
        b"ke",
        b"key0",
        b"key/a/x",
    ] {
        put(s, Tree::Keys, k, k);
    }
    let got: Vec<Vec<u8>> = s
        .scan_prefix(Tree::Keys, b"key/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        got,
        vec![
            b"key/".to_vec(),
            b"key/a".to_vec(),
            b"key/a/x".to_vec(),
            b"key/b".to_vec()
        ]
    );
    assert!(s.scan_prefix(Tree::Keys, b"nothing").unwrap().is_empty());
    // A prefix ending in 0xff must not wrap around.
    put(s, Tree::Keys, &[0xff, 0xff], b"x");
    put(s, Tree::Keys, &[0xff, 0xff, 0x01], b"y");
    let got = s.scan_prefix(Tree::Keys, &[0xff, 0xff]).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].0, vec![0xff, 0xff, 0x01]);
}

/// The same key in two trees holds two independent values.
pub fn prefix_isolation_across_trees(s: &dyn Storage) {
    for t in [Tree::Header, Tree::Keyring, Tree::Meta] {
        put(s, t, b"shared", t.name().as_bytes());
    }
    for t in [Tree::Header, Tree::Keyring, Tree::Meta] {
        assert_eq!(
            s.get(t, b"shared").unwrap().as_deref(),
            Some(t.name().as_bytes())
        );
        let scan = s.scan_prefix(t, b"sh").unwrap();
        assert_eq!(
            scan,
            vec![(b"shared".to_vec(), t.name().as_bytes().to_vec())]
        );
    }
    del(s, Tree::Keyring, b"shared");
    assert_eq!(s.get(Tree::Keyring, b"shared").unwrap(), None);
    assert!(s.get(Tree::Header, b"shared").unwrap().is_some());
    assert!(s.get(Tree::Meta, b"shared").unwrap().is_some());
    assert_eq!(s.get(Tree::Audit, b"shared").unwrap(), None);
}

/// A batch spanning trees lands whole; later writes of a batch win over earlier ones.
pub fn batch_applies_all_in_order(s: &dyn Storage) {
    let mut b = WriteBatch::new();
    b.put(Tree::Keys, b"batch-1".to_vec(), b"one".to_vec());
    b.put(Tree::Audit, b"batch-2".to_vec(), b"two".to_vec());
    b.put(Tree::Meta, b"batch-3".to_vec(), b"tmp".to_vec());
    b.put(Tree::Meta, b"batch-3".to_vec(), b"three".to_vec());
    b.put(Tree::Keyring, b"batch-4".to_vec(), b"gone".to_vec());
    b.delete(Tree::Keyring, b"batch-4".to_vec());
    b.delete(Tree::Keys, b"key/a".to_vec());
    s.commit(b, Durability::Flushed).unwrap();
    assert_eq!(
        s.get(Tree::Keys, b"batch-1").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        s.get(Tree::Audit, b"batch-2").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        s.get(Tree::Meta, b"batch-3").unwrap().as_deref(),
        Some(&b"three"[..])
    );
    assert_eq!(s.get(Tree::Keyring, b"batch-4").unwrap(), None);
    assert_eq!(s.get(Tree::Keys, b"key/a").unwrap(), None);
    // An empty batch is a no-op, not an error.
    s.commit(WriteBatch::new(), Durability::Flushed).unwrap();
}

/// A buffered commit is visible to the next read of the same handle.
pub fn buffered_commit_is_visible(s: &dyn Storage) {
    let mut b = WriteBatch::new();
    b.put(Tree::Meta, b"buffered".to_vec(), b"yes".to_vec());
    s.commit(b, Durability::Buffered).unwrap();
    assert_eq!(
        s.get(Tree::Meta, b"buffered").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
}

/// `last_key` is the greatest key of its own tree only, and follows deletes.
pub fn last_key_per_tree(s: &dyn Storage) {
    let mut b = WriteBatch::new();
    for (k, _) in s.scan_prefix(Tree::Audit, b"").unwrap() {
        b.delete(Tree::Audit, k);
    }
    for seq in [1u64, 2, 300, 7] {
        b.put(Tree::Audit, seq.to_be_bytes().to_vec(), b"r".to_vec());
    }
    b.put(Tree::Meta, b"zzzz".to_vec(), b"m".to_vec());
    s.commit(b, Durability::Flushed).unwrap();
    let last = |t| s.last_key(t).unwrap();
    assert_eq!(last(Tree::Audit), Some(300u64.to_be_bytes().to_vec()));
    assert_eq!(last(Tree::Meta), Some(b"zzzz".to_vec()));
    let mut b = WriteBatch::new();
    b.delete(Tree::Audit, 300u64.to_be_bytes().to_vec());
    s.commit(b, Durability::Flushed).unwrap();
    assert_eq!(last(Tree::Audit), Some(7u64.to_be_bytes().to_vec()));
    let mut b = WriteBatch::new();
    for seq in [1u64, 2, 7] {
        b.delete(Tree::Audit, seq.to_be_bytes().to_vec());
    }
    s.commit(b, Durability::Flushed).unwrap();
    assert_eq!(last(Tree::Audit), None);
}

/// Deletes everything the suite wrote (one batch) and checks the backend is empty again.
pub fn cleanup(s: &dyn Storage) {
    let mut b = WriteBatch::new();
    for t in Tree::ALL {
        for (k, _) in s.scan_prefix(t, b"").unwrap() {
            b.delete(t, k);
        }
    }
    s.commit(b, Durability::Flushed).unwrap();
    starts_empty(s);
}
