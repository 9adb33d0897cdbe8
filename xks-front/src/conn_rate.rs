//! New-connection rate limits (global and per peer), checked right after `accept(2)`: a
//! connection over the rate is closed before any TLS work, so connection churn cannot buy
//! handshakes faster than the budget and starve established, authenticated connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::Limit;
use crate::peers::peer_key;

/// Micro-tokens per token.
const MICRO: u64 = 1_000_000;
/// How often idle per-peer buckets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    micro_tokens: u64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Self {
        Self {
            micro_tokens: burst * MICRO,
            last: now,
        }
    }

    /// Refills at `rate`/s up to `burst`, then takes one token if there is one.
    fn take(&mut self, rate: u64, burst: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let add =
            u64::try_from(elapsed.as_micros().saturating_mul(u128::from(rate))).unwrap_or(u64::MAX);
        self.micro_tokens = self.micro_tokens.saturating_add(add).min(burst * MICRO);
        self.last = now;
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }

    fn is_full_at(&self, rate: u64, burst: u64, now: Instant) -> bool {
        let mut b = *self;
        b.take(rate, burst, now);
        b.micro_tokens + MICRO >= burst * MICRO
    }
}

fn global_burst(rate: u64) -> u64 {
    (rate / 4).max(1)
}

#[derive(Debug)]
struct State {
    global: Bucket,
    peers: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

/// Token buckets for new connections: one global, one per peer (IPv4 address / IPv6 /64).
#[derive(Debug)]
pub struct ConnRate {
    global_rate: u64,
    peer_rate: u64,
    state: Mutex<State>,
}

impl ConnRate {
    /// `global_rate` and `peer_rate` new connections per second; bursts of a quarter of the
    /// global rate (so a synchronized reconnect wave is spread out instead of queuing hundreds of
    /// handshakes at once) and of the per-peer rate.
    pub fn new(global_rate: u64, peer_rate: u64, now: Instant) -> Self {
        Self {
            global_rate,
            peer_rate,
            state: Mutex::new(State {
                global: Bucket::full(global_burst(global_rate), now),
                peers: HashMap::new(),
                last_sweep: now,
            }),
        }
    }

    /// Admits a new connection from `ip` at `now`, or names the rate it is over.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Limit> {
        let (g, p) = (self.global_rate, self.peer_rate);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(st.last_sweep) >= SWEEP_EVERY {
            st.peers.retain(|_, b| !b.is_full_at(p, p, now));
            st.last_sweep = now;
        }
        let peer = st
            .peers
            .entry(peer_key(ip))
            .or_insert_with(|| Bucket::full(p, now));
        if !peer.take(p, p, now) {
            return Err(Limit::NewConnectionRatePerPeer);
        }
        if !st.global.take(g, global_burst(g), now) {
            return Err(Limit::NewConnectionRate);
        }
        Ok(())
    }

    /// Peers with a bucket (for tests).
    pub fn tracked_peers(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peers
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn per_peer_burst_then_rate() {
        let t = Instant::now();
        let r = ConnRate::new(1000, 5, t);
        let admitted = (0..20).filter(|_| r.admit(ip(1), t).is_ok()).count();
        assert_eq!(admitted, 5, "burst = rate");
        assert_eq!(
            r.admit(ip(1), t).unwrap_err(),
            Limit::NewConnectionRatePerPeer
        );
        // Another peer is not affected; a second later five more pass.
        assert!(r.admit(ip(2), t).is_ok());
        let later = t + Duration::from_secs(1);
        let admitted = (0..20).filter(|_| r.admit(ip(1), later).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn the_global_rate_binds_across_peers() {
        let t = Instant::now();
        let r = ConnRate::new(12, 100, t);
        let admitted = (0..50u8).filter(|i| r.admit(ip(*i), t).is_ok()).count();
        assert_eq!(admitted, 3, "burst = rate / 4");
        assert_eq!(r.admit(ip(99), t).unwrap_err(), Limit::NewConnectionRate);
    }

    #[test]
    fn idle_peers_are_swept() {
        let t = Instant::now();
        let r = ConnRate::new(10_000, 10, t);
        for i in 0..100u8 {
            r.admit(ip(i), t).unwrap();
        }
        assert_eq!(r.tracked_peers(), 100);
        r.admit(ip(200), t + SWEEP_EVERY).unwrap();
        assert_eq!(r.tracked_peers(), 1);
    }
}
