//! The TLS half of `xks check`: protocol versions and cipher suites the server accepts (rustls
//! handshakes, plus raw ClientHellos for what rustls cannot offer: TLS 1.0/1.1 and weak TLS 1.2
//! suites), the certificate chain and its expiry, and whether mutual TLS refuses strangers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::report::{Report, Verdict};
use super::target::{all_suites, client_config, connect, ClientCert, Endpoint, IO_TIMEOUT};

/// The suites the XKS spec lists; a proxy must accept at least one.
const SPEC_SUITES: [&str; 4] = [
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
];
/// What a probe presents when asked for a client certificate (None: nothing).
type ClientKey = Option<Arc<CertifiedKey>>;
/// Warn when the server certificate expires sooner.
const EXPIRY_WARN_DAYS: i64 = 30;

/// What the scan needs.
#[derive(Debug, Clone)]
pub struct TlsInputs {
    /// Trust anchors.
    pub roots: Arc<RootCertStore>,
    /// The operator's client certificate (mutual TLS), if any.
    pub client_key: Option<Arc<CertifiedKey>>,
}

fn versions_of(v: &'static SupportedProtocolVersion) -> [&'static SupportedProtocolVersion; 1] {
    [v]
}

/// Runs the TLS checks. False when not even the default handshake works (the rest would only
/// repeat that error).
pub async fn run(ep: &Endpoint, inputs: &TlsInputs, report: &mut Report) -> bool {
    let asked = ClientCert::new(inputs.client_key.clone());
    let default = match client_config(&inputs.roots, None, rustls::ALL_VERSIONS, asked.clone()) {
        Ok(c) => c,
        Err(e) => {
            report.add("tls", "client configuration", Verdict::Fail, e);
            return false;
        }
    };
    let hs = match connect(ep, default).await {
        Ok((_, hs)) => hs,
        Err(e) => {
            report.add(
                "tls",
                "handshake (certificate trusted, name matches)",
                Verdict::Fail,
                e,
            );
            return false;
        }
    };
    report.add_timed(
        "tls",
        "handshake (certificate trusted, name matches)",
        Verdict::Pass,
        hs.elapsed,
        format!("{} {} to {}", hs.version, hs.suite, ep.addr),
    );
    certificate(&hs.chain, &ep.host, report);
    mutual_tls(ep, inputs, asked.was_asked(), report).await;
    versions(ep, inputs, report).await;
    suites(ep, inputs, report).await;
    true
}

