//! `[grpc_limits]`: stream, concurrency and time limits of vhsmd's gRPC server, so a misbehaving
//! crypto client (a bug in xks-front, a stolen crypto certificate) cannot exhaust the server or
//! starve the Admin service and the other clients.
//!
//! Connection-level limits go on the tonic `Server` builder ([`GrpcLimits::apply`]). Each service
//! is wrapped in a [`Limited`] layer with its own in-flight budget and per-request time limit:
//! Crypto requests beyond their budget wait (within their own deadline) without taking Admin's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::transport::Server;

/// At most one "limit hit" log line per service per this period.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// `[grpc_limits]` (all optional; the defaults are safe).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcLimits {
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection.
    pub max_concurrent_streams: u32,
    /// Requests served at once per connection (more wait on that connection).
    pub concurrency_per_connection: usize,
    /// Crypto requests in progress across all connections (more wait, within their deadline).
    pub crypto_max_in_flight: usize,
    /// Admin requests in progress across all connections: a separate budget, so a crypto flood
    /// never takes it.
    pub admin_max_in_flight: usize,
    /// Longest time a Crypto request may take, waiting included (clients' grpc-timeout is
    /// honoured too, whichever is shorter).
    pub crypto_timeout_ms: u64,
    /// Longest time an Admin request may take (backups, restores and Argon2id unseal included).
    pub admin_timeout_ms: u64,
    /// HTTP/2 ping interval.
    pub http2_keepalive_interval_ms: u64,
    /// Close a connection whose ping is not answered within this.
    pub http2_keepalive_timeout_ms: u64,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE.
    pub http2_max_header_list_size: u32,
    /// Client-reset streams not yet accepted (rapid-reset defence).
    pub http2_max_pending_accept_reset_streams: usize,
    /// Streams reset for client protocol errors before the connection is closed.
    pub http2_max_local_error_reset_streams: usize,
    /// TCP keep-alive probe idle time.
    pub tcp_keepalive_secs: u64,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            concurrency_per_connection: 128,
            crypto_max_in_flight: 512,
            admin_max_in_flight: 16,
            crypto_timeout_ms: 2000,
            admin_timeout_ms: 120_000,
            http2_keepalive_interval_ms: 20_000,
            http2_keepalive_timeout_ms: 5000,
            http2_max_header_list_size: 16 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 128,
            tcp_keepalive_secs: 60,
        }
    }
}

fn within<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    v: T,
    min: T,
    max: T,
) -> Result<(), (&'static str, String)> {
    if v < min || v > max {
        return Err((field, format!("must be within {min}..={max}")));
    }
    Ok(())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl GrpcLimits {
    /// Checks every value; `Err((field, reason))` names the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        within(
            "grpc_limits.max_concurrent_streams",
            self.max_concurrent_streams,
            1,
            4096,
        )?;
        within(
            "grpc_limits.concurrency_per_connection",
            self.concurrency_per_connection,
            1,
            4096,
        )?;
        within(
            "grpc_limits.crypto_max_in_flight",
            self.crypto_max_in_flight,
            1,
            1 << 20,
        )?;
        within(
            "grpc_limits.admin_max_in_flight",
            self.admin_max_in_flight,
            1,
            1024,
        )?;
        within(
            "grpc_limits.crypto_timeout_ms",
            self.crypto_timeout_ms,
            10,
            60_000,
        )?;
        within(
            "grpc_limits.admin_timeout_ms",
            self.admin_timeout_ms,
            1000,
            3_600_000,
        )?;
        within(
            "grpc_limits.http2_keepalive_interval_ms",
            self.http2_keepalive_interval_ms,
            1000,
            3_600_000,
        )?;
        within(
            "grpc_limits.http2_keepalive_timeout_ms",
            self.http2_keepalive_timeout_ms,
            100,
            600_000,
        )?;
        within(
            "grpc_limits.http2_max_header_list_size",
            self.http2_max_header_list_size,
            4096,
            1 << 20,
        )?;
        within(
            "grpc_limits.http2_max_pending_accept_reset_streams",
            self.http2_max_pending_accept_reset_streams,
            1,
            1024,
        )?;
        within(
            "grpc_limits.http2_max_local_error_reset_streams",
            self.http2_max_local_error_reset_streams,
            1,
            65_536,
        )?;
        within(
            "grpc_limits.tcp_keepalive_secs",
            self.tcp_keepalive_secs,
            1,
            7200,
        )?;
        Ok(())
    }

    /// Applies the connection-level limits to a server builder.
    pub fn apply(&self, server: Server) -> Server {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .concurrency_limit_per_connection(self.concurrency_per_connection)
            .http2_keepalive_interval(Some(ms(self.http2_keepalive_interval_ms)))
            .http2_keepalive_timeout(Some(ms(self.http2_keepalive_timeout_ms)))
            .http2_max_header_list_size(self.http2_max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(
                self.http2_max_pending_accept_reset_streams,
            ))
            .http2_max_local_error_reset_streams(Some(self.http2_max_local_error_reset_streams))
            .tcp_keepalive(Some(Duration::from_secs(self.tcp_keepalive_secs)))
            // A hard cap above the per-service limits (the per-service ones answer first).
            .timeout(ms(self.admin_timeout_ms.max(self.crypto_timeout_ms)) + Duration::from_secs(1))
    }

    /// The Crypto service behind its own budget and time limit. Build it once and clone it for
    /// every listener, so all of them share the budget.
    pub fn crypto<S>(&self, svc: S) -> Limited<S> {
        Limited::new(
            svc,
            "crypto",
            self.crypto_max_in_flight,
            ms(self.crypto_timeout_ms),
        )
    }

    /// The Admin service behind its own budget and time limit (see [`GrpcLimits::crypto`]).
    pub fn admin<S>(&self, svc: S) -> Limited<S> {
        Limited::new(
            svc,
            "admin",
            self.admin_max_in_flight,
            ms(self.admin_timeout_ms),
        )
    }
}

