//! Load generator for the XKS hot path: starts a real appliance (vhsmd + xks-front) on loopback,
//! drives signed Encrypt requests over keep-alive TLS connections, and reports throughput,
//! latency percentiles and the CPU each server process spent per request.
//!
//! `cargo build --release --bins --examples -p vhsm-e2e -p vhsm -p xks-front -p vhsm-admin &&
//!  target/release/examples/xks_load [connections] [seconds] [rate]`
//! `rate` (requests/s in total, 0 = as fast as possible) gives the latency at a fixed load.
//! `XKS_LOAD_UDS=1` links xks-front to vhsmd over vhsmd's `[unix]` socket instead of
//! loopback TCP + mTLS. `XKS_LOAD_NODES=3` runs a three-node cluster (xks-front still sends
//! to the first node, so the figures are that node's hot path inside a cluster).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;
use vhsm_e2e::procs::{KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{cpu_time_us, Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIALOADGENERATORAAA";
const SECRET: &str = "bG9hZC1nZW5lcmF0b3Itc2VjcmV0LWZvci1iZW5jaG1hcms=";

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let connections: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);

    let opts = ApplianceOptions {
        unix: std::env::var("XKS_LOAD_UDS").is_ok_and(|v| v == "1"),
        nodes: std::env::var("XKS_LOAD_NODES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        ..ApplianceOptions::default()
    };
    let nodes = opts.nodes;
    let link = if opts.unix { "unix socket" } else { "tcp+mtls" };
    let app = tokio::task::spawn_blocking(move || Appliance::start(&opts)).await??;
    let xks_dir = app.dir.path().join("xks");
    std::fs::create_dir_all(&xks_dir)?;
    let store = KeyStoreSpec {
        name: "load".into(),
        path_prefix: String::new(),
        keys: vec!["demo-key".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 1_000_000,
        burst: 1_000_000,
        extra_toml: String::new(),
    };
    let front = XksFrontProc::start(&xks_dir, &app.pki, &[&app.nodes[0]], &[store], 30)?;
    let client = XksClient::new(front.addr, &app.pki, None, AKID, SECRET)?;
    let body = Arc::new(json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:role/load",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/load",
            "kmsOperation": "GenerateDataKey",
            "kmsRequestId": "load"
        },
        "plaintext": B64.encode([7u8; 32 + 28 + 64]),
        "additionalAuthenticatedData": B64.encode([1u8; 64]),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
    }));

    // Warm up: connections, TLS sessions, channels, caches.
    let mut conns = Vec::new();
    for _ in 0..connections {
        let mut c = client.connect().await?;
        let r = c.post("/kms/xks/v1/keys/demo-key/encrypt", &body).await?;
        anyhow::ensure!(r.status == 200, "warm-up failed: {:?}", r.body);
        conns.push(c);
    }

    let vhsmd_pid = app.nodes[0].pid().unwrap_or(0);
    let front_pid = front.pid().unwrap_or(0);
    let cpu_before = (cpu_time_us(vhsmd_pid), cpu_time_us(front_pid));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let per_conn_interval = if rate > 0 {
        Some(Duration::from_secs_f64(connections as f64 / rate as f64))
    } else {
        None
    };

    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let body = body.clone();
        // Stagger the connections evenly over one interval so a fixed rate is not sent in bursts.
        let offset = per_conn_interval
            .map(|iv| iv.mul_f64(i as f64 / connections as f64))
            .unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut next = started + offset;
            while Instant::now() < deadline {
                if let Some(iv) = per_conn_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let t = Instant::now();
                match c.post("/kms/xks/v1/keys/demo-key/encrypt", &body).await {
                    Ok(r) if r.status == 200 => lat.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = (cpu_time_us(vhsmd_pid), cpu_time_us(front_pid));
    all.sort_unstable();
    let n = all.len() as f64;
    let cpu = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) if n > 0.0 => (a - b) as f64 / n,
        _ => f64::NAN,
    };
    let vhsmd_cpu = cpu(cpu_before.0, cpu_after.0);
    let front_cpu = cpu(cpu_before.1, cpu_after.1);
    println!(
        "link {link}, cluster of {nodes}, connections {connections}, {seconds} s, target rate {}",
        if rate == 0 {
            "max".to_string()
        } else {
            rate.to_string()
        }
    );
    println!(
        "requests ok {}, errors {errors}, throughput {:.0} req/s",
        all.len(),
        n / elapsed
    );
    println!(
        "latency us: p50 {} p90 {} p99 {} max {}",
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0)
    );
    println!(
        "server CPU per request us: xks-front {front_cpu:.1} + vhsmd {vhsmd_cpu:.1} = {:.1}",
        front_cpu + vhsmd_cpu
    );
    Ok(())
}
