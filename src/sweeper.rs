//! Housekeeping that every `phonebank serve` instance runs on a timer. Safe to run on
//! several instances at once: every transition it makes is fenced on the state it
//! expects, so two sweepers settle an attempt once.
//!
//! It takes back leases whose volunteer went quiet (the lease expired before anything
//! was dialled), and settles attempts left in `reconcile` (the volunteer vanished while
//! the member leg may have been live) once the member leg's final status is known.

use std::collections::HashMap;
use std::time::Duration;

use crate::http::AppState;

/// One pass; returns how many attempts it settled.
pub async fn sweep_once(state: &AppState) -> anyhow::Result<u64> {
    let policies: HashMap<i64, _> = state
        .store
        .list_campaigns()
        .await?
        .into_iter()
        .map(|c| (c.id, c.retry_policy))
        .collect();
    let now = state.clock.now().as_millisecond();
    Ok(state
        .store
        .sweep_attempts(|id| policies.get(&id).cloned(), now)
        .await?)
}

/// Run [`sweep_once`] every `every` until the task is dropped or aborted.
pub fn spawn(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep_once(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "sweeper settled idle attempts"),
                // A database blip: the next pass tries again.
                Err(e) => tracing::warn!(error = %e, "sweeper pass failed"),
            }
        }
    })
}
