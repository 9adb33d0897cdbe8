//! The `[unix]` listener: peer-uid roles over a Unix socket next to the mTLS listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{admin_client, start, Pki};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use vhsm::config::Config;
use vhsm_proto::reason_of;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{
    init_request, CreateKeyRequest, DecryptRequest, EncryptRequest, ExportAuditRequest,
    HealthRequest, InitRequest, KeyUsage, PassphraseMode, Reason, StatusRequest, UnsealRequest,
};

const PASSPHRASE: &str = "correct horse battery staple";

/// The effective uid of this process (the owner of a file it creates).
fn my_uid(dir: &Path) -> u32 {
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    std::fs::metadata(&probe).unwrap().uid()
}

/// The test PKI config plus a `[unix]` section granting `role_line` (e.g. `crypto_uids = [1000]`).
fn config_with_unix(pki: &Pki, sock: &Path, role_line: &str) -> Config {
    let mut c = pki.config(&pki.path().join("data"));
    let text = format!("path = \"{}\"\n{role_line}\n", sock.display());
    c.unix = Some(toml::from_str(&text).unwrap());
    c.validate().unwrap();
    c
}

async fn uds_channel(path: PathBuf) -> Channel {
    Endpoint::from_static("http://vhsmd.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .unwrap()
}

fn denied(status: tonic::Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status), Reason::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_uid_can_encrypt_but_not_administer() {
    let pki = Pki::new();
    let sock = pki.path().join("vhsmd.sock");
    let uid = my_uid(pki.path());
    let node = start(&config_with_unix(
        &pki,
        &sock,
        &format!("crypto_uids = [{uid}]"),
    ))
    .await;
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // Set up over mTLS as admin (TCP keeps working next to the socket).
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    admin
        .init(InitRequest {
            mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                passphrase: PASSPHRASE.into(),
            })),
        })
        .await
        .unwrap();
    admin
        .unseal(UnsealRequest {
            passphrase: PASSPHRASE.into(),
            share: Vec::new(),
        })
        .await
        .unwrap();
    admin
        .create_key(CreateKeyRequest {
            key_id: "k1".into(),
            usage: vec![KeyUsage::Encrypt as i32, KeyUsage::Decrypt as i32],
            labels: Default::default(),
        })
        .await
        .unwrap();

    let ch = uds_channel(sock.clone()).await;
    let mut crypto = CryptoClient::new(ch.clone());
    assert_eq!(
        crypto
            .health(HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .node_id,
        "test-node"
    );
    // A node that has just started serves crypto once it holds its first read lease (up to
    // one lease period after it became leader); until then it answers Unavailable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let enc = loop {
        let r = crypto
            .encrypt(EncryptRequest {
                key_id: "k1".into(),
                plaintext: b"over the socket".to_vec(),
                aad: b"aad".to_vec(),
                request_id: String::new(),
                integrity_check: false,
            })
            .await;
        match r {
            Err(s)
                if s.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other.unwrap().into_inner(),
        }
    };
    let dec = crypto
        .decrypt(DecryptRequest {
            key_id: "k1".into(),
            ciphertext: enc.ciphertext,
            iv: enc.iv,
            tag: enc.tag,
            aad: b"aad".to_vec(),
            metadata: enc.metadata,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec.plaintext, b"over the socket");

    // The crypto uid may not use the Admin service.
    let mut as_admin = AdminClient::new(ch);
    denied(
        as_admin
            .create_key(CreateKeyRequest {
                key_id: "k2".into(),
                usage: vec![KeyUsage::Encrypt as i32],
                labels: Default::default(),
            })
            .await
            .unwrap_err(),
    );
    denied(as_admin.status(StatusRequest {}).await.unwrap_err());

    // The denial is audited under the uid identity, like a certificate's.
    let audit = admin
        .export_audit(ExportAuditRequest {
            from_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let me = format!("\"uid:{uid}\"");
    assert!(
        audit
            .records
            .iter()
            .any(|r| r.contains("Admin/CreateKey") && r.contains(&me)),
        "{:?}",
        audit.records
    );

    node.stop().await.unwrap();
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmapped_uid_is_denied_everything_and_stale_socket_is_replaced() {
    let pki = Pki::new();
    let sock = pki.path().join("vhsmd.sock");
    let uid = my_uid(pki.path());
    // A stale socket file from a crashed daemon (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    // Roles for other uids only.
    let other = uid.wrapping_add(1);
    let node = start(&config_with_unix(
        &pki,
        &sock,
        &format!("admin_uids = [{other}]"),
    ))
    .await;
    let ch = uds_channel(sock.clone()).await;
    let mut crypto = CryptoClient::new(ch.clone());
    denied(crypto.health(HealthRequest {}).await.unwrap_err());
    denied(
        crypto
            .encrypt(EncryptRequest {
                key_id: "k1".into(),
                plaintext: b"x".to_vec(),
                aad: Vec::new(),
                request_id: String::new(),
                integrity_check: false,
            })
            .await
            .unwrap_err(),
    );
    let mut admin = AdminClient::new(ch);
    denied(admin.status(StatusRequest {}).await.unwrap_err());
    denied(
        admin
            .init(InitRequest {
                mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                    passphrase: PASSPHRASE.into(),
                })),
            })
            .await
            .unwrap_err(),
    );
    node.stop().await.unwrap();
    assert!(!sock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_socket_or_regular_file_is_not_replaced() {
    let pki = Pki::new();
    let sock = pki.path().join("vhsmd.sock");
    let uid = my_uid(pki.path());
    let cfg = config_with_unix(&pki, &sock, &format!("crypto_uids = [{uid}]"));
    // Someone else is listening on the path.
    let live = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = common::try_start(&cfg).await.err().unwrap();
    assert!(err.to_string().starts_with("unix.path:"), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(live);
    std::fs::remove_file(&sock).unwrap();
    // The refused daemon released the store: a later start works.
    let node = common::start(&cfg).await;
    node.stop().await.unwrap();
    // A regular file is never deleted.
    std::fs::write(&sock, b"not a socket").unwrap();
    let err = common::try_start(&cfg).await.err().unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");
}
