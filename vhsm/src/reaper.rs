//! Background task: destroys keys whose deletion waiting period has ended, on a fixed interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use vhsm_core::{SealState, Vhsm};

/// Calls `destroy_due_keys` every `every` while the core is unsealed (sealed: keys cannot be
/// touched, so the tick is skipped). Runs until aborted.
pub async fn run(vhsm: Arc<Vhsm>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if vhsm.health().0 != SealState::Unsealed {
            continue;
        }
        let v = Arc::clone(&vhsm);
        match tokio::task::spawn_blocking(move || v.destroy_due_keys()).await {
            Ok(Ok(ids)) if ids.is_empty() => {}
            Ok(Ok(ids)) => tracing::info!(keys = ?ids, "destroyed keys whose deletion was due"),
            Ok(Err(e)) if e.reason() == vhsm_core::Reason::Sealed => {}
            Ok(Err(e)) => tracing::error!(error = %e, "destroying due keys failed"),
            Err(_) => tracing::error!("destroy task failed"),
        }
    }
}
