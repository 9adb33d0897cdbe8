//! The `vhsm.v1.Admin` service: ceremonies, key management, backup and audit on the core.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vhsm_core::approval::Operation;
use vhsm_core::{Error, InitRequest as CoreInit, NewKey, RekeyAuth, Vhsm};
use vhsm_proto::v1::admin_server::Admin;
use vhsm_proto::v1::{
    init_request, AddNodeRequest, ApprovalPolicyResponse, ClusterMember, ClusterStatusRequest,
    ClusterStatusResponse, CreateBackupRequest, CreateBackupResponse, CreateKeyRequest,
    DecideProposalRequest, DecideProposalResponse, EncryptedShare, ExportAuditRequest,
    ExportAuditResponse, GetApprovalPolicyRequest, GetAuditPublicKeyRequest,
    GetAuditPublicKeyResponse, GetProposalRequest, ImportKeyRequest, InitRequest, InitResponse,
    KeyIdRequest, KeyProvenanceRequest, KeyProvenanceResponse, KeyResponse, ListKeysRequest,
    ListKeysResponse, ListProposalsRequest, ListProposalsResponse, NewImportKeyRequest,
    NewImportKeyResponse, ProposalResponse, ProposeRequest, RekeyAbortRequest, RekeyAbortResponse,
    RekeyCommitRequest, RekeyCommitResponse, RekeyRequest, RekeyStageResponse, RemoveNodeRequest,
    ResetUnsealRequest, RestoreBackupRequest, RestoreBackupResponse, ScheduleKeyDeletionRequest,
    SealRequest, SealResponse, SetApprovalPolicyRequest, SetMinDecryptionVersionRequest,
    ShareSubmission, StatusRequest, StatusResponse, UnsealRequest, UnsealResponse,
};
use zeroize::Zeroize;

use crate::access::Method;
use crate::approval_rpc;
use crate::cluster::node::ClusterNode;
use crate::convert::{self, take_secret};
use crate::dispatch::{core_status, Dispatcher};
use crate::roles::Caller;
use crate::wipe::Wipe;

/// Records returned by ExportAudit when the request's limit is 0.
pub const DEFAULT_AUDIT_LIMIT: usize = 1000;
/// Most records one ExportAudit returns.
pub const MAX_AUDIT_LIMIT: usize = 10_000;

/// The Admin service (role `admin`; auditor may call Status and the audit calls).
#[derive(Debug, Clone)]
pub struct AdminService {
    d: Arc<Dispatcher>,
}

impl AdminService {
    /// A service over the shared dispatcher.
    pub fn new(d: Arc<Dispatcher>) -> Self {
        AdminService { d }
    }
}

fn err(e: Error) -> Status {
    core_status(&e)
}

fn convert_invalid(field: &'static str) -> Status {
    core_status(&Error::InvalidArgument(field))
}

fn key_response(v: &Vhsm, r: Result<vhsm_core::KeyInfo, Error>) -> Result<KeyResponse, Status> {
    r.map(|k| KeyResponse {
        key: Some(convert::key_message(v, k)),
    })
    .map_err(err)
}

fn unseal_response(p: vhsm_core::UnsealProgress) -> UnsealResponse {
    UnsealResponse {
        seal_state: convert::seal_state(p.state) as i32,
        progress: u32::from(p.progress),
        threshold: u32::from(p.threshold),
    }
}

/// Parses a wire init request, moving every passphrase into a `SecretString`.
fn core_init(req: Option<InitRequest>) -> Result<CoreInit, Error> {
    match req.and_then(|r| r.mode) {
        Some(init_request::Mode::Passphrase(mut p)) => {
            Ok(CoreInit::Passphrase(take_secret(&mut p.passphrase)))
        }
        Some(init_request::Mode::Shares(mut s)) => {
            let custodian_passphrases = s
                .custodian_passphrases
                .iter_mut()
                .map(take_secret)
                .collect();
            Ok(CoreInit::Shares {
                threshold: convert::to_u8(s.threshold, "threshold")?,
                custodian_passphrases,
            })
        }
        None => Err(Error::InvalidArgument("mode")),
    }
}

