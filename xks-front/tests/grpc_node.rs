//! The real gRPC client against an in-process Crypto server over mTLS: channels, failover, reasons, deep health.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use vhsm_proto::v1::crypto_server::{Crypto, CryptoServer};
use vhsm_proto::v1::*;

use xks_front::config::{NodeConfig, VhsmConfig};
use xks_front::health::{check_all, HealthCache};
use xks_front::key_manager::{KeyManager, VhsmError};
use xks_front::vhsm_client::{grpc_nodes, HaGroup, NODE_BACKOFF};

/// A vhsmd stand-in: XOR "encryption", one disabled key, optionally sealed.
struct FakeVhsmd {
    sealed: bool,
}

fn xor(b: &[u8]) -> Vec<u8> {
    b.iter().map(|x| x ^ 0x33).collect()
}

impl FakeVhsmd {
    fn check(&self, key_id: &str) -> Result<(), Status> {
        if self.sealed {
            return Err(vhsm_proto::status_with_reason(
                tonic::Code::Unavailable,
                "sealed",
                Reason::Sealed,
                0,
            ));
        }
        if key_id == "disabled-key" {
            return Err(vhsm_proto::status_with_reason(
                tonic::Code::FailedPrecondition,
                "key disabled",
                Reason::KeyDisabled,
                0,
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Crypto for FakeVhsmd {
    async fn encrypt(
        &self,
        r: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let r = r.into_inner();
        self.check(&r.key_id)?;
        Ok(Response::new(EncryptResponse {
            ciphertext: xor(&r.plaintext),
            iv: vec![1; 12],
            tag: vec![2; 16],
            metadata: vec![1, 0, 0, 0, 1],
            integrity_value: if r.integrity_check {
                vec![0x42; 32]
            } else {
                Vec::new()
            },
        }))
    }
    async fn decrypt(
        &self,
        r: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let r = r.into_inner();
        self.check(&r.key_id)?;
        Ok(Response::new(DecryptResponse {
            plaintext: xor(&r.ciphertext),
        }))
    }
    async fn get_key_metadata(
        &self,
        r: Request<GetKeyMetadataRequest>,
    ) -> Result<Response<GetKeyMetadataResponse>, Status> {
        self.check(&r.into_inner().key_id)?;
        Ok(Response::new(GetKeyMetadataResponse {
            key: Some(KeyInfo {
                key_id: "k".into(),
                key_spec: "AES_256".into(),
                usage: vec![KeyUsage::Encrypt as i32, KeyUsage::Decrypt as i32],
                state: KeyState::Enabled as i32,
                ..Default::default()
            }),
        }))
    }
    async fn wrap_key(
        &self,
        _r: Request<WrapKeyRequest>,
    ) -> Result<Response<WrapKeyResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn unwrap_key(
        &self,
        _r: Request<UnwrapKeyRequest>,
    ) -> Result<Response<UnwrapKeyResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn generate_random(
        &self,
        _r: Request<GenerateRandomRequest>,
    ) -> Result<Response<GenerateRandomResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn health(&self, _r: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            node_id: "fake".into(),
            seal_state: if self.sealed {
                SealState::Sealed as i32
            } else {
                SealState::Unsealed as i32
            },
            model: "vhsmd 0.1.0".into(),
            version: "0.1.0".into(),
            key_count: 2,
            serving: true,
            ..Default::default()
        }))
    }
}

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str, sans: Vec<String>| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let k = KeyPair::generate().unwrap();
        (p.signed_by(&k, &issuer).unwrap().pem(), k.serialize_pem())
    };
    Pki {
        server: leaf("vhsmd", vec!["vhsmd".into()]),
        client: leaf("xks-front", vec![]),
        ca_pem,
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start_vhsmd(pki: &Pki, sealed: bool) -> std::net::SocketAddr {
    let addr = free_addr();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(CryptoServer::new(FakeVhsmd { sealed }));
    tokio::spawn(server.serve(addr));
    // Wait until it accepts connections.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    addr
}

fn vhsm_config(dir: &Path, pki: &Pki, nodes: Vec<(&str, String, &str)>) -> VhsmConfig {
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("crypto.crt"), &pki.client.0).unwrap();
    std::fs::write(dir.join("crypto.key"), &pki.client.1).unwrap();
    VhsmConfig {
        ca: dir.join("ca.crt"),
        client_cert: dir.join("crypto.crt"),
        client_key: dir.join("crypto.key"),
        deadline_ms: 150,
        health_key_id: "xks-health".into(),
        health_cache_secs: 30,
        nodes: nodes
            .into_iter()
            .map(|(id, endpoint, server_name)| NodeConfig {
                id: id.into(),
                endpoint,
                server_name: server_name.into(),
            })
            .collect(),
    }
}

fn deadline() -> Instant {
    // Generous for a debug build's first TLS handshake.
    Instant::now() + Duration::from_secs(2)
}

#[tokio::test]
async fn mtls_channel_failover_reasons_and_deep_health() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let good = start_vhsmd(&pki, false).await;
    let sealed = start_vhsmd(&pki, true).await;
    let closed = free_addr();
    let cfg = vhsm_config(
        dir.path(),
        &pki,
        vec![
            ("down", format!("https://{closed}"), "vhsmd"),
            ("sealed", format!("https://{sealed}"), "vhsmd"),
            ("wrong-name", format!("https://{good}"), "not-vhsmd"),
            ("good", format!("https://{good}"), "vhsmd"),
        ],
    );
    let group = Arc::new(HaGroup::new(grpc_nodes(&cfg).unwrap(), NODE_BACKOFF));

