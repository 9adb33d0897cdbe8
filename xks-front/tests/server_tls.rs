//! The real listener over TCP: TLS suites, ALPN h2/http1.1, mTLS by CA and subject CN, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use xks_front::config::TlsConfig;
use xks_front::server::{serve, TlsSetup};

const KMS_CN: &str = "cks.kms.us-east-1.amazonaws.com";

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, cn: &str, sans: &[&str]) -> (CertificateDer<'static>, KeyPair) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
    (cert, key)
}

fn pem(der: &[u8], label: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    ca: Ca,
    _dir: tempfile::TempDir,
}

async fn start(mtls: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test CA");
    let (cert, key) = leaf(&ca, "xks.localhost", &["localhost"]);
    let cert_path = dir.path().join("server.crt");
    let key_path = dir.path().join("server.key");
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&cert_path, pem(&cert, "CERTIFICATE")).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, pem(&ca.cert, "CERTIFICATE")).unwrap();
    let tls = TlsConfig {
        cert: cert_path,
        key: key_path,
        client_ca: mtls.then(|| ca_path.clone()),
        client_subjects: if mtls {
            vec![KMS_CN.to_string()]
        } else {
            vec![]
        },
    };
    let setup = TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(xks_front::tls::server_config(&tls).unwrap()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/ping", get(|| async { "ok" }));
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(serve(listener, app, Some(setup), rx));
    Server {
        addr,
        stop,
        task,
        ca,
        _dir: dir,
    }
}

struct Client<'a> {
    suites: Vec<SupportedCipherSuite>,
    tls12_only: bool,
    alpn: Vec<&'static [u8]>,
    cert: Option<(CertificateDer<'static>, &'a KeyPair)>,
}

impl Default for Client<'_> {
    fn default() -> Self {
        Self {
            suites: ring::default_provider().cipher_suites,
            tls12_only: false,
            alpn: vec![b"http/1.1"],
            cert: None,
        }
    }
}

