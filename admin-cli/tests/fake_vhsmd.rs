//! Drives the real vhsm-admin binary against an in-process fake Admin gRPC server over mutual TLS
//! with a PKI made by `pki init`: request shapes, passphrase-fd order, files, progress, exit codes.
//! (The real vhsmd is exercised end to end by the workspace `tests/` crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use vhsm_audit::{AuditRecord, GENESIS_PREV_HASH};
use vhsm_proto::status_with_reason;
use vhsm_proto::v1::admin_server::{Admin, AdminServer};
use vhsm_proto::v1::*;

/// What the fake appliance holds.
#[derive(Default)]
struct State {
    seal: i32,
    mode: String,
    threshold: u32,
    passphrase: String,
    custodians: Vec<String>,
    progress: Vec<u32>,
    keys: BTreeMap<String, KeyInfo>,
    audit: Vec<String>,
    last_rekey: Option<RekeyRequest>,
    /// A staged rekey: (staging id, the configuration it would put in force, its shares).
    rekey_staged: Option<(String, Box<State>, Vec<EncryptedShare>)>,
    last_commit: Option<RekeyCommitRequest>,
    /// Answer RekeyCommit with UNAVAILABLE (a lost response / dropped connection).
    fail_commit: bool,
    stagings: u32,
    staged: Option<Vec<u8>>,
    members: Vec<ClusterMember>,
}

#[derive(Clone)]
struct Fake {
    st: Arc<Mutex<State>>,
    audit_key: Arc<SigningKey>,
}

fn reason(code: Code, r: Reason, retry: u64) -> Status {
    status_with_reason(code, "fake says no", r, retry)
}

impl Fake {
    fn log(&self, s: &mut State, event: &str) {
        let prev = s
            .audit
            .last()
            .map(|l| AuditRecord::from_json_line(l).unwrap().hash_hex())
            .unwrap_or_else(|| GENESIS_PREV_HASH.to_string());
        let mut r = AuditRecord::new(
            s.audit.len() as u64 + 1,
            prev,
            1_700_000_000_000,
            event,
            "admin",
            BTreeMap::new(),
        );
        r.sign(&self.audit_key);
        s.audit.push(r.to_json_line());
    }

    fn unsealed(&self) -> Result<(), Status> {
        if self.st.lock().unwrap().seal != SealState::Unsealed as i32 {
            return Err(reason(Code::Unavailable, Reason::Sealed, 0));
        }
        Ok(())
    }

    fn init_store(s: &mut State, cfg: Option<InitRequest>) -> Result<InitResponse, Status> {
        let mode = cfg
            .and_then(|c| c.mode)
            .ok_or_else(|| Status::invalid_argument("mode"))?;
        s.custodians.clear();
        s.progress.clear();
        let mut shares = Vec::new();
        match mode {
            init_request::Mode::Passphrase(mut p) => {
                s.mode = "passphrase".into();
                s.threshold = 1;
                s.passphrase = std::mem::take(&mut p.passphrase);
            }
            init_request::Mode::Shares(mut m) => {
                s.mode = "shares".into();
                s.threshold = m.threshold;
                for (i, p) in std::mem::take(&mut m.custodian_passphrases)
                    .into_iter()
                    .enumerate()
                {
                    let index = i as u32 + 1;
                    shares.push(EncryptedShare {
                        index,
                        share: format!(
                            "share-{index}-{}",
                            s.custodians.len() + 100 * s.audit.len()
                        )
                        .into_bytes(),
                        fingerprint: format!("fp{index}"),
                    });
                    s.custodians.push(p);
                }
            }
        }
        s.seal = SealState::Sealed as i32;
        Ok(InitResponse {
            store_id: "0123abcd".into(),
            shares,
            audit_key_fingerprint: "3f2a:09bc".into(),
        })
    }
}

impl State {
    /// The unseal configuration part of a state (what a rekey changes).
    fn clone_config(&self) -> State {
        State {
            mode: self.mode.clone(),
            threshold: self.threshold,
            passphrase: self.passphrase.clone(),
            custodians: self.custodians.clone(),
            ..Default::default()
        }
    }
}

fn key_info(id: &str) -> KeyInfo {
    KeyInfo {
        key_id: id.into(),
        key_spec: "AES_256".into(),
        usage: vec![KeyUsage::Encrypt as i32, KeyUsage::Decrypt as i32],
        state: KeyState::Enabled as i32,
        current_version: 1,
        min_decryption_version: 1,
        origin: "generated".into(),
        ..Default::default()
    }
}

type R<T> = Result<Response<T>, Status>;

impl Fake {
    fn cluster(&self, s: &State) -> ClusterStatusResponse {
        ClusterStatusResponse {
            raft_id: 1,
            leader_id: 1,
            term: 3,
            commit_index: 10,
            applied_index: 10,
            members: s.members.clone(),
            serving: true,
            lease_remaining_ms: 1500,
            not_serving_reason: String::new(),
            last_snapshot_index: 0,
            role: "leader".into(),
            witness: false,
        }
    }
}

#[tonic::async_trait]
impl Admin for Fake {
    async fn cluster_status(&self, _: Request<ClusterStatusRequest>) -> R<ClusterStatusResponse> {
        let s = self.st.lock().unwrap();
        Ok(Response::new(self.cluster(&s)))
    }

