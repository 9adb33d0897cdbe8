//! One node of the replicated store: the Raft handle, proposing (and forwarding) writes, the
//! read index and read lease, catching up, membership changes, and answering peers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::{mpsc, watch};
use vhsm_proto::v1::RaftMessage;

use super::config::ClusterConfig;
use super::log_store::LogStore;
use super::network::{PeerNetwork, PeerTransport, Peers};
use super::state_machine::{Notice, StateMachine};
use super::types::{Applied, Command, NodeId, NodeInfo, PeerRpc, ReadIndexAsk, VhsmRaft};

const RAFT_ID_KEY: &[u8] = b"raft_id";
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The sled trees of the log or state machine.
    #[error("cluster storage: {0}")]
    Storage(String),
    /// openraft refused its configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// A snapshot of the node's view of the cluster (for ClusterStatus, Health and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This node's raft id.
    pub raft_id: NodeId,
    /// Leader id (0: unknown).
    pub leader_id: NodeId,
    /// Current term.
    pub term: u64,
    /// Last log index the state machine applied (committed entries only).
    pub commit_index: u64,
    /// Index this node's key cache reflects.
    pub applied_index: u64,
    /// Last snapshot index (0: none).
    pub last_snapshot_index: u64,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`.
    pub role: &'static str,
    /// Members: id, address, voter, matched index (leader only).
    pub members: Vec<(NodeId, String, bool, u64)>,
    /// The lease is held.
    pub serving: bool,
    /// Time left on it.
    pub lease_remaining: Duration,
    /// Why it is not held.
    pub not_serving_reason: String,
    /// Entries still to apply to reach the last read index.
    pub apply_lag: u64,
    /// This node is a witness.
    pub witness: bool,
}

/// One vhsm node's cluster layer.
pub struct ClusterNode {
    id: NodeId,
    witness: bool,
    cfg: ClusterConfig,
    raft: VhsmRaft,
    peers: Peers,
    /// Index whose changes the core's memory reflects (advanced by the reload task).
    seen_tx: watch::Sender<u64>,
    /// Index the state machine applied.
    applied_rx: watch::Receiver<u64>,
    lease: super::lease::Lease,
    read_target: AtomicU64,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .field("witness", &self.witness)
            .finish_non_exhaustive()
    }
}

fn storage_err(e: impl ToString) -> ClusterError {
    ClusterError::Storage(e.to_string())
}

/// This node's raft id: random on first start (so a wiped node rejoins under a new one),
/// then kept in the store.
fn raft_id(db: &sled::Db) -> Result<NodeId, ClusterError> {
    use vhsm_core::RandomSource;
    let meta = db.open_tree("raft_meta").map_err(storage_err)?;
    if let Some(v) = meta.get(RAFT_ID_KEY).map_err(storage_err)? {
        let bytes: [u8; 8] = v
            .as_ref()
            .try_into()
            .map_err(|_| storage_err("raft_id record is damaged"))?;
        return Ok(u64::from_be_bytes(bytes));
    }
    let mut raw = [0u8; 8];
    loop {
        vhsm_core::OsRandom.fill(&mut raw).map_err(storage_err)?;
        // Small positive ids read well in status output; 2^52 leaves no realistic collision.
        let id = u64::from_be_bytes(raw) >> 12;
        if id != 0 {
            meta.insert(RAFT_ID_KEY, &id.to_be_bytes())
                .map_err(storage_err)?;
            db.flush().map_err(storage_err)?;
            return Ok(id);
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<RaftMessage, String> {
    serde_json::to_vec(v)
        .map(|json| RaftMessage {
            json,
            data: Vec::new(),
        })
        .map_err(|e| e.to_string())
}

impl ClusterNode {
    /// Opens the log and state machine in `db` (the snapshot in `snapshot_dir`), starts Raft,
    /// and (with `bootstrap`, on a node that never joined a cluster) forms a one-member
    /// cluster. Returns the node and the stream of applied changes for the core's reload task.
    pub async fn start(
        db: &sled::Db,
        snapshot_dir: &std::path::Path,
        cfg: &ClusterConfig,
        advertise: String,
        transport: Arc<dyn PeerTransport>,
    ) -> Result<(Arc<ClusterNode>, mpsc::UnboundedReceiver<Notice>), ClusterError> {
        let log = LogStore::open(db).map_err(storage_err)?;
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let (applied_tx, applied_rx) = watch::channel(0);
        let applied_tx = Arc::new(applied_tx);
        let sm = StateMachine::open(db, snapshot_dir, notify_tx, Arc::clone(&applied_tx))
            .map_err(storage_err)?;
        let applied = sm.applied_index().map_err(storage_err)?;
        applied_tx.send_replace(applied);
        let unlogged = sm.has_unlogged_data().map_err(storage_err)?;
        let id = raft_id(db)?;
        let peers = Peers::new(
            transport,
            Duration::from_millis(cfg.write_timeout_ms.min(2000)),
        );
        let raft_cfg = Arc::new(cfg.raft_config().map_err(ClusterError::Raft)?);
        let raft = openraft::Raft::new(id, raft_cfg, PeerNetwork::new(peers.clone()), log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let (seen_tx, _) = watch::channel(applied);
        let node = Arc::new(ClusterNode {
            id,
            witness: cfg.witness,
            cfg: cfg.clone(),
            raft,
            peers,
            seen_tx,
            applied_rx,
            lease: super::lease::Lease::new(),
            read_target: AtomicU64::new(0),
        });
        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if cfg.bootstrap && !initialized {
            let members = BTreeMap::from([(id, BasicNode::new(&advertise))]);
            node.raft
                .initialize(members)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
            tracing::info!(raft_id = id, %advertise, "formed a new one-member cluster");
            if unlogged {
                tokio::spawn(Arc::clone(&node).snapshot_unlogged_data());
            }
        } else if !initialized {
            tracing::info!(raft_id = id, %advertise, "waiting to be added to a cluster (vhsm-admin cluster add-node)");
        }
        Ok((node, notify_rx))
    }

    /// A store from before the cluster holds data no log entry carries: snapshot it and purge
    /// the log below, so a joining node receives it as a snapshot.
    async fn snapshot_unlogged_data(self: Arc<Self>) {
        let wait = self.raft.wait(Some(Duration::from_secs(30)));
        if wait
            .state(ServerState::Leader, "leader of the new cluster")
            .await
            .is_err()
        {
            tracing::error!("cannot snapshot the pre-cluster store: not leader");
            return;
        }
        if let Err(e) = self.raft.trigger().snapshot().await {
            tracing::error!(error = %e, "cannot snapshot the pre-cluster store");
            return;
        }
        match self
            .raft
            .wait(Some(Duration::from_secs(120)))
            .metrics(|m| m.snapshot.is_some(), "first snapshot")
            .await
        {
            Ok(m) => {
                if let Some(s) = m.snapshot {
                    if let Err(e) = self.raft.trigger().purge_log(s.index).await {
                        tracing::error!(error = %e, "cannot purge the log below the first snapshot");
                    }
                    tracing::info!(
                        index = s.index,
                        "pre-cluster store snapshotted for joining nodes"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "the first snapshot did not complete"),
        }
    }

    /// This node's raft id.
    /// Why the Raft core stopped, if it did (a storage error of the log or the state machine,
    /// or a panic): this node can no longer commit or apply anything until it restarts.
    pub fn fatal(&self) -> Option<String> {
        // Clone at once: holding the metrics borrow blocks the Raft core.
        let running = self.raft.metrics().borrow().running_state.clone();
        running.err().map(|f| f.to_string())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether this node is a witness.
    pub fn is_witness(&self) -> bool {
        self.witness
    }

    /// The Raft handle.
    pub fn raft(&self) -> &VhsmRaft {
        &self.raft
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Index whose changes the core's memory reflects.
    pub fn seen(&self) -> u64 {
        *self.seen_tx.borrow()
    }

    /// Called by the reload task once the core reflects everything up to `index`.
    pub fn mark_seen(&self, index: u64) {
        self.seen_tx.send_if_modified(|s| {
            if index > *s {
                *s = index;
                true
            } else {
                false
            }
        });
    }

    async fn wait_watch(rx: &mut watch::Receiver<u64>, index: u64, deadline: Instant) -> bool {
        let waiting = rx.wait_for(|v| *v >= index);
        matches!(
            tokio::time::timeout_at(deadline.into(), waiting).await,
            Ok(Ok(_))
        )
    }

    /// Waits (until `deadline`) for the core's memory to reflect `index`.
    pub async fn wait_seen(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.seen_tx.subscribe();
        Self::wait_watch(&mut rx, index, deadline).await
    }

    /// Waits (until `deadline`) for the local state machine to apply `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> bool {
        let mut rx = self.applied_rx.clone();
        Self::wait_watch(&mut rx, index, deadline).await
    }

    /// Proposes a command: on the leader directly, otherwise forwarded to it; retried (it
    /// always carries a request id, so a retry is applied at most once) until committed or
    /// `write_timeout_ms` passed. A duplicate of this very command counts as applied.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, String> {
        let deadline = Instant::now() + Duration::from_millis(self.cfg.write_timeout_ms);
        let timed_out = || format!("not committed within {} ms", self.cfg.write_timeout_ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt =
                match tokio::time::timeout(left, self.raft.client_write(cmd.clone())).await {
                    Err(_) => return Err(timed_out()),
                    Ok(Ok(resp)) => Ok(resp.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        match f.leader_node {
                            Some(leader) if f.leader_id != Some(self.id) => {
                                match self.peers.propose(&leader.addr, &cmd, left).await {
                                    Ok(Ok(applied)) => Ok(applied),
                                    Ok(Err(refusal)) => Err(refusal),
                                    Err(e) => Err(e.to_string()),
                                }
                            }
                            _ => Err("no leader elected".to_owned()),
                        }
                    }
                    Ok(Err(RaftError::Fatal(f))) => {
                        return Err(format!("the replicated log stopped: {f}"))
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                };
            match attempt {
                Ok(applied) => return Ok(applied),
                Err(e) if Instant::now() + RETRY_PAUSE >= deadline => {
                    return Err(format!("{}: {e}", timed_out()))
                }
                Err(e) => tracing::debug!(error = %e, "write not accepted yet; retrying"),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn local_read_index(&self) -> Result<u64, String> {
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err("not the leader".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The cluster's read index, confirmed by a quorum: the leader's, asked locally or over the
    /// network, within `timeout`.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, String> {
        let asked_once = || async {
            match self.raft.get_read_log_id().await {
                Ok((read, _)) => Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(n) if f.leader_id != Some(self.id) => {
                            match self
                                .peers
                                .read_index(&n.addr, self.cfg.lease_ms, timeout)
                                .await
                            {
                                Ok(r) => r,
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        _ => Err("no leader elected".to_owned()),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        };
        // During an election nobody leads for a moment: ask again until the time is up.
        let deadline = Instant::now() + timeout;
        let retrying = async {
            loop {
                match asked_once().await {
                    Ok(i) => return Ok(i),
                    Err(e) if Instant::now() + RETRY_PAUSE >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(RETRY_PAUSE.min(Duration::from_millis(20))).await,
                }
            }
        };
        match tokio::time::timeout(timeout, retrying).await {
            Ok(r) => r,
            Err(_) => Err(format!("no read index within {timeout:?} (no quorum?)")),
        }
    }

    /// Waits until this node reflects everything committed before the call (a linearizable
    /// barrier), within `timeout`.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let index = self.read_index(timeout).await?;
        self.read_target.fetch_max(index, Ordering::Relaxed);
        if self.wait_seen(index, deadline).await {
            Ok(())
        } else {
            Err(format!(
                "lagging: reflects index {} of read index {index}",
                self.seen()
            ))
        }
    }

    /// Whether this node may serve crypto now (`Err`: why not). One atomic load when it may.
    pub fn serving(&self) -> Result<(), String> {
        if self.witness {
            return Err("a witness never serves crypto".to_owned());
        }
        if self.lease.held(Instant::now()) {
            Ok(())
        } else {
            Err(self.lease.reason())
        }
    }

    /// Renews the read lease every T/3 until the process stops: the lease runs until
    /// `t_sent + T` once this node reflects the read index obtained at `t_sent`.
    pub async fn run_lease(self: Arc<Self>) {
        let lease = Duration::from_millis(self.cfg.lease_ms);
        let period = lease / 3;
        // After a failed renewal, try again sooner (a new leader, a healed partition).
        let retry = period.min(Duration::from_millis(50));
        loop {
            let t_sent = Instant::now();
            let mut renewed = false;
            if self.witness {
                self.lease.set_reason("a witness never serves crypto");
            } else {
                match self.read_index(period).await {
                    Ok(index) => {
                        self.read_target.fetch_max(index, Ordering::Relaxed);
                        if self.seen() < index {
                            // Shown if the lease runs out while this node catches up.
                            self.lease.set_reason(format!(
                                "lagging: reflects index {} of read index {index}",
                                self.seen()
                            ));
                        }
                        if self.wait_seen(index, t_sent + lease).await {
                            self.lease.extend(t_sent + lease);
                            renewed = true;
                        } else {
                            self.lease.set_reason(format!(
                                "lagging: reflects index {} of read index {index}",
                                self.seen()
                            ));
                        }
                    }
                    Err(e) => self.lease.set_reason(format!("no read lease: {e}")),
                }
            }
            let next = if renewed { period } else { retry };
            tokio::time::sleep_until((t_sent + next).into()).await;
        }
    }

    /// The members of the current membership: (id, address, voter).
    pub fn members(&self) -> Vec<(NodeId, String, bool)> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        m.nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect()
    }

    /// Waits up to `wait` for every member to reflect `index`; returns the addresses of those
    /// that did not (unreachable or lagging: with `wait` at least the lease bound, they have
    /// stopped serving by the time this returns).
    pub async fn wait_members_applied(&self, index: u64, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        // This node itself: woken by its own reload, no polling.
        let self_done = self.wait_seen(index, deadline).await;
        let mut pending: Vec<(NodeId, String)> = self
            .members()
            .into_iter()
            .filter(|(id, _, _)| *id != self.id || !self_done)
            .map(|(id, addr, _)| (id, addr))
            .collect();
        loop {
            let mut still = Vec::new();
            for (id, addr) in pending {
                let done = if id == self.id {
                    self.seen() >= index
                } else {
                    // Bounded by the deadline: an unreachable member must not hold the
                    // answer past it.
                    let left = deadline.saturating_duration_since(Instant::now());
                    matches!(
                        tokio::time::timeout(left, self.peers.node_info(&addr)).await,
                        Ok(Ok(info)) if info.applied_index >= index
                    )
                };
                if !done {
                    still.push((id, addr));
                }
            }
            pending = still;
            if pending.is_empty() || Instant::now() + Duration::from_millis(5) >= deadline {
                return pending.into_iter().map(|(_, a)| a).collect();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The node's view of the cluster.
    pub fn view(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let voters: BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = m
            .membership_config
            .nodes()
            .map(|(id, n)| {
                let matched_index = matched.get(id).copied().flatten().map_or(0, |l| l.index);
                (*id, n.addr.clone(), voters.contains(id), matched_index)
            })
            .collect();
        let now = Instant::now();
        let serving = self.serving();
        let seen = self.seen();
        ClusterView {
            raft_id: self.id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            applied_index: seen,
            last_snapshot_index: m.snapshot.map_or(0, |l| l.index),
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            members,
            serving: serving.is_ok(),
            lease_remaining: self.lease.remaining(now),
            not_serving_reason: serving.err().unwrap_or_default(),
            apply_lag: self
                .read_target
                .load(Ordering::Relaxed)
                .saturating_sub(seen),
            witness: self.witness,
        }
    }

    /// Adds the node at `addr` (started with `bootstrap = false`) as a learner, waits until it
    /// caught up, then (unless `learner_only`) promotes it to voter.
    pub async fn add_node(&self, addr: &str, learner_only: bool) -> Result<NodeId, String> {
        let info = self
            .peers
            .node_info(addr)
            .await
            .map_err(|e| e.to_string())?;
        if self.members().iter().any(|(id, _, _)| *id == info.raft_id) {
            return Err(format!("raft id {} is already a member", info.raft_id));
        }
        if info.initialized {
            return Err(
                "that node already belongs to a cluster (wipe its data_dir to rejoin under a new id)"
                    .to_owned(),
            );
        }
        self.raft
            .add_learner(info.raft_id, BasicNode::new(addr), true)
            .await
            .map_err(|e| e.to_string())?;
        if !learner_only {
            self.raft
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([info.raft_id])),
                    false,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        // Done when the new node's key cache reflects the store (so it can be unsealed now).
        let target = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let deadline = Instant::now() + Duration::from_millis(self.cfg.install_snapshot_timeout_ms);
        loop {
            match self.peers.node_info(addr).await {
                Ok(i) if i.applied_index >= target => break,
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "raft id {} joined but had not applied the store (index {target}) in time",
                        info.raft_id
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tracing::info!(raft_id = info.raft_id, %addr, voter = !learner_only, "node added to the cluster");
        Ok(info.raft_id)
    }

    /// Removes member `id` (voter first, then the node entry).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), String> {
        let members = self.members();
        let Some((_, _, voter)) = members.iter().find(|(m, _, _)| *m == id) else {
            return Err(format!("raft id {id} is not a member"));
        };
        if *voter {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(raft_id = id, "node removed from the cluster");
        Ok(())
    }

    /// Answers a peer's call (the caller has been authorized as `peer`).
    pub async fn handle(&self, rpc: PeerRpc, msg: RaftMessage) -> Result<RaftMessage, String> {
        let parse_err = |e: serde_json::Error| format!("malformed peer message: {e}");
        match rpc {
            PeerRpc::Append => {
                let req: AppendEntriesRequest<super::types::TypeConfig> =
                    serde_json::from_slice(&msg.json).map_err(parse_err)?;
                json(&self.raft.append_entries(req).await)
            }
            PeerRpc::Vote => {
                let req: VoteRequest<NodeId> =
                    serde_json::from_slice(&msg.json).map_err(parse_err)?;
                json(&self.raft.vote(req).await)
            }
            PeerRpc::Snapshot => {
                let mut req: InstallSnapshotRequest<super::types::TypeConfig> =
                    serde_json::from_slice(&msg.json).map_err(parse_err)?;
                req.data = msg.data;
                json(&self.raft.install_snapshot(req).await)
            }
            PeerRpc::Propose => {
                let cmd: Command = serde_json::from_slice(&msg.json).map_err(parse_err)?;
                let wait = Duration::from_millis(self.cfg.write_timeout_ms);
                let result: Result<Applied, String> =
                    match tokio::time::timeout(wait, self.raft.client_write(cmd)).await {
                        Ok(Ok(r)) => Ok(r.data),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("not committed in time".to_owned()),
                    };
                json(&result)
            }
            PeerRpc::ReadIndex => {
                let ask: Option<ReadIndexAsk> =
                    serde_json::from_slice(&msg.json).map_err(parse_err)?;
                match ask {
                    Some(a) if a.lease_ms != self.cfg.lease_ms => {
                        json(&Err::<u64, String>(format!(
                            "the member's lease_ms {} differs from the leader's {}: set the \
                             same [cluster] lease_ms on every member",
                            a.lease_ms, self.cfg.lease_ms
                        )))
                    }
                    _ => json(&self.local_read_index().await),
                }
            }
            PeerRpc::NodeInfo => {
                let initialized = self
                    .raft
                    .is_initialized()
                    .await
                    .map_err(|e| e.to_string())?;
                json(&NodeInfo {
                    raft_id: self.id,
                    applied_index: self.seen(),
                    witness: self.witness,
                    initialized,
                })
            }
        }
    }

    /// Stops Raft (at shutdown, after the core was sealed).
    pub async fn shutdown(&self) {
        self.lease.revoke("shutting down");
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// Applies the state machine's notices to the core's memory, in order, and advances the
/// node's `seen` index. Runs until the state machine is dropped.
pub async fn run_reload(
    node: Arc<ClusterNode>,
    vhsm: Arc<vhsm_core::Vhsm>,
    mut notices: mpsc::UnboundedReceiver<Notice>,
) {
    while let Some(first) = notices.recv().await {
        let mut index = first.index;
        let mut changes = first.changes;
        while let Ok(more) = notices.try_recv() {
            index = index.max(more.index);
            changes = changes.merge(more.changes);
        }
        let empty = matches!(&changes, vhsm_core::Changes::Keys(k) if k.is_empty());
        if !empty {
            let v = Arc::clone(&vhsm);
            match tokio::task::spawn_blocking(move || v.reload(&changes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "replicated state failed to load: node sealed")
                }
                Err(_) => tracing::error!("reload task failed"),
            }
        }
        node.mark_seen(index);
    }
}
