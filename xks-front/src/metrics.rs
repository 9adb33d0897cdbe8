//! Prometheus metrics (requests, latency, vhsm node up, limit hits, connections) and their plain-HTTP `/metrics` listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use vhsm_proto::logwriter::DroppedLines;

/// Latency buckets (seconds), dense around KMS's 250 ms budget.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// A limit that was hit; the `limit` label of `xks_limit_hits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_concurrency`: an authenticated request got ThrottlingException.
    MaxConcurrency,
    /// A key store's `rate_limit_per_sec` / `burst`: an authenticated request got
    /// ThrottlingException.
    KeyStoreRate,
    /// `limits.max_connections`: a new connection was closed at once.
    MaxConnections,
    /// `limits.max_connections_per_peer`: a new connection was closed at once.
    MaxConnectionsPerPeer,
    /// `limits.new_connections_per_sec`: a new connection was closed at once.
    NewConnectionRate,
    /// `limits.new_connections_per_peer_per_sec`: a new connection was closed at once.
    NewConnectionRatePerPeer,
    /// `limits.tls_handshake_timeout_ms`.
    TlsHandshakeTimeout,
    /// `limits.first_request_timeout_ms`: a connection closed before any authenticated request.
    FirstRequestTimeout,
    /// `limits.idle_timeout_ms`.
    IdleTimeout,
    /// `limits.body_timeout_ms`.
    BodyTimeout,
    /// The 64 KiB body limit: answered after draining (`limits.max_drain_bytes`).
    BodyTooLarge,
    /// Above `limits.max_drain_bytes`: answered without draining (stream reset).
    BodyTooLargeReset,
    /// `limits.unauthenticated_per_connection`.
    UnauthenticatedPerConnection,
    /// `limits.unauthenticated_per_peer`.
    UnauthenticatedPerPeer,
    /// `limits.unauthenticated_read_bytes_per_sec`: an unauthenticated connection was paused.
    UnauthenticatedReadRate,
    /// An HTTP timeout inside hyper: `limits.header_read_timeout_ms` or the HTTP/2 ping timeout.
    HttpTimeout,
    /// A connection ended by an HTTP protocol error or limit (header sizes, h2 resets/streams).
    HttpProtocol,
    /// `accept(2)` failed (e.g. out of file descriptors); the accept loop backs off.
    AcceptError,
}

impl Limit {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConcurrency => "max_concurrency",
            Limit::KeyStoreRate => "key_store_rate",
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerPeer => "max_connections_per_peer",
            Limit::NewConnectionRate => "new_connections_per_sec",
            Limit::NewConnectionRatePerPeer => "new_connections_per_peer_per_sec",
            Limit::TlsHandshakeTimeout => "tls_handshake_timeout",
            Limit::FirstRequestTimeout => "first_request_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::BodyTimeout => "body_timeout",
            Limit::BodyTooLarge => "body_too_large",
            Limit::BodyTooLargeReset => "body_too_large_reset",
            Limit::UnauthenticatedPerConnection => "unauthenticated_per_connection",
            Limit::UnauthenticatedPerPeer => "unauthenticated_per_peer",
            Limit::UnauthenticatedReadRate => "unauthenticated_read_rate",
            Limit::HttpTimeout => "http_timeout",
            Limit::HttpProtocol => "http_protocol",
            Limit::AcceptError => "accept_error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// `xks_log_dropped_lines_total`, read from the log writer at each scrape.
#[derive(Debug)]
struct LogDropped(DroppedLines);

impl Collector for LogDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(self.0.get());
        let metric = encoder.encode_descriptor(
            "xks_log_dropped_lines",
            "Log lines dropped because the log writer's queue was full (the disk or pipe was too slow)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The xks-front metric set.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    node_up: Family<NodeLabels, Gauge>,
    limit_hits: Family<LimitLabels, Counter>,
    connections_open: Gauge,
    unauthenticated_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the three families registered, not tied to a log writer (tests,
    /// tools: `xks_log_dropped_lines_total` stays 0).
    pub fn new() -> Self {
        Self::with_log_drops(DroppedLines::default())
    }

    /// A fresh registry whose `xks_log_dropped_lines_total` reads the process's log writer.
    pub fn with_log_drops(log_drops: DroppedLines) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                new_histogram,
            );
        let node_up = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "xks_requests",
            "XKS requests by operation and errorName (none = success)",
            requests.clone(),
        );
        registry.register(
            "xks_request_duration_seconds",
            "XKS request latency by operation",
            duration.clone(),
        );
        registry.register(
            "xks_vhsm_node_up",
            "1 when the vhsm node passed its last deep health check (ACTIVE or DEGRADED)",
            node_up.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        let connections_open = Gauge::default();
        let unauthenticated_in_flight = Gauge::default();
        registry.register(
            "xks_limit_hits",
            "Times a hostile-network or load limit was hit, by limit (see README limits table)",
            limit_hits.clone(),
        );
        registry.register(
            "xks_connections_open",
            "Client connections open (limits.max_connections)",
            connections_open.clone(),
        );
        registry.register(
            "xks_unauthenticated_in_flight",
            "Requests received but not yet SigV4-verified",
            unauthenticated_in_flight.clone(),
        );
        registry.register_collector(Box::new(LogDropped(log_drops)));
        Self {
            registry,
            requests,
            duration,
            node_up,
            limit_hits,
            connections_open,
            unauthenticated_in_flight,
        }
    }

