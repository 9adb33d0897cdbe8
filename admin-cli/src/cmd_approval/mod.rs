//! `approval ...`: quorum approval of dangerous operations — approver keys, the policy,
//! proposals, review, and signed approvals (docs/runbook-approvals.md).

pub mod approver_key;
pub mod policy_args;
pub mod review;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vhsm_audit::approval::{signed_message, Decision, Operation, ProposalStatement};
use vhsm_proto::v1::{
    DecideProposalRequest, GetApprovalPolicyRequest, GetProposalRequest, ListProposalsRequest,
    ProposeRequest, SetApprovalPolicyRequest, StatusRequest,
};

use crate::errors::{CliError, CliResult, ExitKind};
use crate::files::{self, PRIVATE_FILE, PUBLIC_FILE};
use crate::output;
use crate::retry;
use crate::secrets_input::PassphraseReader;
use crate::Ctx;
use approver_key::{KdfCosts, SealedApproverKey};
use policy_args::PolicyArgs;

/// `approval ...`
#[derive(Debug, Subcommand)]
pub enum ApprovalCommand {
    /// Approver signing keys (offline).
    #[command(subcommand)]
    Approver(ApproverCommand),
    /// The approval policy: who approves what, and how many must.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Propose a guarded operation; it runs once M approvers approved it.
    Propose(ProposeArgs),
    /// The proposals, oldest first.
    List(ListArgs),
    /// One proposal: the exact parameters, the consequences, the approvals so far.
    Show(ShowArgs),
    /// Review a proposal and approve it with your approver key.
    #[command(long_about = "Review a proposal and approve it.\n\n\
The tool fetches the proposal, checks that it belongs to this store and that your key is the one \
the policy registers for you, prints the operation, its consequences and the approvals so far, \
asks for confirmation (type the first 8 characters of the proposal id; --yes skips it), asks for \
your approver passphrase, and sends your Ed25519 signature over the canonical statement. The \
M-th approval executes the operation, once. What you see is computed on your machine from the \
signed statement, not taken from the appliance's words.")]
    Approve(DecideArgs),
    /// Review a proposal and reject it (it is closed and never runs).
    Reject(DecideArgs),
}

/// `approval approver ...`
#[derive(Debug, Subcommand)]
pub enum ApproverCommand {
    /// Generate an approver's Ed25519 key: NAME.key (sealed, 0600) and NAME.pub. Offline.
    #[command(
        long_about = "Generate an approver's signing key. Offline, no vhsmd needed.\n\n\
Run by the approver on their own machine. The private key is sealed under a passphrase the \
approver chooses (at least 12 characters, asked twice; Argon2id 64 MiB, AES-256-GCM) and written \
to DIR/NAME.key (mode 0600); never share it. DIR/NAME.pub holds the public key: give it to the \
operator, who registers it in the policy (`approval policy set --approver NAME.pub ...`)."
    )]
    New(ApproverNewArgs),
}

/// `approval approver new` arguments.
#[derive(Debug, Args)]
pub struct ApproverNewArgs {
    /// The approver's name as the policy will know it (1-64 of a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// Directory for NAME.key and NAME.pub (created 0700).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// `approval policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy in force (approvers, and per class the threshold and who may approve).
    Show,
    /// Set the policy directly: only while policy changes are not yet guarded.
    #[command(long_about = "Set the approval policy directly.\n\n\
Allowed only while no rule guards policy changes, i.e. to enable quorum approval the first time. \
From then on a new policy is itself an approved operation: `approval propose set-policy ...`. \
A policy that guards anything must also guard policy_change.")]
    Set(PolicyArgs),
}

/// `approval propose` arguments.
#[derive(Debug, Args)]
pub struct ProposeArgs {
    /// How long the proposal may collect approvals (default: the appliance's
    /// `[approvals] ttl_secs`, 24 h).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub ttl_secs: Option<u64>,
    /// What to propose.
    #[command(subcommand)]
    pub operation: ProposeOperation,
}

