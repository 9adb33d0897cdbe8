//! Benchmark: encrypt round trips to an in-process vhsmd over mTLS on loopback (p50/p99, req/s).
//!
//! `cargo run --release -p vhsm --example bench_grpc -- [REQUESTS_PER_LEVEL] [CONCURRENCY...]`
//! Defaults: 20000 requests per level, concurrency 1 8 32 64. Every level shares one reused
//! channel (one HTTP/2 connection, one TLS session). Client and server run in the same process,
//! so the CPU figure is client + server together (an upper bound for the server's share).
//! `BENCH_RATE=R` adds an open-loop run: requests issued at a fixed R per second (latency at a
//! given load rather than at saturation).
//! `BENCH_LOG=1` installs the JSON request logger (writing to a sink) to include its cost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use tonic::transport::Channel;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{
    init_request, CreateKeyRequest, EncryptRequest, InitRequest, PassphraseMode, UnsealRequest,
};

fn cpu_time() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap())
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap())
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run_level(channel: Channel, concurrency: usize, requests: usize) {
    let per_task = requests / concurrency;
    let plaintext = Arc::new(vec![0x42u8; 32]);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = CryptoClient::new(channel.clone());
        let pt = Arc::clone(&plaintext);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let start = Instant::now();
                client
                    .encrypt(EncryptRequest {
                        key_id: "bench".into(),
                        plaintext: pt.to_vec(),
                        aad: b"bench-aad".to_vec(),
                        request_id: format!("r{i}"),
                        integrity_check: false,
                    })
                    .await
                    .unwrap();
                lat.push(start.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    all.sort_unstable();
    let n = all.len() as f64;
    println!(
        "concurrency {concurrency:>3}: {n:>6} req  {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  \
         cpu/req (client+server) {:>5.1} µs",
        n / wall.as_secs_f64(),
        percentile(&all, 0.50).as_micros(),
        percentile(&all, 0.99).as_micros(),
        cpu.as_secs_f64() * 1e6 / n,
    );
}

async fn run_fixed_rate(channel: Channel, rate: u64, requests: usize) {
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for i in 0..requests {
        ticks.tick().await;
        let mut client = CryptoClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            client
                .encrypt(EncryptRequest {
                    key_id: "bench".into(),
                    plaintext: vec![0x42u8; 32],
                    aad: b"bench-aad".to_vec(),
                    request_id: format!("r{i}"),
                    integrity_check: false,
                })
                .await
                .unwrap();
            start.elapsed()
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.push(t.await.unwrap());
    }
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    all.sort_unstable();
    let n = all.len() as f64;
    println!(
        "fixed rate {rate}/s: {n:>6} req  achieved {:>7.0} req/s  p50 {:>6} µs  p99 {:>6} µs  \
         max {:>6} µs  cpu/req (client+server) {:>5.1} µs",
        n / wall.as_secs_f64(),
        percentile(&all, 0.50).as_micros(),
        percentile(&all, 0.99).as_micros(),
        all[all.len() - 1].as_micros(),
        cpu.as_secs_f64() * 1e6 / n,
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let mut levels: Vec<usize> = args.map(|a| a.parse().unwrap()).collect();
    if levels.is_empty() {
        levels = vec![1, 8, 32, 64];
    }

    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .init();
        println!("request logging: on (JSON, to a sink)");
    }
    let pki = common::Pki::new();
    let cfg = pki.config(&pki.path().join("data"));
    let node = common::start(&cfg).await;
    let mut admin = common::admin_client(node.addr, &pki, &pki.admin).await;
    admin
        .init(InitRequest {
            mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                passphrase: "bench passphrase".into(),
            })),
        })
        .await
        .unwrap();
    admin
        .unseal(UnsealRequest {
            passphrase: "bench passphrase".into(),
            share: Vec::new(),
        })
        .await
        .unwrap();
    admin
        .create_key(CreateKeyRequest {
            key_id: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let channel = common::channel(node.addr, &pki.ca_pem, Some(&pki.crypto))
        .await
        .unwrap();
    // Warm-up.
    run_level(channel.clone(), 4, 2_000).await;
    println!("--- measured ---");
    for c in levels {
        run_level(channel.clone(), c, requests).await;
    }
    if let Some(rate) = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        run_fixed_rate(channel.clone(), rate, requests).await;
    }
    drop(channel);
    drop(admin);
    node.stop().await.unwrap();
}
