//! Ceremonies, key use, error mapping, restart and store locking through the real gRPC server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{admin_client, crypto_client, start, try_start, Pki};
use tonic::transport::Channel;
use tonic::Code;
use vhsm::server::ServeError;
use vhsm_core::crypto::sha256;
use vhsm_core::StorageError;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{
    init_request, CreateKeyRequest, DecryptRequest, EncryptRequest, EncryptResponse,
    ExportAuditRequest, GenerateRandomRequest, GetAuditPublicKeyRequest, GetKeyMetadataRequest,
    HealthRequest, InitRequest, KeyIdRequest, KeyState, KeyUsage, PassphraseMode, Reason,
    SealRequest, SealState, SharesMode, StatusRequest, UnsealRequest,
};
use vhsm_proto::{reason_of, retry_after_ms_of};

const PASS: &str = "correct horse battery staple";

fn expect(status: tonic::Status, code: Code, reason: Reason) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason_of(&status), reason, "{status:?}");
}

fn passphrase_init(p: &str) -> InitRequest {
    InitRequest {
        mode: Some(init_request::Mode::Passphrase(PassphraseMode {
            passphrase: p.into(),
        })),
    }
}

async fn unseal(admin: &mut AdminClient<Channel>, passphrase: &str) -> tonic::Result<SealState> {
    let r = admin
        .unseal(UnsealRequest {
            passphrase: passphrase.into(),
            share: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(SealState::try_from(r.seal_state).unwrap())
}

async fn encrypt(
    c: &mut CryptoClient<Channel>,
    key: &str,
    plaintext: &[u8],
) -> tonic::Result<EncryptResponse> {
    c.encrypt(EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        aad: b"aad".to_vec(),
        request_id: "req-1".into(),
        integrity_check: false,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn encrypt_checked(
    c: &mut CryptoClient<Channel>,
    key: &str,
    plaintext: &[u8],
) -> tonic::Result<EncryptResponse> {
    c.encrypt(EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        aad: b"aad".to_vec(),
        request_id: "req-1".into(),
        integrity_check: true,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The XKS CDIV of an encrypt answer, recomputed here over the plain concatenation.
fn cdiv_of(e: &EncryptResponse) -> Vec<u8> {
    let all = [&b"aad"[..], &e.metadata, &e.iv, &e.ciphertext, &e.tag].concat();
    sha256(&all).to_vec()
}

fn decrypt_req(key: &str, e: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        key_id: key.into(),
        ciphertext: e.ciphertext.clone(),
        iv: e.iv.clone(),
        tag: e.tag.clone(),
        aad: b"aad".to_vec(),
        metadata: e.metadata.clone(),
        request_id: "req-2".into(),
    }
}

async fn create(
    admin: &mut AdminClient<Channel>,
    id: &str,
    usage: &[KeyUsage],
) -> tonic::Result<()> {
    admin
        .create_key(CreateKeyRequest {
            key_id: id.into(),
            usage: usage.iter().map(|u| *u as i32).collect(),
            labels: Default::default(),
        })
        .await
        .map(|_| ())
}

async fn health_state(c: &mut CryptoClient<Channel>) -> SealState {
    let h = c.health(HealthRequest {}).await.unwrap().into_inner();
    SealState::try_from(h.seal_state).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceremony_key_use_and_error_mapping() {
    let pki = Pki::new();
    let node = start(&pki.config(&pki.path().join("data"))).await;
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    let mut crypto = crypto_client(node.addr, &pki, &pki.crypto).await;

    // Uninitialized: crypto fails fast.
    expect(
        encrypt(&mut crypto, "k1", b"x").await.unwrap_err(),
        Code::Unavailable,
        Reason::Uninitialized,
    );

    // Init leaves it sealed; a second init is refused.
    let init = admin
        .init(passphrase_init(PASS))
        .await
        .unwrap()
        .into_inner();
    assert!(!init.store_id.is_empty());
    assert!(!init.audit_key_fingerprint.is_empty());
    expect(
        admin.init(passphrase_init(PASS)).await.unwrap_err(),
        Code::AlreadyExists,
        Reason::AlreadyInitialized,
    );
    assert_eq!(health_state(&mut crypto).await, SealState::Sealed);
    expect(
        encrypt(&mut crypto, "k1", b"x").await.unwrap_err(),
        Code::Unavailable,
        Reason::Sealed,
    );

    // A wrong passphrase is rejected (with a retry hint); the right one unseals.
    let rejected = unseal(&mut admin, "wrong passphrase").await.unwrap_err();
    expect(
        rejected.clone(),
        Code::Unauthenticated,
        Reason::UnsealRejected,
    );
    tokio::time::sleep(Duration::from_millis(retry_after_ms_of(&rejected) + 20)).await;
    assert_eq!(unseal(&mut admin, PASS).await.unwrap(), SealState::Unsealed);
    assert_eq!(health_state(&mut crypto).await, SealState::Unsealed);
    expect(
        unseal(&mut admin, PASS).await.unwrap_err(),
        Code::FailedPrecondition,
        Reason::AlreadyUnsealed,
    );

    // Keys: create, duplicate, round trip, metadata.
    create(&mut admin, "k1", &[]).await.unwrap();
    expect(
        create(&mut admin, "k1", &[]).await.unwrap_err(),
        Code::AlreadyExists,
        Reason::KeyExists,
    );
    let ct = encrypt(&mut crypto, "k1", b"hello hsm").await.unwrap();
    assert_eq!(ct.iv.len(), 12);
    assert_eq!(ct.tag.len(), 16);
    let pt = crypto
        .decrypt(decrypt_req("k1", &ct))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pt.plaintext, b"hello hsm");
    let md = crypto
        .get_key_metadata(GetKeyMetadataRequest {
            key_id: "k1".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(md.key_id, "k1");
    assert_eq!(md.state, KeyState::Enabled as i32);

    // Integrity check: absent unless asked; when asked, the CDIV of exactly what came back,
    // and the answer is an ordinary ciphertext.
    assert!(ct.integrity_value.is_empty());
    let checked = encrypt_checked(&mut crypto, "k1", b"hello hsm")
        .await
        .unwrap();
    assert_eq!(checked.integrity_value.len(), 32);
    assert_eq!(checked.integrity_value, cdiv_of(&checked));
    assert_ne!(checked.iv, ct.iv);
    let pt = crypto
        .decrypt(decrypt_req("k1", &checked))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pt.plaintext, b"hello hsm");
    // An encrypt-only key: a checked encrypt (which promises a later decrypt) is refused,
    // a plain encrypt works, decrypting stays refused.
    create(&mut admin, "enc-only", &[KeyUsage::Encrypt])
        .await
        .unwrap();
    expect(
        encrypt_checked(&mut crypto, "enc-only", b"x")
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        Reason::UsageNotAllowed,
    );
    let e = crypto
        .encrypt(EncryptRequest {
            key_id: "enc-only".into(),
            plaintext: b"x".to_vec(),
            aad: Vec::new(),
            request_id: "plain".into(),
            integrity_check: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(e.integrity_value.is_empty());
    expect(
        crypto
            .decrypt(decrypt_req("enc-only", &e))
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        Reason::UsageNotAllowed,
    );

    // Invalid ciphertext: a flipped tag bit, and the wrong AAD.
    let mut bad = decrypt_req("k1", &ct);
    bad.tag[0] ^= 1;
    expect(
        crypto.decrypt(bad).await.unwrap_err(),
        Code::InvalidArgument,
        Reason::InvalidCiphertext,
    );
    let mut bad = decrypt_req("k1", &ct);
    bad.aad = b"other".to_vec();
    expect(
        crypto.decrypt(bad).await.unwrap_err(),
        Code::InvalidArgument,
        Reason::InvalidCiphertext,
    );

    // Unknown key, usage not allowed, invalid argument.
    expect(
        encrypt(&mut crypto, "nope", b"x").await.unwrap_err(),
        Code::NotFound,
        Reason::KeyNotFound,
    );
    create(&mut admin, "wrapper", &[KeyUsage::Wrap, KeyUsage::Unwrap])
        .await
        .unwrap();
    for checked in [false, true] {
        let out = if checked {
            encrypt_checked(&mut crypto, "wrapper", b"x").await
        } else {
            encrypt(&mut crypto, "wrapper", b"x").await
        };
        expect(
            out.unwrap_err(),
            Code::PermissionDenied,
            Reason::UsageNotAllowed,
        );
    }
    expect(
        create(&mut admin, "bad id!", &[]).await.unwrap_err(),
        Code::InvalidArgument,
        Reason::InvalidArgument,
    );
    expect(
        admin
            .create_key(CreateKeyRequest {
                key_id: "k9".into(),
                usage: vec![42],
                labels: Default::default(),
            })
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        Reason::InvalidArgument,
    );

    // Disabled key, then enabled again.
    admin
        .disable_key(KeyIdRequest {
            key_id: "k1".into(),
        })
        .await
        .unwrap();
    expect(
        encrypt(&mut crypto, "k1", b"x").await.unwrap_err(),
        Code::FailedPrecondition,
        Reason::KeyDisabled,
    );
    expect(
        encrypt_checked(&mut crypto, "k1", b"x").await.unwrap_err(),
        Code::FailedPrecondition,
        Reason::KeyDisabled,
    );
    admin
        .enable_key(KeyIdRequest {
            key_id: "k1".into(),
        })
        .await
        .unwrap();
    encrypt(&mut crypto, "k1", b"x").await.unwrap();

    // Random bytes.
    let r = crypto
        .generate_random(GenerateRandomRequest { length: 32 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.random.len(), 32);

    // A denial is audited; the auditor can export the log and the public key.
    let mut crypto_as_admin = admin_client(node.addr, &pki, &pki.crypto).await;
    expect(
        crypto_as_admin
            .create_key(CreateKeyRequest {
                key_id: "evil".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        Code::PermissionDenied,
        Reason::PermissionDenied,
    );
    let mut auditor = admin_client(node.addr, &pki, &pki.auditor).await;
    let audit = auditor
        .export_audit(ExportAuditRequest {
            from_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!audit.records.is_empty());
    assert!(audit.head_seq > 0);
    let denial = audit
        .records
        .iter()
        .find(|r| r.contains("Admin/CreateKey") && r.contains("xks-front"))
        .expect("the denied CreateKey is in the audit log");
    assert!(!denial.contains(PASS));
    assert!(audit.records.iter().all(|r| !r.contains(PASS)));
    let pk = auditor
        .get_audit_public_key(GetAuditPublicKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pk.public_key.len(), 32);
    assert_eq!(pk.fingerprint, init.audit_key_fingerprint);

    // Seal: the kill switch.
    admin.seal(SealRequest {}).await.unwrap();
    expect(
        encrypt(&mut crypto, "k1", b"x").await.unwrap_err(),
        Code::Unavailable,
        Reason::Sealed,
    );
    let s = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.seal_state, SealState::Sealed as i32);
    assert_eq!(s.unseal_mode, "passphrase");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_keys_and_comes_back_sealed() {
    let pki = Pki::new();
    let cfg = pki.config(&pki.path().join("data"));
    let node = start(&cfg).await;
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    admin.init(passphrase_init(PASS)).await.unwrap();
    assert_eq!(unseal(&mut admin, PASS).await.unwrap(), SealState::Unsealed);
    create(&mut admin, "durable", &[]).await.unwrap();
    let mut crypto = crypto_client(node.addr, &pki, &pki.crypto).await;
    let ct = encrypt(&mut crypto, "durable", b"survives restarts")
        .await
        .unwrap();
    drop((admin, crypto));
    node.stop().await.unwrap();

    let node = start(&cfg).await;
    let mut crypto = crypto_client(node.addr, &pki, &pki.crypto).await;
    assert_eq!(health_state(&mut crypto).await, SealState::Sealed);
    expect(
        crypto
            .decrypt(decrypt_req("durable", &ct))
            .await
            .unwrap_err(),
        Code::Unavailable,
        Reason::Sealed,
    );
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    assert_eq!(unseal(&mut admin, PASS).await.unwrap(), SealState::Unsealed);
    let pt = crypto
        .decrypt(decrypt_req("durable", &ct))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pt.plaintext, b"survives restarts");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_the_same_store_fails_clearly() {
    let pki = Pki::new();
    let cfg = pki.config(&pki.path().join("data"));
    let node = start(&cfg).await;
    let err = try_start(&cfg).await.err().expect("second open must fail");
    assert!(
        matches!(
            &err,
            ServeError::Store {
                source: StorageError::Locked(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("store is in use by another process"),
        "{err}"
    );
    node.stop().await.unwrap();
    // Once the first one stopped, the store opens again.
    start(&cfg).await.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_unseal_reports_progress() {
    let pki = Pki::new();
    let node = start(&pki.config(&pki.path().join("data"))).await;
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    let pws = ["alpha pass", "bravo pass", "charlie pass"];
    let init = admin
        .init(InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 2,
                custodian_passphrases: pws.iter().map(|p| (*p).to_owned()).collect(),
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(init.shares.len(), 3);
    let first = admin
        .unseal(UnsealRequest {
            passphrase: pws[0].into(),
            share: init.shares[0].share.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.seal_state, SealState::Sealed as i32);
    assert_eq!((first.progress, first.threshold), (1, 2));
    let second = admin
        .unseal(UnsealRequest {
            passphrase: pws[2].into(),
            share: init.shares[2].share.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.seal_state, SealState::Unsealed as i32);
    // A garbage share is an invalid share once sealed again.
    admin.seal(SealRequest {}).await.unwrap();
    expect(
        admin
            .unseal(UnsealRequest {
                passphrase: pws[1].into(),
                share: b"not a share".to_vec(),
            })
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        Reason::InvalidShare,
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_traffic_needs_the_peer_role_and_a_refusal_is_audited() {
    use vhsm_proto::v1::peer_client::PeerClient;
    use vhsm_proto::v1::RaftMessage;
    let pki = Pki::new();
    let node = start(&pki.config(&pki.path().join("data"))).await;
    let mut admin = admin_client(node.addr, &pki, &pki.admin).await;
    admin.init(passphrase_init(PASS)).await.unwrap();
    // Every other role (and an unknown certificate) is refused Peer calls, before anything
    // is parsed.
    for id in [&pki.admin, &pki.crypto, &pki.auditor, &pki.stranger] {
        let ch = common::channel(node.addr, &pki.ca_pem, Some(id))
            .await
            .unwrap();
        let mut peer = PeerClient::new(ch);
        let e = peer
            .append_entries(RaftMessage {
                json: b"{}".to_vec(),
                data: Vec::new(),
            })
            .await
            .unwrap_err();
        expect(e, Code::PermissionDenied, Reason::PermissionDenied);
        let e = peer.propose(RaftMessage::default()).await.unwrap_err();
        expect(e, Code::PermissionDenied, Reason::PermissionDenied);
    }
    let log = admin
        .export_audit(ExportAuditRequest {
            from_seq: 1,
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner();
    let denied = log
        .records
        .iter()
        .filter(|r| r.contains("access.denied") && r.contains("Peer/Raft"))
        .count();
    assert!(denied >= 1, "{:?}", log.records);
    node.stop().await.unwrap();
}
