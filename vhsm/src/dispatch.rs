//! The one request path shared by both services: identify the caller, check the role, run the
//! call (inline, or on the blocking pool for Argon2id ceremonies), map errors, log one line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use vhsm_core::{Error, Readiness, Reason, Vhsm};
use vhsm_proto::v1::Reason as WireReason;

use crate::access::Method;
use crate::cluster::node::ClusterNode;
use crate::cluster::replicated::ReplicatedStorage;
use crate::denials::DenialLimiter;
use crate::error_map;
use crate::logging::{log_request, RequestLog};
use crate::reserve::Reserver;
use crate::roles::{Caller, RoleMap};
use crate::wipe::Wipe;

/// Longest caller-supplied request id kept for the log line.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Ceremonies (Argon2id, 64 MiB each) run at most this many at a time; others queue.
pub const MAX_CONCURRENT_HEAVY_CALLS: usize = 2;

/// Metadata header naming the members that had not applied a kill switch when it returned.
pub const LAGGING_MEMBERS_HEADER: &str = "x-vhsm-lagging-members";
/// Metadata header carrying an admin caller's request id (a retried write is applied once).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long a crypto request for a key (version) this node does not know may wait for the
/// node to catch up with the cluster before it is answered.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_millis(100);

/// The node's cluster layer and the core storage that writes through it.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    /// The Raft node.
    pub node: Arc<ClusterNode>,
    /// The core's storage on it.
    pub storage: Arc<ReplicatedStorage>,
}

/// State shared by the Crypto and Admin services.
#[derive(Debug)]
pub struct Dispatcher {
    vhsm: Arc<Vhsm>,
    roles: RoleMap,
    node_id: String,
    heavy: tokio::sync::Semaphore,
    denials: DenialLimiter,
    cluster: Option<ClusterLink>,
    reserver: Arc<Reserver>,
}

impl Dispatcher {
    /// A dispatcher over `vhsm`, mapping certificates with `roles`.
    pub fn new(vhsm: Arc<Vhsm>, roles: RoleMap, node_id: String) -> Dispatcher {
        Dispatcher {
            roles,
            node_id,
            heavy: tokio::sync::Semaphore::new(MAX_CONCURRENT_HEAVY_CALLS),
            denials: DenialLimiter::new(),
            cluster: None,
            reserver: Arc::new(Reserver::new(Arc::clone(&vhsm), None)),
            vhsm,
        }
    }

    /// The same dispatcher on a cluster node: crypto needs the read lease, admin calls wait
    /// for the node to be current, kill switches wait for every member.
    #[must_use]
    pub fn with_cluster(mut self, link: ClusterLink) -> Dispatcher {
        self.reserver = Arc::new(Reserver::new(
            Arc::clone(&self.vhsm),
            Some((Arc::clone(&link.node), Arc::clone(&link.storage))),
        ));
        self.cluster = Some(link);
        self
    }

    /// This node's AES-GCM reservations.
    pub fn reserver(&self) -> &Arc<Reserver> {
        &self.reserver
    }