fn certificate(chain: &[CertificateDer<'static>], host: &str, report: &mut Report) {
    let Some(leaf) = chain.first() else {
        report.add("tls", "certificate", Verdict::Fail, "no certificate sent");
        return;
    };
    let mut names = Vec::new();
    for c in chain {
        match x509_parser::parse_x509_certificate(c.as_ref()) {
            Ok((_, x)) => names.push(x.subject().to_string()),
            Err(_) => names.push("(unparsable)".into()),
        }
    }
    report.add(
        "tls",
        "certificate chain",
        Verdict::Info,
        format!("{} certificate(s): {}", chain.len(), names.join(" <- ")),
    );
    let Ok((_, x)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        report.add(
            "tls",
            "certificate expiry",
            Verdict::Fail,
            "leaf certificate unparsable",
        );
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let not_after = x.validity().not_after;
    let days = (not_after.timestamp() - now) / 86_400;
    let (verdict, what) = match days {
        d if d < 0 => (Verdict::Fail, "expired".to_string()),
        d if d < EXPIRY_WARN_DAYS => (Verdict::Warn, format!("expires in {d} days: renew")),
        d => (Verdict::Pass, format!("{d} days left")),
    };
    report.add(
        "tls",
        "certificate expiry",
        verdict,
        format!("{what} (not after {not_after}) for {host}"),
    );
    report.add(
        "tls",
        "certificate issuer",
        Verdict::Info,
        format!(
            "{}; KMS accepts only chains to the public CAs it lists (TrustedCertificateAuthorities)",
            x.issuer()
        ),
    );
}

/// Sends a GetHealthStatus-shaped request over `config` and says whether the server answered
/// at the HTTP level (a refused client fails the handshake or the connection instead).
async fn answers(ep: &Endpoint, config: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    let mut s = super::http::Session::new(ep.clone(), config);
    let path = format!("{}/health", ep.base_path);
    let headers = super::http::headers(
        ep,
        "POST",
        &path,
        b"{}",
        super::http::Signing {
            credential: None,
            region: "us-east-1",
            time: SystemTime::now(),
        },
    )?;
    s.send("POST", &path, headers, b"{}".to_vec())
        .await
        .map(|r| r.status)
}

fn stranger() -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::generate_simple_self_signed(vec!["cks.kms.us-east-1.amazonaws.com".into()])
        .map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    super::target::certified(vec![key.cert.der().clone()], &der).map_err(|e| e.to_string())
}

async fn mutual_tls(ep: &Endpoint, inputs: &TlsInputs, asked: bool, report: &mut Report) {
    if inputs.client_key.is_none() {
        let detail = if asked {
            "the server asks for a client certificate; give --client-cert/--client-key"
        } else {
            "not used: the server accepts any TLS client (SigV4 is the only authentication)"
        };
        report.add("tls", "mutual TLS", Verdict::Info, detail);
        return;
    }
    if !asked {
        report.add(
            "tls",
            "mutual TLS",
            Verdict::Fail,
            "a client certificate was given but the server never asked for it",
        );
        return;
    }
    report.add(
        "tls",
        "mutual TLS",
        Verdict::Pass,
        "the server asked for the client certificate and accepted it",
    );
    let probes: [(&str, Result<ClientKey, String>); 2] = [
        ("mTLS refuses a client without a certificate", Ok(None)),
        (
            "mTLS refuses a self-signed certificate",
            stranger().map(Some),
        ),
    ];
    for (name, key) in probes {
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                report.add("tls", name, Verdict::Info, format!("not run: {e}"));
                continue;
            }
        };
        let config = match client_config(
            &inputs.roots,
            None,
            rustls::ALL_VERSIONS,
            ClientCert::new(key),
        ) {
            Ok(c) => c,
            Err(e) => {
                report.add("tls", name, Verdict::Info, format!("not run: {e}"));
                continue;
            }
        };
        match answers(ep, config).await {
            Ok(status) => report.add(
                "tls",
                name,
                Verdict::Fail,
                format!("the server answered HTTP {status}"),
            ),
            Err(e) => report.add("tls", name, Verdict::Pass, format!("refused: {e}")),
        }
    }
}

async fn versions(ep: &Endpoint, inputs: &TlsInputs, report: &mut Report) {
    let mut modern = Vec::new();
    for (name, v) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let accepted = match client_config(
            &inputs.roots,
            None,
            &versions_of(v),
            ClientCert::new(inputs.client_key.clone()),
        ) {
            Ok(c) => connect(ep, c).await.map(|(_, hs)| hs.suite),
            Err(e) => Err(e),
        };
        match accepted {
            Ok(suite) => {
                modern.push(name);
                report.add("tls", name, Verdict::Info, format!("accepted ({suite})"));
            }
            Err(e) => report.add("tls", name, Verdict::Info, format!("refused: {e}")),
        }
    }
    if modern.is_empty() {
        report.add(
            "tls",
            "TLS 1.2 or later",
            Verdict::Fail,
            "neither TLS 1.2 nor 1.3 negotiated",
        );
    }
    for (name, version) in [("TLS 1.1", 0x0302u16), ("TLS 1.0", 0x0301)] {
        let hello = client_hello(&ep.host, version, LEGACY_SUITES);
        match raw_probe(ep, &hello).await {
            RawOutcome::ServerHello { version: v, suite } if v == version => report.add(
                "tls",
                name,
                Verdict::Warn,
                format!("accepted (suite 0x{suite:04x}): KMS needs only TLS 1.2+; disable it"),
            ),
            other => report.add("tls", name, Verdict::Pass, format!("refused ({other})")),
        }
    }
    let hello = client_hello(&ep.host, 0x0303, WEAK_TLS12_SUITES);
    match raw_probe(ep, &hello).await {
        RawOutcome::ServerHello { suite, .. } => report.add(
            "tls",
            "weak TLS 1.2 suites (CBC, RSA key exchange, 3DES, RC4)",
            Verdict::Warn,
            format!("accepted: the server chose 0x{suite:04x}"),
        ),
        other => report.add(
            "tls",
            "weak TLS 1.2 suites (CBC, RSA key exchange, 3DES, RC4)",
            Verdict::Pass,
            format!("refused ({other})"),
        ),
    }
}

