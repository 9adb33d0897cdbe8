//! The vhsm HA group: one reused mTLS gRPC channel per node, round-robin, failover within the deadline.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GetKeyMetadataRequest,
    GetKeyMetadataResponse, HealthRequest, HealthResponse, KeyUsage, Reason,
};
use zeroize::Zeroizing;

use crate::config::VhsmConfig;
use crate::key_manager::{
    BoxFuture, DecryptInput, EncryptOutput, KeyManager, KeyMetadata, KeyState, Served, VhsmError,
};

/// How long a failed node is skipped before it is tried again.
pub const NODE_BACKOFF: Duration = Duration::from_secs(2);

/// Errors building the gRPC channels.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM file could not be read.
    #[error("cannot read {field} file {path}: {source}")]
    Read {
        /// Config field.
        field: &'static str,
        /// File path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// tonic refused an endpoint or TLS setting.
    #[error("invalid vhsm node {node}: {message}")]
    Endpoint {
        /// Node id.
        node: String,
        /// tonic's message.
        message: String,
    },
}

/// One vhsm node's Crypto service, as the HA group calls it. `timeout` is this attempt's budget.
pub trait NodeClient: Send + Sync + 'static {
    /// Crypto.Encrypt.
    fn encrypt(
        &self,
        req: EncryptRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<EncryptResponse, tonic::Status>>;
    /// Crypto.Decrypt.
    fn decrypt(
        &self,
        req: DecryptRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<DecryptResponse, tonic::Status>>;
    /// Crypto.GetKeyMetadata.
    fn key_metadata(
        &self,
        req: GetKeyMetadataRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<GetKeyMetadataResponse, tonic::Status>>;
    /// Crypto.Health.
    fn health(&self, timeout: Duration) -> BoxFuture<'_, Result<HealthResponse, tonic::Status>>;
}

/// A node reached over one lazily connected, reused mTLS channel.
#[derive(Debug, Clone)]
pub struct GrpcNode {
    client: CryptoClient<Channel>,
}

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

impl NodeClient for GrpcNode {
    fn encrypt(
        &self,
        req: EncryptRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<EncryptResponse, tonic::Status>> {
        let mut c = self.client.clone();
        Box::pin(async move { Ok(c.encrypt(with_timeout(req, timeout)).await?.into_inner()) })
    }
    fn decrypt(
        &self,
        req: DecryptRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<DecryptResponse, tonic::Status>> {
        let mut c = self.client.clone();
        Box::pin(async move { Ok(c.decrypt(with_timeout(req, timeout)).await?.into_inner()) })
    }
    fn key_metadata(
        &self,
        req: GetKeyMetadataRequest,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<GetKeyMetadataResponse, tonic::Status>> {
        let mut c = self.client.clone();
        Box::pin(async move {
            Ok(c.get_key_metadata(with_timeout(req, timeout))
                .await?
                .into_inner())
        })
    }
    fn health(&self, timeout: Duration) -> BoxFuture<'_, Result<HealthResponse, tonic::Status>> {
        let mut c = self.client.clone();
        Box::pin(async move {
            Ok(c.health(with_timeout(HealthRequest {}, timeout))
                .await?
                .into_inner())
        })
    }
}

fn read_pem(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// A lazily connected channel to a co-located vhsmd over its Unix socket (no TLS: vhsmd
/// authenticates our uid with SO_PEERCRED). The URI is a placeholder; the connector ignores it.
fn unix_channel(path: std::path::PathBuf, deadline_ms: u64) -> Channel {
    let path = std::sync::Arc::new(path);
    Endpoint::from_static("http://vhsmd.local")
        .connect_timeout(Duration::from_millis(deadline_ms))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = std::sync::Arc::clone(&path);
            async move {
                let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
}

/// Builds one `GrpcNode` per configured node (channels connect lazily, on first use).
pub fn grpc_nodes(cfg: &VhsmConfig) -> Result<Vec<(String, GrpcNode)>, ClientError> {
    let ca = Certificate::from_pem(read_pem("vhsm.ca", &cfg.ca)?);
    let cert = read_pem("vhsm.client_cert", &cfg.client_cert)?;
    let key = Zeroizing::new(read_pem("vhsm.client_key", &cfg.client_key)?);
    let identity = Identity::from_pem(cert, key.as_slice());
    let mut out = Vec::with_capacity(cfg.nodes.len());
    for n in &cfg.nodes {
        let bad = |e: tonic::transport::Error| ClientError::Endpoint {
            node: n.id.clone(),
            message: e.to_string(),
        };
        let channel = match n.unix_path() {
            Some(path) => unix_channel(path.to_path_buf(), cfg.deadline_ms),
            None => {
                let tls = ClientTlsConfig::new()
                    .ca_certificate(ca.clone())
                    .identity(identity.clone())
                    .domain_name(n.server_name.clone());
                Endpoint::from_shared(n.endpoint.clone())
                    .map_err(bad)?
                    .tls_config(tls)
                    .map_err(bad)?
                    .connect_timeout(Duration::from_millis(cfg.deadline_ms))
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true)
                    .connect_lazy()
            }
        };
        out.push((
            n.id.clone(),
            GrpcNode {
                client: CryptoClient::new(channel),
            },
        ));
    }
    Ok(out)
}

/// Health of one node as the deep check last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not checked yet.
    Unknown = 0,
    /// Unsealed, health key works, fast.
    Active = 1,
    /// Answers, but slow or the health key failed.
    Degraded = 2,
    /// Unreachable, sealed or uninitialized.
    Unavailable = 3,
}

impl NodeStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Active,
            2 => Self::Degraded,
            3 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The `healthStatus` string of `ekmFleetDetails` (Unknown counts as UNAVAILABLE).
    pub fn as_xks(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Degraded => "DEGRADED",
            Self::Unavailable | Self::Unknown => "UNAVAILABLE",
        }
    }
}

struct Node<C> {
    id: Arc<str>,
    client: C,
    down_until: Mutex<Option<Instant>>,
    health: AtomicU8,
}

impl<C> Node<C> {
    fn is_preferred(&self, now: Instant) -> bool {
        let down = match self.down_until.lock() {
            Ok(g) => g.is_some_and(|t| t > now),
            Err(_) => false,
        };
        !down && NodeStatus::from_u8(self.health.load(Ordering::Relaxed)) != NodeStatus::Unavailable
    }

    fn mark_down(&self, now: Instant, backoff: Duration) {
        if let Ok(mut g) = self.down_until.lock() {
            *g = Some(now + backoff);
        }
    }

    fn mark_up(&self) {
        if let Ok(mut g) = self.down_until.lock() {
            *g = None;
        }
    }
}

/// What one attempt's failure means for the HA loop.
enum Failure {
    /// Try the next node (node unreachable, sealed, uninitialized, not serving).
    NextNode(VhsmError),
    /// Final answer.
    Final(VhsmError),
}

fn classify(status: &tonic::Status) -> Failure {
    let reason = vhsm_proto::reason_of(status);
    match (status.code(), reason) {
        // This node cannot answer for the cluster now (sealed, no read lease, no quorum, its
        // storage failed and it is stopping): another node may.
        (
            _,
            Reason::Sealed
            | Reason::Uninitialized
            | Reason::NotServing
            | Reason::NoQuorum
            | Reason::StorageFailed,
        ) => Failure::NextNode(VhsmError::Rejected(reason)),
        (tonic::Code::DeadlineExceeded, _) => Failure::NextNode(VhsmError::Timeout),
        (_, Reason::Unspecified) => match status.code() {
            // Transport errors surface as UNAVAILABLE/UNKNOWN/CANCELLED without a reason detail.
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                Failure::NextNode(VhsmError::Unavailable)
            }
            _ => Failure::Final(VhsmError::Rejected(Reason::Internal)),
        },
        (_, r) => Failure::Final(VhsmError::Rejected(r)),
    }
}

/// A group of vhsm nodes holding the same keys: round-robin over healthy nodes, failover on
/// node failure while the request deadline allows.
pub struct HaGroup<C> {
    nodes: Vec<Node<C>>,
    next: AtomicUsize,
    backoff: Duration,
}

impl<C> std::fmt::Debug for HaGroup<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.nodes.iter().map(|n| &*n.id).collect();
        f.debug_struct("HaGroup").field("nodes", &ids).finish()
    }
}