    /// The cluster node, if any.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.as_ref().map(|c| &c.node)
    }

    /// Checks the caller's role for `method` without running anything (the Peer service);
    /// a refusal is audited like any other.
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        method: Method,
    ) -> Result<Caller, Status> {
        let caller = self.caller(request);
        if caller.role.is_some_and(|r| method.allows(r)) {
            return Ok(caller);
        }
        self.deny(&caller, method).await;
        log_request(&RequestLog {
            method: method.name(),
            identity: &caller.identity,
            role: caller.role_name(),
            request_id: "",
            code: tonic::Code::PermissionDenied,
            reason: "PERMISSION_DENIED",
            latency_us: 0,
        });
        Err(error_map::permission_denied(method.name()))
    }

    /// Before a crypto call for `key_id` (and the key version `metadata` names): if this node
    /// does not know it, catch up with the cluster once (bounded), so that a key or version
    /// made on another node a moment ago is found.
    pub async fn catch_up_for_key(&self, key_id: &str, metadata: Option<&[u8]>) {
        if let Some(c) = &self.cluster {
            if self.vhsm.needs_catch_up(key_id, metadata) {
                if let Err(e) = c.node.catch_up(CATCH_UP_TIMEOUT).await {
                    tracing::debug!(error = %e, "catch-up before a crypto call failed");
                }
            }
        }
    }

    /// Before an Encrypt with `key_id`: catch up if this node does not know the key, then make
    /// sure AES-GCM invocations of its current version are reserved here (see `reserve`).
    pub async fn prepare_encrypt(&self, key_id: &str) {
        let mut readiness = self.vhsm.encrypt_readiness(key_id);
        if readiness == Readiness::Unknown {
            self.catch_up_for_key(key_id, None).await;
            readiness = self.vhsm.encrypt_readiness(key_id);
        }
        self.reserver.prepare(key_id, readiness).await;
    }

    /// The core.
    pub fn vhsm(&self) -> &Arc<Vhsm> {
        &self.vhsm
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The caller of a request: on the Unix-socket listener from the kernel-reported peer uid,
    /// otherwise from its verified TLS client certificate.
    pub fn caller<T>(&self, request: &Request<T>) -> Caller {
        // Only the server's connection layer inserts UdsConnectInfo (the UDS listener).
        if let Some(uds) = request.extensions().get::<UdsConnectInfo>() {
            return self.roles.identify_uid(uds.peer_cred.map(|c| c.uid()));
        }
        let certs = request.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        self.roles.identify(leaf)
    }

    /// Runs one RPC. `request_id` is the caller's correlation id (empty if none); `f` gets the
    /// core, the authorized caller and the request message, and returns the response or an
    /// already-mapped status (use [`core_status`] for core errors).
    pub async fn call<Req, Resp, F>(
        &self,
        request: Request<Req>,
        method: Method,
        request_id: &str,
        f: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Wipe + Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(&Vhsm, &Caller, Req) -> Result<Resp, Status> + Send + 'static,
    {
        let started = Instant::now();
        let caller = self.caller(&request);
        let request_id = if request_id.is_empty() {
            request
                .metadata()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map_or_else(String::new, sanitize_request_id)
        } else {
            sanitize_request_id(request_id)
        };
        let mut lagging = Vec::new();
        let result = if caller.role.is_some_and(|r| method.allows(r)) {
            let r = self
                .execute(method, &caller, &request_id, request.into_inner(), f)
                .await;
            if r.is_ok() && method.is_kill_switch() {
                lagging = self.wait_for_members().await;
            }
            if r.is_ok() && method.unseals() {
                self.reserver.unsealed();
            }
            r
        } else {
            request.into_inner().wipe();
            self.deny(&caller, method).await;
            Err(error_map::permission_denied(method.name()))
        };
        let (code, reason) = match &result {
            Ok(_) => (tonic::Code::Ok, "OK"),
            Err(s) => (s.code(), vhsm_proto::reason_of(s).as_str_name()),
        };
        log_request(&RequestLog {
            method: method.name(),
            identity: &caller.identity,
            role: caller.role_name(),
            request_id: &request_id,
            code,
            reason,
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
        result.map(|r| {
            let mut resp = Response::new(r);
            if !lagging.is_empty() {
                tracing::warn!(
                    method = method.name(),
                    members = %lagging.join(","),
                    "kill switch not applied by every member; their read lease has run out, so they refuse crypto until they catch up"
                );
                if let Ok(v) = lagging.join(",").parse() {
                    resp.metadata_mut().insert(LAGGING_MEMBERS_HEADER, v);
                }
            }
            resp
        })
    }

    /// After a kill switch: waits until every member applied what this node has, at most the
    /// lease bound; returns the addresses of those that had not (their read lease has run out
    /// by then, so none of them serves the removed permission).
    async fn wait_for_members(&self) -> Vec<String> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        let target = c
            .node
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        c.node
            .wait_members_applied(target, c.node.config().kill_switch_wait())
            .await
    }

    /// Runs an authorized call where it belongs: Argon2id ceremonies on the blocking pool, at
    /// most [`MAX_CONCURRENT_HEAVY_CALLS`] at a time; other Admin calls on the blocking pool
    /// (they may wait for the core's state lock); Crypto calls inline.
    async fn execute<Req, Resp, F>(
        &self,
        method: Method,
        caller: &Caller,
        request_id: &str,
        mut msg: Req,
        f: F,
    ) -> Result<Resp, Status>
    where
        Req: Wipe + Clone + Send + 'static,
        Resp: Send + 'static,
        F: Fn(&Vhsm, &Caller, Req) -> Result<Resp, Status> + Send + 'static,
    {
        if !method.may_block() {
            if let (true, Some(c)) = (method.needs_lease(), &self.cluster) {
                // A sealed or uninitialized node says so (the core answers); an unsealed one
                // without a lease refuses, so the caller fails over.
                let unsealed = self.vhsm.health().0 == vhsm_core::SealState::Unsealed;
                if let (true, Err(why)) = (unsealed, c.node.serving()) {
                    msg.wipe();
                    return Err(core_status(&Error::NotServing(why)));
                }
            }
            return f(&self.vhsm, caller, msg);
        }
        if let Some(c) = &self.cluster {
            if method.unseals() && c.node.is_witness() {
                msg.wipe();
                return Err(core_status(&Error::NotServing(
                    "this node is a witness: it never holds keys".into(),
                )));
            }
        }
        if let (true, Some(c)) = (method.needs_barrier(), &self.cluster) {
            let wait = Duration::from_millis(c.node.config().write_timeout_ms);
            if let Err(e) = c.node.catch_up(wait).await {
                msg.wipe();
                return Err(core_status(&Error::NoQuorum(format!(
                    "this node cannot confirm it is current with the cluster: {e}"
                ))));
            }
        }
        let _permit = if method.is_cpu_heavy() {
            match self.heavy.acquire().await {
                Ok(p) => Some(p),
                Err(_) => return Err(core_status(&Error::Internal("semaphore closed".into()))),
            }
        } else {
            None
        };
        let vhsm = Arc::clone(&self.vhsm);
        let c = caller.clone();
        let storage = self.cluster.as_ref().map(|l| Arc::clone(&l.storage));
        let rid = request_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let out = match storage {
                Some(s) if method.is_write() => {
                    let conflicted = |r: &Result<Resp, Status>| {
                        matches!(r, Err(st) if vhsm_proto::reason_of(st) == WireReason::Conflict)
                    };
                    let out = s.write(&rid, || f(&vhsm, &c, msg.clone()), conflicted);
                    msg.wipe();
                    out
                }
                _ => f(&vhsm, &c, msg),
            };
            // Ceremonies and key imports leave keys, passphrases and shares in the stack
            // frames they used on this pool thread; overwrite them before the thread idles.
            crate::wipe::scrub_stack();
            out
        })
        .await
        .unwrap_or_else(|_| Err(core_status(&Error::Internal("task failed".into()))))
    }

    /// Audits a permission denial (on the blocking pool: it writes the audit log), at most
    /// once per identity and method per window (see `denials`).
    async fn deny(&self, caller: &Caller, method: Method) {
        let op = method.name();
        let Some(suppressed) = self.denials.admit(&caller.identity, op, Instant::now()) else {
            return;
        };
        let vhsm = Arc::clone(&self.vhsm);
        let who = caller.identity.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            vhsm.record_denied_with_suppressed(&who, op, suppressed)
        })
        .await;
        match recorded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(method = op, error = %e, "cannot audit a permission denial")
            }
            Err(_) => tracing::error!(method = op, "audit task for a permission denial failed"),
        }
    }
}

