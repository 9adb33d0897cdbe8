//! The listener's connection limits over real loopback sockets: caps, handshake, first-request
//! and idle timeouts, and that each hit shows in `xks_limit_hits_total`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use xks_front::conn::ConnInfo;
use xks_front::limits::{ConnLimits, LimitsConfig};
use xks_front::metrics::Metrics;
use xks_front::server::{serve_with, TlsSetup};

struct Server {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn hits(&self, limit: &str) -> u64 {
        let text = self.metrics.encode();
        let needle = format!("xks_limit_hits_total{{limit=\"{limit}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn short_limits() -> ConnLimits {
    let l = LimitsConfig {
        first_request_timeout_ms: 300,
        idle_timeout_ms: 300,
        tls_handshake_timeout_ms: 300,
        header_read_timeout_ms: 300,
        ..LimitsConfig::default()
    };
    l.validate().unwrap();
    l.conn()
}

/// `/ping` is unauthenticated; `/auth` marks its connection authenticated, as the XKS router
/// does after SigV4 has verified.
fn app() -> Router {
    Router::new().route("/ping", get(|| async { "ok" })).route(
        "/auth",
        get(|req: Request| async move {
            if let Some(ConnInfo(c)) = req.extensions().get::<ConnInfo>() {
                c.mark_authenticated();
            }
            "ok"
        }),
    )
}

async fn start(limits: ConnLimits, tls: Option<TlsSetup>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve_with(
        listener,
        app(),
        tls,
        limits,
        metrics.clone(),
        rx,
    ));
    Server {
        addr,
        metrics,
        stop,
        task,
    }
}

/// Connects from the loopback address `from` (127.0.0.0/8 is all loopback on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// Waits until the server closes `s` (EOF or reset); returns how long that took.
async fn closed_after(s: &mut TcpStream, max: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(max, s.read(&mut buf)).await {
            Err(_) => panic!("still open after {max:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

async fn get_on(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_first_request_timeout() {
    let s = start(short_limits(), None).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let took = closed_after(&mut c, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(s.hits("first_request_timeout"), 1);
    s.stop().await;
}

/// Unauthenticated requests do not keep a connection: it lives `first_request_timeout`,
/// however busy it is.
#[tokio::test]
async fn a_busy_unauthenticated_connection_is_closed_all_the_same() {
    let s = start(short_limits(), None).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let t = Instant::now();
    let mut served = 0;
    while t.elapsed() < Duration::from_secs(2) {
        let r = get_on(&mut c, "/ping").await;
        if r.is_empty() {
            break;
        }
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served > 3, "{served}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(s.hits("first_request_timeout"), 1);
    s.stop().await;
}

#[tokio::test]
async fn an_authenticated_connection_stays_while_used_and_closes_when_idle() {
    let limits = ConnLimits {
        // hyper runs the header timer while an HTTP/1.1 connection waits for its next request,
        // so it would close the idle connection first.
        header_read_timeout: Duration::from_secs(5),
        ..short_limits()
    };
    let s = start(limits, None).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let t = Instant::now();
    // Used every 100 ms for three times the first-request timeout: kept.
    while t.elapsed() < Duration::from_millis(900) {
        let r = get_on(&mut c, "/auth").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = closed_after(&mut c, Duration::from_secs(3)).await;
    assert!(idle >= Duration::from_millis(150), "{idle:?}");
    assert_eq!(s.hits("idle_timeout"), 1);
    assert_eq!(s.hits("first_request_timeout"), 0);
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_caps_are_closed_at_once_and_established_ones_served() {
    let limits = ConnLimits {
        max_connections: 3,
        max_connections_per_peer: 2,
        ..ConnLimits::default()
    };
    let s = start(limits, None).await;
    let mut a = connect_from([127, 0, 0, 1], s.addr).await;
    let mut b = connect_from([127, 0, 0, 1], s.addr).await;
    assert!(get_on(&mut a, "/auth").await.starts_with("HTTP/1.1 200"));
    // Third from the same peer: over the per-peer cap.
    let mut c = connect_from([127, 0, 0, 1], s.addr).await;
    closed_after(&mut c, Duration::from_secs(1)).await;
    assert_eq!(s.hits("max_connections_per_peer"), 1);
    // Another peer still gets in, up to the global cap.
    let mut d = connect_from([127, 0, 0, 2], s.addr).await;
    assert!(get_on(&mut d, "/auth").await.starts_with("HTTP/1.1 200"));
    let mut e = connect_from([127, 0, 0, 3], s.addr).await;
    closed_after(&mut e, Duration::from_secs(1)).await;
    assert_eq!(s.hits("max_connections"), 1);
    // The established ones are untouched.
    assert!(get_on(&mut b, "/auth").await.starts_with("HTTP/1.1 200"));
    assert!(get_on(&mut a, "/auth").await.starts_with("HTTP/1.1 200"));
    assert!(s.metrics.encode().contains("xks_connections_open 3"));
    drop((a, b, d));
    s.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_its_timeout() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tls = xks_front::config::TlsConfig {
        cert: cert_path,
        key: key_path,
        client_ca: None,
        client_subjects: vec![],
    };
    let setup = TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(xks_front::tls::server_config(&tls).unwrap()),
    };
    let s = start(short_limits(), Some(setup)).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    c.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let took = closed_after(&mut c, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(s.hits("tls_handshake_timeout"), 1);
    s.stop().await;
}

#[tokio::test]
async fn slow_headers_hit_the_header_read_timeout() {
    let limits = ConnLimits {
        idle_timeout: Duration::from_secs(5),
        ..short_limits()
    };
    let s = start(limits, None).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // Authenticate the connection so only the header timeout can close it.
    assert!(get_on(&mut c, "/auth").await.starts_with("HTTP/1.1 200"));
    c.write_all(b"GET /auth HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_after(&mut c, Duration::from_secs(3)).await;
    assert_eq!(s.hits("http_timeout"), 1, "{}", s.metrics.encode());
    assert_eq!(s.hits("idle_timeout"), 0);
    s.stop().await;
}

#[tokio::test]
async fn connections_over_the_new_connection_rate_are_closed_before_tls() {
    let limits = ConnLimits {
        new_connections_per_sec: 100,
        new_connections_per_peer_per_sec: 4,
        ..ConnLimits::default()
    };
    let s = start(limits, None).await;
    // Burst of 4 (the per-peer rate) from one peer, then refused; another peer still gets in.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = connect_from([127, 0, 0, 1], s.addr).await;
        assert!(get_on(&mut c, "/ping").await.starts_with("HTTP/1.1 200"));
        open.push(c);
    }
    let mut refused = connect_from([127, 0, 0, 1], s.addr).await;
    closed_after(&mut refused, Duration::from_secs(1)).await;
    assert_eq!(s.hits("new_connections_per_peer_per_sec"), 1);
    let mut other = connect_from([127, 0, 0, 2], s.addr).await;
    assert!(get_on(&mut other, "/ping")
        .await
        .starts_with("HTTP/1.1 200"));
    drop(open);
    s.stop().await;
}
