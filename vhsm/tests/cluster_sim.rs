//! Deterministic in-process cluster tests: three (or two + witness) full nodes (sled, Raft,
//! core) joined by an in-memory transport that can cut links and drop messages (no ports).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use vhsm::cluster::config::ClusterConfig;
use vhsm::cluster::network::{PeerError, PeerTransport};
use vhsm::cluster::node::{run_reload, ClusterNode};
use vhsm::cluster::replicated::ReplicatedStorage;
use vhsm::cluster::types::{Applied, Command, PeerRpc, Write};
use vhsm::storage::SledStorage;
use vhsm_core::{
    Error, InitRequest, KeyState, NewKey, Options, OsRandom, Storage, SystemClock, Tree, UsageSet,
    Vhsm,
};
use vhsm_proto::v1::RaftMessage;

const PASS: &str = "correct horse battery staple";

/// The in-memory network: every node by address, and the links that are cut.
#[derive(Debug, Default)]
struct Net {
    nodes: Mutex<HashMap<String, Arc<ClusterNode>>>,
    /// (from, to): messages from `from` to `to` are lost.
    cut: Mutex<HashSet<(String, String)>>,
    /// Append/snapshot messages to these nodes are lost (a node cut off from replication).
    no_replication_to: Mutex<HashSet<String>>,
}

#[derive(Debug)]
struct LocalTransport {
    from: String,
    net: Arc<Net>,
}

#[tonic::async_trait]
impl PeerTransport for LocalTransport {
    async fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, PeerError> {
        let lost = || PeerError::Unreachable {
            addr: addr.to_owned(),
            detail: "link cut".into(),
        };
        let cut = |a: &str, b: &str| {
            self.net
                .cut
                .lock()
                .unwrap()
                .contains(&(a.to_owned(), b.to_owned()))
        };
        if cut(&self.from, addr) || cut(addr, &self.from) {
            return Err(lost());
        }
        // Entries (not heartbeats) to a node cut off from replication are lost: it still knows
        // the leader and its commit index, but cannot apply anything new.
        if self.net.no_replication_to.lock().unwrap().contains(addr) {
            let carries_entries = match rpc {
                PeerRpc::Snapshot => true,
                PeerRpc::Append => serde_json::from_slice::<serde_json::Value>(&msg.json)
                    .ok()
                    .and_then(|v| {
                        v.get("entries")
                            .and_then(|e| e.as_array())
                            .map(|e| !e.is_empty())
                    })
                    .unwrap_or(true),
                _ => false,
            };
            if carries_entries {
                return Err(lost());
            }
        }
        let node = self.net.nodes.lock().unwrap().get(addr).cloned();
        let Some(node) = node else {
            return Err(lost());
        };
        match tokio::time::timeout(timeout, node.handle(rpc, msg)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(PeerError::Refused {
                addr: addr.to_owned(),
                detail: e,
            }),
            Err(_) => Err(lost()),
        }
    }
}

struct SimNode {
    addr: String,
    node: Arc<ClusterNode>,
    vhsm: Arc<Vhsm>,
    storage: Arc<ReplicatedStorage>,
    local: Arc<SledStorage>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl SimNode {
    /// Runs a blocking core call (commits block on the runtime) off the async workers.
    async fn core<T: Send + 'static>(&self, f: impl FnOnce(&Vhsm) -> T + Send + 'static) -> T {
        let v = Arc::clone(&self.vhsm);
        tokio::task::spawn_blocking(move || f(&v)).await.unwrap()
    }

    /// A store-changing core call as vhsmd's dispatcher runs it: catch up with the cluster,
    /// then run it, again after catching up if a concurrent write on another node won.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&Vhsm) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _ = self.node.catch_up(Duration::from_secs(3)).await;
        let v = Arc::clone(&self.vhsm);
        let s = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || {
            s.write("", || f(&v), |r| matches!(r, Err(Error::Conflict { .. })))
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        self.node.shutdown().await;
        for t in self.tasks {
            t.abort();
        }
    }
}

fn cluster_config(bootstrap: bool, witness: bool) -> ClusterConfig {
    ClusterConfig {
        bootstrap,
        witness,
        lease_ms: 900,
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        write_timeout_ms: 3000,
        ..ClusterConfig::default()
    }
}