fn init_response(o: vhsm_core::InitOutcome) -> InitResponse {
    InitResponse {
        store_id: o.store_id,
        shares: o
            .shares
            .into_iter()
            .map(|s| EncryptedShare {
                index: u32::from(s.index),
                share: s.bytes,
                fingerprint: s.fingerprint,
            })
            .collect(),
        audit_key_fingerprint: o.audit_key_fingerprint,
    }
}

/// Unseal material from a request: a passphrase or share submissions (exactly one kind),
/// moved into zeroizing types. `field` names the passphrase field in the error.
fn unseal_material(
    passphrase: &mut String,
    shares: &mut [ShareSubmission],
    field: &'static str,
) -> Result<RekeyAuth, Error> {
    match (passphrase.is_empty(), shares.is_empty()) {
        (false, true) => Ok(RekeyAuth::Passphrase(take_secret(passphrase))),
        (true, false) => Ok(RekeyAuth::Shares(
            shares
                .iter_mut()
                .map(|s| (std::mem::take(&mut s.share), take_secret(&mut s.passphrase)))
                .collect(),
        )),
        _ => {
            passphrase.zeroize();
            shares.iter_mut().for_each(|s| {
                s.share.zeroize();
                s.passphrase.zeroize();
            });
            Err(Error::InvalidArgument(field))
        }
    }
}

fn rekey_stage(v: &Vhsm, c: &Caller, mut r: RekeyRequest) -> Result<RekeyStageResponse, Status> {
    let auth = match unseal_material(&mut r.old_passphrase, &mut r.old_shares, "old_passphrase") {
        Ok(a) => a,
        Err(e) => {
            r.wipe();
            return Err(err(e));
        }
    };
    let new = core_init(r.new_config.take()).map_err(err)?;
    let s = v.rekey_stage(auth, new, &c.identity).map_err(err)?;
    let init = init_response(s.outcome);
    Ok(RekeyStageResponse {
        store_id: init.store_id,
        shares: init.shares,
        audit_key_fingerprint: init.audit_key_fingerprint,
        staging_id: s.staging_id,
        expires_at_ms: s.expires_at_ms,
        unseal_mode: s.unseal_mode.as_str().to_owned(),
        threshold: u32::from(s.threshold),
        share_count: u32::from(s.share_count),
    })
}

fn rekey_commit(
    v: &Vhsm,
    c: &Caller,
    mut r: RekeyCommitRequest,
) -> Result<RekeyCommitResponse, Status> {
    let proof =
        unseal_material(&mut r.new_passphrase, &mut r.shares, "new_passphrase").map_err(err)?;
    let done = v
        .rekey_commit(&r.staging_id, proof, &c.identity)
        .map_err(err)?;
    Ok(RekeyCommitResponse {
        store_id: done.store_id,
        epoch: done.epoch,
        unseal_mode: done.unseal_mode.as_str().to_owned(),
        threshold: u32::from(done.threshold),
        share_count: u32::from(done.share_count),
    })
}

fn rekey(v: &Vhsm, c: &Caller, mut r: RekeyRequest) -> Result<InitResponse, Status> {
    let auth = match (r.old_passphrase.is_empty(), r.old_shares.is_empty()) {
        (false, true) => RekeyAuth::Passphrase(take_secret(&mut r.old_passphrase)),
        (true, false) => RekeyAuth::Shares(
            r.old_shares
                .iter_mut()
                .map(|s| (std::mem::take(&mut s.share), take_secret(&mut s.passphrase)))
                .collect(),
        ),
        _ => {
            r.wipe();
            return Err(err(Error::InvalidArgument("old_passphrase")));
        }
    };
    let new = core_init(r.new_config.take()).map_err(err)?;
    v.rekey(auth, new, &c.identity)
        .map(init_response)
        .map_err(err)
}

/// The node's cluster layer (vhsmd always has one; a bare dispatcher in tests does not).
fn cluster_of(node: Option<&Arc<ClusterNode>>) -> Result<&Arc<ClusterNode>, Status> {
    node.ok_or_else(|| err(Error::Internal("no cluster layer".into())))
}

