//! The budget of work done for a request before its SigV4 signature is verified: a few slots
//! per connection and per peer, so unauthenticated floods from some peers cannot take anything
//! shared (in-flight slots, rate-limit tokens, vhsm calls) and cannot delay other peers.

use std::sync::Arc;

use crate::conn::{ConnInfo, UnauthenticatedSlot};
use crate::metrics::{Limit, Metrics};
use crate::peers::{PeerSlot, PeerTable};

/// Per-connection and per-peer caps on requests not yet authenticated.
#[derive(Debug)]
pub struct PreAuth {
    per_connection: usize,
    per_peer: PeerTable,
    metrics: Arc<Metrics>,
}

/// Held while a request is unauthenticated; drop it once SigV4 has verified (or failed).
#[derive(Debug)]
pub struct PreAuthGuard {
    _conn: Option<UnauthenticatedSlot>,
    _peer: Option<PeerSlot>,
    metrics: Arc<Metrics>,
}

impl PreAuth {
    /// Caps of `per_connection` and `per_peer` unauthenticated requests.
    pub fn new(per_connection: usize, per_peer: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            per_connection,
            per_peer: PeerTable::new(per_peer),
            metrics,
        }
    }

    /// Admits one unauthenticated request from `conn` (no connection info: in-process use,
    /// only the gauge is kept), or names the limit that refused it (counted).
    pub fn enter(&self, conn: Option<&ConnInfo>) -> Result<PreAuthGuard, Limit> {
        let (c, p) = match conn {
            None => (None, None),
            Some(ConnInfo(state)) => {
                let refuse = |limit: Limit| {
                    self.metrics.hit(limit);
                    if !state.is_authenticated() {
                        state.request_close();
                    }
                    Err(limit)
                };
                let Some(c) = state.try_unauthenticated(self.per_connection) else {
                    return refuse(Limit::UnauthenticatedPerConnection);
                };
                let Some(p) = self.per_peer.try_acquire(state.peer()) else {
                    return refuse(Limit::UnauthenticatedPerPeer);
                };
                (Some(c), Some(p))
            }
        };
        self.metrics.unauthenticated_in_flight().inc();
        Ok(PreAuthGuard {
            _conn: c,
            _peer: p,
            metrics: self.metrics.clone(),
        })
    }
}

impl Drop for PreAuthGuard {
    fn drop(&mut self) {
        self.metrics.unauthenticated_in_flight().dec();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::IpAddr;
    use std::time::Instant;

    use super::*;
    use crate::conn::ConnState;

    fn info(ip: [u8; 4]) -> ConnInfo {
        ConnInfo(ConnState::new(IpAddr::from(ip), Instant::now()))
    }

    #[test]
    fn per_connection_then_per_peer_caps() {
        let m = Arc::new(Metrics::new());
        let pa = PreAuth::new(2, 3, m.clone());
        let (c1, c2) = (info([10, 0, 0, 1]), info([10, 0, 0, 1]));
        let _a = pa.enter(Some(&c1)).unwrap();
        let _b = pa.enter(Some(&c1)).unwrap();
        assert_eq!(
            pa.enter(Some(&c1)).unwrap_err(),
            Limit::UnauthenticatedPerConnection
        );
        let _c = pa.enter(Some(&c2)).unwrap();
        assert_eq!(
            pa.enter(Some(&c2)).unwrap_err(),
            Limit::UnauthenticatedPerPeer
        );
        // Going over a budget before authenticating asks for the connection to close.
        assert!(c1.0.is_close_requested() && c2.0.is_close_requested());
        // Another peer is not affected.
        let other = info([10, 0, 0, 2]);
        let _d = pa.enter(Some(&other)).unwrap();
        assert_eq!(m.unauthenticated_in_flight().get(), 4);
        let text = m.encode();
        assert!(
            text.contains("limit=\"unauthenticated_per_peer\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_peer_slot_gives_the_connection_slot_back() {
        let m = Arc::new(Metrics::new());
        let pa = PreAuth::new(1, 1, m);
        let (c1, c2) = (info([10, 0, 0, 1]), info([10, 0, 0, 1]));
        let held = pa.enter(Some(&c1)).unwrap();
        assert!(pa.enter(Some(&c2)).is_err());
        drop(held);
        assert!(pa.enter(Some(&c2)).is_ok());
    }
}