async fn start_node(net: &Arc<Net>, addr: &str, bootstrap: bool, witness: bool) -> SimNode {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(SledStorage::open(&dir.path().join("store")).unwrap());
    let transport = Arc::new(LocalTransport {
        from: addr.to_owned(),
        net: Arc::clone(net),
    });
    let (node, notices) = ClusterNode::start(
        local.db(),
        &dir.path().join("raft-snapshot"),
        &cluster_config(bootstrap, witness),
        addr.to_owned(),
        transport,
    )
    .await
    .unwrap();
    net.nodes
        .lock()
        .unwrap()
        .insert(addr.to_owned(), Arc::clone(&node));
    let storage = Arc::new(ReplicatedStorage::new(
        Arc::clone(&local),
        Arc::clone(&node),
        tokio::runtime::Handle::current(),
    ));
    let vhsm = Arc::new(
        Vhsm::open(
            Arc::clone(&storage) as Arc<dyn Storage>,
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap(),
    );
    let tasks = vec![
        tokio::spawn(run_reload(Arc::clone(&node), Arc::clone(&vhsm), notices)),
        tokio::spawn(Arc::clone(&node).run_lease()),
    ];
    SimNode {
        addr: addr.to_owned(),
        node,
        vhsm,
        storage,
        local,
        tasks,
        _dir: dir,
    }
}

fn pass() -> SecretString {
    SecretString::from(PASS.to_owned())
}

fn spec(id: &str) -> NewKey {
    NewKey {
        id: id.into(),
        usage: UsageSet::ENCRYPT_DECRYPT,
        labels: BTreeMap::new(),
    }
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three voters (n1 bootstraps, n2 and n3 join), initialized on n1 and unsealed everywhere.
async fn three_nodes(net: &Arc<Net>) -> Vec<SimNode> {
    let n1 = start_node(net, "n1", true, false).await;
    let n2 = start_node(net, "n2", false, false).await;
    let n3 = start_node(net, "n3", false, false).await;
    wait_until("n1 leads", Duration::from_secs(5), || {
        n1.node.view().role == "leader"
    })
    .await;
    n1.write(move |v| v.initialize(InitRequest::Passphrase(pass()), "admin"))
        .await
        .unwrap();
    for n in [&n2, &n3] {
        n1.node.add_node(&n.addr, false).await.unwrap();
    }
    let nodes = vec![n1, n2, n3];
    for n in &nodes {
        n.node.catch_up(Duration::from_secs(5)).await.unwrap();
        n.write(move |v| v.unseal_with_passphrase(&pass(), "admin"))
            .await
            .unwrap();
    }
    nodes
}

fn leader_of(nodes: &[SimNode]) -> Option<usize> {
    nodes.iter().position(|n| n.node.view().role == "leader")
}

async fn serving_soon(n: &SimNode) {
    wait_until(
        &format!("{} serves", n.addr),
        Duration::from_secs(5),
        || n.node.serving().is_ok(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_leader_and_follower_are_seen_by_every_node() {
    let net = Arc::new(Net::default());
    let nodes = three_nodes(&net).await;
    let leader = leader_of(&nodes).unwrap();
    let follower = (leader + 1) % 3;
    nodes[leader]
        .write(move |v| v.create_key(spec("on-leader"), "admin"))
        .await
        .unwrap();
    nodes[follower]
        .write(move |v| v.create_key(spec("on-follower"), "admin"))
        .await
        .unwrap();
    nodes[follower]
        .write(move |v| v.rotate_key("on-leader", "admin"))
        .await
        .unwrap();
    for n in &nodes {
        n.node.catch_up(Duration::from_secs(3)).await.unwrap();
        serving_soon(n).await;
        let a = n.core(|v| v.key_metadata("on-leader")).await.unwrap();
        assert_eq!(a.current_version, 2, "{}", n.addr);
        n.core(|v| v.key_metadata("on-follower")).await.unwrap();
    }
    // A ciphertext made on one node decrypts on every node.
    let ct = nodes[0]
        .core(|v| v.encrypt("on-leader", b"pt", b"aad"))
        .await
        .unwrap();
    for n in &nodes {
        let ct = ct.clone();
        let input_pt = n
            .core(move |v| {
                v.decrypt(
                    "on-leader",
                    &vhsm_core::DecryptInput {
                        ciphertext: &ct.ciphertext,
                        iv: &ct.iv,
                        tag: &ct.tag,
                        aad: b"aad",
                        metadata: &ct.metadata,
                    },
                )
                .map(|p| p.to_vec())
            })
            .await
            .unwrap();
        assert_eq!(input_pt, b"pt");
    }
    // One audit chain: every node holds the same head (once current: the first encrypt
    // reserved AES-GCM invocations, an audited write).
    let heads: Vec<_> = {
        let mut h = Vec::new();
        for n in &nodes {
            n.node.catch_up(Duration::from_secs(3)).await.unwrap();
            h.push(n.core(|v| v.status().audit_head_hash).await);
        }
        h
    };
    assert!(
        heads.iter().all(|h| *h == heads[0] && !h.is_empty()),
        "{heads:?}"
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_elects_a_new_leader_and_writes_resume() {
    let net = Arc::new(Net::default());
    let nodes = three_nodes(&net).await;
    let old = leader_of(&nodes).unwrap();
    for other in 0..3 {
        if other != old {
            net.cut
                .lock()
                .unwrap()
                .insert((nodes[old].addr.clone(), nodes[other].addr.clone()));
        }
    }
    let cut_at = Instant::now();
    wait_until("a new leader", Duration::from_secs(5), || {
        nodes
            .iter()
            .enumerate()
            .any(|(i, n)| i != old && n.node.view().role == "leader")
    })
    .await;
    let elected_after = cut_at.elapsed();
    let survivor = (old + 1) % 3;
    nodes[survivor]
        .write(move |v| v.create_key(spec("after-failover"), "admin"))
        .await
        .unwrap();
    // The isolated old leader cannot commit anything.
    let refused = nodes[old]
        .write(move |v| v.create_key(spec("from-the-minority"), "admin"))
        .await;
    assert!(matches!(refused, Err(Error::NoQuorum(_))), "{refused:?}");
    assert!(elected_after < Duration::from_secs(3), "{elected_after:?}");
    net.cut.lock().unwrap().clear();
    nodes[old]
        .node
        .catch_up(Duration::from_secs(5))
        .await
        .unwrap();
    nodes[old]
        .core(|v| v.key_metadata("after-failover"))
        .await
        .unwrap();
    assert!(matches!(
        nodes[old]
            .core(|v| v.key_metadata("from-the-minority"))
            .await,
        Err(Error::KeyNotFound(_))
    ));
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_stops_serving_within_the_lease() {
    let net = Arc::new(Net::default());
    let nodes = three_nodes(&net).await;
    for n in &nodes {
        serving_soon(n).await;
    }
    let leader = leader_of(&nodes).unwrap();
    let lone = (leader + 1) % 3;
    for other in 0..3 {
        if other != lone {
            net.cut
                .lock()
                .unwrap()
                .insert((nodes[lone].addr.clone(), nodes[other].addr.clone()));
        }
    }
    let cut_at = Instant::now();
    let lease = Duration::from_millis(cluster_config(false, false).lease_ms);
    wait_until("the partitioned node to stop serving", lease * 2, || {
        nodes[lone].node.serving().is_err()
    })
    .await;
    assert!(
        cut_at.elapsed() <= lease + Duration::from_millis(400),
        "{:?}",
        cut_at.elapsed()
    );
    let why = nodes[lone].node.serving().unwrap_err();
    assert!(
        why.contains("read lease") || why.contains("lagging"),
        "{why}"
    );
    // The majority keeps serving.
    for (i, n) in nodes.iter().enumerate() {
        if i != lone {
            assert!(n.node.serving().is_ok(), "{}", n.addr);
        }
    }
    net.cut.lock().unwrap().clear();
    serving_soon(&nodes[lone]).await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_log_cannot_renew_its_lease() {
    let net = Arc::new(Net::default());
    let nodes = three_nodes(&net).await;
    let leader = leader_of(&nodes).unwrap();
    let behind = (leader + 2) % 3;
    serving_soon(&nodes[behind]).await;
    // It still answers read-index calls, but no longer receives log entries (as a node whose
    // disk was rolled back, or whose replication stalled): new writes leave it behind.
    net.no_replication_to
        .lock()
        .unwrap()
        .insert(nodes[behind].addr.clone());
    nodes[leader]
        .write(move |v| v.create_key(spec("newer"), "admin"))
        .await
        .unwrap();
    let lease = Duration::from_millis(cluster_config(false, false).lease_ms);
    wait_until("the lagging node to stop serving", lease * 2, || {
        nodes[behind].node.serving().is_err()
    })
    .await;
    let why = nodes[behind].node.serving().unwrap_err();
    assert!(why.contains("lagging"), "{why}");
    net.no_replication_to.lock().unwrap().clear();
    serving_soon(&nodes[behind]).await;
    nodes[behind]
        .core(|v| v.key_metadata("newer"))
        .await
        .unwrap();
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_duplicate_entries_cannot_move_a_key_backwards() {
    let net = Arc::new(Net::default());
    let nodes = three_nodes(&net).await;
    let n = &nodes[0];
    n.write(move |v| v.create_key(spec("k"), "admin"))
        .await
        .unwrap();
    n.node.catch_up(Duration::from_secs(3)).await.unwrap();
    // The enabled record as it is stored now, and the index it was current at.
    let enabled_record = n.local.get(Tree::Keys, b"key/k").unwrap().unwrap();
    let base = n.node.seen();
    n.write(move |v| v.disable_key("k", "admin")).await.unwrap();
    // A late entry computed before the disable (e.g. a delayed retry of "enable"): refused.
    let late = Command {
        request_id: "late-enable".into(),
        base_index: base,
        writes: vec![Write::Put {
            tree: "keys".into(),
            key: b"key/k".to_vec(),
            value: enabled_record,
        }],
    };
    let applied = n.node.propose(late.clone()).await.unwrap();
    assert!(matches!(applied, Applied::Conflict { .. }), "{applied:?}");
    // A duplicate of an applied request: not applied again.
    n.node.catch_up(Duration::from_secs(3)).await.unwrap();
    let fresh = Command {
        base_index: n.node.seen(),
        writes: Vec::new(),
        request_id: "once".into(),
    };
    assert!(matches!(
        n.node.propose(fresh.clone()).await.unwrap(),
        Applied::Done { .. }
    ));
    n.node.catch_up(Duration::from_secs(3)).await.unwrap();
    let again = Command {
        base_index: n.node.seen(),
        ..fresh.clone()
    };
    assert!(matches!(
        n.node.propose(again).await.unwrap(),
        Applied::Duplicate {
            same_writes: true,
            ..
        }
    ));
    for node in &nodes {
        node.node.catch_up(Duration::from_secs(3)).await.unwrap();
        let k = node.core(|v| v.key_metadata("k")).await.unwrap();
        assert_eq!(k.state, KeyState::Disabled, "{}", node.addr);
    }
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_a_witness_survive_the_loss_of_either_hsm_node() {
    let net = Arc::new(Net::default());
    let a = start_node(&net, "a", true, false).await;
    let b = start_node(&net, "b", false, false).await;
    let w = start_node(&net, "w", false, true).await;
    wait_until("a leads", Duration::from_secs(5), || {
        a.node.view().role == "leader"
    })
    .await;
    a.write(move |v| v.initialize(InitRequest::Passphrase(pass()), "admin"))
        .await
        .unwrap();
    a.node.add_node("b", false).await.unwrap();
    a.node.add_node("w", false).await.unwrap();
    for n in [&a, &b] {
        n.node.catch_up(Duration::from_secs(5)).await.unwrap();
        n.write(move |v| v.unseal_with_passphrase(&pass(), "admin"))
            .await
            .unwrap();
    }
    // The witness holds the sealed store but never serves.
    w.node.catch_up(Duration::from_secs(5)).await.unwrap();
    assert!(w.node.serving().is_err());
    assert_eq!(w.vhsm.health().0, vhsm_core::SealState::Sealed);
    for (lost, alive) in [(&a, &b), (&b, &a)] {
        net.cut.lock().unwrap().clear();
        for other in ["a", "b", "w"] {
            if other != lost.addr {
                net.cut
                    .lock()
                    .unwrap()
                    .insert((lost.addr.clone(), other.to_owned()));
            }
        }
        let id = format!("while-{}-is-down", lost.addr);
        let id2 = id.clone();
        wait_until(
            "a leader among the survivors",
            Duration::from_secs(5),
            || alive.node.view().role == "leader" || w.node.view().role == "leader",
        )
        .await;
        alive
            .write(move |v| v.create_key(spec(&id2), "admin"))
            .await
            .unwrap();
        serving_soon(alive).await;
        alive.node.catch_up(Duration::from_secs(3)).await.unwrap();
        alive.core(move |v| v.key_metadata(&id)).await.unwrap();
    }
    for n in [a, b, w] {
        n.stop().await;
    }
}

/// A cluster node with its replicated storage and no core on top: each applied change is
/// marked seen at once, as the reload task does after reloading the core.
async fn bare_node(
    net: &Arc<Net>,
    addr: &str,
    bootstrap: bool,
) -> (Arc<ClusterNode>, Arc<ReplicatedStorage>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(SledStorage::open(&dir.path().join("store")).unwrap());
    let transport = Arc::new(LocalTransport {
        from: addr.to_owned(),
        net: Arc::clone(net),
    });
    let (node, mut notices) = ClusterNode::start(
        local.db(),
        &dir.path().join("raft-snapshot"),
        &cluster_config(bootstrap, false),
        addr.to_owned(),
        transport,
    )
    .await
    .unwrap();
    let seen = Arc::clone(&node);
    tokio::spawn(async move {
        while let Some(n) = notices.recv().await {
            seen.mark_seen(n.index);
        }
    });
    net.nodes
        .lock()
        .unwrap()
        .insert(addr.to_owned(), Arc::clone(&node));
    let storage = Arc::new(ReplicatedStorage::new(
        local,
        Arc::clone(&node),
        tokio::runtime::Handle::current(),
    ));
    (node, storage, dir)
}

/// Runs the core's storage conformance suite on `storage` (off the async workers: every write
/// blocks on the runtime until it is committed and applied).
async fn conformance(storage: &Arc<ReplicatedStorage>) {
    let s = Arc::clone(storage);
    tokio::task::spawn_blocking(move || vhsm_core::storage_conformance::run_all(s.as_ref()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_storage_passes_the_core_conformance_suite_on_a_leader_and_a_follower() {
    // The storage the core runs on in vhsmd, held to the same suite as sled and memory.
    let net = Arc::new(Net::default());
    let (n1, s1, _d1) = bare_node(&net, "n1", true).await;
    wait_until("n1 leads", Duration::from_secs(5), || {
        n1.view().role == "leader"
    })
    .await;
    conformance(&s1).await;

    // On a follower of a fresh cluster, whose writes go through the leader.
    let net = Arc::new(Net::default());
    let (m1, l1, _e1) = bare_node(&net, "m1", true).await;
    let (m2, s2, _e2) = bare_node(&net, "m2", false).await;
    wait_until("m1 leads", Duration::from_secs(5), || {
        m1.view().role == "leader"
    })
    .await;
    m1.add_node("m2", false).await.unwrap();
    m2.catch_up(Duration::from_secs(5)).await.unwrap();
    conformance(&s2).await;
    // What the follower wrote is on the leader too.
    let everything = |s: &ReplicatedStorage| -> Vec<_> {
        Tree::ALL
            .iter()
            .map(|t| s.scan_prefix(*t, b"").unwrap())
            .collect()
    };
    // The suite cleans up after itself; leave a record, written on the follower.
    let s = Arc::clone(&s2);
    tokio::task::spawn_blocking(move || {
        let mut b = vhsm_core::WriteBatch::new();
        b.put(Tree::Meta, b"written-on-m2".to_vec(), b"yes".to_vec());
        s.commit(b, vhsm_core::Durability::Flushed)
    })
    .await
    .unwrap()
    .unwrap();
    let on_follower = everything(&s2);
    assert_eq!(
        on_follower[4],
        [(b"written-on-m2".to_vec(), b"yes".to_vec())]
    );
    m1.catch_up(Duration::from_secs(5)).await.unwrap();
    assert_eq!(everything(&l1), on_follower);
    for n in [n1, m1, m2] {
        n.shutdown().await;
    }
}
