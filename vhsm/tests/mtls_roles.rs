//! mTLS handshake refusals and the role matrix, against an in-process vhsmd on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{admin_client, channel, crypto_client, start, ClientId, Pki};
use tonic::Code;
use vhsm_proto::reason_of;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{
    init_request, CreateKeyRequest, EncryptRequest, ExportAuditRequest, HealthRequest, InitRequest,
    PassphraseMode, Reason, SealState, StatusRequest,
};

/// A refused handshake: either the connection fails, or the first call fails at the transport
/// level (TLS 1.3 reports a client-certificate rejection after the client's Finished). In both
/// cases the server never produced a gRPC status with a reason.
async fn assert_refused(pki: &Pki, addr: std::net::SocketAddr, id: Option<&ClientId>) {
    let Ok(ch) = channel(addr, &pki.ca_pem, id).await else {
        return;
    };
    let err = CryptoClient::new(ch)
        .health(HealthRequest {})
        .await
        .expect_err("a refused certificate must not reach the service");
    assert_eq!(reason_of(&err), Reason::Unspecified, "{err:?}");
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{err:?}"
    );
}

fn denied(status: tonic::Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status), Reason::PermissionDenied);
}

fn passphrase_init() -> InitRequest {
    InitRequest {
        mode: Some(init_request::Mode::Passphrase(PassphraseMode {
            passphrase: "correct horse battery staple".into(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refuses_unknown_ca_expired_and_missing_certificates() {
    let pki = Pki::new();
    let cfg = pki.config(&pki.path().join("data"));
    let node = start(&cfg).await;
    assert_refused(&pki, node.addr, Some(&pki.rogue)).await;
    assert_refused(&pki, node.addr, Some(&pki.expired)).await;
    assert_refused(&pki, node.addr, None).await;
    // The server survives refused handshakes and still serves a good client.
    let mut ok = crypto_client(node.addr, &pki, &pki.crypto).await;
    let h = ok.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(h.node_id, "test-node");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_role_is_limited_to_the_crypto_service() {
    let pki = Pki::new();
    let node = start(&pki.config(&pki.path().join("data"))).await;
    let mut crypto = crypto_client(node.addr, &pki, &pki.crypto).await;
    let h = crypto.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(h.model, "vhsmd");
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.seal_state, SealState::Uninitialized as i32);

    let mut as_admin = admin_client(node.addr, &pki, &pki.crypto).await;
    denied(
        as_admin
            .create_key(CreateKeyRequest {
                key_id: "k".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    denied(as_admin.init(passphrase_init()).await.unwrap_err());
    denied(
        as_admin
            .export_audit(ExportAuditRequest::default())
            .await
            .unwrap_err(),
    );
    denied(as_admin.status(StatusRequest {}).await.unwrap_err());
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_and_admin_cannot_encrypt() {
    let pki = Pki::new();
    let node = start(&pki.config(&pki.path().join("data"))).await;
    for id in [&pki.auditor, &pki.admin, &pki.stranger] {
        let mut c = crypto_client(node.addr, &pki, id).await;
        denied(
            c.encrypt(EncryptRequest {
                key_id: "k".into(),
                plaintext: b"secret".to_vec(),
                aad: Vec::new(),
                request_id: String::new(),
                integrity_check: false,
            })
            .await
            .unwrap_err(),
        );
    }
    // The auditor reads status but cannot run ceremonies.
    let mut auditor = admin_client(node.addr, &pki, &pki.auditor).await;
    let s = auditor.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.node_id, "test-node");
    assert_eq!(s.seal_state, SealState::Uninitialized as i32);
    denied(auditor.init(passphrase_init()).await.unwrap_err());
    denied(
        auditor
            .create_key(CreateKeyRequest::default())
            .await
            .unwrap_err(),
    );
    // Admin may call Health; a certificate in no role may call nothing.
    let mut admin_health = crypto_client(node.addr, &pki, &pki.admin).await;
    admin_health.health(HealthRequest {}).await.unwrap();
    let mut stranger = crypto_client(node.addr, &pki, &pki.stranger).await;
    denied(stranger.health(HealthRequest {}).await.unwrap_err());
    let mut stranger_admin = AdminClient::new(
        channel(node.addr, &pki.ca_pem, Some(&pki.stranger))
            .await
            .unwrap(),
    );
    denied(stranger_admin.status(StatusRequest {}).await.unwrap_err());
    node.stop().await.unwrap();
}
