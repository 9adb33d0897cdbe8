//! vhsmd's Prometheus endpoint (`[metrics] addr`, plain HTTP, loopback by default): the node's
//! cluster view (term, leader, indexes, lag per member, lease), seal state, the gRPC service
//! limits' hits and the AES-GCM reservations, read at scrape.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vhsm_core::{SealState, Vhsm};
use vhsm_proto::logwriter::DroppedLines;

use crate::cluster::node::{ClusterNode, ClusterView};
use crate::grpc_limits::LimitCounters;
use crate::reserve::ReservationStats;

/// Where a scrape reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The Raft node.
    pub node: Arc<ClusterNode>,
    /// The core.
    pub vhsm: Arc<Vhsm>,
    /// AES-GCM reservations.
    pub reservations: Arc<ReservationStats>,
    /// The Crypto service's limits.
    pub crypto_limits: Arc<LimitCounters>,
    /// The Admin service's limits.
    pub admin_limits: Arc<LimitCounters>,
    /// Lines the log writer dropped.
    pub log_drops: DroppedLines,
}

/// Counter values at one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Crypto requests that waited for an in-flight slot / ran out of time.
    pub crypto_waited: u64,
    /// See `crypto_waited`.
    pub crypto_timed_out: u64,
    /// Admin requests that waited for an in-flight slot / ran out of time.
    pub admin_waited: u64,
    /// See `admin_waited`.
    pub admin_timed_out: u64,
    /// AES-GCM blocks reserved by this node.
    pub gcm_reserved: u64,
    /// Reservations that failed.
    pub gcm_failed: u64,
    /// Reservations past the warning share.
    pub gcm_warnings: u64,
    /// Encryptions refused at the limit.
    pub gcm_exhausted: u64,
    /// Highest reserved share of the limit, hundredths of a percent.
    pub gcm_max_basis_points: u64,
    /// Approval proposals pending (absent while sealed or while the core is busy).
    pub approvals_pending: Option<u64>,
    /// `[approvals] max_pending`.
    pub approvals_max_pending: u64,
    /// Log lines dropped because the log writer's queue was full.
    pub log_dropped: u64,
}

