//! Criterion benchmarks of the core's public API: encrypt+decrypt round trips and unseal time.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vhsm_core::{
    DecryptInput, InitRequest, KdfParams, MemoryStorage, NewKey, Options, OsRandom, SecretString,
    SystemClock, UsageSet, Vhsm,
};

const PASS: &str = "benchmark passphrase";

fn store(options: Options) -> (Arc<MemoryStorage>, Vhsm) {
    let s = Arc::new(MemoryStorage::new());
    let v = Vhsm::open(
        s.clone(),
        Arc::new(OsRandom),
        Arc::new(SystemClock),
        options,
    )
    .unwrap();
    v.initialize(
        InitRequest::Passphrase(SecretString::from(PASS.to_string())),
        "bench",
    )
    .unwrap();
    (s, v)
}

fn round_trip(c: &mut Criterion) {
    let (_s, v) = store(Options::insecure_for_tests());
    v.unseal_with_passphrase(&SecretString::from(PASS.to_string()), "bench")
        .unwrap();
    v.create_key(
        NewKey {
            id: "bench".into(),
            usage: UsageSet::EMPTY,
            labels: Default::default(),
        },
        "bench",
    )
    .unwrap();
    let mut group = c.benchmark_group("encrypt_decrypt");
    for size in [32usize, 4096] {
        let plaintext = vec![0x5au8; size];
        let aad = b"arn:aws:kms:us-east-1:111122223333:key/bench";
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let ct = v.encrypt("bench", &plaintext, aad).unwrap();
                let input = DecryptInput {
                    ciphertext: &ct.ciphertext,
                    iv: &ct.iv,
                    tag: &ct.tag,
                    aad,
                    metadata: &ct.metadata,
                };
                let pt = v.decrypt("bench", &input).unwrap();
                assert_eq!(pt.len(), size);
            })
        });
    }
    group.finish();
}

fn unseal(c: &mut Criterion) {
    let options = Options {
        kdf: KdfParams::RECOMMENDED,
        ..Options::default()
    };
    let (_s, v) = store(options);
    let pass = SecretString::from(PASS.to_string());
    let mut group = c.benchmark_group("unseal");
    group.sample_size(10);
    group.bench_function("passphrase_recommended_kdf", |b| {
        b.iter_batched(
            || v.seal("bench").unwrap(),
            |()| v.unseal_with_passphrase(&pass, "bench").unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, round_trip, unseal);
criterion_main!(benches);