/// How often a service's limits were hit (logged at a bounded rate).
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Requests that had to wait for an in-flight slot.
    pub waited: AtomicU64,
    /// Requests answered DEADLINE_EXCEEDED by the service time limit.
    pub timed_out: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl LimitCounters {
    fn note(&self, service: &'static str) {
        let mut last = self.last_log.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            service,
            waited_for_slot = self.waited.load(Ordering::Relaxed),
            timed_out = self.timed_out.load(Ordering::Relaxed),
            "gRPC service limits hit (totals since start)"
        );
    }
}

/// A service with an in-flight budget and a per-request time limit.
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    name: &'static str,
    permits: Arc<Semaphore>,
    timeout: Duration,
    counters: Arc<LimitCounters>,
}

impl<S> Limited<S> {
    fn new(inner: S, name: &'static str, max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            inner,
            name,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
            counters: Arc::new(LimitCounters::default()),
        }
    }

    /// The limit counters of this service.
    pub fn counters(&self) -> &Arc<LimitCounters> {
        &self.counters
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for Limited<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let permits = self.permits.clone();
        let counters = self.counters.clone();
        let (name, timeout) = (self.name, self.timeout);
        Box::pin(async move {
            let run = async {
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        counters.waited.fetch_add(1, Ordering::Relaxed);
                        counters.note(name);
                        permits.acquire_owned().await.ok()
                    }
                };
                let resp = inner.call(req).await;
                drop(permit);
                resp
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(resp) => resp,
                Err(_) => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    counters.note(name);
                    Ok(tonic::Status::deadline_exceeded("request time limit exceeded").into_http())
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Answers after `delay`; counts calls in progress at once.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        now: Arc<AtomicU64>,
        peak: Arc<AtomicU64>,
    }

    impl NamedService for Slow {
        const NAME: &'static str = "test.Slow";
    }

    impl Service<http::Request<Body>> for Slow {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
            let s = self.clone();
            Box::pin(async move {
                let n = s.now.fetch_add(1, Ordering::SeqCst) + 1;
                s.peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(s.delay).await;
                s.now.fetch_sub(1, Ordering::SeqCst);
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    fn slow(delay: Duration) -> Slow {
        Slow {
            delay,
            now: Arc::default(),
            peak: Arc::default(),
        }
    }

    fn grpc_status(r: &http::Response<Body>) -> Option<String> {
        r.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn in_flight_is_bounded_and_overruns_get_deadline_exceeded() {
        let limits = GrpcLimits {
            crypto_max_in_flight: 2,
            crypto_timeout_ms: 500,
            ..GrpcLimits::default()
        };
        let inner = slow(Duration::from_millis(200));
        let svc = limits.crypto(inner.clone());
        let mut calls = Vec::new();
        for _ in 0..6 {
            let mut s = svc.clone();
            calls.push(tokio::spawn(async move {
                s.call(http::Request::new(Body::empty())).await.unwrap()
            }));
        }
        let mut ok = 0;
        let mut late = 0;
        for c in calls {
            match grpc_status(&c.await.unwrap()).as_deref() {
                None => ok += 1,
                Some("4") => late += 1,
                other => panic!("{other:?}"),
            }
        }
        // Two at a time, 200 ms each, 500 ms budget: two rounds finish, the third is too late.
        assert_eq!(inner.peak.load(Ordering::SeqCst), 2);
        assert_eq!((ok, late), (4, 2));
        assert_eq!(svc.counters().timed_out.load(Ordering::Relaxed), 2);
        assert!(svc.counters().waited.load(Ordering::Relaxed) >= 4);
    }

    #[tokio::test]
    async fn a_full_crypto_budget_does_not_take_the_admin_budget() {
        let limits = GrpcLimits {
            crypto_max_in_flight: 1,
            ..GrpcLimits::default()
        };
        let crypto = limits.crypto(slow(Duration::from_millis(1500)));
        let admin = limits.admin(slow(Duration::ZERO));
        let mut hog = crypto.clone();
        let hogging =
            tokio::spawn(async move { hog.call(http::Request::new(Body::empty())).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A second crypto call waits for the slot; admin is served meanwhile.
        let mut waiting = crypto.clone();
        let queued =
            tokio::spawn(async move { waiting.call(http::Request::new(Body::empty())).await });
        let r = admin
            .clone()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(grpc_status(&r), None);
        assert!(!hogging.is_finished() && !queued.is_finished());
        hogging.abort();
        queued.abort();
    }

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        GrpcLimits::default().validate().unwrap();
        let bad = GrpcLimits {
            crypto_timeout_ms: 0,
            ..GrpcLimits::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "grpc_limits.crypto_timeout_ms"
        );
        let bad = GrpcLimits {
            max_concurrent_streams: 0,
            ..GrpcLimits::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "grpc_limits.max_concurrent_streams"
        );
    }
}
