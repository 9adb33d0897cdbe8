//! The Raft transport, client side: one reused mutual-TLS gRPC channel per peer address,
//! openraft's RPCs JSON-encoded over the `vhsm.v1.Peer` service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vhsm_proto::v1::peer_client::PeerClient;
use vhsm_proto::v1::RaftMessage;

use super::types::{Applied, Command, NodeId, NodeInfo, PeerRpc, ReadIndexAsk, TypeConfig};

/// Largest peer message (snapshot chunks are 1 MiB; a restore entry can be large).
pub const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a peer call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached (connection refused, TLS failure, timeout).
    #[error("peer {addr} unreachable: {detail}")]
    Unreachable {
        /// Peer address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The peer answered with an error.
    #[error("peer {addr} refused: {detail}")]
    Refused {
        /// Peer address.
        addr: String,
        /// Its answer.
        detail: String,
    },
    /// This node has no peer certificate configured.
    #[error("no [cluster] peer_cert/peer_key configured: this node cannot reach other nodes")]
    NoPeerCertificate,
}

/// TLS material for calling peers.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// PEM of the CA the peers' server certificates chain to.
    pub ca_pem: Vec<u8>,
    /// PEM of this node's peer client certificate.
    pub cert_pem: Vec<u8>,
    /// PEM of its key.
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
}

/// How a node reaches its peers: one request/response call of a [`PeerRpc`] kind. gRPC over
/// mutual TLS in vhsmd; an in-process table in the deterministic cluster tests.
#[tonic::async_trait]
pub trait PeerTransport: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `msg` to the node at `addr` and returns its answer.
    async fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, PeerError>;
}

/// The gRPC transport: one lazily connected mutual-TLS channel per peer address.
#[derive(Debug)]
pub struct GrpcTransport {
    tls: Option<ClientTlsConfig>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcTransport {
    /// A transport that authenticates with `tls` (`None`: this node cannot call peers).
    pub fn new(tls: Option<&PeerTls>) -> GrpcTransport {
        let tls = tls.map(|t| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca_pem))
                .identity(Identity::from_pem(&t.cert_pem, t.key_pem.as_slice()))
        });
        GrpcTransport {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<PeerClient<Channel>, PeerError> {
        let tls = self.tls.clone().ok_or(PeerError::NoPeerCertificate)?;
        let unreachable = |detail: String| PeerError::Unreachable {
            addr: addr.to_owned(),
            detail,
        };
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| unreachable("channel table lock poisoned".into()))?;
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(addr.to_owned())
                    .map_err(|e| unreachable(e.to_string()))?
                    .tls_config(tls)
                    .map_err(|e| unreachable(e.to_string()))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy();
                channels.insert(addr.to_owned(), c.clone());
                c
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }
}

#[tonic::async_trait]
impl PeerTransport for GrpcTransport {
    async fn call(
        &self,
        addr: &str,
        rpc: PeerRpc,
        msg: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, PeerError> {
        let mut client = self.client(addr)?;
        let call = async {
            match rpc {
                PeerRpc::Append => client.append_entries(msg).await,
                PeerRpc::Vote => client.vote(msg).await,
                PeerRpc::Snapshot => client.install_snapshot(msg).await,
                PeerRpc::Propose => client.propose(msg).await,
                PeerRpc::ReadIndex => client.read_index(msg).await,
                PeerRpc::NodeInfo => client.node_info(msg).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(PeerError::Unreachable {
                addr: addr.to_owned(),
                detail: format!("no answer within {timeout:?}"),
            }),
            Ok(Err(s)) => Err(status_error(addr, &s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }
}

fn status_error(addr: &str, s: &tonic::Status) -> PeerError {
    let detail = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            PeerError::Unreachable {
                addr: addr.to_owned(),
                detail,
            }
        }
        _ => PeerError::Refused {
            addr: addr.to_owned(),
            detail,
        },
    }
}

/// Typed peer calls over a [`PeerTransport`].
#[derive(Debug, Clone)]
pub struct Peers {
    transport: Arc<dyn PeerTransport>,
    timeout: Duration,
}

fn refused(addr: &str, e: impl ToString) -> PeerError {
    PeerError::Refused {
        addr: addr.to_owned(),
        detail: e.to_string(),
    }
}

impl Peers {
    /// Calls over `transport`; `timeout` bounds the non-Raft calls.
    pub fn new(transport: Arc<dyn PeerTransport>, timeout: Duration) -> Peers {
        Peers { transport, timeout }
    }

    async fn json_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        rpc: PeerRpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let json = serde_json::to_vec(req).map_err(|e| refused(addr, e))?;
        let reply = self
            .transport
            .call(
                addr,
                rpc,
                RaftMessage {
                    json,
                    data: Vec::new(),
                },
                timeout,
            )
            .await?;
        serde_json::from_slice(&reply.json).map_err(|e| refused(addr, e))
    }

    /// Forwards a command to the leader at `addr`; the inner error is the leader's refusal.
    pub async fn propose(
        &self,
        addr: &str,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<Result<Applied, String>, PeerError> {
        self.json_call(addr, PeerRpc::Propose, cmd, timeout).await
    }

    /// The read index of the leader at `addr`, for a member whose lease is `lease_ms`.
    pub async fn read_index(
        &self,
        addr: &str,
        lease_ms: u64,
        timeout: Duration,
    ) -> Result<Result<u64, String>, PeerError> {
        let ask = ReadIndexAsk { lease_ms };
        self.json_call(addr, PeerRpc::ReadIndex, &ask, timeout)
            .await
    }

    /// The identity and progress of the node at `addr`.
    pub async fn node_info(&self, addr: &str) -> Result<NodeInfo, PeerError> {
        self.json_call(addr, PeerRpc::NodeInfo, &(), self.timeout)
            .await
    }

    async fn raft_call<Req, Resp, E>(
        &self,
        addr: &str,
        target: NodeId,
        rpc: PeerRpc,
        req: &Req,
        data: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = |m: String| RPCError::Network(NetworkError::new(&AnyError::error(m)));
        let json = serde_json::to_vec(req).map_err(|e| network(e.to_string()))?;
        let reply = match self
            .transport
            .call(addr, rpc, RaftMessage { json, data }, ttl)
            .await
        {
            Ok(r) => r,
            Err(e @ (PeerError::Unreachable { .. } | PeerError::NoPeerCertificate)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                    e.to_string(),
                ))))
            }
            Err(e) => return Err(network(e.to_string())),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.json).map_err(|e| network(e.to_string()))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }
}

/// openraft's network factory over [`Peers`].
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    peers: Peers,
}

impl PeerNetwork {
    /// A factory sharing `peers`.
    pub fn new(peers: Peers) -> PeerNetwork {
        PeerNetwork { peers }
    }
}

/// A connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    peers: Peers,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            peers: self.peers.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.peers
            .raft_call(
                &self.addr,
                self.target,
                PeerRpc::Append,
                &rpc,
                Vec::new(),
                option.hard_ttl(),
            )
            .await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The chunk travels as raw bytes, the rest as JSON.
        let data = std::mem::take(&mut rpc.data);
        self.peers
            .raft_call(
                &self.addr,
                self.target,
                PeerRpc::Snapshot,
                &rpc,
                data,
                option.hard_ttl(),
            )
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.peers
            .raft_call(
                &self.addr,
                self.target,
                PeerRpc::Vote,
                &rpc,
                Vec::new(),
                option.hard_ttl(),
            )
            .await
    }
}