impl<C: NodeClient> HaGroup<C> {
    /// A group over `(id, client)` pairs, in config order.
    pub fn new(nodes: Vec<(String, C)>, backoff: Duration) -> Self {
        Self {
            nodes: nodes
                .into_iter()
                .map(|(id, client)| Node {
                    id: Arc::from(id),
                    client,
                    down_until: Mutex::new(None),
                    health: AtomicU8::new(NodeStatus::Unknown as u8),
                })
                .collect(),
            next: AtomicUsize::new(0),
            backoff,
        }
    }

    /// Node ids in config order.
    pub fn node_ids(&self) -> Vec<Arc<str>> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// Records the deep-check result of node `idx` (feeds the load balancer).
    pub fn set_status(&self, idx: usize, status: NodeStatus) {
        if let Some(n) = self.nodes.get(idx) {
            n.health.store(status as u8, Ordering::Relaxed);
            if status == NodeStatus::Active || status == NodeStatus::Degraded {
                n.mark_up();
            }
        }
    }

    /// The client of node `idx` (the health checker probes nodes one by one).
    pub fn client(&self, idx: usize) -> Option<&C> {
        self.nodes.get(idx).map(|n| &n.client)
    }

    /// Nodes to try, in order: healthy ones round-robin, then the ones marked down.
    fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let (mut good, mut bad) = (Vec::with_capacity(n), Vec::new());
        for i in 0..n {
            let idx = (start + i) % n;
            if self.nodes[idx].is_preferred(now) {
                good.push(idx);
            } else {
                bad.push(idx);
            }
        }
        good.extend(bad);
        good
    }

    /// Runs `call` on node after node until one answers, the answer is final, or time is up.
    /// While other nodes remain, an attempt gets half of the remaining budget, so a hung node
    /// still leaves time to fail over.
    async fn run<T, F>(&self, deadline: Instant, call: F) -> Result<Served<T>, VhsmError>
    where
        F: for<'n> Fn(&'n C, Duration) -> BoxFuture<'n, Result<T, tonic::Status>>,
    {
        let mut last = VhsmError::Unavailable;
        let order = self.order(Instant::now());
        let count = order.len();
        for (i, idx) in order.into_iter().enumerate() {
            let node = &self.nodes[idx];
            let Some(remaining) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Err(VhsmError::Timeout);
            };
            let budget = if i + 1 < count {
                remaining / 2
            } else {
                remaining
            };
            let attempt_end = Instant::now() + budget;
            let failure = match tokio::time::timeout(budget, call(&node.client, budget)).await {
                Ok(Ok(value)) => {
                    node.mark_up();
                    return Ok(Served {
                        value,
                        node: node.id.clone(),
                    });
                }
                Ok(Err(status)) => match classify(&status) {
                    Failure::Final(e) => return Err(e),
                    // tonic's client enforces the grpc-timeout we set and reports it as
                    // CANCELLED: that is this attempt's time running out, not a dead node.
                    Failure::NextNode(_)
                        if status.code() == tonic::Code::Cancelled
                            && Instant::now() >= attempt_end =>
                    {
                        VhsmError::Timeout
                    }
                    Failure::NextNode(e) => {
                        tracing::debug!(node = %node.id, code = ?status.code(), "vhsm call failed");
                        e
                    }
                },
                Err(_) => VhsmError::Timeout,
            };
            tracing::warn!(node = %node.id, error = %failure, "vhsm node failed; trying the next one");
            node.mark_down(Instant::now(), self.backoff);
            last = failure;
        }
        Err(last)
    }
}

