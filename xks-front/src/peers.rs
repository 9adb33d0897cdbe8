//! Bounded per-peer counters (connections, unauthenticated requests) with RAII slots.
//!
//! A peer is an IPv4 address or an IPv6 /64 (one host usually owns a whole /64, so counting
//! single IPv6 addresses would not bound anything). Entries disappear when their count drops
//! to zero, so the table holds at most one entry per slot in use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The peer key of an address: the IPv4 address, or the /64 of an IPv6 address (IPv4-mapped
/// IPv6 addresses count as their IPv4 address).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts slots in use per peer, at most `max` each. Cheap to share (`Arc` inside).
#[derive(Debug, Clone)]
pub struct PeerTable {
    inner: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One slot of a peer; released on drop.
#[derive(Debug)]
pub struct PeerSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: IpAddr,
}

impl PeerTable {
    /// A table allowing `max` slots per peer.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            max,
        }
    }

    /// Takes a slot for the peer of `ip`, or `None` when it already holds `max`.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<PeerSlot> {
        let key = peer_key(ip);
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            table: self.inner.clone(),
            key,
        })
    }

    /// Slots in use by the peer of `ip`.
    pub fn in_use(&self, ip: IpAddr) -> usize {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&peer_key(ip)).copied().unwrap_or(0)
    }

    /// Peers holding at least one slot.
    pub fn peers(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_each_peer_separately_and_frees_on_drop() {
        let t = PeerTable::new(2);
        let a1 = t.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = t.try_acquire(ip("10.0.0.1")).unwrap();
        assert!(t.try_acquire(ip("10.0.0.1")).is_none());
        let _b = t.try_acquire(ip("10.0.0.2")).unwrap();
        drop(a1);
        assert_eq!(t.in_use(ip("10.0.0.1")), 1);
        assert!(t.try_acquire(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn empty_entries_are_removed() {
        let t = PeerTable::new(1);
        for i in 0..100u8 {
            let s = t.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap();
            drop(s);
        }
        assert_eq!(t.peers(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let t = PeerTable::new(1);
        let _a = t.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(t.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(t.try_acquire(ip("2001:db8:1:3::1")).is_some());
        let _v4 = t.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(t.try_acquire(ip("::ffff:192.0.2.7")).is_none());
    }
}