async fn suites(ep: &Endpoint, inputs: &TlsInputs, report: &mut Report) {
    let mut accepted = Vec::new();
    for suite in all_suites() {
        let name = format!("{:?}", suite.suite());
        let version = match suite {
            rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
            rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        };
        let Ok(config) = client_config(
            &inputs.roots,
            Some(vec![suite]),
            &versions_of(version),
            ClientCert::new(inputs.client_key.clone()),
        ) else {
            continue;
        };
        if connect(ep, config).await.is_ok() {
            accepted.push(name);
        }
    }
    let spec: Vec<&String> = accepted
        .iter()
        .filter(|s| SPEC_SUITES.contains(&s.as_str()))
        .collect();
    let others: Vec<&String> = accepted
        .iter()
        .filter(|s| !SPEC_SUITES.contains(&s.as_str()))
        .collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if spec.is_empty() {
        report.add(
            "tls",
            "cipher suites of the XKS spec",
            Verdict::Fail,
            format!("none of {} accepted", SPEC_SUITES.join(", ")),
        );
    } else {
        report.add(
            "tls",
            "cipher suites of the XKS spec",
            Verdict::Pass,
            list(&spec),
        );
    }
    report.add(
        "tls",
        "other suites accepted",
        Verdict::Info,
        if others.is_empty() {
            "none".to_string()
        } else {
            list(&others)
        },
    );
}

