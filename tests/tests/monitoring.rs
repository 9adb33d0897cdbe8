//! deploy/monitoring against the live services: every metric the Grafana dashboard and the
//! Prometheus alert rules (and their unit tests) name is exported by a running xks-front or by
//! the vhsmd nodes of a three-node cluster, and the dashboard shows every exported family.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vhsm_e2e::procs::{KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAE2ETESTKEYMONITOR";
const SECRET: &str = "c2VjcmV0LWZvci10aGUtbW9uaXRvcmluZy10ZXN0cy0xMjM=";

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// `GET /metrics` over plain HTTP/1.1; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Series names an exposition can hold: each `# TYPE` family with its suffixes, and every
/// sample's name. The second set is the families.
fn exported(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            families.insert(name.to_string());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    (names, families)
}

/// Every `xks_...` / `vhsm_...` metric name in `text` (not Grafana variables such as `$xks_job`).
fn referenced(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !(is_name(bytes[i - 1]) || bytes[i - 1] == b'$'))
            && (text[i..].starts_with("xks_") || text[i..].starts_with("vhsm_"));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !is_name(bytes[j]))
                .unwrap_or(bytes.len());
            out.insert(text[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect();
    assert!(queries.len() > 20, "{} queries", queries.len());
    queries
}

fn health() -> Value {
    json!({"requestMetadata": {"kmsRequestId": "m-1", "kmsOperation": "KmsHealthCheck"}})
}

fn encrypt() -> Value {
    json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/monitor",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/monitor",
            "kmsOperation": "Encrypt",
            "kmsRequestId": "m-2"
        },
        "plaintext": "SGVsbG8gV29ybGQh",
        "encryptionAlgorithm": "AES_GCM"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_alert_rules_is_exported() {
    let app = Appliance::start(&ApplianceOptions {
        nodes: 3,
        ..ApplianceOptions::default()
    })
    .unwrap();
    let store = KeyStoreSpec {
        name: "default".into(),
        path_prefix: "/example".into(),
        keys: vec!["demo-key".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 1000,
        burst: 1000,
        extra_toml: String::new(),
    };
    let nodes: Vec<_> = app.nodes.iter().collect();
    let front = XksFrontProc::start(app.dir.path(), &app.pki, &nodes, &[store], 1).unwrap();
    let client = XksClient::new(front.addr, &app.pki, None, AKID, SECRET).unwrap();
    // A success, a caller error and an unknown path, so the labelled families have samples.
    let r = client
        .post("/example/kms/xks/v1/keys/demo-key/encrypt", &encrypt())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = client
        .post("/example/kms/xks/v1/keys/no-such-key/encrypt", &encrypt())
        .await
        .unwrap();
    assert_eq!(r.error_name(), "KeyNotFoundException");
    let r = client
        .post("/elsewhere/kms/xks/v1/health", &health())
        .await
        .unwrap();
    assert_eq!(r.error_name(), "InvalidUriPathException");

    // The leader alone reports member lag; wait until a node says it leads.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut names, mut families) = loop {
        let mut names = BTreeSet::new();
        let mut families = BTreeSet::new();
        for n in &app.nodes {
            let (a, b) = exported(&scrape(n.metrics_addr));
            names.extend(a);
            families.extend(b);
        }
        if names.contains("vhsm_cluster_member_lag") || Instant::now() > deadline {
            break (names, families);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let xks = scrape(front.metrics_addr);
    assert!(
        xks.contains("xks_requests_total{operation=\"Encrypt\",error=\"none\"} 1"),
        "{xks}"
    );
    let (a, b) = exported(&xks);
    names.extend(a);
    families.extend(b);
    for must in [
        "vhsm_cluster_member_lag",
        "vhsm_unsealed",
        "xks_vhsm_node_up",
    ] {
        assert!(names.contains(must), "{must} not exported: {names:?}");
    }

    let queries = dashboard_queries();
    let in_dashboard = referenced(&queries.join("\n"));
    let mut all = in_dashboard.clone();
    for file in ["alerts.yml", "alerts_test.yml"] {
        let text = std::fs::read_to_string(monitoring_dir().join(file)).unwrap();
        let found = referenced(&text);
        assert!(found.len() > 10, "{file}: {found:?}");
        all.extend(found);
    }
    let missing: Vec<_> = all.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/monitoring but not exported: {missing:?}\nexported: {names:?}"
    );
    // And the other way round: the dashboard shows every family the services export.
    let unshown: Vec<_> = families
        .iter()
        .filter(|f| {
            !in_dashboard.iter().any(|n| {
                n.strip_prefix(f.as_str())
                    .is_some_and(|s| ["", "_total", "_bucket", "_sum", "_count"].contains(&s))
            })
        })
        .collect();
    assert!(
        unshown.is_empty(),
        "exported but not on the dashboard: {unshown:?}"
    );
}

#[test]
fn the_name_scanner_finds_metrics_and_skips_variables() {
    let found = referenced(
        r#"rate(xks_requests_total{job=~"$xks_job"}[5m]) / vhsm_unsealed + up{job="xks-front"}"#,
    );
    let want: BTreeSet<String> = ["xks_requests_total", "vhsm_unsealed"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    let (names, families) = exported(
        "# TYPE xks_requests counter\nxks_requests_total{a=\"b\"} 1\n# TYPE d histogram\n# EOF\n",
    );
    assert!(names.contains("xks_requests_total") && names.contains("d_bucket"));
    assert!(families.contains("d"));
}
