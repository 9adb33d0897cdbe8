//! Per-connection state shared by the listener and the router: peer, requests in progress,
//! whether a request has authenticated, and the close-or-keep decision of the idle watchdog.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::Limit;

/// State of one client connection. The listener puts a [`ConnInfo`] into every request's
/// extensions; requests without one (in-process tests) skip the per-connection limits.
#[derive(Debug)]
pub struct ConnState {
    peer: IpAddr,
    started: Instant,
    active: AtomicUsize,
    authenticated: AtomicBool,
    /// Milliseconds after `started` of the last authenticated request activity.
    last_activity_ms: AtomicU64,
    unauthenticated: AtomicUsize,
    close_requested: AtomicBool,
    close: Notify,
}

/// A handle on the [`ConnState`] of the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo(pub Arc<ConnState>);

/// What the watchdog does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again at this time.
    Keep(Instant),
    /// Close it (graceful: GOAWAY / no keep-alive) because of this limit.
    Close(Limit),
}

/// Counts one request in progress on its connection; on drop the request is over.
#[derive(Debug)]
pub struct Active(Arc<ConnState>);

/// One of the connection's unauthenticated-request slots.
#[derive(Debug)]
pub struct UnauthenticatedSlot(Arc<ConnState>);

impl ConnState {
    /// A connection from `peer` whose handshake finished at `now`.
    pub fn new(peer: IpAddr, now: Instant) -> Arc<Self> {
        Arc::new(Self {
            peer,
            started: now,
            active: AtomicUsize::new(0),
            authenticated: AtomicBool::new(false),
            last_activity_ms: AtomicU64::new(0),
            unauthenticated: AtomicUsize::new(0),
            close_requested: AtomicBool::new(false),
            close: Notify::new(),
        })
    }

    /// The peer address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// A request started on this connection.
    pub fn request_started(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// A request on this connection passed SigV4.
    pub fn mark_authenticated(&self) {
        self.touch();
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Whether any request on this connection passed SigV4.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// Asks the listener to close this connection (gracefully) at once: it went over an
    /// unauthenticated budget before authenticating, which a real client never does.
    pub fn request_close(&self) {
        self.close_requested.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }

    /// Whether `request_close` has been called.
    pub fn is_close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Relaxed)
    }

    /// Resolves once `request_close` has been called (at once if it already was).
    pub async fn close_requested(&self) {
        if self.close_requested.load(Ordering::Relaxed) {
            return;
        }
        self.close.notified().await;
    }

    /// Takes an unauthenticated-request slot unless `max` are in use.
    pub fn try_unauthenticated(self: &Arc<Self>, max: usize) -> Option<UnauthenticatedSlot> {
        let taken = self
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        taken.ok().map(|_| UnauthenticatedSlot(self.clone()))
    }

    /// The watchdog's decision at `now`. Until one request has authenticated, the connection
    /// lives `first_request` after its handshake, busy or not (so a peer cannot keep it open
    /// with unauthenticated or never-finished requests). Afterwards it is closed when no
    /// request has been in progress for `idle`.
    pub fn verdict(&self, now: Instant, first_request: Duration, idle: Duration) -> Verdict {
        if !self.is_authenticated() {
            let deadline = self.started + first_request;
            return if now >= deadline {
                Verdict::Close(Limit::FirstRequestTimeout)
            } else {
                Verdict::Keep(deadline)
            };
        }
        if self.active.load(Ordering::Relaxed) > 0 {
            return Verdict::Keep(now + idle);
        }
        let last =
            self.started + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        let deadline = last + idle;
        if now >= deadline {
            Verdict::Close(Limit::IdleTimeout)
        } else {
            Verdict::Keep(deadline)
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.is_authenticated() {
            self.0.touch();
        }
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(3);
    const IDLE: Duration = Duration::from_secs(30);

    fn conn(t0: Instant) -> Arc<ConnState> {
        ConnState::new(IpAddr::from([127, 0, 0, 1]), t0)
    }

    #[test]
    fn a_silent_or_unauthenticated_connection_is_closed_after_the_first_request_timeout() {
        let t0 = Instant::now();
        let c = conn(t0);
        assert_eq!(c.verdict(t0, FIRST, IDLE), Verdict::Keep(t0 + FIRST));
        // Busy with unauthenticated requests: closed all the same.
        let _busy = c.request_started();
        assert_eq!(
            c.verdict(t0 + FIRST, FIRST, IDLE),
            Verdict::Close(Limit::FirstRequestTimeout)
        );
    }

    #[test]
    fn an_authenticated_connection_is_kept_while_busy_and_closed_when_idle() {
        let t0 = Instant::now();
        let c = conn(t0);
        let busy = c.request_started();
        c.mark_authenticated();
        let late = t0 + FIRST + IDLE + IDLE;
        assert!(matches!(c.verdict(late, FIRST, IDLE), Verdict::Keep(_)));
        drop(busy);
        // Activity was recorded (about t0), so it is idle long after.
        assert_eq!(
            c.verdict(late, FIRST, IDLE),
            Verdict::Close(Limit::IdleTimeout)
        );
        match c.verdict(t0 + Duration::from_secs(1), FIRST, IDLE) {
            Verdict::Keep(at) => assert!(at >= t0 + IDLE),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn unauthenticated_slots_are_bounded_and_released() {
        let c = conn(Instant::now());
        let a = c.try_unauthenticated(2).unwrap();
        let _b = c.try_unauthenticated(2).unwrap();
        assert!(c.try_unauthenticated(2).is_none());
        drop(a);
        assert!(c.try_unauthenticated(2).is_some());
    }
}