fn cluster_response(node: Option<&Arc<ClusterNode>>) -> Result<ClusterStatusResponse, Status> {
    let node = cluster_of(node)?;
    let v = node.view();
    Ok(ClusterStatusResponse {
        raft_id: v.raft_id,
        leader_id: v.leader_id,
        term: v.term,
        commit_index: v.commit_index,
        applied_index: v.applied_index,
        members: v
            .members
            .into_iter()
            .map(|(raft_id, address, voter, matched_index)| ClusterMember {
                raft_id,
                address,
                voter,
                matched_index,
            })
            .collect(),
        serving: v.serving,
        lease_remaining_ms: u64::try_from(v.lease_remaining.as_millis()).unwrap_or(u64::MAX),
        not_serving_reason: v.not_serving_reason,
        last_snapshot_index: v.last_snapshot_index,
        role: v.role.to_owned(),
        witness: v.witness,
    })
}

/// Runs a membership change on this node's runtime (admin calls run on the blocking pool).
fn membership_change<F>(
    node: Option<&Arc<ClusterNode>>,
    change: F,
) -> Result<ClusterStatusResponse, Status>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    tokio::runtime::Handle::current()
        .block_on(change)
        .map_err(|e| Status::failed_precondition(format!("membership change refused: {e}")))?;
    cluster_response(node)
}

