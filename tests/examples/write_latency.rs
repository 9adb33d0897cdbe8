//! Write latency of the replicated store: `key create` (a Raft write committed on a majority
//! with fsync, applied, audited) timed over the Admin gRPC API, on a one-node and a
//! three-node cluster started here on loopback, plus the kill-switch time (`key disable`
//! until every member applied it).
//!
//! `cargo build --release --bins --examples -p vhsm-e2e -p vhsm -p xks-front -p vhsm-admin &&
//!  target/release/examples/write_latency [writes]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use vhsm_e2e::{Appliance, ApplianceOptions};
use vhsm_proto::v1::{CreateKeyRequest, KeyIdRequest};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(nodes: usize, writes: usize) -> anyhow::Result<()> {
    let opts = ApplianceOptions {
        nodes,
        ..ApplianceOptions::default()
    };
    let app = tokio::task::spawn_blocking(move || Appliance::start(&opts)).await??;
    // Writes go to the last node: on a cluster that is a follower, which forwards to the leader.
    let target = app.nodes.len() - 1;
    let mut admin = vhsm_e2e::grpc::admin(&app.nodes[target].endpoint(), &app.pki).await?;
    let mut lat = Vec::new();
    for i in 0..writes {
        let t = Instant::now();
        admin
            .create_key(CreateKeyRequest {
                key_id: format!("lat-{i}"),
                usage: vec![1, 2],
                labels: Default::default(),
            })
            .await?;
        lat.push(t.elapsed());
    }
    let mut disable = Vec::new();
    for i in 0..writes.min(20) {
        let t = Instant::now();
        admin
            .disable_key(KeyIdRequest {
                key_id: format!("lat-{i}"),
            })
            .await?;
        disable.push(t.elapsed());
    }
    lat.sort();
    disable.sort();
    println!(
        "cluster of {nodes}: key create p50 {:?} p90 {:?} p99 {:?} ({} writes, sent to node {}); \
         key disable (returns once every member applied it) p50 {:?} max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        writes,
        target + 1,
        percentile(&disable, 0.5),
        disable.last().copied().unwrap_or_default()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let writes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    measure(1, writes).await?;
    measure(3, writes).await?;
    Ok(())
}
