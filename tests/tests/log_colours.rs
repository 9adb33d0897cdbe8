//! Log files: vhsmd and xks-front writing their text log to a file (not a terminal) put no ANSI
//! colour escape sequences in it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vhsm_e2e::procs::{read_log, KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAE2ETESTKEYLOGSAAA";
const SECRET: &str = "c2VjcmV0LWZvci10aGUtbG9nLWNvbG91ci10ZXN0cy0xMjM=";

/// Fails with the first escape sequence shown when `log` holds one.
fn assert_plain(name: &str, log: &str) {
    assert!(
        log.lines().count() >= 3,
        "{name} logged too little to judge:\n{log}"
    );
    if let Some(at) = log.find('\u{1b}') {
        let line = log[..at].matches('\n').count() + 1;
        panic!(
            "{name}'s log file holds an ANSI escape sequence (line {line}): {:?}",
            &log[at..log.len().min(at + 40)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_written_to_files_have_no_colour_codes() {
    let mut app = Appliance::start(&ApplianceOptions::default()).unwrap();
    // Appliance starts vhsmd with JSON logs; the quick start uses text, where colours showed.
    let node = &mut app.nodes[0];
    node.stop();
    let config = std::fs::read_to_string(&node.config).unwrap();
    assert!(config.contains("format = \"json\""), "{config}");
    std::fs::write(
        &node.config,
        config.replace("format = \"json\"", "format = \"text\""),
    )
    .unwrap();
    node.restart().unwrap();
    app.admin(0)
        .ok(&["unseal"], "correct horse battery staple\n")
        .unwrap();

    let store = KeyStoreSpec {
        name: "default".into(),
        path_prefix: "/example".into(),
        keys: vec!["demo-key".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 100,
        burst: 100,
        extra_toml: String::new(),
    };
    // xks-front's default log format is text.
    let mut front =
        XksFrontProc::start(app.dir.path(), &app.pki, &[&app.nodes[0]], &[store], 1).unwrap();
    let client = XksClient::new(front.addr, &app.pki, None, AKID, SECRET).unwrap();
    let health = serde_json::json!({"requestMetadata": {"kmsRequestId": "l-1", "kmsOperation": "KmsHealthCheck"}});
    let resp = client
        .post("/example/kms/xks/v1/health", &health)
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    // A request that fails: logged at WARN, another colour.
    let resp = client
        .with_credentials(AKID, "d3Jvbmctc2VjcmV0LWZvci10aGUtbG9nLXRlc3RzLTEyMzQ=")
        .post("/example/kms/xks/v1/health", &health)
        .await
        .unwrap();
    assert_eq!(resp.status, 401, "{:?}", resp.body);

    front.stop();
    app.nodes[0].stop();
    let vhsmd = read_log(&app.nodes[0].log);
    assert!(vhsmd.contains("INFO"), "not a text log:\n{vhsmd}");
    assert_plain("vhsmd", &vhsmd);
    let xks = read_log(&front.log);
    assert!(xks.contains("INFO"), "not a text log:\n{xks}");
    assert_plain("xks-front", &xks);
}
