//! Load generator for the XKS hot path: starts a real appliance (vhsmd + xks-front) on loopback
//! and drives it with the operator tool `vhsm-admin xks load` (KMS-shaped signed requests over
//! keep-alive TLS, every answer verified), then reports throughput, latency percentiles and the
//! CPU each server process spent per request.
//!
//! `cargo build --release --bins --examples -p vhsm-e2e -p vhsm -p xks-front -p vhsm-admin &&
//!  target/release/examples/xks_load [connections] [seconds] [rate]`
//! `rate` (requests/s in total, 0 = as fast as possible) gives the latency at a fixed load
//! (open loop: latency counts from the scheduled send). By default each request is an Encrypt of
//! 124 bytes with 64 bytes of AAD; `XKS_LOAD_ARGS="--op mixed --payload-bytes 4096
//! --aad-bytes 1024"` passes other `xks load` flags. `XKS_LOAD_UDS=1` links xks-front to vhsmd
//! over vhsmd's `[unix]` socket instead of loopback TCP + mTLS. `XKS_LOAD_NODES=3` runs a
//! three-node cluster (xks-front still sends to the first node, so the figures are that node's
//! hot path inside a cluster). `XKS_LOAD_ADMIN=/path/to/vhsm-admin` runs another build's load
//! generator against the same appliance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;
use vhsm_e2e::procs::{write_private, KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{bin_path, Appliance, ApplianceOptions};

const AKID: &str = "AKIALOADGENERATORAAA";
const SECRET: &str = "bG9hZC1nZW5lcmF0b3Itc2VjcmV0LWZvci1iZW5jaG1hcms=";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let connections: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let extra: Vec<String> = std::env::var("XKS_LOAD_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();

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
    let app = Appliance::start(&opts)?;
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
    let secret_file = xks_dir.join("load-secret");
    write_private(&secret_file, SECRET.as_bytes())?;

    let vhsmd_pid = app.nodes[0].pid().unwrap_or(0);
    let front_pid = front.pid().unwrap_or(0);
    // XKS_LOAD_ADMIN: another build's vhsm-admin, to compare load generators on one appliance.
    let admin = std::env::var_os("XKS_LOAD_ADMIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bin_path("vhsm-admin"));
    let mut cmd = Command::new(admin);
    cmd.args(["xks", "load", "--url"])
        .arg(format!("https://xks.localhost:{}", front.addr.port()))
        .arg("--connect-to")
        .arg(front.addr.to_string())
        .arg("--tls-ca")
        .arg(app.pki.join("ca.crt"))
        .args(["--access-key-id", AKID, "--secret-file"])
        .arg(&secret_file)
        .args(["--key-id", "demo-key", "--warmup", "1"])
        .args(["-c", &connections.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["--cpu-pid", &vhsmd_pid.to_string()])
        .args(["--cpu-pid", &front_pid.to_string()]);
    if rate > 0 {
        cmd.args(["--rate", &rate.to_string()]);
    }
    for (flag, default) in [
        ("--op", "encrypt"),
        ("--payload-bytes", "124"),
        ("--aad-bytes", "64"),
    ] {
        if !extra.iter().any(|a| a == flag) {
            cmd.args([flag, default]);
        }
    }
    let out = cmd.args(&extra).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))?;
    if json.is_null() {
        anyhow::bail!("xks load failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let cpu = |pid: u32| {
        json["cpu_us_per_request"][pid.to_string()]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let (vhsmd_cpu, front_cpu) = (cpu(vhsmd_pid), cpu(front_pid));
    let lat = &json["latency_us"];
    println!(
        "link {link}, cluster of {nodes}, connections {connections}, {seconds} s, target rate {}, op {} {} B + {} B AAD",
        if rate == 0 { "max".to_string() } else { rate.to_string() },
        json["op"].as_str().unwrap_or("?"),
        json["payload_bytes"],
        json["aad_bytes"],
    );
    println!(
        "requests ok {}, errors {}, throughput {:.0} req/s",
        json["ok"],
        json["failed"],
        json["throughput_rps"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat["p50"], lat["p90"], lat["p99"], lat["p99_9"], lat["max"]
    );
    let lag = &json["send_lag_us"];
    if lag.is_object() {
        println!(
            "send lag us (scheduled -> sent): p50 {} p99 {} max {}; late sends {}",
            lag["p50"], lag["p99"], lag["max"], json["late_sends"]
        );
        let f = &json["from_send_us"];
        println!(
            "from the actual send us: p50 {} p90 {} p99 {} max {}",
            f["p50"], f["p90"], f["p99"], f["max"]
        );
    }
    println!(
        "server CPU per request us: xks-front {front_cpu:.1} + vhsmd {vhsmd_cpu:.1} = {:.1}; load generator {:.1}",
        front_cpu + vhsmd_cpu,
        json["cpu_us_per_request"]["self"].as_f64().unwrap_or(f64::NAN)
    );
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        anyhow::bail!("xks load exited with {}", out.status);
    }
    Ok(())
}
