//! The one request path shared by both services: identify the caller, check the role, run the
//! call (inline, or on the blocking pool for Argon2id ceremonies), map errors, log one line.

use std::sync::Arc;
use std::time::Instant;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use vhsm_core::{Error, Reason, Vhsm};

use crate::access::Method;
use crate::denials::DenialLimiter;
use crate::error_map;
use crate::logging::{log_request, RequestLog};
use crate::roles::{Caller, RoleMap};
use crate::wipe::Wipe;

/// Longest caller-supplied request id kept for the log line.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Ceremonies (Argon2id, 64 MiB each) run at most this many at a time; others queue.
pub const MAX_CONCURRENT_HEAVY_CALLS: usize = 2;

/// State shared by the Crypto and Admin services.
#[derive(Debug)]
pub struct Dispatcher {
    vhsm: Arc<Vhsm>,
    roles: RoleMap,
    node_id: String,
    heavy: tokio::sync::Semaphore,
    denials: DenialLimiter,
}

impl Dispatcher {
    /// A dispatcher over `vhsm`, mapping certificates with `roles`.
    pub fn new(vhsm: Arc<Vhsm>, roles: RoleMap, node_id: String) -> Dispatcher {
        Dispatcher {
            vhsm,
            roles,
            node_id,
            heavy: tokio::sync::Semaphore::new(MAX_CONCURRENT_HEAVY_CALLS),
            denials: DenialLimiter::new(),
        }
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
        Req: Wipe + Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&Vhsm, &Caller, Req) -> Result<Resp, Status> + Send + 'static,
    {
        let started = Instant::now();
        let caller = self.caller(&request);
        let request_id = sanitize_request_id(request_id);
        let result = if caller.role.is_some_and(|r| method.allows(r)) {
            self.execute(method, &caller, request.into_inner(), f).await
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
        result.map(Response::new)
    }

    /// Runs an authorized call where it belongs: Argon2id ceremonies on the blocking pool, at
    /// most [`MAX_CONCURRENT_HEAVY_CALLS`] at a time; other Admin calls on the blocking pool
    /// (they may wait for the core's state lock); Crypto calls inline.
    async fn execute<Req, Resp, F>(
        &self,
        method: Method,
        caller: &Caller,
        msg: Req,
        f: F,
    ) -> Result<Resp, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&Vhsm, &Caller, Req) -> Result<Resp, Status> + Send + 'static,
    {
        if !method.may_block() {
            return f(&self.vhsm, caller, msg);
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
        tokio::task::spawn_blocking(move || f(&vhsm, &c, msg))
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
        Reason::Internal | Reason::Corruption | Reason::SelfTestFailed
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
                .execute(m, &admin, (), |_, _, ()| Ok(std::thread::current().id()))
                .await
                .unwrap();
            assert_ne!(ran_on, here, "{} ran on the async worker", m.name());
        }
        for m in [Method::Health, Method::Encrypt, Method::GetKeyMetadata] {
            let ran_on = d
                .execute(m, &admin, (), |_, _, ()| Ok(std::thread::current().id()))
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