/// Runs the membership change an approval executed (outside the store write that closed the
/// proposal, so the change never runs inside a retried write).
async fn run_approved_membership(
    node: Option<&Arc<ClusterNode>>,
    operation: Operation,
) -> Result<ClusterStatusResponse, Status> {
    let n = cluster_of(node)?;
    let outcome = match operation {
        Operation::AddNode {
            address,
            learner_only,
        } => n.add_node(&address, learner_only).await.map(|_| ()),
        Operation::RemoveNode { raft_id } => n.remove_node(raft_id).await,
        _ => return Err(err(Error::Internal("not a membership change".into()))),
    };
    outcome.map_err(|e| {
        Status::failed_precondition(format!(
            "approved membership change executed but refused by the cluster: {e}"
        ))
    })?;
    cluster_response(node)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let node = self.d.cluster().cloned();
        self.d
            .call(request, Method::ClusterStatus, "", move |_, _, _| {
                cluster_response(node.as_ref())
            })
            .await
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let node = self.d.cluster().cloned();
        self.d
            .call(request, Method::AddNode, "", move |v, _, r| {
                let n = cluster_of(node.as_ref())?;
                if !r.address.starts_with("https://") {
                    return Err(convert_invalid("address"));
                }
                approval_rpc::require_membership_unguarded(v)?;
                membership_change(node.as_ref(), async {
                    n.add_node(&r.address, r.learner_only).await.map(|_| ())
                })
            })
            .await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let node = self.d.cluster().cloned();
        self.d
            .call(request, Method::RemoveNode, "", move |v, _, r| {
                let n = cluster_of(node.as_ref())?;
                approval_rpc::require_membership_unguarded(v)?;
                membership_change(node.as_ref(), n.remove_node(r.raft_id))
            })
            .await
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let node_id = self.d.node_id().to_owned();
        self.d
            .call(request, Method::Status, "", move |v, _, _| {
                let s = v.status();
                Ok(StatusResponse {
                    node_id: node_id.clone(),
                    seal_state: convert::seal_state(s.seal_state) as i32,
                    unseal_mode: s
                        .unseal_mode
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                    threshold: u32::from(s.threshold),
                    share_count: u32::from(s.share_count),
                    unseal_progress: u32::from(s.unseal_progress),
                    key_count: s.key_count,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    store_id: s.store_id,
                    audit_head_seq: s.audit_head_seq,
                    audit_head_hash: s.audit_head_hash,
                    restore_pending: s.restore_pending,
                    rekey_staging_id: s.rekey_staging_id,
                    rekey_staging_expires_at_ms: s.rekey_staging_expires_at_ms,
                })
            })
            .await
    }

    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        self.d
            .call(request, Method::Init, "", |v, c, r| {
                let req = core_init(Some(r)).map_err(err)?;
                v.initialize(req, &c.identity)
                    .map(init_response)
                    .map_err(err)
            })
            .await
    }

    async fn unseal(
        &self,
        request: Request<UnsealRequest>,
    ) -> Result<Response<UnsealResponse>, Status> {
        self.d
            .call(request, Method::Unseal, "", |v, c, mut r| {
                let passphrase = take_secret(&mut r.passphrase);
                let progress = if r.share.is_empty() {
                    v.unseal_with_passphrase(&passphrase, &c.identity)
                } else {
                    let p = v.submit_share(&r.share, &passphrase, &c.identity);
                    r.share.zeroize();
                    p
                };
                progress.map(unseal_response).map_err(err)
            })
            .await
    }

    async fn reset_unseal(
        &self,
        request: Request<ResetUnsealRequest>,
    ) -> Result<Response<UnsealResponse>, Status> {
        self.d
            .call(request, Method::ResetUnseal, "", |v, c, _| {
                v.reset_unseal(&c.identity)
                    .map(unseal_response)
                    .map_err(err)
            })
            .await
    }

    async fn seal(&self, request: Request<SealRequest>) -> Result<Response<SealResponse>, Status> {
        self.d
            .call(request, Method::Seal, "", |v, c, _| {
                v.seal(&c.identity).map(|()| SealResponse {}).map_err(err)
            })
            .await
    }

    async fn rekey(
        &self,
        request: Request<RekeyRequest>,
    ) -> Result<Response<InitResponse>, Status> {
        self.d.call(request, Method::Rekey, "", rekey).await
    }

    async fn rekey_stage(
        &self,
        request: Request<RekeyRequest>,
    ) -> Result<Response<RekeyStageResponse>, Status> {
        self.d
            .call(request, Method::RekeyStage, "", rekey_stage)
            .await
    }

    async fn rekey_commit(
        &self,
        request: Request<RekeyCommitRequest>,
    ) -> Result<Response<RekeyCommitResponse>, Status> {
        self.d
            .call(request, Method::RekeyCommit, "", rekey_commit)
            .await
    }

    async fn rekey_abort(
        &self,
        request: Request<RekeyAbortRequest>,
    ) -> Result<Response<RekeyAbortResponse>, Status> {
        self.d
            .call(request, Method::RekeyAbort, "", |v, c, r| {
                v.rekey_abort(&r.staging_id, &c.identity)
                    .map(|()| RekeyAbortResponse {})
                    .map_err(err)
            })
            .await
    }

    async fn create_key(
        &self,
        request: Request<CreateKeyRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::CreateKey, "", |v, c, r| {
                let spec = NewKey {
                    id: r.key_id,
                    usage: convert::usage_set(&r.usage).map_err(err)?,
                    labels: convert::labels(r.labels),
                };
                key_response(v, v.create_key(spec, &c.identity))
            })
            .await
    }

    async fn new_import_key(
        &self,
        request: Request<NewImportKeyRequest>,
    ) -> Result<Response<NewImportKeyResponse>, Status> {
        self.d
            .call(request, Method::NewImportKey, "", |v, c, _| {
                let k = v.new_import_key(&c.identity).map_err(err)?;
                Ok(NewImportKeyResponse {
                    import_key_id: k.id,
                    import_key: k.key.expose().to_vec(),
                    expires_at_ms: k.expires_at_ms,
                })
            })
            .await
    }

    async fn import_key(
        &self,
        request: Request<ImportKeyRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::ImportKey, "", |v, c, r| {
                let spec = NewKey {
                    id: r.key_id,
                    usage: convert::usage_set(&r.usage).map_err(err)?,
                    labels: convert::labels(r.labels),
                };
                key_response(
                    v,
                    v.import_key(spec, &r.import_key_id, &r.wrapped_key, &c.identity),
                )
            })
            .await
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        self.d
            .call(request, Method::ListKeys, "", |v, _, _| {
                let keys = v.list_keys().map_err(err)?;
                Ok(ListKeysResponse {
                    keys: keys
                        .into_iter()
                        .map(|k| convert::key_message(v, k))
                        .collect(),
                })
            })
            .await
    }

    async fn describe_key(
        &self,
        request: Request<KeyIdRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::DescribeKey, "", |v, _, r| {
                key_response(v, v.describe_key(&r.key_id))
            })
            .await
    }

    async fn rotate_key(
        &self,
        request: Request<KeyIdRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::RotateKey, "", |v, c, r| {
                key_response(v, v.rotate_key(&r.key_id, &c.identity))
            })
            .await
    }

    async fn set_min_decryption_version(
        &self,
        request: Request<SetMinDecryptionVersionRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::SetMinDecryptionVersion, "", |v, c, r| {
                key_response(
                    v,
                    v.set_min_decryption_version(&r.key_id, r.min_decryption_version, &c.identity),
                )
            })
            .await
    }

    async fn enable_key(
        &self,
        request: Request<KeyIdRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::EnableKey, "", |v, c, r| {
                key_response(v, v.enable_key(&r.key_id, &c.identity))
            })
            .await
    }

    async fn disable_key(
        &self,
        request: Request<KeyIdRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::DisableKey, "", |v, c, r| {
                key_response(v, v.disable_key(&r.key_id, &c.identity))
            })
            .await
    }

    async fn schedule_key_deletion(
        &self,
        request: Request<ScheduleKeyDeletionRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::ScheduleKeyDeletion, "", |v, c, r| {
                key_response(
                    v,
                    v.schedule_key_deletion(&r.key_id, r.waiting_days, &c.identity),
                )
            })
            .await
    }

    async fn cancel_key_deletion(
        &self,
        request: Request<KeyIdRequest>,
    ) -> Result<Response<KeyResponse>, Status> {
        self.d
            .call(request, Method::CancelKeyDeletion, "", |v, c, r| {
                key_response(v, v.cancel_key_deletion(&r.key_id, &c.identity))
            })
            .await
    }

    async fn create_backup(
        &self,
        request: Request<CreateBackupRequest>,
    ) -> Result<Response<CreateBackupResponse>, Status> {
        self.d
            .call(request, Method::CreateBackup, "", |v, c, _| {
                let backup = v.backup(&c.identity).map_err(err)?;
                let sha256 = hex::encode(vhsm_core::crypto::sha256(&backup));
                Ok(CreateBackupResponse { backup, sha256 })
            })
            .await
    }

    async fn restore_backup(
        &self,
        request: Request<RestoreBackupRequest>,
    ) -> Result<Response<RestoreBackupResponse>, Status> {
        self.d
            .call(request, Method::RestoreBackup, "", |v, c, r| {
                let s = v.stage_restore(&r.backup, &c.identity).map_err(err)?;
                Ok(RestoreBackupResponse {
                    store_id: s.store_id,
                    unseal_mode: s
                        .unseal_mode
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                    threshold: u32::from(s.threshold),
                })
            })
            .await
    }

    async fn export_audit(
        &self,
        request: Request<ExportAuditRequest>,
    ) -> Result<Response<ExportAuditResponse>, Status> {
        self.d
            .call(request, Method::ExportAudit, "", |v, _, r| {
                export_audit(v, &r)
            })
            .await
    }

    async fn key_provenance(
        &self,
        request: Request<KeyProvenanceRequest>,
    ) -> Result<Response<KeyProvenanceResponse>, Status> {
        self.d
            .call(request, Method::KeyProvenance, "", |v, _, r| {
                let version = (r.version != 0).then_some(r.version);
                let signed = v.key_provenance(&r.key_id, version).map_err(err)?;
                Ok(KeyProvenanceResponse {
                    statement_json: signed.to_json(),
                })
            })
            .await
    }

    async fn get_approval_policy(
        &self,
        request: Request<GetApprovalPolicyRequest>,
    ) -> Result<Response<ApprovalPolicyResponse>, Status> {
        self.d
            .call(request, Method::GetApprovalPolicy, "", |v, _, _| {
                approval_rpc::get_policy(v)
            })
            .await
    }

    async fn set_approval_policy(
        &self,
        request: Request<SetApprovalPolicyRequest>,
    ) -> Result<Response<ApprovalPolicyResponse>, Status> {
        self.d
            .call(request, Method::SetApprovalPolicy, "", |v, c, r| {
                approval_rpc::set_policy(v, c, &r)
            })
            .await
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposalResponse>, Status> {
        self.d
            .call(request, Method::Propose, "", |v, c, r| {
                approval_rpc::propose(v, c, &r)
            })
            .await
    }

    async fn list_proposals(
        &self,
        request: Request<ListProposalsRequest>,
    ) -> Result<Response<ListProposalsResponse>, Status> {
        self.d
            .call(request, Method::ListProposals, "", |v, _, r| {
                approval_rpc::list(v, &r)
            })
            .await
    }

    async fn get_proposal(
        &self,
        request: Request<GetProposalRequest>,
    ) -> Result<Response<ProposalResponse>, Status> {
        self.d
            .call(request, Method::GetProposal, "", |v, _, r| {
                approval_rpc::get(v, &r)
            })
            .await
    }

    async fn decide_proposal(
        &self,
        request: Request<DecideProposalRequest>,
    ) -> Result<Response<DecideProposalResponse>, Status> {
        let decided = self
            .d
            .call(request, Method::DecideProposal, "", |v, c, r| {
                approval_rpc::decide(v, c, &r)
            })
            .await?;
        let (mut response, execute) = decided.into_inner();
        if let Some(operation) = execute {
            let node = self.d.cluster().cloned();
            response.cluster = Some(run_approved_membership(node.as_ref(), operation).await?);
        }
        Ok(Response::new(response))
    }

    async fn get_audit_public_key(
        &self,
        request: Request<GetAuditPublicKeyRequest>,
    ) -> Result<Response<GetAuditPublicKeyResponse>, Status> {
        self.d
            .call(request, Method::GetAuditPublicKey, "", |v, _, _| {
                let pk = v.audit_public_key().map_err(err)?;
                Ok(GetAuditPublicKeyResponse {
                    public_key: pk.to_vec(),
                    fingerprint: vhsm_audit::public_key_fingerprint(&pk),
                })
            })
            .await
    }
}

