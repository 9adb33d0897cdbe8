//! vhsmd's Prometheus endpoint (`[metrics] addr`, plain HTTP, loopback by default): the node's
//! cluster view (term, leader, indexes, lag per member, lease) and seal state, read at scrape.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vhsm_core::{SealState, Vhsm};

use crate::cluster::node::{ClusterNode, ClusterView};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Member {
    member: String,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The exposition text for one view of the node.
pub fn render(view: &ClusterView, seal: SealState, keys: u64) -> String {
    let mut r = Registry::default();
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
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    node: Arc<ClusterNode>,
    vhsm: Arc<Vhsm>,
    shutdown: F,
) where
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
        let (node, vhsm) = (Arc::clone(&node), Arc::clone(&vhsm));
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (node, vhsm) = (Arc::clone(&node), Arc::clone(&vhsm));
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        let (seal, keys) = vhsm.health();
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(render(&node.view(), seal, keys))))
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
        let text = render(&view("follower", false), SealState::Unsealed, 5);
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
        let text = render(&view("leader", true), SealState::Unsealed, 5);
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
}
