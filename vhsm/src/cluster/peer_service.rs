//! The `vhsm.v1.Peer` gRPC service: authorizes the `peer` role, then hands the call to the node.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vhsm_proto::v1::peer_server::Peer;
use vhsm_proto::v1::RaftMessage;

use super::node::ClusterNode;
use super::types::PeerRpc;
use crate::access::Method;
use crate::dispatch::Dispatcher;

/// The Peer service (role `peer` only).
#[derive(Debug, Clone)]
pub struct PeerService {
    d: Arc<Dispatcher>,
    node: Arc<ClusterNode>,
}

impl PeerService {
    /// The service over `node`, authorizing through `d`.
    pub fn new(d: Arc<Dispatcher>, node: Arc<ClusterNode>) -> PeerService {
        PeerService { d, node }
    }

    async fn serve(
        &self,
        request: Request<RaftMessage>,
        rpc: PeerRpc,
    ) -> Result<Response<RaftMessage>, Status> {
        self.d.authorize(&request, Method::Peer).await?;
        self.node
            .handle(rpc, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::failed_precondition)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::Append).await
    }
    async fn vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::Vote).await
    }
    async fn install_snapshot(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::Snapshot).await
    }
    async fn propose(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::Propose).await
    }
    async fn read_index(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::ReadIndex).await
    }
    async fn node_info(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.serve(r, PeerRpc::NodeInfo).await
    }
}
