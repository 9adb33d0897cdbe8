//! AES-GCM invocation reservations ahead of need, so Encrypts do not wait for a write: the node
//! that creates or rotates a key reserves its first block in the same write; every
//! [`SWEEP_EVERY`] a background sweep reserves the next block, in one replicated write per
//! [`SWEEP_BATCH`] key versions, for the versions this node uses that have less than half a
//! block left, and after each unseal (at once: [`Reserver::unsealed`] wakes it) for every
//! encryptable key. An Encrypt that still
//! finds nothing reserved (a key made on another node, first used here) waits for one
//! reservation of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vhsm_core::{Error, OsRandom, RandomSource, Readiness, Reservation, Vhsm};

use crate::cluster::node::ClusterNode;
use crate::cluster::replicated::ReplicatedStorage;

/// Reservation counters, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ReservationStats {
    /// Blocks reserved by this node.
    pub reserved: AtomicU64,
    /// Reservations that failed (no quorum, storage), not counting key-state refusals.
    pub failed: AtomicU64,
    /// Reservations past the warning share of the limit.
    pub warnings: AtomicU64,
    /// Encryptions refused because a key version reached its limit.
    pub exhausted: AtomicU64,
    /// Highest share of the limit reserved under any version this node reserved for, in
    /// hundredths of a percent.
    pub max_reserved_basis_points: AtomicU64,
}

/// Makes this node's reservations, one at a time.
#[derive(Debug)]
pub struct Reserver {
    vhsm: Arc<Vhsm>,
    cluster: Option<(Arc<ClusterNode>, Arc<ReplicatedStorage>)>,
    one_at_a_time: tokio::sync::Mutex<()>,
    stats: Arc<ReservationStats>,
    /// Wakes the sweep right after an unseal, instead of at its next tick.
    unsealed: tokio::sync::Notify,
}

/// How often the sweep looks for key versions to reserve for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Key versions reserved for in one write.
pub const SWEEP_BATCH: usize = 1000;

impl Reserver {
    /// Reservations on `vhsm`, written through `cluster` when there is one.
    pub fn new(
        vhsm: Arc<Vhsm>,
        cluster: Option<(Arc<ClusterNode>, Arc<ReplicatedStorage>)>,
    ) -> Reserver {
        Reserver {
            vhsm,
            cluster,
            one_at_a_time: tokio::sync::Mutex::new(()),
            stats: Arc::new(ReservationStats::default()),
            unsealed: tokio::sync::Notify::new(),
        }
    }

    /// The core was just unsealed: the sweep reserves for every encryptable key now, so the
    /// first Encrypts after an unseal find their reservation made instead of each waiting for
    /// a write of its own.
    pub fn unsealed(&self) {
        self.unsealed.notify_one();
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ReservationStats> {
        &self.stats
    }

    /// Acts on what an Encrypt with `id` needs: waits for a reservation if nothing is left
    /// (running low is the sweep's job). Failures are left for the Encrypt to report.
    pub async fn prepare(&self, id: &str, readiness: Readiness) {
        if readiness == Readiness::Empty {
            self.reserve(id).await;
        }
    }

    /// The background sweep, until the task is dropped.
    pub async fn run_sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After each unseal, one pass also covers the versions this node never reserved for.
        let mut after_unseal = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.unsealed.notified() => after_unseal = true,
            }
            if self.vhsm.health().0 != vhsm_core::SealState::Unsealed {
                after_unseal = true;
                continue;
            }
            loop {
                match self.sweep_once(after_unseal).await {
                    Some(n) if n == SWEEP_BATCH => continue,
                    Some(_) => after_unseal = false,
                    None => {}
                }
                break;
            }
        }
    }

    /// One batch of the sweep: how many versions it reserved for (`None`: it could not run).
    async fn sweep_once(&self, include_unused: bool) -> Option<usize> {
        if let Some((node, _)) = &self.cluster {
            if node.serving().is_err() {
                return None;
            }
        }
        let _turn = self.one_at_a_time.lock().await;
        let done = self
            .write(move |v| v.reserve_pending(SWEEP_BATCH, include_unused, "system"))
            .await;
        match done {
            Ok(list) => {
                let n = list.len();
                for r in list {
                    self.record(&r.key_id.clone(), Ok(Some(r)));
                }
                Some(n)
            }
            Err(e) => {
                self.record("(sweep)", Err(e));
                None
            }
        }
    }

    /// Counts an Encrypt refused at the limit.
    pub fn note_exhausted(&self) {
        self.stats.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    async fn reserve(&self, id: &str) {
        if let Some((node, _)) = &self.cluster {
            // Without a lease the Encrypt is refused anyway; a write would only wait.
            if node.serving().is_err() {
                return;
            }
        }
        let _turn = self.one_at_a_time.lock().await;
        if self.vhsm.encrypt_readiness(id) == Readiness::Ready {
            return;
        }
        let key = id.to_owned();
        let done = self
            .write(move |v| v.reserve_invocations(&key, "system"))
            .await;
        self.record(id, done);
    }

    /// Runs a reserving core call on the blocking pool, through the cluster under a fresh
    /// request id (re-run after catching up if a concurrent write won).
    async fn write<T: Send + 'static>(
        &self,
        attempt: impl Fn(&Vhsm) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let vhsm = Arc::clone(&self.vhsm);
        let storage = self.cluster.as_ref().map(|(_, s)| Arc::clone(s));
        tokio::task::spawn_blocking(move || match storage {
            Some(s) => {
                let rid = fresh_request_id()?;
                s.write(
                    &rid,
                    || attempt(&vhsm),
                    |r| matches!(r, Err(Error::Conflict { .. })),
                )
            }
            None => attempt(&vhsm),
        })
        .await
        .unwrap_or_else(|_| Err(Error::Internal("reservation task failed".into())))
    }

    fn record(&self, id: &str, done: Result<Option<Reservation>, Error>) {
        match done {
            Ok(Some(r)) => {
                self.stats.reserved.fetch_add(1, Ordering::Relaxed);
                let bp = u128::from(r.reserved_total) * 10_000 / u128::from(r.limit.max(1));
                self.stats
                    .max_reserved_basis_points
                    .fetch_max(u64::try_from(bp).unwrap_or(u64::MAX), Ordering::Relaxed);
                if r.warning {
                    self.stats.warnings.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        key_id = %r.key_id,
                        version = r.version,
                        reserved = r.reserved_total,
                        limit = r.limit,
                        "key version is past the AES-GCM usage warning: rotate the key"
                    );
                } else {
                    tracing::debug!(key_id = %r.key_id, version = r.version,
                        reserved = r.reserved_total, "reserved AES-GCM invocations");
                }
            }
            Ok(None) => {}
            Err(Error::KeyVersionExhausted(_)) => {
                tracing::warn!(key_id = %id, "key version reached its AES-GCM usage limit: rotate the key");
            }
            Err(
                Error::KeyNotFound(_)
                | Error::KeyDisabled(_)
                | Error::KeyPendingDeletion(_)
                | Error::KeyDestroyed(_)
                | Error::UsageNotAllowed { .. }
                | Error::Sealed
                | Error::Uninitialized,
            ) => {}
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key_id = %id, error = %e, "cannot reserve AES-GCM invocations");
            }
        }
    }
}

/// A request id no earlier reservation used, across restarts too.
fn fresh_request_id() -> Result<String, Error> {
    let mut raw = [0u8; 16];
    OsRandom.fill(&mut raw)?;
    Ok(format!("gcm:{}", hex::encode(raw)))
}