/// Suites a TLS 1.0/1.1 server would pick.
const LEGACY_SUITES: &[u16] = &[0xc013, 0xc014, 0xc009, 0xc00a, 0x002f, 0x0035, 0x000a];
/// TLS 1.2 suites no XKS proxy needs: CBC, static RSA key exchange, 3DES, RC4.
const WEAK_TLS12_SUITES: &[u16] = &[
    0xc027, 0xc028, 0xc013, 0xc014, 0xc023, 0xc024, 0xc009, 0xc00a, 0x009c, 0x009d, 0x003c, 0x003d,
    0x002f, 0x0035, 0x000a, 0x0005,
];

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_len16(out: &mut Vec<u8>, body: &[u8]) {
    push_u16(out, u16::try_from(body.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(body);
}

fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    push_u16(out, kind);
    push_len16(out, body);
}

/// A minimal ClientHello for `version` offering `suites` (SNI, groups, point formats and
/// signature algorithms; no supported_versions, so the legacy version is what is asked for).
fn client_hello(host: &str, version: u16, suites: &[u16]) -> Vec<u8> {
    let mut hello = Vec::new();
    push_u16(&mut hello, version);
    let mut random = [0u8; 32];
    let _ = getrandom::fill(&mut random);
    hello.extend_from_slice(&random);
    hello.push(0); // no session id
    let mut s = Vec::new();
    for suite in suites {
        push_u16(&mut s, *suite);
    }
    push_len16(&mut hello, &s);
    hello.extend_from_slice(&[1, 0]); // null compression
    let mut ext = Vec::new();
    let mut sni = vec![0u8];
    push_len16(&mut sni, host.as_bytes());
    let mut sni_list = Vec::new();
    push_len16(&mut sni_list, &sni);
    extension(&mut ext, 0x0000, &sni_list);
    let mut groups = Vec::new();
    push_len16(&mut groups, &[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    extension(&mut ext, 0x000a, &groups);
    extension(&mut ext, 0x000b, &[1, 0]);
    let mut sigalgs = Vec::new();
    push_len16(
        &mut sigalgs,
        &[4, 1, 5, 1, 6, 1, 4, 3, 5, 3, 6, 3, 8, 4, 8, 5, 8, 6, 2, 1],
    );
    extension(&mut ext, 0x000d, &sigalgs);
    push_len16(&mut hello, &ext);
    let mut handshake = vec![1u8];
    let len = u32::try_from(hello.len()).unwrap_or(0).to_be_bytes();
    handshake.extend_from_slice(&len[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    push_len16(&mut record, &handshake);
    record
}

/// What a server answered to a raw ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum RawOutcome {
    ServerHello { version: u16, suite: u16 },
    Alert(u8),
    Closed,
    Other(String),
}

impl std::fmt::Display for RawOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawOutcome::ServerHello { version, suite } => {
                write!(f, "ServerHello 0x{version:04x} suite 0x{suite:04x}")
            }
            RawOutcome::Alert(70) => f.write_str("alert protocol_version"),
            RawOutcome::Alert(40) => f.write_str("alert handshake_failure"),
            RawOutcome::Alert(d) => write!(f, "alert {d}"),
            RawOutcome::Closed => f.write_str("connection closed"),
            RawOutcome::Other(e) => f.write_str(e),
        }
    }
}

/// Parses the first TLS record a server sent.
fn parse_answer(rec: &[u8]) -> RawOutcome {
    match rec {
        [0x15, _, _, _, _, _, desc, ..] => RawOutcome::Alert(*desc),
        [0x16, _, _, _, _, 2, _, _, _, v1, v2, rest @ ..] if rest.len() >= 33 => {
            let sid = usize::from(rest[32]);
            match rest.get(33 + sid..35 + sid) {
                Some([s1, s2]) => RawOutcome::ServerHello {
                    version: u16::from_be_bytes([*v1, *v2]),
                    suite: u16::from_be_bytes([*s1, *s2]),
                },
                _ => RawOutcome::Other("short ServerHello".into()),
            }
        }
        [] => RawOutcome::Closed,
        _ => RawOutcome::Other(format!("unexpected record type 0x{:02x}", rec[0])),
    }
}

async fn raw_probe(ep: &Endpoint, hello: &[u8]) -> RawOutcome {
    let exchange = async {
        let mut tcp = TcpStream::connect(ep.addr).await?;
        tcp.write_all(hello).await?;
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        // Enough for an alert or the start of a ServerHello.
        while got < 80 {
            let n = tcp.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
            if buf[0] == 0x15 && got >= 7 {
                break;
            }
        }
        Ok::<_, std::io::Error>(buf[..got].to_vec())
    };
    match tokio::time::timeout(IO_TIMEOUT, exchange).await {
        Ok(Ok(bytes)) => parse_answer(&bytes),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => RawOutcome::Closed,
        Ok(Err(e)) => RawOutcome::Other(e.to_string()),
        Err(_) => RawOutcome::Other("no answer".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_client_hello_is_well_formed() {
        let h = client_hello("xks.example.com", 0x0302, &[0xc013, 0x002f]);
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        let record_len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        assert_eq!(record_len, h.len() - 5);
        assert_eq!(h[5], 1, "ClientHello");
        let hs_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(hs_len, h.len() - 9);
        assert_eq!(&h[9..11], &[0x03, 0x02]);
        // After random and an empty session id: 2 suites.
        assert_eq!(&h[44..50], &[0, 4, 0xc0, 0x13, 0x00, 0x2f]);
        assert!(h
            .windows(b"xks.example.com".len())
            .any(|w| w == b"xks.example.com"));
    }

    #[test]
    fn server_answers_are_told_apart() {
        assert_eq!(
            parse_answer(&[0x15, 3, 3, 0, 2, 2, 70]),
            RawOutcome::Alert(70)
        );
        let mut sh = vec![0x16, 3, 3, 0, 60, 2, 0, 0, 56, 0x03, 0x02];
        sh.extend_from_slice(&[7u8; 32]);
        sh.push(0);
        sh.extend_from_slice(&[0xc0, 0x14, 0]);
        assert_eq!(
            parse_answer(&sh),
            RawOutcome::ServerHello {
                version: 0x0302,
                suite: 0xc014
            }
        );
        assert_eq!(parse_answer(&[]), RawOutcome::Closed);
    }
}
