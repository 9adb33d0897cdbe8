//! The 1 → 100,000 keys curve: one vhsmd (release build, production Argon2id) is filled with
//! keys over the Admin gRPC API; at each checkpoint it reports vhsmd's resident memory (and the
//! increase per key since the start), the time a seal + unseal takes (every key loaded into the
//! key cache), vhsmd's resident memory again after a restart and unseal (what the stored keys
//! cost, without what the writes left behind), the time to warm 1,000 keys spread over the store (each one's first Encrypt after
//! an unseal reserves AES-GCM invocations: one replicated write), and then Encrypt throughput
//! and latency over gRPC + mTLS on those keys. A benchmark, not a test: nothing is asserted.
//!
//! `cargo build --release --bins --examples -p vhsm-e2e -p vhsm -p vhsm-admin &&
//!  target/release/examples/keys_curve [max_keys] [seconds_per_point]`; with `KEYS_CURVE_KEEP=1`
//! the filled store is kept (vhsmd stopped) for a heap profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vhsm_e2e::{Appliance, ApplianceOptions};
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{CreateKeyRequest, EncryptRequest, SealRequest, UnsealRequest};

/// Writes in flight while filling.
const FILL_STREAMS: usize = 4;
/// Encrypt streams while measuring.
const LOAD_STREAMS: usize = 8;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn fill(admin: &AdminClient<Channel>, from: usize, to: usize) {
    let next = Arc::new(AtomicU64::new(from as u64));
    let mut tasks = Vec::new();
    for _ in 0..FILL_STREAMS {
        let mut c = admin.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= to {
                    return;
                }
                // Concurrent writes may conflict (REASON_CONFLICT: nothing applied): retry.
                loop {
                    let r = c
                        .create_key(CreateKeyRequest {
                            key_id: format!("curve-{i:06}"),
                            usage: vec![1, 2],
                            labels: Default::default(),
                        })
                        .await;
                    match r {
                        Ok(_) => break,
                        Err(s) if s.code() == tonic::Code::Aborted => continue,
                        Err(s) => panic!("create_key: {s:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Keys the Encrypt load uses, spread evenly over the store. The first Encrypt under a key
/// version after an unseal reserves a block of AES-GCM invocations (one replicated write), so
/// the set is warmed first and the steady state is measured.
const LOAD_KEYS: usize = 1000;

fn load_key(n: usize, keys: usize) -> String {
    let set = keys.min(LOAD_KEYS);
    let stride = keys / set;
    format!("curve-{:06}", (n % set) * stride)
}

/// Reserves for every key of the load set (one Encrypt each); returns how long it took.
/// The measured request: 32 bytes, with the integrity check.
fn encrypt_32(key_id: String) -> EncryptRequest {
    EncryptRequest {
        key_id,
        plaintext: vec![0x42; 32],
        aad: Vec::new(),
        request_id: String::new(),
        integrity_check: true,
    }
}

async fn warm(crypto: &CryptoClient<Channel>, keys: usize) -> Duration {
    let t = Instant::now();
    let mut c = crypto.clone();
    for n in 0..keys.min(LOAD_KEYS) {
        c.encrypt(encrypt_32(load_key(n, keys))).await.unwrap();
    }
    t.elapsed()
}

/// (requests/s, p50, p99) of 32-byte Encrypts over the load set for `secs` seconds.
async fn encrypt_load(
    crypto: &CryptoClient<Channel>,
    keys: usize,
    secs: u64,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for s in 0..LOAD_STREAMS {
        let mut c = crypto.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = s;
            while Instant::now() < deadline {
                let t = Instant::now();
                c.encrypt(encrypt_32(load_key(n * 7919, keys)))
                    .await
                    .unwrap();
                lat.push(t.elapsed());
                n += LOAD_STREAMS;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pick = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    (all.len() as f64 / secs as f64, pick(0.5), pick(0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let max: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let opts = ApplianceOptions {
        key_ids: vec![],
        ..ApplianceOptions::default()
    };
    let passphrase = opts.passphrase.clone();
    let mut app = tokio::task::spawn_blocking(move || Appliance::start(&opts)).await??;
    let endpoint = app.nodes[0].endpoint();
    let mut pid = app.nodes[0].pid().unwrap();
    let mut admin = vhsm_e2e::grpc::admin(&endpoint, &app.pki).await?;
    let mut crypto = vhsm_e2e::grpc::crypto(&endpoint, &app.pki).await?;
    let base_rss = rss_kib(pid);
    println!("vhsmd pid {pid}, {base_rss} KiB resident with no keys");
    println!("keys\trss_MiB\tKiB/key\trestarted_MiB\tKiB/key\tfill_s\tunseal_ms\twarm_ms\tencrypt/s\tp50_us\tp99_us");
    let mut have = 0usize;
    let mut points = vec![1usize, 1_000, 10_000, 100_000];
    points.retain(|&p| p <= max);
    if points.last() != Some(&max) {
        points.push(max);
    }
    for point in points {
        let t = Instant::now();
        fill(&admin, have, point).await;
        let fill_s = t.elapsed().as_secs_f64();
        have = point;
        let mut a = admin.clone();
        a.seal(SealRequest {}).await?;
        let t = Instant::now();
        a.unseal(UnsealRequest {
            passphrase: passphrase.clone(),
            share: Vec::new(),
        })
        .await?;
        let unseal = t.elapsed();
        let warm_time = warm(&crypto, have).await;
        let (rate, p50, p99) = encrypt_load(&crypto, have, secs).await;
        let rss = rss_kib(pid);
        let per_key = rss.saturating_sub(base_rss) as f64 / have as f64;
        // What the stored keys themselves cost: a fresh process, unsealed.
        app.nodes[0].stop();
        app.nodes[0].restart()?;
        pid = app.nodes[0].pid().unwrap();
        admin = vhsm_e2e::grpc::admin(&endpoint, &app.pki).await?;
        crypto = vhsm_e2e::grpc::crypto(&endpoint, &app.pki).await?;
        admin
            .clone()
            .unseal(UnsealRequest {
                passphrase: passphrase.clone(),
                share: Vec::new(),
            })
            .await?;
        let fresh = rss_kib(pid);
        println!(
            "{have}\t{:.1}\t{per_key:.2}\t{:.1}\t{:.2}\t{fill_s:.1}\t{}\t{}\t{rate:.0}\t{}\t{}",
            rss as f64 / 1024.0,
            fresh as f64 / 1024.0,
            fresh.saturating_sub(base_rss) as f64 / have as f64,
            unseal.as_millis(),
            warm_time.as_millis(),
            p50.as_micros(),
            p99.as_micros()
        );
    }
    if std::env::var_os("KEYS_CURVE_KEEP").is_some() {
        // For a heap profile of the filled store (docs/performance.md): vhsmd stopped, its
        // config, PKI and data kept.
        app.nodes[0].stop();
        let config = app.nodes[0].config.clone();
        let dir = app.dir.keep();
        println!("kept {} (config {})", dir.display(), config.display());
    }
    Ok(())
}