/// The requested record count, defaulted and capped.
fn audit_limit(requested: u32) -> usize {
    match usize::try_from(requested) {
        Ok(0) => DEFAULT_AUDIT_LIMIT,
        Ok(n) => n.min(MAX_AUDIT_LIMIT),
        Err(_) => MAX_AUDIT_LIMIT,
    }
}

fn export_audit(v: &Vhsm, r: &ExportAuditRequest) -> Result<ExportAuditResponse, Status> {
    let head_seq = v.status().audit_head_seq;
    let records = v
        .audit_records(r.from_seq, audit_limit(r.limit))
        .map_err(err)?
        .iter()
        .map(vhsm_audit::AuditRecord::to_json_line)
        .collect();
    Ok(ExportAuditResponse { records, head_seq })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use vhsm_proto::v1::{PassphraseMode, SharesMode};

    #[test]
    fn audit_limit_defaults_and_caps() {
        assert_eq!(audit_limit(0), DEFAULT_AUDIT_LIMIT);
        assert_eq!(audit_limit(5), 5);
        assert_eq!(audit_limit(u32::MAX), MAX_AUDIT_LIMIT);
    }

    #[test]
    fn init_request_parsing() {
        let r = InitRequest {
            mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                passphrase: "pw".into(),
            })),
        };
        match core_init(Some(r)).unwrap() {
            CoreInit::Passphrase(p) => assert_eq!(p.expose_secret(), "pw"),
            other => panic!("unexpected {other:?}"),
        }
        let r = InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 2,
                custodian_passphrases: vec!["a".into(), "b".into(), "c".into()],
            })),
        };
        match core_init(Some(r)).unwrap() {
            CoreInit::Shares {
                threshold,
                custodian_passphrases,
            } => {
                assert_eq!(threshold, 2);
                assert_eq!(custodian_passphrases.len(), 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            core_init(Some(InitRequest { mode: None })).unwrap_err(),
            Error::InvalidArgument("mode")
        );
        assert_eq!(core_init(None).unwrap_err(), Error::InvalidArgument("mode"));
        let r = InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 300,
                custodian_passphrases: vec!["a".into()],
            })),
        };
        assert_eq!(
            core_init(Some(r)).unwrap_err(),
            Error::InvalidArgument("threshold")
        );
    }
}