impl Sources {
    fn counters(&self) -> Counters {
        use std::sync::atomic::Ordering::Relaxed;
        let r = &self.reservations;
        let (pending, max_pending) = self.vhsm.pending_proposals_now();
        Counters {
            crypto_waited: self.crypto_limits.waited.load(Relaxed),
            crypto_timed_out: self.crypto_limits.timed_out.load(Relaxed),
            admin_waited: self.admin_limits.waited.load(Relaxed),
            admin_timed_out: self.admin_limits.timed_out.load(Relaxed),
            gcm_reserved: r.reserved.load(Relaxed),
            gcm_failed: r.failed.load(Relaxed),
            gcm_warnings: r.warnings.load(Relaxed),
            gcm_exhausted: r.exhausted.load(Relaxed),
            gcm_max_basis_points: r.max_reserved_basis_points.load(Relaxed),
            approvals_pending: pending.map(|n| n as u64),
            approvals_max_pending: max_pending as u64,
            log_dropped: self.log_drops.get(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Service {
    service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Member {
    member: String,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn per_service(registry: &mut Registry, name: &str, help: &str, crypto: u64, admin: u64) {
    let f = Family::<Service, Counter>::default();
    f.get_or_create(&Service { service: "crypto" })
        .inc_by(crypto);
    f.get_or_create(&Service { service: "admin" }).inc_by(admin);
    registry.register(name, help, f);
}

fn render_counters(r: &mut Registry, c: &Counters) {
    per_service(
        r,
        "vhsm_grpc_limit_waited",
        "Requests that waited for their service's in-flight budget ([grpc_limits])",
        c.crypto_waited,
        c.admin_waited,
    );
    per_service(
        r,
        "vhsm_grpc_limit_timed_out",
        "Requests answered DEADLINE_EXCEEDED by their service's time limit ([grpc_limits])",
        c.crypto_timed_out,
        c.admin_timed_out,
    );
    counter(
        r,
        "vhsm_gcm_reservations",
        "Blocks of AES-GCM invocations this node reserved",
        c.gcm_reserved,
    );
    counter(
        r,
        "vhsm_gcm_reservation_failures",
        "AES-GCM reservations that could not be committed",
        c.gcm_failed,
    );
    counter(
        r,
        "vhsm_gcm_reservation_warnings",
        "AES-GCM reservations past the usage warning (rotate the key)",
        c.gcm_warnings,
    );
    counter(
        r,
        "vhsm_gcm_exhausted",
        "Encryptions refused because the key version reached its AES-GCM limit",
        c.gcm_exhausted,
    );
    gauge(
        r,
        "vhsm_gcm_max_reserved_basis_points",
        "Highest share of the AES-GCM limit reserved under a key version this node reserved for (1/100 %)",
        c.gcm_max_basis_points,
    );
    if let Some(pending) = c.approvals_pending {
        gauge(
            r,
            "vhsm_approval_proposals_pending",
            "Quorum-approval proposals collecting approvals (absent while sealed or busy)",
            pending,
        );
    }
    gauge(
        r,
        "vhsm_approval_proposals_max_pending",
        "Most proposals pending at once ([approvals] max_pending)",
        c.approvals_max_pending,
    );
    counter(
        r,
        "vhsm_log_dropped_lines",
        "Log lines dropped because the log writer's queue was full (the disk or pipe was too slow)",
        c.log_dropped,
    );
}

/// The exposition text for one view of the node.
pub fn render(view: &ClusterView, seal: SealState, keys: u64, counters: &Counters) -> String {
    let mut r = Registry::default();
    render_counters(&mut r, counters);
    gauge(&mut r, "vhsm_cluster_term", "Current Raft term", view.term);
    gauge(
        &mut r,
        "vhsm_cluster_leader_id",
        "Raft id of the leader (0: none known)",
        view.leader_id,
    );
    gauge(
        &mut r,
        "vhsm_cluster_is_leader",
        "1 on the leader",
        u64::from(view.role == "leader"),
    );
    gauge(
        &mut r,
        "vhsm_cluster_commit_index",
        "Last committed log index applied by the state machine",
        view.commit_index,
    );
    gauge(
        &mut r,
        "vhsm_cluster_applied_index",
        "Last log index the key cache reflects",
        view.applied_index,
    );
    gauge(
        &mut r,
        "vhsm_cluster_apply_lag",
        "Entries still to apply to reach the last read index",
        view.apply_lag,
    );
    gauge(
        &mut r,
        "vhsm_cluster_last_snapshot_index",
        "Log index of the last snapshot",
        view.last_snapshot_index,
    );
    gauge(
        &mut r,
        "vhsm_cluster_serving",
        "1 while this node holds a read lease and serves crypto",
        u64::from(view.serving),
    );
    gauge(
        &mut r,
        "vhsm_cluster_lease_remaining_milliseconds",
        "Time left on the read lease",
        u64::try_from(view.lease_remaining.as_millis()).unwrap_or(u64::MAX),
    );
    gauge(
        &mut r,
        "vhsm_cluster_members",
        "Members of the current membership",
        view.members.len() as u64,
    );
    gauge(
        &mut r,
        "vhsm_unsealed",
        "1 while unsealed",
        u64::from(seal == SealState::Unsealed),
    );
    gauge(&mut r, "vhsm_keys", "Keys in the key cache", keys);
    if view.role == "leader" {
        let lag = Family::<Member, Gauge>::default();
        for (id, _, _, matched) in &view.members {
            lag.get_or_create(&Member {
                member: id.to_string(),
            })
            .set(i64::try_from(view.commit_index.saturating_sub(*matched)).unwrap_or(i64::MAX));
        }
        r.register(
            "vhsm_cluster_member_lag",
            "Entries each member is behind the leader (leader only)",
            lag,
        );
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve<F>(listener: tokio::net::TcpListener, sources: Sources, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let sources = sources.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        let (seal, keys) = sources.vhsm.health();
                        let text = render(&sources.node.view(), seal, keys, &sources.counters());
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(text)))
                    } else {
                        Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::new()))
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_default())
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(5))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(role: &'static str, serving: bool) -> ClusterView {
        ClusterView {
            raft_id: 7,
            leader_id: 7,
            term: 3,
            commit_index: 120,
            applied_index: 118,
            last_snapshot_index: 100,
            role,
            members: vec![
                (7, "https://a:1".into(), true, 120),
                (9, "https://b:1".into(), true, 95),
            ],
            serving,
            lease_remaining: Duration::from_millis(1500),
            not_serving_reason: String::new(),
            apply_lag: 2,
            witness: false,
        }
    }

    #[test]
    fn a_node_that_lost_its_lease_shows_on_the_dashboard() {
        let text = render(
            &view("follower", false),
            SealState::Unsealed,
            5,
            &Counters::default(),
        );
        assert!(text.contains("vhsm_cluster_serving 0"), "{text}");
        assert!(text.contains("vhsm_cluster_term 3"), "{text}");
        assert!(text.contains("vhsm_cluster_applied_index 118"), "{text}");
        assert!(text.contains("vhsm_unsealed 1"), "{text}");
        assert!(
            !text.contains("vhsm_cluster_member_lag"),
            "only the leader knows the lag"
        );
    }

    #[test]
    fn the_leader_reports_lag_per_member() {
        let text = render(
            &view("leader", true),
            SealState::Unsealed,
            5,
            &Counters::default(),
        );
        assert!(
            text.contains("vhsm_cluster_member_lag{member=\"9\"} 25"),
            "{text}"
        );
        assert!(text.contains("vhsm_cluster_is_leader 1"), "{text}");
        assert!(
            text.contains("vhsm_cluster_lease_remaining_milliseconds 1500"),
            "{text}"
        );
    }

    #[test]
    fn limit_hits_and_gcm_reservations_are_exported() {
        let c = Counters {
            crypto_waited: 4,
            crypto_timed_out: 2,
            admin_waited: 1,
            admin_timed_out: 0,
            gcm_reserved: 7,
            gcm_failed: 1,
            gcm_warnings: 3,
            gcm_exhausted: 9,
            gcm_max_basis_points: 5_012,
            approvals_pending: Some(2),
            approvals_max_pending: 32,
            log_dropped: 6,
        };
        let text = render(&view("follower", true), SealState::Unsealed, 5, &c);
        for line in [
            "vhsm_grpc_limit_waited_total{service=\"crypto\"} 4",
            "vhsm_grpc_limit_timed_out_total{service=\"crypto\"} 2",
            "vhsm_grpc_limit_waited_total{service=\"admin\"} 1",
            "vhsm_gcm_reservations_total 7",
            "vhsm_gcm_reservation_failures_total 1",
            "vhsm_gcm_reservation_warnings_total 3",
            "vhsm_gcm_exhausted_total 9",
            "vhsm_gcm_max_reserved_basis_points 5012",
            "vhsm_approval_proposals_pending 2",
            "vhsm_approval_proposals_max_pending 32",
            "vhsm_log_dropped_lines_total 6",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }
}