impl Client<'_> {
    async fn connect(&self, s: &Server) -> std::io::Result<TlsStream<TcpStream>> {
        let mut provider = ring::default_provider();
        provider.cipher_suites = self.suites.clone();
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut roots = RootCertStore::empty();
        roots.add(s.ca.cert.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match &self.cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
        };
        cfg.alpn_protocols = self.alpn.iter().map(|a| a.to_vec()).collect();
        let tcp = TcpStream::connect(s.addr).await?;
        TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// GET /ping over HTTP/1.1; the raw response text (empty when the server hung up).
    async fn ping(&self, s: &Server) -> String {
        let Ok(mut tls) = self.connect(s).await else {
            return String::new();
        };
        let req = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        if tls.write_all(req).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[tokio::test]
async fn http1_ping_and_h2_alpn() {
    let s = start(false).await;
    let resp = Client::default().ping(&s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");
    let h2 = Client {
        alpn: vec![b"h2", b"http/1.1"],
        ..Default::default()
    };
    let tls = h2.connect(&s).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.stop.send(true).unwrap();
    s.task.await.unwrap();
}

#[tokio::test]
async fn http2_request_is_served() {
    let s = start(false).await;
    let h2 = Client {
        alpn: vec![b"h2"],
        ..Default::default()
    };
    let tls = h2.connect(&s).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        // Several requests on one connection (keep-alive / multiplexing).
        let req = http::Request::get("https://localhost/ping")
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
        assert_eq!(&body.to_bytes()[..], b"ok");
    }
}

#[tokio::test]
async fn only_the_spec_cipher_suites_are_offered() {
    let s = start(false).await;
    let only = |suite: SupportedCipherSuite, tls12_only: bool| Client {
        suites: vec![suite],
        tls12_only,
        ..Default::default()
    };
    use ring::cipher_suite as cs;
    for (suite, tls12) in [
        (cs::TLS13_AES_256_GCM_SHA384, false),
        (cs::TLS13_CHACHA20_POLY1305_SHA256, false),
        (cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true),
    ] {
        let resp = only(suite, tls12).ping(&s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{suite:?}: {resp}");
    }
    for (suite, tls12) in [
        (cs::TLS13_AES_128_GCM_SHA256, false),
        (cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true),
        (cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true),
    ] {
        assert!(
            only(suite, tls12).connect(&s).await.is_err(),
            "{suite:?} accepted"
        );
    }
}

#[tokio::test]
async fn mtls_requires_the_ca_and_an_allowed_subject() {
    let s = start(true).await;
    // No client certificate: no HTTP.
    assert_eq!(Client::default().ping(&s).await, "");
    // The right CA and the allowed CN.
    let (good, good_key) = leaf(&s.ca, KMS_CN, &[]);
    let ok = Client {
        cert: Some((good, &good_key)),
        ..Default::default()
    };
    assert!(ok.ping(&s).await.starts_with("HTTP/1.1 200"));
    // The right CA, another CN: closed before any HTTP is served.
    let (other, other_key) = leaf(&s.ca, "someone-else.example.com", &[]);
    let wrong_cn = Client {
        cert: Some((other, &other_key)),
        ..Default::default()
    };
    assert_eq!(wrong_cn.ping(&s).await, "");
    // The allowed CN from a foreign CA.
    let foreign = ca("foreign CA");
    let (forged, forged_key) = leaf(&foreign, KMS_CN, &[]);
    let forged = Client {
        cert: Some((forged, &forged_key)),
        ..Default::default()
    };
    assert_eq!(forged.ping(&s).await, "");
}

/// The alert the server sent when it refused `client`, as the client sees it: during the
/// handshake (TLS 1.2) or on the first read after it (TLS 1.3, where the server checks the
/// client certificate after the client has finished). `None`: not refused with an alert.
async fn refusal_alert(client: &Client<'_>, s: &Server) -> Option<rustls::AlertDescription> {
    fn alert_of(e: &std::io::Error) -> Option<rustls::AlertDescription> {
        match e.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(a) => Some(*a),
            _ => None,
        }
    }
    let mut tls = match client.connect(s).await {
        Ok(t) => t,
        Err(e) => return alert_of(&e),
    };
    let req = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Like curl (HTTP/2 preface, then the request), write twice before reading: a server that
    // has closed with the first write unread answers with a TCP reset, the second write then
    // fails with "broken pipe" and the client never reads the alert.
    for _ in 0..2 {
        if let Err(e) = tls.write_all(req).await {
            return alert_of(&e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    match tls.read_to_end(&mut out).await {
        Ok(_) => None,
        Err(e) => alert_of(&e),
    }
}

/// Regression (AWS conformance client `test_negative_mtls`: "TLS alert, handshake failure" for
/// an expired or a self-signed client certificate): every refused client certificate gets a
/// `handshake_failure` alert, and over TLS 1.3 the client can still read it (no TCP reset).
#[tokio::test]
async fn mtls_refusals_reach_the_client_as_handshake_failure() {
    let s = start(true).await;
    let foreign = ca("foreign CA");
    let (forged, forged_key) = leaf(&foreign, KMS_CN, &[]);
    let (other, other_key) = leaf(&s.ca, "someone-else.example.com", &[]);
    let self_signed_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, KMS_CN);
    let self_signed = params.self_signed(&self_signed_key).unwrap().der().clone();
    let cases = [
        ("foreign CA", forged, &forged_key),
        ("another CN", other, &other_key),
        ("self-signed", self_signed, &self_signed_key),
    ];
    for (what, cert, key) in cases {
        for tls12_only in [true, false] {
            let client = Client {
                cert: Some((cert.clone(), key)),
                tls12_only,
                ..Default::default()
            };
            for _ in 0..2 {
                assert_eq!(
                    refusal_alert(&client, &s).await,
                    Some(rustls::AlertDescription::HandshakeFailure),
                    "{what}, tls12_only={tls12_only}"
                );
            }
        }
    }
    let (good, good_key) = leaf(&s.ca, KMS_CN, &[]);
    let ok = Client {
        cert: Some((good, &good_key)),
        ..Default::default()
    };
    assert_eq!(refusal_alert(&ok, &s).await, None);
}
