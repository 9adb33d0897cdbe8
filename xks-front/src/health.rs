//! Deep health of the vhsm nodes: the periodic check, its cache (≤ 60 s) and the XKS health report.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use vhsm_proto::v1::{DecryptRequest, EncryptRequest, SealState};

use crate::metrics::Metrics;
use crate::vhsm_client::{HaGroup, NodeClient, NodeStatus};

/// A cached result older than this is never reported (spec: ≤ one minute).
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// A node more than this many log entries behind the read index it last obtained is DEGRADED.
pub const MAX_APPLY_LAG: u64 = 100;
/// A node answering slower than this is DEGRADED.
pub const SLOW: Duration = Duration::from_millis(100);
/// `xksProxyVendor` and `ekmVendor`.
pub const VENDOR: &str = "vhsm-xks";
const HEALTH_PLAINTEXT: &[u8] = b"xks-front deep health check";
const HEALTH_AAD: &[u8] = b"xks-front/health";

/// One node as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Node id from the config.
    pub id: Arc<str>,
    /// e.g. "vhsmd 0.1.0".
    pub model: String,
    /// Result of the deep check.
    pub status: NodeStatus,
}

/// The cached deep-check result, shared by the checker and the router.
#[derive(Debug)]
pub struct HealthCache {
    node_ids: Vec<Arc<str>>,
    latest: RwLock<Option<(Instant, Vec<NodeReport>)>>,
}

impl HealthCache {
    /// An empty cache for these nodes (reports UNAVAILABLE until the first check).
    pub fn new(node_ids: Vec<Arc<str>>) -> Self {
        Self {
            node_ids,
            latest: RwLock::new(None),
        }
    }

    /// Stores a fresh result taken at `at`.
    pub fn store(&self, at: Instant, reports: Vec<NodeReport>) {
        if let Ok(mut g) = self.latest.write() {
            *g = Some((at, reports));
        }
    }

    /// The reports to give KMS at `now`: the cached ones, or every node UNAVAILABLE when the
    /// cache is empty or older than `MAX_AGE` (never report stale health as good).
    pub fn reports(&self, now: Instant) -> Vec<NodeReport> {
        if let Ok(g) = self.latest.read() {
            if let Some((at, reports)) = g.as_ref() {
                if now.saturating_duration_since(*at) <= MAX_AGE {
                    return reports.clone();
                }
            }
        }
        self.node_ids
            .iter()
            .map(|id| NodeReport {
                id: id.clone(),
                model: "vhsmd".to_string(),
                status: NodeStatus::Unavailable,
            })
            .collect()
    }
}

/// The GetHealthStatus response body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `xksProxyFleetSize`.
    pub xks_proxy_fleet_size: u32,
    /// `xksProxyVendor`.
    pub xks_proxy_vendor: &'static str,
    /// `xksProxyModel`.
    pub xks_proxy_model: String,
    /// `ekmVendor`.
    pub ekm_vendor: &'static str,
    /// `ekmFleetDetails` (1..=10).
    pub ekm_fleet_details: Vec<FleetEntry>,
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetEntry {
    /// Node id.
    pub id: String,
    /// Node model.
    pub model: String,
    /// ACTIVE, DEGRADED or UNAVAILABLE.
    pub health_status: &'static str,
}

/// Builds the GetHealthStatus body from the cache.
pub fn health_response(cache: &HealthCache, fleet_size: u32, now: Instant) -> HealthResponse {
    HealthResponse {
        xks_proxy_fleet_size: fleet_size,
        xks_proxy_vendor: VENDOR,
        xks_proxy_model: format!("xks-front {}", env!("CARGO_PKG_VERSION")),
        ekm_vendor: VENDOR,
        ekm_fleet_details: cache
            .reports(now)
            .into_iter()
            .take(crate::config::MAX_NODES)
            .map(|r| FleetEntry {
                id: r.id.to_string(),
                model: r.model,
                health_status: r.status.as_xks(),
            })
            .collect(),
    }
}

/// Deep-checks one node: seal state, then encrypt + decrypt with the health key.
pub async fn check_node<C: NodeClient>(
    id: Arc<str>,
    client: &C,
    health_key_id: &str,
    timeout: Duration,
) -> NodeReport {
    let start = Instant::now();
    let (model, status) = match client.health(timeout).await {
        Err(_) => ("vhsmd".to_string(), NodeStatus::Unavailable),
        Ok(h) => {
            let model = if h.model.is_empty() {
                format!("vhsmd {}", h.version)
            } else {
                h.model.clone()
            };
            // A cluster node without a read lease refuses crypto (and says why); one that is
            // still applying entries it was told about is behind. vhsmd before the cluster
            // sent neither field (serving = false with no reason): judged by seal state alone.
            let no_lease = !h.serving && !h.not_serving_reason.is_empty();
            if h.seal_state != SealState::Unsealed as i32 || no_lease {
                if no_lease {
                    tracing::warn!(node = %id, reason = %h.not_serving_reason, "vhsm node not serving");
                }
                (model, NodeStatus::Unavailable)
            } else if h.apply_lag > MAX_APPLY_LAG
                || !crypto_round_trip(client, health_key_id, timeout).await
                || start.elapsed() > SLOW
            {
                (model, NodeStatus::Degraded)
            } else {
                (model, NodeStatus::Active)
            }
        }
    };
    NodeReport { id, model, status }
}