/// The operations that can be proposed.
#[derive(Debug, Subcommand)]
pub enum ProposeOperation {
    /// Schedule a key's deletion (it is destroyed after the waiting period).
    DeleteKey {
        /// The key id.
        key_id: String,
        /// Waiting period in days (at least the appliance's minimum).
        #[arg(long = "days", value_name = "DAYS")]
        waiting_days: u32,
    },
    /// Disable a key: every Encrypt and Decrypt with it fails until it is enabled.
    DisableKey {
        /// The key id.
        key_id: String,
    },
    /// Raise a key's minimum decryption version: older versions stop decrypting.
    MinDecryptionVersion {
        /// The key id.
        key_id: String,
        /// The new minimum version.
        #[arg(long)]
        to: u32,
    },
    /// Add a node to the replicated group.
    AddNode {
        /// The new node's peer address (https://host:port).
        #[arg(long, value_name = "URL")]
        address: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member of the replicated group by raft id.
    RemoveNode {
        /// The member's raft id.
        #[arg(long, value_name = "ID")]
        raft_id: u64,
    },
    /// Replace the approval policy.
    SetPolicy(PolicyArgs),
}

/// `approval list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only proposals still collecting approvals.
    #[arg(long)]
    pub pending: bool,
}

/// `approval show` arguments.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The proposal id.
    pub id: String,
}

/// `approval approve` / `reject` arguments.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The proposal id.
    pub id: String,
    /// Your approver key file (NAME.key). Not `--key`: that is the TLS client key.
    #[arg(long, value_name = "NAME.key")]
    pub approver_key: PathBuf,
    /// Do not ask for confirmation (the review is still printed).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Runs the offline `approval approver new`.
pub fn approver_new(args: &ApproverNewArgs, passphrase_fd: Option<u32>) -> CliResult<()> {
    files::ensure_private_dir(&args.out_dir)?;
    let key_path = args.out_dir.join(format!("{}.key", args.name));
    let pub_path = args.out_dir.join(format!("{}.pub", args.name));
    files::refuse_existing(&key_path, "choose another --out-dir or --name")?;
    files::refuse_existing(&pub_path, "choose another --out-dir or --name")?;
    let mut input = PassphraseReader::open(passphrase_fd)?;
    let passphrase = input.new_custodian_passphrase(&format!("approver {}", args.name))?;
    let new = approver_key::generate(&args.name, &passphrase, KdfCosts::RECOMMENDED)?;
    let public = output::to_json(&new.public)? + "\n";
    files::write_file(&key_path, new.key_file.as_bytes(), PRIVATE_FILE, false)?;
    files::write_file(&pub_path, public.as_bytes(), PUBLIC_FILE, false)?;
    files::sync_dir(&args.out_dir)?;
    println!("approver    {}", new.public.name);
    println!("public key  {}", new.public.public_key);
    println!("key file    {} (0600, keep it private)", key_path.display());
    println!(
        "public file {} (give it to the operator)",
        pub_path.display()
    );
    Ok(())
}

/// Runs the online `approval ...` commands.
pub async fn run(ctx: &Ctx, cmd: &ApprovalCommand) -> CliResult<()> {
    match cmd {
        ApprovalCommand::Approver(ApproverCommand::New(a)) => approver_new(a, ctx.passphrase_fd),
        ApprovalCommand::Policy(PolicyCommand::Show) => policy_show(ctx).await,
        ApprovalCommand::Policy(PolicyCommand::Set(a)) => policy_set(ctx, a).await,
        ApprovalCommand::Propose(a) => propose(ctx, a).await,
        ApprovalCommand::List(a) => list(ctx, a).await,
        ApprovalCommand::Show(a) => show(ctx, &a.id).await,
        ApprovalCommand::Approve(a) => decide(ctx, a, Decision::Approve).await,
        ApprovalCommand::Reject(a) => decide(ctx, a, Decision::Reject).await,
    }
}

async fn policy_show(ctx: &Ctx) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    let r = c
        .get_approval_policy(GetApprovalPolicyRequest {})
        .await
        .map_err(|s| CliError::from_status("approval policy show", &s))?
        .into_inner();
    let policy = policy_args::parse_policy_json(&r.policy_json)?;
    output::emit(ctx.format, &policy, || review::render_policy(&policy))
}