    // Whatever node round-robin starts at, only "good" can serve.
    for _ in 0..4 {
        let out = group
            .encrypt("demo-key", b"hello", b"aad", false, "r-1", deadline())
            .await
            .unwrap();
        assert_eq!(&*out.node, "good");
        assert_eq!(out.value.ciphertext, xor(b"hello"));
        assert!(out.value.integrity_value.is_empty());
    }
    // The integrity-check flag and its answer cross the wire.
    let out = group
        .encrypt("demo-key", b"hello", b"aad", true, "r-1", deadline())
        .await
        .unwrap();
    assert_eq!(out.value.integrity_value, vec![0x42; 32]);
    // A key error crosses the wire with its reason and is final.
    let e = group
        .encrypt("disabled-key", b"x", b"", true, "r-2", deadline())
        .await
        .unwrap_err();
    assert_eq!(e, VhsmError::Rejected(Reason::KeyDisabled));

    let cache = HealthCache::new(group.node_ids());
    let key: Arc<str> = Arc::from("xks-health");
    check_all(&group, &cache, None, &key, Duration::from_millis(1000)).await;
    let got: Vec<(String, &str)> = cache
        .reports(Instant::now())
        .iter()
        .map(|r| (r.id.to_string(), r.status.as_xks()))
        .collect();
    assert_eq!(
        got,
        [
            ("down".to_string(), "UNAVAILABLE"),
            ("sealed".to_string(), "UNAVAILABLE"),
            ("wrong-name".to_string(), "UNAVAILABLE"),
            ("good".to_string(), "ACTIVE"),
        ]
    );
    assert_eq!(cache.reports(Instant::now())[3].model, "vhsmd 0.1.0");
}

#[tokio::test]
async fn every_node_sealed_is_reported_as_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let sealed = start_vhsmd(&pki, true).await;
    let cfg = vhsm_config(
        dir.path(),
        &pki,
        vec![("s", format!("https://{sealed}"), "vhsmd")],
    );
    let group = HaGroup::new(grpc_nodes(&cfg).unwrap(), NODE_BACKOFF);
    let e = group.key_metadata("k", "r", deadline()).await.unwrap_err();
    assert_eq!(e, VhsmError::Rejected(Reason::Sealed));
}

#[test]
fn missing_client_key_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let mut cfg = vhsm_config(
        dir.path(),
        &pki,
        vec![("a", "https://127.0.0.1:1".into(), "vhsmd")],
    );
    cfg.client_key = dir.path().join("nope.key");
    let e = grpc_nodes(&cfg).unwrap_err().to_string();
    assert!(e.contains("vhsm.client_key"), "{e}");
}

/// A stand-in vhsmd on a Unix socket (no TLS), as vhsmd's `[unix]` listener.
async fn start_uds_vhsmd(path: &Path, sealed: bool) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let server = Server::builder().add_service(CryptoServer::new(FakeVhsmd { sealed }));
    tokio::spawn(
        server.serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
}

#[tokio::test]
async fn unix_node_serves_through_the_ha_group() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let good = dir.path().join("vhsmd.sock");
    let sealed = dir.path().join("sealed.sock");
    let missing = dir.path().join("missing.sock");
    start_uds_vhsmd(&good, false).await;
    start_uds_vhsmd(&sealed, true).await;
    let cfg = vhsm_config(
        dir.path(),
        &pki,
        vec![
            ("down", format!("unix:{}", missing.display()), ""),
            ("sealed", format!("unix:{}", sealed.display()), ""),
            ("good", format!("unix:{}", good.display()), ""),
        ],
    );
    let group = Arc::new(HaGroup::new(grpc_nodes(&cfg).unwrap(), NODE_BACKOFF));
    for _ in 0..3 {
        let out = group
            .encrypt("demo-key", b"hello", b"aad", true, "r-1", deadline())
            .await
            .unwrap();
        assert_eq!(&*out.node, "good");
        assert_eq!(out.value.ciphertext, xor(b"hello"));
        assert_eq!(out.value.integrity_value, vec![0x42; 32]);
    }
    let e = group
        .encrypt("disabled-key", b"x", b"", false, "r-2", deadline())
        .await
        .unwrap_err();
    assert_eq!(e, VhsmError::Rejected(Reason::KeyDisabled));
    let cache = HealthCache::new(group.node_ids());
    let key: Arc<str> = Arc::from("xks-health");
    check_all(&group, &cache, None, &key, Duration::from_millis(1000)).await;
    let mut got: Vec<(String, &str)> = cache
        .reports(Instant::now())
        .iter()
        .map(|r| (r.id.to_string(), r.status.as_xks()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("down".to_string(), "UNAVAILABLE"),
            ("good".to_string(), "ACTIVE"),
            ("sealed".to_string(), "UNAVAILABLE"),
        ]
    );
}
