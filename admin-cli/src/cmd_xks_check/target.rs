//! What `xks check` probes: the parsed endpoint URL, the SigV4 credential, the TLS client
//! configurations (trusted CA, optional client certificate) and one TCP + TLS connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use crate::errors::{CliError, CliResult};

/// Network operations (connect, handshake, one request) give up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The XKS API path suffix.
pub const API_SUFFIX: &str = "/kms/xks/v1";

/// The SigV4 credential. The secret is zeroized on drop and never printed.
pub struct Credential {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The endpoint as KMS sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host name from the URL (TLS server name, `Host` header).
    pub host: String,
    /// `host[:port]` as sent in `Host` (the port only when not 443).
    pub authority: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// `[/prefix]/kms/xks/v1`.
    pub base_path: String,
}

impl Endpoint {
    /// Parses `url` (`https://host[:port][/prefix][/kms/xks/v1]`); `prefix` is inserted when
    /// the URL's path does not already end with `/kms/xks/v1`. `connect_to` overrides DNS.
    pub async fn parse(url: &str, prefix: &str, connect_to: Option<SocketAddr>) -> CliResult<Self> {
        let bad = |why: &str| CliError::usage(format!("invalid --url {url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                "must start with https:// (KMS calls XKS proxies over HTTPS only)",
            ));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = if port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let path = uri.path().trim_end_matches('/');
        let base_path = if path.ends_with(API_SUFFIX) {
            path.to_string()
        } else {
            format!("{path}{}{API_SUFFIX}", prefix.trim_end_matches('/'))
        };
        if !base_path.starts_with('/') {
            return Err(bad("the URI prefix must start with /"));
        }
        let addr = match connect_to {
            Some(a) => a,
            None => resolve(&host, port)
                .await
                .map_err(|e| CliError::unreachable(url, &e))?,
        };
        Ok(Endpoint {
            host,
            authority,
            addr,
            base_path,
        })
    }
}

/// The first address of `host`; `*.localhost` is loopback (RFC 6761) even where the resolver
/// does not say so (the quick start's `xks.localhost`).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let found = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut it| it.next());
    match found {
        Some(a) => Ok(a),
        None if host == "localhost" || host.ends_with(".localhost") => {
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        None => Err(format!("cannot resolve {host} (use --connect-to IP:PORT)")),
    }
}

/// Loads the secret from `file` (first line) or else from `XKS_SECRET_ACCESS_KEY`.
pub fn load_secret(file: Option<&Path>) -> CliResult<Zeroizing<String>> {
    let raw = match file {
        Some(p) => {
            Zeroizing::new(std::fs::read_to_string(p).map_err(|e| CliError::io("read", p, &e))?)
        }
        None => Zeroizing::new(std::env::var("XKS_SECRET_ACCESS_KEY").map_err(|_| {
            CliError::usage(
                "no secret access key: give --secret-file FILE or set XKS_SECRET_ACCESS_KEY",
            )
        })?),
    };
    let secret = Zeroizing::new(raw.trim().to_string());
    if secret.is_empty() {
        return Err(CliError::usage("the secret access key is empty"));
    }
    Ok(secret)
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Every cipher suite this client can offer (rustls with ring).
pub fn all_suites() -> Vec<SupportedCipherSuite> {
    provider().cipher_suites
}

/// Answers a server's certificate request with the configured certificate (if any) and
/// records that the server asked.
#[derive(Debug)]
pub struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicBool,
}

impl ClientCert {
    /// `key`: what to present when asked (None: an empty certificate message).
    pub fn new(key: Option<Arc<CertifiedKey>>) -> Arc<Self> {
        Arc::new(ClientCert {
            key,
            asked: AtomicBool::new(false),
        })
    }

    /// Whether a server asked for a client certificate.
    pub fn was_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Relaxed);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// A certificate + key for mutual TLS, from PEM files.
pub fn load_client_key(cert: &Path, key: &Path) -> CliResult<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| CliError::usage(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(CliError::usage(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| CliError::usage(format!("{}: no private key", key.display())))?;
    certified(chain, &der)
}

/// A certificate chain and its key as rustls presents them.
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> CliResult<Arc<CertifiedKey>> {
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| CliError::usage(format!("unusable client key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The trust anchors in `ca_file` (PEM).
pub fn load_roots(ca_file: &Path) -> CliResult<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| CliError::usage(format!("--ca-file {}: {e}", ca_file.display())))?;
    for c in certs {
        let c = c.map_err(|e| CliError::usage(format!("--ca-file {}: {e}", ca_file.display())))?;
        // A system bundle may hold a certificate rustls cannot parse; skip it.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(CliError::usage(format!(
            "--ca-file {}: no CA certificate",
            ca_file.display()
        )));
    }
    Ok(Arc::new(roots))
}

/// A client config trusting `roots`, offering `suites` (all when None) over `versions`,
/// presenting `cert` when asked, ALPN http/1.1 (as KMS).
pub fn client_config(
    roots: &Arc<RootCertStore>,
    suites: Option<Vec<SupportedCipherSuite>>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    cert: Arc<ClientCert>,
) -> Result<Arc<ClientConfig>, String> {
    let mut p = provider();
    if let Some(s) = suites {
        p.cipher_suites = s;
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone())
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What one TLS handshake negotiated.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub suite: String,
    /// The server's chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// TCP connect + handshake.
    pub elapsed: Duration,
}

/// TCP connect + TLS handshake to `ep` with `config`; the error is printable.
pub async fn connect(
    ep: &Endpoint,
    config: Arc<ClientConfig>,
) -> Result<(TlsStream<TcpStream>, Handshake), String> {
    let start = Instant::now();
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(ep.addr))
        .await
        .map_err(|_| format!("TCP connect to {} timed out", ep.addr))?
        .map_err(|e| format!("TCP connect to {}: {e}", ep.addr))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(ep.host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        IO_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let hs = Handshake {
        version: conn
            .protocol_version()
            .map_or_else(|| "?".into(), |v| format!("{v:?}")),
        suite: conn
            .negotiated_cipher_suite()
            .map_or_else(|| "?".into(), |s| format!("{:?}", s.suite())),
        chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
        elapsed: start.elapsed(),
    };
    Ok((tls, hs))
}