async fn policy_set(ctx: &Ctx, args: &PolicyArgs) -> CliResult<()> {
    let policy = args.build()?;
    let client = ctx.target.admin().await?;
    let msg = SetApprovalPolicyRequest {
        policy_json: policy.to_json(),
    };
    let (answer, _) = retry::send(msg, move |req| {
        let mut client = client.clone();
        async move { client.set_approval_policy(req).await }
    })
    .await;
    let r = answer
        .map_err(|s| CliError::from_status("approval policy set", &s))?
        .into_inner();
    let policy = policy_args::parse_policy_json(&r.policy_json)?;
    output::emit(ctx.format, &policy, || review::render_policy(&policy))
}

fn operation_of(op: &ProposeOperation) -> CliResult<Operation> {
    Ok(match op {
        ProposeOperation::DeleteKey {
            key_id,
            waiting_days,
        } => {
            crate::cmd_key::validate_key_id(key_id)?;
            Operation::ScheduleKeyDeletion {
                key_id: key_id.clone(),
                waiting_days: *waiting_days,
            }
        }
        ProposeOperation::DisableKey { key_id } => {
            crate::cmd_key::validate_key_id(key_id)?;
            Operation::DisableKey {
                key_id: key_id.clone(),
            }
        }
        ProposeOperation::MinDecryptionVersion { key_id, to } => {
            crate::cmd_key::validate_key_id(key_id)?;
            // `from` is filled in by the appliance (the key's minimum when proposed).
            Operation::RaiseMinDecryptionVersion {
                key_id: key_id.clone(),
                from: 0,
                to: *to,
            }
        }
        ProposeOperation::AddNode { address, learner } => Operation::AddNode {
            address: address.clone(),
            learner_only: *learner,
        },
        ProposeOperation::RemoveNode { raft_id } => Operation::RemoveNode { raft_id: *raft_id },
        ProposeOperation::SetPolicy(a) => Operation::SetPolicy { policy: a.build()? },
    })
}

async fn propose(ctx: &Ctx, args: &ProposeArgs) -> CliResult<()> {
    let operation = operation_of(&args.operation)?;
    let operation_json = serde_json::to_string(&operation)
        .map_err(|_| CliError::usage("cannot encode the operation"))?;
    let msg = ProposeRequest {
        operation_json,
        ttl_seconds: args.ttl_secs.unwrap_or(0),
    };
    let client = ctx.target.admin().await?;
    let (answer, _) = retry::send(msg, move |req| {
        let mut client = client.clone();
        async move { client.propose(req).await }
    })
    .await;
    let p = answer
        .map_err(|s| CliError::from_status("approval propose", &s))?
        .into_inner()
        .proposal
        .ok_or_else(|| CliError::usage("vhsmd returned no proposal"))?;
    let view = review::ProposalView::from_wire(&p)?;
    output::emit(ctx.format, &view, || {
        format!(
            "{}\nproposed: have the approvers review it with `vhsm-admin approval show {}`\n",
            review::render_proposal(&view),
            view.proposal_id
        )
    })
}

async fn list(ctx: &Ctx, args: &ListArgs) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    let r = c
        .list_proposals(ListProposalsRequest {
            pending_only: args.pending,
        })
        .await
        .map_err(|s| CliError::from_status("approval list", &s))?
        .into_inner();
    let views = r
        .proposals
        .iter()
        .map(review::ProposalView::from_wire)
        .collect::<CliResult<Vec<_>>>()?;
    output::emit(ctx.format, &views, || review::render_list(&views))
}

async fn fetch(
    c: &mut vhsm_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
    id: &str,
) -> CliResult<review::ProposalView> {
    let p = c
        .get_proposal(GetProposalRequest {
            proposal_id: id.to_owned(),
        })
        .await
        .map_err(|s| CliError::from_status("approval show", &s))?
        .into_inner()
        .proposal
        .ok_or_else(|| CliError::usage("vhsmd returned no proposal"))?;
    let view = review::ProposalView::from_wire(&p)?;
    if view.proposal_id != id {
        return Err(CliError::new(
            ExitKind::Integrity,
            "vhsmd answered with a statement of another proposal",
        ));
    }
    Ok(view)
}