    async fn add_node(&self, r: Request<AddNodeRequest>) -> R<ClusterStatusResponse> {
        let mut s = self.st.lock().unwrap();
        let r = r.into_inner();
        let raft_id = 1 + s.members.len() as u64;
        s.members.push(ClusterMember {
            raft_id,
            address: r.address,
            voter: !r.learner_only,
            matched_index: 10,
        });
        Ok(Response::new(self.cluster(&s)))
    }

    async fn remove_node(&self, r: Request<RemoveNodeRequest>) -> R<ClusterStatusResponse> {
        let mut s = self.st.lock().unwrap();
        let id = r.into_inner().raft_id;
        if !s.members.iter().any(|m| m.raft_id == id) {
            return Err(Status::failed_precondition(
                "membership change refused: not a member",
            ));
        }
        s.members.retain(|m| m.raft_id != id);
        Ok(Response::new(self.cluster(&s)))
    }

    async fn status(&self, _: Request<StatusRequest>) -> R<StatusResponse> {
        let s = self.st.lock().unwrap();
        Ok(Response::new(StatusResponse {
            node_id: "fake-1".into(),
            seal_state: s.seal,
            unseal_mode: s.mode.clone(),
            threshold: s.threshold,
            share_count: s.custodians.len() as u32,
            unseal_progress: s.progress.len() as u32,
            key_count: s.keys.len() as u64,
            version: "0.0.0-fake".into(),
            store_id: if s.mode.is_empty() {
                String::new()
            } else {
                "0123abcd".into()
            },
            audit_head_seq: s.audit.len() as u64,
            audit_head_hash: String::new(),
            restore_pending: s.staged.is_some(),
            rekey_staging_id: s
                .rekey_staged
                .as_ref()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            rekey_staging_expires_at_ms: if s.rekey_staged.is_some() {
                1_700_000_900_000
            } else {
                0
            },
        }))
    }
    async fn init(&self, r: Request<InitRequest>) -> R<InitResponse> {
        let mut s = self.st.lock().unwrap();
        if s.seal != SealState::Uninitialized as i32 {
            return Err(reason(Code::AlreadyExists, Reason::AlreadyInitialized, 0));
        }
        let out = Self::init_store(&mut s, Some(r.into_inner()))?;
        self.log(&mut s, "init");
        Ok(Response::new(out))
    }
    async fn unseal(&self, r: Request<UnsealRequest>) -> R<UnsealResponse> {
        let r = r.into_inner();
        let mut s = self.st.lock().unwrap();
        if s.seal == SealState::Unsealed as i32 {
            return Err(reason(Code::FailedPrecondition, Reason::AlreadyUnsealed, 0));
        }
        if s.mode == "passphrase" {
            if r.passphrase != s.passphrase {
                return Err(reason(Code::Unauthenticated, Reason::UnsealRejected, 1500));
            }
        } else {
            let text = String::from_utf8(r.share.clone()).unwrap_or_default();
            let idx: u32 = text
                .strip_prefix("share-")
                .and_then(|t| t.split('-').next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| reason(Code::InvalidArgument, Reason::InvalidShare, 0))?;
            if s.custodians.get(idx as usize - 1) != Some(&r.passphrase) {
                return Err(reason(Code::Unauthenticated, Reason::UnsealRejected, 0));
            }
            if s.progress.contains(&idx) {
                return Err(reason(Code::InvalidArgument, Reason::InvalidShare, 0));
            }
            s.progress.push(idx);
        }
        let progress = s.progress.len() as u32;
        if s.mode == "passphrase" || progress >= s.threshold {
            s.seal = SealState::Unsealed as i32;
            s.progress.clear();
            if let Some(b) = s.staged.take() {
                if b != b"backup-bytes" {
                    s.seal = SealState::Uninitialized as i32;
                    return Err(reason(Code::InvalidArgument, Reason::InvalidBackup, 0));
                }
            }
        }
        Ok(Response::new(UnsealResponse {
            seal_state: s.seal,
            progress,
            threshold: s.threshold,
        }))
    }
    async fn reset_unseal(&self, _: Request<ResetUnsealRequest>) -> R<UnsealResponse> {
        let mut s = self.st.lock().unwrap();
        s.progress.clear();
        Ok(Response::new(UnsealResponse {
            seal_state: s.seal,
            progress: 0,
            threshold: s.threshold,
        }))
    }
    async fn seal(&self, _: Request<SealRequest>) -> R<SealResponse> {
        let mut s = self.st.lock().unwrap();
        s.seal = SealState::Sealed as i32;
        self.log(&mut s, "seal");
        Ok(Response::new(SealResponse {}))
    }
    async fn rekey(&self, r: Request<RekeyRequest>) -> R<InitResponse> {
        let mut r = r.into_inner();
        let mut s = self.st.lock().unwrap();
        s.last_rekey = Some(r.clone());
        let out = Self::init_store(&mut s, r.new_config.take())?;
        s.seal = SealState::Unsealed as i32;
        Ok(Response::new(out))
    }
    async fn rekey_stage(&self, r: Request<RekeyRequest>) -> R<RekeyStageResponse> {
        self.unsealed()?;
        let mut r = r.into_inner();
        let mut s = self.st.lock().unwrap();
        s.last_rekey = Some(r.clone());
        s.stagings += 1;
        // The new configuration is made on a scratch copy: nothing changes until the commit.
        let mut next = State {
            audit: s.audit.clone(),
            ..Default::default()
        };
        next.audit.push(format!("staging {}", s.stagings));
        let out = Self::init_store(&mut next, r.new_config.take())?;
        let id = format!("5eed{:04}", s.stagings);
        self.log(&mut s, "rekey.staged");
        s.rekey_staged = Some((
            id.clone(),
            Box::new(next.clone_config()),
            out.shares.clone(),
        ));
        Ok(Response::new(RekeyStageResponse {
            store_id: out.store_id,
            shares: out.shares,
            audit_key_fingerprint: out.audit_key_fingerprint,
            staging_id: id,
            expires_at_ms: 1_700_000_900_000,
            unseal_mode: next.mode.clone(),
            threshold: next.threshold,
            share_count: next.custodians.len().max(1) as u32,
        }))
    }
    async fn rekey_commit(&self, r: Request<RekeyCommitRequest>) -> R<RekeyCommitResponse> {
        self.unsealed()?;
        let r = r.into_inner();
        let mut s = self.st.lock().unwrap();
        s.last_commit = Some(r.clone());
        if s.fail_commit {
            return Err(Status::unavailable("connection reset"));
        }
        let Some((id, next, shares)) = s.rekey_staged.take() else {
            return Err(reason(Code::FailedPrecondition, Reason::RekeyNotStaged, 0));
        };
        let proven = if id != r.staging_id {
            Err(reason(Code::FailedPrecondition, Reason::RekeyNotStaged, 0))
        } else if next.mode == "passphrase" {
            if r.new_passphrase == next.passphrase {
                Ok(())
            } else {
                Err(reason(Code::Unauthenticated, Reason::UnsealRejected, 0))
            }
        } else if (r.shares.len() as u32) < next.threshold {
            Err(reason(Code::InvalidArgument, Reason::InvalidArgument, 0))
        } else if r.shares.iter().all(|sub| {
            shares
                .iter()
                .zip(&next.custodians)
                .any(|(sh, pass)| sh.share == sub.share && *pass == sub.passphrase)
        }) {
            Ok(())
        } else {
            Err(reason(Code::Unauthenticated, Reason::UnsealRejected, 0))
        };
        if let Err(e) = proven {
            s.rekey_staged = Some((id, next, shares));
            return Err(e);
        }
        s.mode = next.mode.clone();
        s.threshold = next.threshold;
        s.passphrase = next.passphrase.clone();
        s.custodians = next.custodians.clone();
        self.log(&mut s, "rekey.committed");
        Ok(Response::new(RekeyCommitResponse {
            store_id: "0123abcd".into(),
            epoch: 1,
            unseal_mode: s.mode.clone(),
            threshold: s.threshold,
            share_count: s.custodians.len().max(1) as u32,
        }))
    }
    async fn rekey_abort(&self, r: Request<RekeyAbortRequest>) -> R<RekeyAbortResponse> {
        let mut s = self.st.lock().unwrap();
        match &s.rekey_staged {
            Some((id, _, _)) if *id == r.get_ref().staging_id => {
                s.rekey_staged = None;
                self.log(&mut s, "rekey.aborted");
                Ok(Response::new(RekeyAbortResponse {}))
            }
            _ => Err(reason(Code::FailedPrecondition, Reason::RekeyNotStaged, 0)),
        }
    }
    async fn create_key(&self, r: Request<CreateKeyRequest>) -> R<KeyResponse> {
        self.unsealed()?;
        let r = r.into_inner();
        let mut s = self.st.lock().unwrap();
        if s.keys.contains_key(&r.key_id) {
            return Err(reason(Code::AlreadyExists, Reason::KeyExists, 0));
        }
        let mut k = key_info(&r.key_id);
        k.usage = r.usage;
        k.labels = r.labels;
        s.keys.insert(r.key_id, k.clone());
        self.log(&mut s, "key.create");
        Ok(Response::new(KeyResponse { key: Some(k) }))
    }
    async fn new_import_key(&self, _: Request<NewImportKeyRequest>) -> R<NewImportKeyResponse> {
        self.unsealed()?;
        Ok(Response::new(NewImportKeyResponse {
            import_key_id: "imp-1".into(),
            import_key: vec![0x5a; 32],
            expires_at_ms: 1_700_000_600_000,
        }))
    }
    async fn import_key(&self, r: Request<ImportKeyRequest>) -> R<KeyResponse> {
        let r = r.into_inner();
        if r.wrapped_key.len() != 40 || r.import_key_id != "imp-1" {
            return Err(reason(Code::InvalidArgument, Reason::InvalidArgument, 0));
        }
        let mut k = key_info(&r.key_id);
        k.origin = "imported".into();
        Ok(Response::new(KeyResponse { key: Some(k) }))
    }
    async fn list_keys(&self, _: Request<ListKeysRequest>) -> R<ListKeysResponse> {
        self.unsealed()?;
        let s = self.st.lock().unwrap();
        Ok(Response::new(ListKeysResponse {
            keys: s.keys.values().cloned().collect(),
        }))
    }
    async fn describe_key(&self, r: Request<KeyIdRequest>) -> R<KeyResponse> {
        self.unsealed()?;
        let s = self.st.lock().unwrap();
        let k = s
            .keys
            .get(&r.into_inner().key_id)
            .cloned()
            .ok_or_else(|| reason(Code::NotFound, Reason::KeyNotFound, 0))?;
        Ok(Response::new(KeyResponse { key: Some(k) }))
    }
    async fn rotate_key(&self, r: Request<KeyIdRequest>) -> R<KeyResponse> {
        self.unsealed()?;
        let mut s = self.st.lock().unwrap();
        let k = s
            .keys
            .get_mut(&r.into_inner().key_id)
            .ok_or_else(|| reason(Code::NotFound, Reason::KeyNotFound, 0))?;
        k.current_version += 1;
        Ok(Response::new(KeyResponse {
            key: Some(k.clone()),
        }))
    }
    async fn set_min_decryption_version(
        &self,
        _: Request<SetMinDecryptionVersionRequest>,
    ) -> R<KeyResponse> {
        Err(reason(
            Code::InvalidArgument,
            Reason::KeyVersionNotAllowed,
            0,
        ))
    }
    async fn enable_key(&self, _: Request<KeyIdRequest>) -> R<KeyResponse> {
        Err(reason(Code::PermissionDenied, Reason::PermissionDenied, 0))
    }
    async fn disable_key(&self, _: Request<KeyIdRequest>) -> R<KeyResponse> {
        Err(reason(Code::Internal, Reason::Corruption, 0))
    }
    async fn schedule_key_deletion(
        &self,
        r: Request<ScheduleKeyDeletionRequest>,
    ) -> R<KeyResponse> {
        let r = r.into_inner();
        let mut k = key_info(&r.key_id);
        k.state = KeyState::PendingDeletion as i32;
        k.deletion_due_at_ms = 1_700_000_000_000 + u64::from(r.waiting_days) * 86_400_000;
        Ok(Response::new(KeyResponse { key: Some(k) }))
    }
    async fn cancel_key_deletion(&self, _: Request<KeyIdRequest>) -> R<KeyResponse> {
        Err(reason(Code::ResourceExhausted, Reason::RateLimited, 2500))
    }
    async fn create_backup(&self, _: Request<CreateBackupRequest>) -> R<CreateBackupResponse> {
        self.unsealed()?;
        let backup = b"backup-bytes".to_vec();
        Ok(Response::new(CreateBackupResponse {
            sha256: hex::encode(Sha256::digest(&backup)),
            backup,
        }))
    }
    async fn restore_backup(&self, r: Request<RestoreBackupRequest>) -> R<RestoreBackupResponse> {
        let mut s = self.st.lock().unwrap();
        if s.seal != SealState::Uninitialized as i32 {
            return Err(reason(Code::AlreadyExists, Reason::AlreadyInitialized, 0));
        }
        s.staged = Some(r.into_inner().backup);
        s.mode = "passphrase".into();
        s.passphrase = "restored store passphrase".into();
        s.threshold = 1;
        Ok(Response::new(RestoreBackupResponse {
            store_id: "0123abcd".into(),
            unseal_mode: "passphrase".into(),
            threshold: 1,
        }))
    }
    async fn export_audit(&self, r: Request<ExportAuditRequest>) -> R<ExportAuditResponse> {
        let r = r.into_inner();
        let s = self.st.lock().unwrap();
        // Pages of at most 2 records, so the client must page.
        let limit = if r.limit == 0 { 2 } else { r.limit.min(2) } as usize;
        let from = r.from_seq.max(1) as usize;
        let records = s.audit.iter().skip(from - 1).take(limit).cloned().collect();
        Ok(Response::new(ExportAuditResponse {
            records,
            head_seq: s.audit.len() as u64,
        }))
    }
    async fn get_audit_public_key(
        &self,
        _: Request<GetAuditPublicKeyRequest>,
    ) -> R<GetAuditPublicKeyResponse> {
        Ok(Response::new(GetAuditPublicKeyResponse {
            public_key: self.audit_key.verifying_key().to_bytes().to_vec(),
            fingerprint: "x".into(),
        }))
    }
    async fn key_provenance(&self, _: Request<KeyProvenanceRequest>) -> R<KeyProvenanceResponse> {
        Err(Status::unimplemented("not faked"))
    }
    // Quorum approval is tested against the real vhsmd (tests/tests/approvals.rs).
    async fn get_approval_policy(
        &self,
        _: Request<GetApprovalPolicyRequest>,
    ) -> R<ApprovalPolicyResponse> {
        Err(Status::unimplemented("not faked"))
    }
    async fn set_approval_policy(
        &self,
        _: Request<SetApprovalPolicyRequest>,
    ) -> R<ApprovalPolicyResponse> {
        Err(Status::unimplemented("not faked"))
    }
    async fn propose(&self, _: Request<ProposeRequest>) -> R<ProposalResponse> {
        Err(Status::unimplemented("not faked"))
    }
    async fn list_proposals(&self, _: Request<ListProposalsRequest>) -> R<ListProposalsResponse> {
        Err(Status::unimplemented("not faked"))
    }
    async fn get_proposal(&self, _: Request<GetProposalRequest>) -> R<ProposalResponse> {
        Err(Status::unimplemented("not faked"))
    }
    async fn decide_proposal(
        &self,
        _: Request<DecideProposalRequest>,
    ) -> R<DecideProposalResponse> {
        Err(Status::unimplemented("not faked"))
    }
}