    /// Counts one finished request; `error` is the errorName or None on success.
    pub fn observe(&self, operation: &str, error: Option<&str>, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                error: error.unwrap_or("none").to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(seconds);
    }

    /// Sets `xks_vhsm_node_up{node}`.
    pub fn set_node_up(&self, node: &str, up: bool) {
        self.node_up
            .get_or_create(&NodeLabels {
                node: node.to_string(),
            })
            .set(i64::from(up));
    }

    /// Counts one hit of `limit`.
    pub fn hit(&self, limit: Limit) {
        self.limit_hits
            .get_or_create(&LimitLabels {
                limit: limit.as_str(),
            })
            .inc();
    }

    /// `xks_connections_open`.
    pub fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    /// `xks_unauthenticated_in_flight`.
    pub fn unauthenticated_in_flight(&self) -> &Gauge {
        &self.unauthenticated_in_flight
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// The `/metrics` router.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(metrics)
}

/// Serves `/metrics` over plain HTTP on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn exposition_has_the_three_families() {
        let m = Metrics::new();
        m.observe("Encrypt", None, 0.003);
        m.observe("Encrypt", Some("ThrottlingException"), 0.0001);
        m.set_node_up("vhsm-1", true);
        m.hit(Limit::BodyTimeout);
        m.connections_open().inc();
        let text = m.encode();
        assert!(
            text.contains("xks_limit_hits_total{limit=\"body_timeout\"} 1"),
            "{text}"
        );
        assert!(text.contains("xks_connections_open 1"), "{text}");
        assert!(text.contains("xks_log_dropped_lines_total 0"), "{text}");
        assert!(
            text.contains("xks_requests_total{operation=\"Encrypt\",error=\"none\"} 1"),
            "{text}"
        );
        assert!(text.contains("error=\"ThrottlingException\"} 1"), "{text}");
        assert!(
            text.contains(
                "xks_request_duration_seconds_bucket{le=\"0.25\",operation=\"Encrypt\"} 2"
            ) || text.contains(
                "xks_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"0.25\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("xks_vhsm_node_up{node=\"vhsm-1\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_text_and_404s_elsewhere() {
        let m = Arc::new(Metrics::new());
        m.set_node_up("n", false);
        let req = axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router(m.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let req = axum::http::Request::get("/other")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(router(m).oneshot(req).await.unwrap().status(), 404);
    }
}