async fn show(ctx: &Ctx, id: &str) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    let view = fetch(&mut c, id).await?;
    output::emit(ctx.format, &view, || review::render_proposal(&view))
}

/// Asks the reviewer to type the first 8 characters of the proposal id.
fn confirm(decision: Decision, id: &str) -> CliResult<()> {
    let short: String = id.chars().take(8).collect();
    let verb = match decision {
        Decision::Approve => "Approve",
        Decision::Reject => "Reject",
    };
    output::confirm_typed(
        decision.as_str(),
        &format!("{verb} proposal {id}? Type {short} to confirm: "),
        &short,
        "not confirmed; nothing was signed or sent",
    )
}

async fn decide(ctx: &Ctx, args: &DecideArgs, decision: Decision) -> CliResult<()> {
    let text = String::from_utf8(files::read_file(&args.approver_key)?)
        .map_err(|_| CliError::usage("the approver key file is not UTF-8 JSON"))?;
    let sealed = SealedApproverKey::parse(&text)?;
    let mut client = ctx.target.admin().await?;
    let view = fetch(&mut client, &args.id).await?;
    let statement = ProposalStatement::from_canonical_json(&view.statement_json)
        .map_err(|_| CliError::new(ExitKind::Integrity, "malformed proposal statement"))?;
    // The statement must be about this store, and the key the one registered for the name.
    let status = client
        .status(StatusRequest {})
        .await
        .map_err(|s| CliError::from_status("status", &s))?
        .into_inner();
    if status.store_id != statement.store_id {
        return Err(CliError::new(
            ExitKind::Integrity,
            format!(
                "the proposal is for store {}, but {} holds store {}",
                statement.store_id, ctx.target.endpoint, status.store_id
            ),
        ));
    }
    let policy_json = client
        .get_approval_policy(GetApprovalPolicyRequest {})
        .await
        .map_err(|s| CliError::from_status("approval policy show", &s))?
        .into_inner()
        .policy_json;
    let policy = policy_args::parse_policy_json(&policy_json)?;
    match policy.approvers.get(sealed.name()) {
        Some(k) if k == sealed.public_key() => {}
        Some(_) => {
            return Err(CliError::new(
                ExitKind::Rejected,
                format!(
                    "the policy registers another public key for approver {}: this key file is not theirs (or was replaced)",
                    sealed.name()
                ),
            ))
        }
        None => {
            return Err(CliError::new(
                ExitKind::Rejected,
                format!("{} is not an approver of this store's policy", sealed.name()),
            ))
        }
    }
    eprint!("{}", review::render_proposal(&view));
    if !args.yes {
        confirm(decision, &args.id)?;
    }
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let passphrase = input.existing(&format!("Passphrase of approver {}: ", sealed.name()))?;
    let key = sealed.open(&passphrase)?;
    drop(passphrase);
    let signature = key.sign_hex(&signed_message(decision, &statement));
    let msg = DecideProposalRequest {
        proposal_id: args.id.clone(),
        approver: key.name().to_owned(),
        decision: decision.as_str().to_owned(),
        signature,
    };
    let (answer, _) = retry::send(msg, move |req| {
        let mut client = client.clone();
        async move { client.decide_proposal(req).await }
    })
    .await;
    let action = format!("approval {}", decision.as_str());
    let resp = answer.map_err(|s| CliError::from_status(&action, &s))?;
    let lagging = retry::lagging_members(&resp);
    if !lagging.is_empty() {
        eprintln!(
            "warning: not applied by {}; their read lease has run out, so they refuse crypto until they catch up",
            lagging.join(", ")
        );
    }
    let r = resp.into_inner();
    let p = r
        .proposal
        .ok_or_else(|| CliError::usage("vhsmd returned no proposal"))?;
    let after = review::ProposalView::from_wire(&p)?;
    let outcome = review::Outcome {
        proposal: after,
        executed: r.executed,
    };
    output::emit(ctx.format, &outcome, || review::render_outcome(&outcome))
}
