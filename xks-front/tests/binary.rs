//! The xks-front binary as a process: --check-config, plain-HTTP serving, SIGHUP reload, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const AKID: &str = "AKIAI2SFODNN7EXAMPLEAB";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a complete plain-HTTP setup into `dir`; returns the main config path.
fn write_setup(dir: &Path, deadline_ms: u64, metrics_port: u16) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["vhsmd".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("crypto.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("crypto.key"), key.serialize_pem()).unwrap();
    let secret = dir.join("secret-1");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.join("keystores.toml"),
        format!(
            "[[keystore]]\nname = \"default\"\npath_prefix = \"/example\"\nkeys = [\"*\"]\n\
             rate_limit_per_sec = 100\nburst = 100\n[[keystore.credential]]\n\
             access_key_id = \"{AKID}\"\nsecret_file = \"secret-1\"\n"
        ),
    )
    .unwrap();
    let d = dir.display();
    let main = dir.join("xks-front.toml");
    std::fs::write(
        &main,
        format!(
            r#"keystores_file = "{d}/keystores.toml"
fleet_size = 1
region = "us-east-1"
[listen]
addr = "127.0.0.1:0"
plain_http = true
[metrics]
addr = "127.0.0.1:{metrics_port}"
[vhsm]
ca = "{d}/ca.crt"
client_cert = "{d}/crypto.crt"
client_key = "{d}/crypto.key"
deadline_ms = {deadline_ms}
health_key_id = "xks-health"
health_cache_secs = 1
[[vhsm.nodes]]
id = "vhsm-1"
endpoint = "https://127.0.0.1:1"
server_name = "vhsmd"
"#
        ),
    )
    .unwrap();
    main
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xks-front"))
}

#[test]
fn check_config_accepts_good_and_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_setup(dir.path(), 150, free_port());
    let out = bin()
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
    let bad = write_setup(dir.path(), 5, free_port());
    let out = bin()
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vhsm.deadline_ms"), "{err}");
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

fn http(addr: &str, raw: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(raw).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn signed_health(host: &str) -> Vec<u8> {
    let body = br#"{"requestMetadata":{"kmsRequestId":"r-1","kmsOperation":"KmsHealthCheck"}}"#;
    let path = "/example/kms/xks/v1/health";
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms-xks-proxy")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{host}{path}");
    let headers = [("host", host)];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", host)
        .body(())
        .unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let mut raw = format!("POST {path} HTTP/1.1\r\n");
    for (k, v) in req.headers() {
        raw.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    raw.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[test]
fn serves_reloads_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let cfg = write_setup(dir.path(), 150, metrics_port);
    let mut child = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("--log-format")
        .arg("json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let run = Running { child, lines };
    let line = run.wait_for("xks-front listening on");
    let addr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();

    let pong = http(
        &addr,
        b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        pong.starts_with("HTTP/1.1 200") && pong.ends_with("ok"),
        "{pong}"
    );

    // vhsm is unreachable: health answers 200 with the node UNAVAILABLE, never an error.
    let health = http(&addr, &signed_health(&addr));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains("\"healthStatus\":\"UNAVAILABLE\""),
        "{health}"
    );
    let access = run.wait_for("xks request");
    assert!(access.contains("\"kms_request_id\":\"r-1\""), "{access}");
    // The credential that signed it, so an operator can tell when a rotation is complete.
    assert!(
        access.contains(&format!("\"access_key_id\":\"{AKID}\"")),
        "{access}"
    );
    assert!(
        access.contains("\"xks_operation\":\"GetHealthStatus\""),
        "{access}"
    );

    let metrics = http(
        &format!("127.0.0.1:{metrics_port}"),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("xks_requests_total{operation=\"GetHealthStatus\",error=\"none\"} 1"),
        "{metrics}"
    );

    // A broken keystores file is refused on SIGHUP; the old one keeps serving.
    std::fs::copy(
        dir.path().join("keystores.toml"),
        dir.path().join("keystores.toml.good"),
    )
    .unwrap();
    std::fs::write(dir.path().join("keystores.toml"), "not = [valid").unwrap();
    run.signal(Signal::SIGHUP);
    run.wait_for("keystores reload failed");
    let health = http(&addr, &signed_health(&addr));
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // A valid file whose key store has another prefix: after SIGHUP the old path is gone.
    let ks = std::fs::read_to_string(dir.path().join("keystores.toml.good")).unwrap();
    std::fs::write(
        dir.path().join("keystores.toml"),
        ks.replace("\"/example\"", "\"/moved\""),
    )
    .unwrap();
    run.signal(Signal::SIGHUP);
    run.wait_for("keystores reloaded");
    let health = http(&addr, &signed_health(&addr));
    assert!(health.starts_with("HTTP/1.1 404"), "{health}");
    assert!(health.contains("InvalidUriPathException"), "{health}");

    run.signal(Signal::SIGTERM);
    let mut child = run.child;
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
