//! `cluster ...`: the replicated group's members, leader, progress and leases; adding and
//! removing nodes.

use serde::Serialize;
use vhsm_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, RemoveNodeRequest,
};

use crate::cli::ClusterCommand;
use crate::errors::{CliError, CliResult};
use crate::output;
use crate::Ctx;

#[derive(Debug, Serialize)]
struct MemberJson<'a> {
    raft_id: u64,
    address: &'a str,
    voter: bool,
    leader: bool,
    matched_index: u64,
}

#[derive(Debug, Serialize)]
struct ClusterJson<'a> {
    raft_id: u64,
    role: &'a str,
    witness: bool,
    leader_id: u64,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    last_snapshot_index: u64,
    serving: bool,
    lease_remaining_ms: u64,
    not_serving_reason: &'a str,
    members: Vec<MemberJson<'a>>,
}

fn to_json(s: &ClusterStatusResponse) -> ClusterJson<'_> {
    ClusterJson {
        raft_id: s.raft_id,
        role: &s.role,
        witness: s.witness,
        leader_id: s.leader_id,
        term: s.term,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_snapshot_index: s.last_snapshot_index,
        serving: s.serving,
        lease_remaining_ms: s.lease_remaining_ms,
        not_serving_reason: &s.not_serving_reason,
        members: s
            .members
            .iter()
            .map(|m| MemberJson {
                raft_id: m.raft_id,
                address: &m.address,
                voter: m.voter,
                leader: m.raft_id == s.leader_id,
                matched_index: m.matched_index,
            })
            .collect(),
    }
}

fn render(j: &ClusterJson<'_>) -> String {
    let serving = if j.serving {
        format!("yes (lease {} ms left)", j.lease_remaining_ms)
    } else {
        format!("NO: {}", j.not_serving_reason)
    };
    let mut out = output::render_kv(&[
        (
            "this node",
            format!(
                "{} ({}{})",
                j.raft_id,
                j.role,
                if j.witness { ", witness" } else { "" }
            ),
        ),
        (
            "leader",
            if j.leader_id == 0 {
                "none".to_owned()
            } else {
                j.leader_id.to_string()
            },
        ),
        ("term", j.term.to_string()),
        ("commit index", j.commit_index.to_string()),
        ("applied index", j.applied_index.to_string()),
        ("last snapshot", j.last_snapshot_index.to_string()),
        ("serving crypto", serving),
    ]);
    out.push('\n');
    let rows: Vec<Vec<String>> = j
        .members
        .iter()
        .map(|m| {
            vec![
                m.raft_id.to_string(),
                m.address.to_owned(),
                if m.leader {
                    "leader"
                } else if m.voter {
                    "voter"
                } else {
                    "learner"
                }
                .to_owned(),
                if j.role == "leader" {
                    m.matched_index.to_string()
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    out.push_str(&output::render_table(
        &["RAFT ID", "ADDRESS", "ROLE", "MATCHED"],
        &rows,
    ));
    out
}

fn emit(ctx: &Ctx, s: &ClusterStatusResponse) -> CliResult<()> {
    let j = to_json(s);
    output::emit(ctx.format, &j, || render(&j))
}

/// Runs a `cluster` subcommand.
pub async fn run(ctx: &Ctx, cmd: &ClusterCommand) -> CliResult<()> {
    if let ClusterCommand::AddNode(a) = cmd {
        if !a.address.starts_with("https://") {
            return Err(CliError::usage(format!(
                "--address {} must be the new node's https://host:port",
                a.address
            )));
        }
    }
    let mut c = ctx.target.admin().await?;
    let s = match cmd {
        ClusterCommand::Status => c
            .cluster_status(ClusterStatusRequest {})
            .await
            .map_err(|s| CliError::from_status("cluster status", &s))?,
        ClusterCommand::AddNode(a) => {
            eprintln!(
                "adding {} as a learner; it receives the store, then becomes a voter (large stores take a while)...",
                a.address
            );
            c.add_node(AddNodeRequest {
                address: a.address.clone(),
                learner_only: a.learner,
            })
            .await
            .map_err(|s| CliError::from_status("cluster add-node", &s))?
        }
        ClusterCommand::RemoveNode(a) => c
            .remove_node(RemoveNodeRequest { raft_id: a.raft_id })
            .await
            .map_err(|s| CliError::from_status("cluster remove-node", &s))?,
    };
    emit(ctx, &s.into_inner())
}
