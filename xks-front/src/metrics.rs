//! Prometheus metrics (requests, latency, vhsm node up) and their plain-HTTP `/metrics` listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
struct NodeLabels {
    node: String,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the three families registered.
    pub fn new() -> Self {
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
        Self {
            registry,
            requests,
            duration,
            node_up,
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
        let text = m.encode();
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