fn key_state(v: i32) -> KeyState {
    match vhsm_proto::v1::KeyState::try_from(v) {
        Ok(vhsm_proto::v1::KeyState::Enabled) => KeyState::Enabled,
        Ok(vhsm_proto::v1::KeyState::PendingDeletion) => KeyState::PendingDeletion,
        Ok(vhsm_proto::v1::KeyState::Destroyed) => KeyState::Destroyed,
        _ => KeyState::Disabled,
    }
}

impl<C: NodeClient> KeyManager for HaGroup<C> {
    fn encrypt<'a>(
        &'a self,
        key_id: &'a str,
        plaintext: &'a [u8],
        aad: &'a [u8],
        integrity_check: bool,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<EncryptOutput>, VhsmError>> {
        Box::pin(async move {
            let served = self
                .run(deadline, |c, t| {
                    c.encrypt(
                        EncryptRequest {
                            key_id: key_id.to_string(),
                            plaintext: plaintext.to_vec(),
                            aad: aad.to_vec(),
                            request_id: request_id.to_string(),
                            integrity_check,
                        },
                        t,
                    )
                })
                .await?;
            let r = served.value;
            Ok(Served {
                value: EncryptOutput {
                    ciphertext: r.ciphertext,
                    iv: r.iv,
                    tag: r.tag,
                    metadata: r.metadata,
                    integrity_value: r.integrity_value,
                },
                node: served.node,
            })
        })
    }

    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        input: DecryptInput<'a>,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<Zeroizing<Vec<u8>>>, VhsmError>> {
        Box::pin(async move {
            let served = self
                .run(deadline, |c, t| {
                    c.decrypt(
                        DecryptRequest {
                            key_id: key_id.to_string(),
                            ciphertext: input.ciphertext.to_vec(),
                            iv: input.iv.to_vec(),
                            tag: input.tag.to_vec(),
                            aad: input.aad.to_vec(),
                            metadata: input.metadata.to_vec(),
                            request_id: request_id.to_string(),
                        },
                        t,
                    )
                })
                .await?;
            let mut resp = served.value;
            Ok(Served {
                // The message zeroizes its own field when dropped; take the Vec out intact.
                value: Zeroizing::new(std::mem::take(&mut resp.plaintext)),
                node: served.node,
            })
        })
    }

    fn key_metadata<'a>(
        &'a self,
        key_id: &'a str,
        request_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<KeyMetadata>, VhsmError>> {
        Box::pin(async move {
            let served = self
                .run(deadline, |c, t| {
                    c.key_metadata(
                        GetKeyMetadataRequest {
                            key_id: key_id.to_string(),
                            request_id: request_id.to_string(),
                        },
                        t,
                    )
                })
                .await?;
            let Some(info) = served.value.key else {
                return Err(VhsmError::Rejected(Reason::Internal));
            };
            let has = |u: KeyUsage| info.usage.contains(&(u as i32));
            Ok(Served {
                value: KeyMetadata {
                    key_spec: info.key_spec.clone(),
                    encrypt: has(KeyUsage::Encrypt),
                    decrypt: has(KeyUsage::Decrypt),
                    state: key_state(info.state),
                },
                node: served.node,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use vhsm_proto::status_with_reason;

    /// A node that fails every call with `fail`, or answers when `fail` is None.
    struct Fake {
        fail: Option<tonic::Status>,
        sleep: Duration,
        calls: AtomicU32,
    }

    fn fake(fail: Option<tonic::Status>) -> Fake {
        Fake {
            fail,
            sleep: Duration::ZERO,
            calls: AtomicU32::new(0),
        }
    }

    impl NodeClient for Fake {
        fn encrypt(
            &self,
            mut req: EncryptRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<EncryptResponse, tonic::Status>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(self.sleep).await;
                match &self.fail {
                    Some(s) => Err(s.clone()),
                    None => Ok(EncryptResponse {
                        ciphertext: std::mem::take(&mut req.plaintext),
                        iv: vec![1; 12],
                        tag: vec![2; 16],
                        metadata: vec![1, 0, 0, 0, 1],
                        integrity_value: if req.integrity_check {
                            vec![3; 32]
                        } else {
                            Vec::new()
                        },
                    }),
                }
            })
        }
        fn decrypt(
            &self,
            req: DecryptRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<DecryptResponse, tonic::Status>> {
            Box::pin(async move {
                match &self.fail {
                    Some(s) => Err(s.clone()),
                    None => Ok(DecryptResponse {
                        plaintext: req.ciphertext,
                    }),
                }
            })
        }
        fn key_metadata(
            &self,
            _req: GetKeyMetadataRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<GetKeyMetadataResponse, tonic::Status>> {
            Box::pin(async move {
                match &self.fail {
                    Some(s) => Err(s.clone()),
                    None => Ok(GetKeyMetadataResponse {
                        key: Some(vhsm_proto::v1::KeyInfo {
                            key_id: "k".into(),
                            key_spec: "AES_256".into(),
                            usage: vec![KeyUsage::Encrypt as i32],
                            state: vhsm_proto::v1::KeyState::PendingDeletion as i32,
                            ..Default::default()
                        }),
                    }),
                }
            })
        }
        fn health(&self, _t: Duration) -> BoxFuture<'_, Result<HealthResponse, tonic::Status>> {
            Box::pin(async { Err(tonic::Status::unavailable("no")) })
        }
    }

    fn group(nodes: Vec<Fake>) -> HaGroup<Fake> {
        HaGroup::new(
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, f)| (format!("vhsm-{}", i + 1), f))
                .collect(),
            NODE_BACKOFF,
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(150)
    }

    #[tokio::test]
    async fn failover_to_second_node_when_first_is_unreachable() {
        let g = group(vec![
            fake(Some(tonic::Status::unavailable("connect"))),
            fake(None),
        ]);
        // Several requests: whichever node round-robin starts at, all are served by vhsm-2.
        for _ in 0..4 {
            let out = g
                .encrypt("k", b"pt", b"", false, "r", soon())
                .await
                .unwrap();
            assert_eq!(&*out.node, "vhsm-2");
            assert_eq!(out.value.ciphertext, b"pt");
        }
        // Node 1 was tried once, then skipped while backed off.
        assert_eq!(g.nodes[0].client.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn integrity_check_is_forwarded_and_its_value_returned() {
        let g = group(vec![fake(None)]);
        let out = g.encrypt("k", b"pt", b"", true, "r", soon()).await.unwrap();
        assert_eq!(out.value.integrity_value, vec![3; 32]);
        let out = g
            .encrypt("k", b"pt", b"", false, "r", soon())
            .await
            .unwrap();
        assert!(out.value.integrity_value.is_empty());
    }

    #[tokio::test]
    async fn sealed_node_fails_over_and_all_sealed_reports_sealed() {
        let sealed = || status_with_reason(tonic::Code::Unavailable, "sealed", Reason::Sealed, 0);
        let g = group(vec![fake(Some(sealed())), fake(None)]);
        assert!(g.encrypt("k", b"pt", b"", false, "r", soon()).await.is_ok());
        let g = group(vec![fake(Some(sealed())), fake(Some(sealed()))]);
        let e = g
            .encrypt("k", b"pt", b"", false, "r", soon())
            .await
            .unwrap_err();
        assert_eq!(e, VhsmError::Rejected(Reason::Sealed));
    }

    #[tokio::test]
    async fn key_errors_are_final_and_not_retried() {
        let disabled = status_with_reason(
            tonic::Code::FailedPrecondition,
            "disabled",
            Reason::KeyDisabled,
            0,
        );
        let g = group(vec![fake(Some(disabled.clone())), fake(Some(disabled))]);
        let e = g
            .encrypt("k", b"pt", b"", false, "r", soon())
            .await
            .unwrap_err();
        assert_eq!(e, VhsmError::Rejected(Reason::KeyDisabled));
        let total: u32 = g
            .nodes
            .iter()
            .map(|n| n.client.calls.load(Ordering::SeqCst))
            .sum();
        assert_eq!(total, 1);
    }

    #[tokio::test]
    async fn all_unreachable_is_unavailable_and_slow_is_timeout() {
        let g = group(vec![
            fake(Some(tonic::Status::unavailable("x"))),
            fake(Some(tonic::Status::unknown("x"))),
        ]);
        assert_eq!(
            g.decrypt(
                "k",
                DecryptInput {
                    ciphertext: b"c",
                    iv: &[0; 12],
                    tag: &[0; 16],
                    aad: b"",
                    metadata: b""
                },
                "r",
                soon()
            )
            .await
            .unwrap_err(),
            VhsmError::Unavailable
        );
        let mut slow = fake(None);
        slow.sleep = Duration::from_millis(500);
        let g = group(vec![slow]);
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            g.encrypt("k", b"p", b"", false, "r", deadline)
                .await
                .unwrap_err(),
            VhsmError::Timeout
        );
        let g = group(vec![fake(Some(tonic::Status::deadline_exceeded("x")))]);
        assert_eq!(
            g.encrypt("k", b"p", b"", false, "r", soon())
                .await
                .unwrap_err(),
            VhsmError::Timeout
        );
    }

    #[tokio::test]
    async fn hung_first_node_still_leaves_time_for_the_second() {
        let mut hung = fake(None);
        hung.sleep = Duration::from_secs(5);
        let g = group(vec![hung, fake(None)]);
        let start = Instant::now();
        let out = g
            .encrypt("k", b"pt", b"", false, "r", soon())
            .await
            .unwrap();
        assert_eq!(&*out.node, "vhsm-2");
        assert!(start.elapsed() < Duration::from_millis(150));
    }

    #[tokio::test]
    async fn metadata_maps_usage_and_state() {
        let g = group(vec![fake(None)]);
        let m = g.key_metadata("k", "r", soon()).await.unwrap().value;
        assert!(m.encrypt && !m.decrypt);
        assert_eq!(m.state, KeyState::PendingDeletion);
        assert_eq!(m.key_spec, "AES_256");
    }

    #[test]
    fn unavailable_health_steers_round_robin_away() {
        let g = group(vec![fake(None), fake(None), fake(None)]);
        g.set_status(1, NodeStatus::Unavailable);
        let now = Instant::now();
        for _ in 0..3 {
            let o = g.order(now);
            assert_eq!(o.len(), 3);
            assert_eq!(*o.last().unwrap(), 1, "unhealthy node only as last resort");
        }
        assert_eq!(NodeStatus::Unknown.as_xks(), "UNAVAILABLE");
    }
}