/// A fake node with its PKI; the server runs on its own runtime thread.
struct Node {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    pki: PathBuf,
    endpoint: String,
    fake: Fake,
    _rt: tokio::runtime::Runtime,
}

fn start() -> Node {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let pki = dir.join("pki");
    let o = Command::new(env!("CARGO_BIN_EXE_vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(o.status.success());
    let fake = Fake {
        st: Arc::new(Mutex::new(State {
            seal: SealState::Uninitialized as i32,
            ..Default::default()
        })),
        audit_key: Arc::new(SigningKey::from_bytes(&[3u8; 32])),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("vhsmd.crt"), read("vhsmd.key")))
        .client_ca_root(Certificate::from_pem(read("ca.crt")));
    let svc = AdminServer::new(fake.clone());
    rt.spawn(async move {
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Node {
        _dir: d,
        dir,
        pki,
        endpoint: format!("https://127.0.0.1:{port}"),
        fake,
        _rt: rt,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Node {
    fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vhsm-admin"));
        c.arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--pki-dir")
            .arg(&self.pki)
            .args(args)
            .env_remove("VHSM_ENDPOINT")
            .env_remove("VHSM_PKI_DIR");
        if !stdin.is_empty() {
            c.args(["--passphrase-fd", "0"]);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap(),
            stdout: String::from_utf8_lossy(&stdout).into(),
            stderr: String::from_utf8_lossy(&stderr).into(),
        }
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let r = self.run(args, stdin);
        assert_eq!(r.code, 0, "{args:?}: {}\n{}", r.stdout, r.stderr);
        r.stdout
    }

    fn json(&self, args: &[&str], stdin: &str) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, stdin)).unwrap()
    }

    fn code(&self, args: &[&str], stdin: &str) -> i32 {
        self.run(args, stdin).code
    }
}

fn lines(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s}\n")).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const C: [&str; 3] = [
    "custodian one pass",
    "custodian two pass",
    "custodian three pass",
];

