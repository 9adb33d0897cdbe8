//! Test support: an rcgen PKI, an in-process vhsmd on 127.0.0.1:0, and mTLS clients per role.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    missing_debug_implementations
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vhsm::config::Config;
use vhsm::server::ServeError;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::crypto_client::CryptoClient;

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct ClientId {
    pub cert: String,
    pub key: String,
}

/// A CA, the vhsmd server certificate and client certificates, written under `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub crypto: ClientId,
    pub admin: ClientId,
    pub auditor: ClientId,
    /// Signed by the right CA, but its CN is in no role.
    pub stranger: ClientId,
    /// CN `admin`, signed by another CA.
    pub rogue: ClientId,
    /// CN `admin`, right CA, expired.
    pub expired: ClientId,
}

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn client(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str, expired: bool) -> ClientId {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let k = KeyPair::generate().unwrap();
    let c = p.signed_by(&k, issuer).unwrap();
    ClientId {
        cert: c.pem(),
        key: k.serialize_pem(),
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ca("vhsm appliance CA");
        let mut sp =
            CertificateParams::new(vec!["vhsmd".to_owned(), "localhost".to_owned()]).unwrap();
        sp.distinguished_name.push(DnType::CommonName, "vhsmd");
        sp.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let sk = KeyPair::generate().unwrap();
        let sc = sp.signed_by(&sk, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.crt"), issuer.pem()).unwrap();
        std::fs::write(dir.path().join("vhsmd.crt"), sc.pem()).unwrap();
        std::fs::write(dir.path().join("vhsmd.key"), sk.serialize_pem()).unwrap();
        let other = ca("someone else's CA");
        Pki {
            ca_pem: issuer.pem(),
            crypto: client(&issuer, "xks-front", false),
            admin: client(&issuer, "admin", false),
            auditor: client(&issuer, "auditor", false),
            stranger: client(&issuer, "mallory", false),
            rogue: client(&other, "admin", false),
            expired: client(&issuer, "admin", true),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A validated dev config (fast KDF) for a node whose data lives in `data_dir`.
    pub fn config(&self, data_dir: &Path) -> Config {
        let pki = self.path().display();
        let text = format!(
            r#"
node_id = "test-node"
data_dir = "{data}"
[listen]
addr = "127.0.0.1:0"
[tls]
cert = "{pki}/vhsmd.crt"
key = "{pki}/vhsmd.key"
client_ca = "{pki}/ca.crt"
[roles]
crypto = ["xks-front"]
admin = ["admin"]
auditor = ["auditor"]
[keys]
min_deletion_waiting_days = 1
[log]
level = "warn"
[dev]
insecure_fast_kdf = true
"#,
            data = data_dir.display()
        );
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        c
    }
}

/// A vhsmd running in this process.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops it gracefully and waits until the store is closed.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.handle).await.unwrap()
    }
}

/// Starts vhsmd with `config` on a fresh loopback port.
pub async fn start(config: &Config) -> Running {
    try_start(config).await.unwrap()
}

/// Opens vhsmd (returning the error if the store cannot be opened) and serves it.
pub async fn try_start(config: &Config) -> Result<Running, ServeError> {
    let daemon = vhsm::server::Daemon::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(daemon.run(listener, async {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        shutdown: Some(tx),
        handle,
    })
}

fn tls(ca_pem: &str, id: Option<&ClientId>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("vhsmd");
    if let Some(id) = id {
        t = t.identity(Identity::from_pem(&id.cert, &id.key));
    }
    t
}

/// An mTLS channel to `addr` with `id` (or no client certificate).
pub async fn channel(
    addr: SocketAddr,
    ca_pem: &str,
    id: Option<&ClientId>,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls(ca_pem, id))?
        .connect()
        .await
}

pub async fn crypto_client(addr: SocketAddr, pki: &Pki, id: &ClientId) -> CryptoClient<Channel> {
    CryptoClient::new(channel(addr, &pki.ca_pem, Some(id)).await.unwrap())
}

pub async fn admin_client(addr: SocketAddr, pki: &Pki, id: &ClientId) -> AdminClient<Channel> {
    AdminClient::new(channel(addr, &pki.ca_pem, Some(id)).await.unwrap())
}

/// The data dir used by a test (inside the PKI temp dir).
pub fn data_dir(pki: &Pki, name: &str) -> PathBuf {
    pki.path().join(name)
}
