//! Benchmarks of audit record signing and offline chain verification.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use vhsm_audit::{parse_log, verify_chain, AuditRecord, GENESIS_PREV_HASH};

const RECORDS: u64 = 1_000;

fn signed_chain(key: &SigningKey, n: u64) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        let prev = out
            .last()
            .map_or(GENESIS_PREV_HASH.to_string(), |r| r.hash_hex());
        let mut details = BTreeMap::new();
        details.insert("key_id".to_string(), format!("key-{seq}"));
        details.insert("version".to_string(), "1".to_string());
        let mut rec = AuditRecord::new(
            seq,
            prev,
            1_700_000_000_000 + seq,
            "key.create",
            "admin",
            details,
        );
        rec.sign(key);
        out.push(rec);
    }
    out
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let pk = key.verifying_key().to_bytes();
    let chain = signed_chain(&key, RECORDS);
    let text: String = chain.iter().map(|r| r.to_json_line() + "\n").collect();

    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_record", |b| {
        b.iter_batched(
            || chain[500].clone(),
            |mut rec| {
                rec.sign(&key);
                rec
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("hash_record", |b| b.iter(|| chain[500].hash()));
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("verify_chain_1000", |b| {
        b.iter(|| verify_chain(&chain, &pk, None).unwrap())
    });
    group.bench_function("parse_log_1000", |b| b.iter(|| parse_log(&text).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