#[test]
fn quorum_ceremony_init_unseal_seal_rekey() {
    let n = start();
    let shares = n.dir.join("shares");
    let s = shares.to_str().unwrap();
    let v = n.json(&["status"], "");
    assert_eq!(v["seal_state"], "uninitialized");
    assert_eq!(v["initialized"], false);

    // Too few passphrase lines: usage error, nothing sent.
    assert_eq!(
        n.code(
            &[
                "init",
                "--shares",
                "3",
                "--threshold",
                "2",
                "--share-dir",
                s
            ],
            &lines(&C[..2])
        ),
        1
    );
    assert_eq!(
        n.fake.st.lock().unwrap().seal,
        SealState::Uninitialized as i32
    );

    let out = n.json(
        &[
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-dir",
            s,
        ],
        &lines(&C),
    );
    assert_eq!(out["store_id"], "0123abcd");
    assert_eq!(out["audit_key_fingerprint"], "3f2a:09bc");
    assert_eq!(out["shares"][2]["fingerprint"], "fp3");
    assert_eq!(n.fake.st.lock().unwrap().custodians, C.to_vec());
    for k in 1..=3 {
        let f = shares.join(format!("share-{k}-of-3.vhsmshare"));
        assert_eq!(mode(&f), 0o600);
    }
    let share = |k: u32| {
        shares
            .join(format!("share-{k}-of-3.vhsmshare"))
            .display()
            .to_string()
    };

    // Re-init refused before reading any passphrase.
    let r = n.run(&["init", "--passphrase"], &lines(&["whatever passphrase"]));
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stderr.contains("rekey"), "{}", r.stderr);
    // A sealed appliance refuses key operations: exit 3.
    assert_eq!(n.code(&["key", "list"], ""), 3);

    // Wrong passphrase: exit 4.
    assert_eq!(
        n.code(&["unseal", "--share", &share(1)], &lines(&["wrong one"])),
        4
    );
    // Passphrase mode unseal on a quorum store: usage error.
    assert_eq!(n.code(&["unseal"], &lines(&["x"])), 1);
    let r = n.run(&["unseal", "--share", &share(1)], &lines(&[C[0]]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("progress 1 of 2"), "{}", r.stdout);
    assert_eq!(n.json(&["status"], "")["unseal_progress"], 1);
    // Duplicate share: rejected (exit 4).
    assert_eq!(
        n.code(&["unseal", "--share", &share(1)], &lines(&[C[0]])),
        4
    );
    n.ok(&["unseal", "--reset"], "");
    assert_eq!(n.json(&["status"], "")["unseal_progress"], 0);
    // Two shares in one run, passphrases in order.
    let r = n.run(
        &["unseal", "--share", &share(3), "--share", &share(2)],
        &lines(&[C[2], C[1]]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("UNSEALED"), "{}", r.stdout);
    assert_eq!(n.json(&["status"], "")["seal_state"], "unsealed");
    assert_eq!(n.code(&["unseal"], &lines(&["x"])), 7);

    // Seal needs --yes without a terminal.
    assert_eq!(n.code(&["seal"], ""), 1);
    assert_eq!(n.json(&["status"], "")["seal_state"], "unsealed");
    n.ok(&["seal", "--yes"], "");
    assert_eq!(n.json(&["status"], "")["seal_state"], "sealed");
    // Rekey needs an unsealed store.
    let r = n.run(
        &[
            "rekey",
            "--old-share",
            &share(1),
            "--old-share",
            &share(3),
            "--new-passphrase",
        ],
        &lines(&[C[0], C[2], "brand new passphrase", "brand new passphrase"]),
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    n.ok(
        &["unseal", "--share", &share(1), "--share", &share(2)],
        &lines(&[C[0], C[1]]),
    );

    // Rekey with two old shares to passphrase mode: old share passphrases, then new twice.
    let r = n.run(
        &[
            "rekey",
            "--old-share",
            &share(1),
            "--old-share",
            &share(3),
            "--new-passphrase",
        ],
        &lines(&[C[0], C[2], "brand new passphrase", "brand new passphrase"]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut req = n.fake.st.lock().unwrap().last_rekey.clone().unwrap();
    assert!(req.old_passphrase.is_empty());
    assert_eq!(req.old_shares.len(), 2);
    assert_eq!(req.old_shares[1].passphrase, C[2]);
    assert!(String::from_utf8_lossy(&req.old_shares[1].share).starts_with("share-3-"));
    match req.new_config.take().unwrap().mode.unwrap() {
        init_request::Mode::Passphrase(p) => assert_eq!(p.passphrase, "brand new passphrase"),
        other => panic!("{other:?}"),
    }
    // The commit proved the new passphrase (reused from this run, not asked again).
    let commit = n.fake.st.lock().unwrap().last_commit.clone().unwrap();
    assert_eq!(commit.new_passphrase, "brand new passphrase");
    assert!(commit.shares.is_empty());
    assert_eq!(n.fake.st.lock().unwrap().mode, "passphrase");
    assert!(r.stderr.contains("committed"), "{}", r.stderr);
    // Mismatched confirmation: refused locally.
    assert_eq!(
        n.code(
            &["rekey", "--old-passphrase", "--new-passphrase"],
            &lines(&[
                "brand new passphrase",
                "newer passphrase 1",
                "newer passphrase 2"
            ])
        ),
        1
    );
    // Share files of a new quorum must not overwrite existing ones.
    assert_eq!(
        n.code(
            &[
                "rekey",
                "--old-passphrase",
                "--shares",
                "3",
                "--threshold",
                "2",
                "--share-dir",
                s
            ],
            &lines(&["brand new passphrase", C[0], C[1], C[2]])
        ),
        7
    );
}

#[test]
fn passphrase_mode_keys_backup_restore_audit() {
    let n = start();
    let pass = "the appliance passphrase";
    n.ok(&["init", "--passphrase"], &lines(&[pass, pass]));
    assert_eq!(n.fake.st.lock().unwrap().passphrase, pass);
    let r = n.run(&["unseal"], &lines(&["wrong passphrase"]));
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("retry after 1.5 s"), "{}", r.stderr);
    n.ok(&["unseal"], &lines(&[pass]));

    // keys
    let k = n.json(
        &[
            "key",
            "create",
            "orders-key",
            "--usage",
            "encrypt,wrap",
            "--label",
            "team=pay",
        ],
        "",
    );
    assert_eq!(k["state"], "ENABLED");
    assert_eq!(k["usage"], serde_json::json!(["encrypt", "wrap"]));
    assert_eq!(k["labels"]["team"], "pay");
    assert_eq!(n.code(&["key", "create", "orders-key"], ""), 7);
    assert_eq!(n.code(&["key", "create", "bad id!"], ""), 1);
    assert_eq!(
        n.json(&["key", "rotate", "orders-key"], "")["current_version"],
        2
    );
    assert_eq!(n.code(&["key", "show", "nope"], ""), 6);
    assert_eq!(n.code(&["key", "enable", "orders-key"], ""), 5);
    assert_eq!(n.code(&["key", "disable", "orders-key"], ""), 8);
    assert_eq!(
        n.code(&["key", "min-decryption-version", "orders-key", "3"], ""),
        7
    );
    let r = n.run(&["key", "cancel-deletion", "orders-key"], "");
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("retry after 2.5 s"), "{}", r.stderr);
    let p = n.json(
        &["key", "schedule-deletion", "orders-key", "--days", "7"],
        "",
    );
    assert_eq!(p["state"], "PENDING_DELETION");
    assert_eq!(p["deletion_due_at"], "2023-11-21T22:13:20.000Z");
    let list = n.ok(&["key", "list"], "");
    assert!(
        list.starts_with("KEY ID") && list.contains("orders-key"),
        "{list}"
    );

    // import key
    let ik = n.dir.join("import.key");
    let v = n.json(&["key", "import-key", "--out", ik.to_str().unwrap()], "");
    assert_eq!(v["import_key_id"], "imp-1");
    assert_eq!(std::fs::read(&ik).unwrap(), vec![0x5a; 32]);
    assert_eq!(mode(&ik), 0o600);
    let wrapped = n.dir.join("key.wrapped");
    std::fs::write(&wrapped, [1u8; 40]).unwrap();
    let v = n.json(
        &[
            "key",
            "import",
            "imported",
            "--import-key-id",
            "imp-1",
            "--wrapped",
            wrapped.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(v["origin"], "imported");

    // backup
    let b = n.dir.join("store.vhsmbak");
    let v = n.json(&["backup", "create", "--out", b.to_str().unwrap()], "");
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(b"backup-bytes")));
    assert_eq!(mode(&b), 0o600);
    // restore refuses a non-empty target
    assert_eq!(
        n.code(
            &["backup", "restore", "--in", b.to_str().unwrap()],
            &lines(&[pass])
        ),
        7
    );

    // audit export pages through (server pages are 2 records) and verifies offline
    n.ok(&["key", "create", "second-key"], "");
    n.ok(&["key", "create", "third-key"], "");
    let log = n.dir.join("audit.jsonl");
    let v = n.json(&["audit", "export", "--out", log.to_str().unwrap()], "");
    let count = n.fake.st.lock().unwrap().audit.len();
    assert!(count >= 3, "{count}");
    assert_eq!(v["records"], count);
    let pubf = format!("{}.pub", log.display());
    let r = n.run(
        &[
            "audit",
            "verify",
            "--log",
            log.to_str().unwrap(),
            "--public-key",
            &pubf,
        ],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with(&format!("OK: {count} records, {count} signed")),
        "{}",
        r.stdout
    );
    let tail = n.json(&["audit", "tail", "-n", "2"], "");
    let arr = tail.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[1]["seq"], count);
}

#[test]
fn restore_onto_an_empty_node_unseals_it() {
    let n = start();
    let good = n.dir.join("good.vhsmbak");
    std::fs::write(&good, b"backup-bytes").unwrap();
    let bad = n.dir.join("bad.vhsmbak");
    std::fs::write(&bad, b"backup-bytez").unwrap();
    let r = n.run(
        &["backup", "restore", "--in", bad.to_str().unwrap()],
        &lines(&["restored store passphrase"]),
    );
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert_eq!(n.json(&["status"], "")["seal_state"], "uninitialized");
    let v = n.json(
        &["backup", "restore", "--in", good.to_str().unwrap()],
        &lines(&["restored store passphrase"]),
    );
    assert_eq!(v["seal_state"], "unsealed");
    assert_eq!(n.json(&["status"], "")["seal_state"], "unsealed");
}

#[test]
fn clone_copies_to_another_node() {
    let src = start();
    let dst = start();
    let pass = "the appliance passphrase";
    src.ok(&["init", "--passphrase"], &lines(&[pass, pass]));
    src.ok(&["unseal"], &lines(&[pass]));
    // The target uses its own PKI: --to-pki-dir.
    let r = src.run(
        &[
            "clone",
            "--to",
            &dst.endpoint,
            "--to-pki-dir",
            dst.pki.to_str().unwrap(),
        ],
        &lines(&["restored store passphrase"]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(dst.json(&["status"], "")["seal_state"], "unsealed");
    // Same PKI as the source cannot talk to the other CA's node: unreachable (TLS), exit 2.
    let other = start();
    let r = src.run(&["clone", "--to", &other.endpoint], &lines(&["x"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    // A non-empty target is refused.
    let r = src.run(
        &[
            "clone",
            "--to",
            &dst.endpoint,
            "--to-pki-dir",
            dst.pki.to_str().unwrap(),
        ],
        &lines(&["x"]),
    );
    assert_eq!(r.code, 7, "{}", r.stderr);
}

#[test]
fn rejected_passphrases_are_not_echoed_in_output() {
    let n = start();
    let pass = "secret-marker-passphrase";
    n.ok(&["init", "--passphrase"], &lines(&[pass, pass]));
    let r = n.run(&["unseal"], &lines(&["secret-marker-wrong"]));
    assert_eq!(r.code, 4);
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains("secret-marker"), "{text}");
    }
}

#[test]
fn cluster_status_add_and_remove_nodes() {
    let n = start();
    n.ok(
        &["cluster", "add-node", "--address", "https://10.0.0.2:7443"],
        "",
    );
    let v = n.json(
        &[
            "cluster",
            "add-node",
            "--address",
            "https://10.0.0.3:7443",
            "--learner",
        ],
        "",
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["members"][1]["voter"], false);
    let table = n.ok(&["cluster", "status"], "");
    assert!(table.contains("https://10.0.0.2:7443"), "{table}");
    assert!(table.contains("learner"), "{table}");
    assert!(table.contains("yes (lease 1500 ms left)"), "{table}");
    let v = n.json(&["cluster", "remove-node", "--raft-id", "2"], "");
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    // A non-member is refused with the invalid-state exit code; a bad address never connects.
    assert_eq!(n.code(&["cluster", "remove-node", "--raft-id", "9"], ""), 7);
    assert_eq!(
        n.code(&["cluster", "add-node", "--address", "10.0.0.4:7443"], ""),
        1
    );
}

#[test]
fn rekey_stages_writes_proves_and_commits() {
    let n = start();
    let pass = "the appliance passphrase";
    n.ok(&["init", "--passphrase"], &lines(&[pass, pass]));
    n.ok(&["unseal"], &lines(&[pass]));
    let dir = n.dir.join("new-shares");
    let d = dir.to_str().unwrap();
    let args = [
        "rekey",
        "--old-passphrase",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--share-dir",
        d,
    ];
    let r = n.run(
        &[&args[..], &["-o", "json"]].concat(),
        &lines(&[pass, C[0], C[1], C[2]]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    for step in [
        "staged rekey 5eed0001",
        "writing 3 share files",
        "proving possession of 2",
        "committed",
    ] {
        assert!(r.stderr.contains(step), "{step}: {}", r.stderr);
    }
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // The one-shot output's fields are all still there, plus the staging and commit.
    assert_eq!(v["store_id"], "0123abcd");
    assert_eq!(v["audit_key_fingerprint"], "3f2a:09bc");
    assert_eq!(v["shares"].as_array().unwrap().len(), 3);
    assert_eq!(v["shares"][1]["fingerprint"], "fp2");
    assert_eq!(v["staging_id"], "5eed0001");
    assert_eq!(v["committed"], true);
    assert_eq!(
        (v["threshold"].as_u64(), v["share_count"].as_u64()),
        (Some(2), Some(3))
    );
    // The commit carried 2 of the files as read back from disk, with their custodians' passphrases.
    let commit = n.fake.st.lock().unwrap().last_commit.clone().unwrap();
    assert_eq!(commit.staging_id, "5eed0001");
    assert_eq!(commit.shares.len(), 2);
    for (k, sub) in commit.shares.iter().enumerate() {
        let f = dir.join(format!("share-{}-of-3.vhsmshare", k + 1));
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), sub.share);
        assert_eq!(sub.passphrase, C[k]);
    }
    assert_eq!(n.fake.st.lock().unwrap().mode, "shares");
    let new_share = |k: u32| {
        dir.join(format!("share-{k}-of-3.vhsmshare"))
            .display()
            .to_string()
    };

    // A lost commit response: the CLI says the OLD configuration still works and how to finish.
    n.fake.st.lock().unwrap().fail_commit = true;
    let third = n.dir.join("third");
    let t = third.to_str().unwrap();
    let r = n.run(
        &[
            "rekey",
            "--old-share",
            &new_share(1),
            "--old-share",
            &new_share(3),
            "--shares",
            "2",
            "--threshold",
            "2",
            "--share-dir",
            t,
        ],
        &lines(&[C[0], C[2], "final custodian 1", "final custodian 2"]),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("OLD passphrase / shares still work"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("rekey --commit 5eed0002"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(n.fake.st.lock().unwrap().threshold, 2);
    assert_eq!(n.fake.st.lock().unwrap().custodians, C.to_vec());
    let st = n.json(&["status"], "");
    assert_eq!(st["rekey_staging_id"], "5eed0002");
    n.fake.st.lock().unwrap().fail_commit = false;

    // A wrong staging id: exit 7, nothing changes.
    let f1 = third.join("share-1-of-2.vhsmshare").display().to_string();
    let f2 = third.join("share-2-of-2.vhsmshare").display().to_string();
    let r = n.run(
        &[
            "rekey", "--commit", "5eed9999", "--share", &f1, "--share", &f2,
        ],
        &lines(&["final custodian 1", "final custodian 2"]),
    );
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(
        r.stderr.contains("OLD passphrase / shares still work"),
        "{}",
        r.stderr
    );
    // Too few shares: refused by the appliance.
    assert_ne!(
        n.code(
            &["rekey", "--commit", "5eed0002", "--share", &f1],
            &lines(&["final custodian 1"])
        ),
        0
    );
    assert_eq!(n.fake.st.lock().unwrap().custodians, C.to_vec());
    // The custodians finish the interrupted rekey with the files that were written.
    let v = n.json(
        &[
            "rekey", "--commit", "5eed0002", "--share", &f2, "--share", &f1,
        ],
        &lines(&["final custodian 2", "final custodian 1"]),
    );
    assert_eq!(v["committed"], true);
    assert_eq!(v["staging_id"], "5eed0002");
    assert_eq!(v["share_count"], 2);
    assert_eq!(
        n.fake.st.lock().unwrap().custodians,
        vec!["final custodian 1", "final custodian 2"]
    );

    // Passphrase mode through --commit and an abort.
    n.fake.st.lock().unwrap().fail_commit = true;
    let r = n.run(
        &[
            "rekey",
            "--old-share",
            &f1,
            "--old-share",
            &f2,
            "--new-passphrase",
        ],
        &lines(&[
            "final custodian 1",
            "final custodian 2",
            "yet another passphrase",
            "yet another passphrase",
        ]),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    n.fake.st.lock().unwrap().fail_commit = false;
    assert_eq!(
        n.code(
            &["rekey", "--commit", "5eed0003", "--new-passphrase"],
            &lines(&["not it at all"])
        ),
        4
    );
    n.ok(&["rekey", "--abort", "5eed0003"], "");
    assert!(n.fake.st.lock().unwrap().rekey_staged.is_none());
    assert_eq!(n.code(&["rekey", "--abort", "5eed0003"], ""), 7);
    assert_eq!(n.fake.st.lock().unwrap().mode, "shares");
}