async fn crypto_round_trip<C: NodeClient>(client: &C, key_id: &str, timeout: Duration) -> bool {
    let enc = EncryptRequest {
        key_id: key_id.to_string(),
        plaintext: HEALTH_PLAINTEXT.to_vec(),
        aad: HEALTH_AAD.to_vec(),
        request_id: "xks-front-health".to_string(),
        integrity_check: false,
    };
    let Ok(out) = client.encrypt(enc, timeout).await else {
        return false;
    };
    let dec = DecryptRequest {
        key_id: key_id.to_string(),
        ciphertext: out.ciphertext,
        iv: out.iv,
        tag: out.tag,
        aad: HEALTH_AAD.to_vec(),
        metadata: out.metadata,
        request_id: "xks-front-health".to_string(),
    };
    matches!(client.decrypt(dec, timeout).await, Ok(r) if r.plaintext == HEALTH_PLAINTEXT)
}

/// Checks every node concurrently, stores the result, feeds the load balancer and metrics.
pub async fn check_all<C: NodeClient>(
    group: &Arc<HaGroup<C>>,
    cache: &HealthCache,
    metrics: Option<&Metrics>,
    health_key_id: &Arc<str>,
    timeout: Duration,
) {
    let mut set = tokio::task::JoinSet::new();
    for (idx, id) in group.node_ids().into_iter().enumerate() {
        let g = group.clone();
        let key = health_key_id.clone();
        set.spawn(async move {
            let report = match g.client(idx) {
                Some(c) => check_node(id, c, &key, timeout).await,
                None => NodeReport {
                    id,
                    model: "vhsmd".into(),
                    status: NodeStatus::Unavailable,
                },
            };
            (idx, report)
        });
    }
    let mut reports: Vec<(usize, NodeReport)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(r) = joined {
            reports.push(r);
        }
    }
    // A check task that died still yields a report: UNAVAILABLE, never silence.
    for (idx, id) in group.node_ids().into_iter().enumerate() {
        if !reports.iter().any(|(i, _)| *i == idx) {
            reports.push((
                idx,
                NodeReport {
                    id,
                    model: "vhsmd".into(),
                    status: NodeStatus::Unavailable,
                },
            ));
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    for (idx, r) in &reports {
        group.set_status(*idx, r.status);
        if let Some(m) = metrics {
            m.set_node_up(
                &r.id,
                matches!(r.status, NodeStatus::Active | NodeStatus::Degraded),
            );
        }
        if r.status != NodeStatus::Active {
            tracing::warn!(node = %r.id, status = r.status.as_xks(), "vhsm node not healthy");
        }
    }
    cache.store(
        Instant::now(),
        reports.into_iter().map(|(_, r)| r).collect(),
    );
}

/// Longest effective check period: a check must land before the previous result turns stale.
pub const MAX_PERIOD: Duration = Duration::from_secs(50);

/// Runs `check_all` now and then every `period` (at most `MAX_PERIOD`) until `shutdown` flips.
pub async fn run_checker<C: NodeClient>(
    group: Arc<HaGroup<C>>,
    cache: Arc<HealthCache>,
    metrics: Option<Arc<Metrics>>,
    health_key_id: Arc<str>,
    timeout: Duration,
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period.min(MAX_PERIOD));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                check_all(&group, &cache, metrics.as_deref(), &health_key_id, timeout).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::key_manager::BoxFuture;
    use vhsm_proto::v1::{
        DecryptResponse, EncryptResponse, GetKeyMetadataRequest, GetKeyMetadataResponse,
    };

    #[derive(Clone, Copy)]
    enum Mode {
        Good,
        Sealed,
        Down,
        BadKey,
        Slow,
        /// A cluster node without a read lease.
        NoLease,
        /// A cluster node far behind its read index.
        Lagging,
        /// vhsmd from before the cluster (no serving fields).
        Legacy,
    }

    struct Node(Mode);

    impl NodeClient for Node {
        fn encrypt(
            &self,
            req: EncryptRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<EncryptResponse, tonic::Status>> {
            let mode = self.0;
            Box::pin(async move {
                if matches!(mode, Mode::BadKey) {
                    return Err(tonic::Status::not_found("no key"));
                }
                if matches!(mode, Mode::Slow) {
                    tokio::time::sleep(SLOW + Duration::from_millis(20)).await;
                }
                Ok(EncryptResponse {
                    ciphertext: req.plaintext.iter().map(|b| b ^ 0x55).collect(),
                    iv: vec![0; 12],
                    tag: vec![0; 16],
                    metadata: vec![1, 0, 0, 0, 1],
                    integrity_value: Vec::new(),
                })
            })
        }
        fn decrypt(
            &self,
            req: DecryptRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<DecryptResponse, tonic::Status>> {
            Box::pin(async move {
                Ok(DecryptResponse {
                    plaintext: req.ciphertext.iter().map(|b| b ^ 0x55).collect(),
                })
            })
        }
        fn key_metadata(
            &self,
            _r: GetKeyMetadataRequest,
            _t: Duration,
        ) -> BoxFuture<'_, Result<GetKeyMetadataResponse, tonic::Status>> {
            Box::pin(async { Err(tonic::Status::unimplemented("")) })
        }
        fn health(
            &self,
            _t: Duration,
        ) -> BoxFuture<'_, Result<vhsm_proto::v1::HealthResponse, tonic::Status>> {
            let mode = self.0;
            Box::pin(async move {
                if matches!(mode, Mode::Down) {
                    return Err(tonic::Status::unavailable("down"));
                }
                Ok(vhsm_proto::v1::HealthResponse {
                    node_id: "n".into(),
                    seal_state: if matches!(mode, Mode::Sealed) {
                        SealState::Sealed as i32
                    } else {
                        SealState::Unsealed as i32
                    },
                    model: "vhsmd 0.1.0".into(),
                    version: "0.1.0".into(),
                    key_count: 1,
                    serving: !matches!(mode, Mode::NoLease | Mode::Legacy),
                    not_serving_reason: if matches!(mode, Mode::NoLease) {
                        "no read lease: no quorum".into()
                    } else {
                        String::new()
                    },
                    lease_remaining_ms: 0,
                    apply_lag: if matches!(mode, Mode::Lagging) {
                        5000
                    } else {
                        0
                    },
                })
            })
        }
    }

    #[tokio::test]
    async fn deep_check_classifies_each_node() {
        let modes = [
            Mode::Good,
            Mode::Sealed,
            Mode::Down,
            Mode::BadKey,
            Mode::Slow,
            Mode::NoLease,
            Mode::Lagging,
            Mode::Legacy,
        ];
        let group = Arc::new(HaGroup::new(
            modes
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("n{i}"), Node(*m)))
                .collect(),
            Duration::from_secs(2),
        ));
        let cache = HealthCache::new(group.node_ids());
        let metrics = Metrics::new();
        let key: Arc<str> = Arc::from("xks-health");
        check_all(
            &group,
            &cache,
            Some(&metrics),
            &key,
            Duration::from_millis(500),
        )
        .await;
        let got: Vec<&str> = cache
            .reports(Instant::now())
            .iter()
            .map(|r| r.status.as_xks())
            .collect();
        assert_eq!(
            got,
            [
                "ACTIVE",
                "UNAVAILABLE",
                "UNAVAILABLE",
                "DEGRADED",
                "DEGRADED",
                "UNAVAILABLE",
                "DEGRADED",
                "ACTIVE"
            ]
        );
        assert!(metrics.encode().contains("xks_vhsm_node_up{node=\"n2\"} 0"));
        assert!(metrics.encode().contains("xks_vhsm_node_up{node=\"n0\"} 1"));
    }

    #[test]
    fn stale_or_missing_cache_reports_unavailable() {
        let ids: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let cache = HealthCache::new(ids.clone());
        let now = Instant::now();
        assert!(cache
            .reports(now)
            .iter()
            .all(|r| r.status == NodeStatus::Unavailable));
        let fresh = vec![NodeReport {
            id: ids[0].clone(),
            model: "vhsmd 0.1.0".into(),
            status: NodeStatus::Active,
        }];
        cache.store(now, fresh.clone());
        assert_eq!(cache.reports(now + Duration::from_secs(59)), fresh);
        let stale = cache.reports(now + Duration::from_secs(61));
        assert_eq!(stale.len(), 2);
        assert!(stale.iter().all(|r| r.status == NodeStatus::Unavailable));
    }

    #[test]
    fn response_has_the_spec_fields() {
        let cache = HealthCache::new(vec![Arc::from("vhsm-1")]);
        let body = serde_json::to_value(health_response(&cache, 2, Instant::now())).unwrap();
        assert_eq!(body["xksProxyFleetSize"], 2);
        assert_eq!(body["xksProxyVendor"], "vhsm-xks");
        assert_eq!(body["ekmVendor"], "vhsm-xks");
        assert!(body["xksProxyModel"]
            .as_str()
            .unwrap()
            .starts_with("xks-front "));
        assert_eq!(body["ekmFleetDetails"][0]["id"], "vhsm-1");
        assert_eq!(body["ekmFleetDetails"][0]["healthStatus"], "UNAVAILABLE");
    }
}