/// Maps a core error to its status; internal failures are logged here with their detail
/// (core messages never carry secrets), since the client only sees a generic message.
pub fn core_status(err: &Error) -> Status {
    if matches!(
        err.reason(),
        Reason::Internal
            | Reason::Corruption
            | Reason::SelfTestFailed
            | Reason::StorageFailed
            | Reason::AuditMismatch
    ) {
        tracing::error!(error = %err, "internal failure");
    }
    error_map::to_status(err)
}

/// Keeps a caller-supplied id printable and bounded before it reaches a log line.
fn sanitize_request_id(id: &str) -> String {
    id.chars()
        .take(MAX_REQUEST_ID_LEN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RolesConfig;
    use vhsm_core::{MemoryStorage, Options, OsRandom, SystemClock};

    fn dispatcher() -> Dispatcher {
        let vhsm = Vhsm::open(
            Arc::new(MemoryStorage::new()),
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap();
        let roles = RoleMap::from_config(&RolesConfig {
            crypto: vec!["xks-front".into()],
            admin: vec!["admin".into()],
            auditor: vec![],
            peer: vec![],
        });
        Dispatcher::new(Arc::new(vhsm), roles, "n1".into())
    }

    #[test]
    fn request_ids_are_sanitized() {
        assert_eq!(sanitize_request_id("abc-1"), "abc-1");
        assert_eq!(sanitize_request_id("a\nb c"), "a?b?c");
        assert_eq!(
            sanitize_request_id(&"z".repeat(300)).len(),
            MAX_REQUEST_ID_LEN
        );
    }

    #[tokio::test]
    async fn request_without_certificate_is_denied() {
        let d = dispatcher();
        let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&called);
        let res = d
            .call(Request::new(()), Method::Health, "r1", move |_, _, ()| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .await;
        let status = res.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            vhsm_proto::reason_of(&status),
            vhsm_proto::v1::Reason::PermissionDenied
        );
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn admin_calls_run_off_the_async_worker_and_crypto_calls_inline() {
        // A current-thread runtime: inline work runs on this very thread.
        let d = dispatcher();
        let here = std::thread::current().id();
        let admin = Caller {
            identity: "admin".into(),
            role: Some(crate::roles::Role::Admin),
        };
        for m in [
            Method::Status,
            Method::Seal,
            Method::CreateKey,
            Method::Unseal,
        ] {
            let ran_on = d
                .execute(
                    m,
                    &admin,
                    "",
                    (),
                    |_, _, ()| Ok(std::thread::current().id()),
                )
                .await
                .unwrap();
            assert_ne!(ran_on, here, "{} ran on the async worker", m.name());
        }
        for m in [Method::Health, Method::Encrypt, Method::GetKeyMetadata] {
            let ran_on = d
                .execute(
                    m,
                    &admin,
                    "",
                    (),
                    |_, _, ()| Ok(std::thread::current().id()),
                )
                .await
                .unwrap();
            assert_eq!(ran_on, here, "{}", m.name());
        }
    }

    #[test]
    fn core_status_maps_internal_to_generic_message() {
        let s = core_status(&Error::Internal("disk path /x".into()));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message(), "internal error");
    }
}
