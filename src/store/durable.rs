//! Group commit for SQLite: one fsync for every write that committed while the last one
//! ran, instead of one per transaction.
//!
//! SQLite's writer connection runs with `synchronous=NORMAL` in WAL mode: a commit
//! appends its frames to the `-wal` file but does not fsync it. Before a write is
//! acknowledged, [`WalSync::durable`] makes sure the WAL has been fsynced since that
//! commit: the first writer to ask syncs it once, on behalf of every commit made before
//! the sync started; the writers that commit meanwhile wait for the next sync, which one
//! of them runs. An acknowledged write is then exactly as durable as under
//! `synchronous=FULL` (an fsync of the WAL after its commit), but a burst of writes
//! shares one fsync. A write that was committed and not yet synced when the power went
//! was never acknowledged, so the provider retries it.
//!
//! Checkpoints keep SQLite's own syncing: with `NORMAL` it syncs the WAL before copying
//! pages into the database and the database after.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// Every commit numbered up to this is on disk.
    upto: u64,
    /// A sync is running.
    running: bool,
}

#[derive(Debug)]
pub(crate) struct WalSync {
    wal: PathBuf,
    /// Commits numbered so far (a commit takes its number after it has committed).
    committed: AtomicU64,
    synced: watch::Sender<Synced>,
    /// fsyncs run, for the metric and the test.
    syncs: AtomicU64,
}

impl WalSync {
    /// For the database file at `db`; its WAL is `db` + `-wal`.
    pub(crate) fn new(db: &str) -> Self {
        Self {
            wal: PathBuf::from(format!("{db}-wal")),
            committed: AtomicU64::new(0),
            synced: watch::Sender::new(Synced::default()),
            syncs: AtomicU64::new(0),
        }
    }

    /// Return once everything this task has committed is on disk.
    pub(crate) async fn durable(&self) -> std::io::Result<()> {
        let ticket = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.synced.subscribe();
        loop {
            // Lead a sync if none is running; it covers every commit numbered so far.
            let mut lead = None;
            self.synced.send_if_modified(|s| {
                if s.upto >= ticket || s.running {
                    return false;
                }
                s.running = true;
                lead = Some(self.committed.load(Ordering::SeqCst));
                true
            });
            if let Some(target) = lead {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("phonebank_sqlite_wal_syncs_total").increment(1);
                // A leader dropped mid-sync (a cancelled request) must still hand
                // leadership back, or every later writer waits for ever.
                let guard = Release(&self.synced);
                let wal = self.wal.clone();
                let done = tokio::task::spawn_blocking(move || sync_file(&wal))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                std::mem::forget(guard);
                self.synced.send_modify(|s| {
                    s.running = false;
                    if done.is_ok() {
                        s.upto = s.upto.max(target);
                    }
                });
                done?;
                return Ok(());
            }
            let seen = rx
                .wait_for(|s| s.upto >= ticket || !s.running)
                .await
                .map(|s| s.upto >= ticket)
                .unwrap_or(false);
            if seen {
                return Ok(());
            }
        }
    }
}

struct Release<'a>(&'a watch::Sender<Synced>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.running = false);
    }
}

fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(f) => f.sync_data(),
        // No WAL: the last connection checkpointed it into the database (synced) and
        // removed it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Many writers at once: every one returns, and fewer syncs run than writers asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_syncs() {
        let dir = std::env::temp_dir().join(format!("pb-walsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        std::fs::write(format!("{}-wal", db.display()), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(&db.display().to_string()));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.durable().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let s = *sync.synced.borrow();
        assert_eq!(s.upto, 200);
        assert!(!s.running);
        let syncs = sync.syncs.load(Ordering::Relaxed);
        assert!((1..200).contains(&syncs), "{syncs} syncs for 200 writers");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A leader whose future is dropped mid-sync (client disconnect, request
    /// timeout) must hand leadership back: before the drop guard it left `running = true` and
    /// every later writer waited for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_does_not_wedge_later_writers() {
        let dir = std::env::temp_dir().join(format!("pb-walsync-cancel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        std::fs::write(format!("{}-wal", db.display()), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(&db.display().to_string()));
        {
            use std::future::Future as _;
            let fut = sync.durable();
            tokio::pin!(fut);
            // Poll exactly once (it becomes the leader and awaits the blocking fsync),
            // then drop it, as axum does when the client goes away.
            std::future::poll_fn(|cx| {
                let _ = fut.as_mut().poll(cx);
                std::task::Poll::Ready(())
            })
            .await;
        }
        let later = tokio::time::timeout(std::time::Duration::from_secs(5), sync.durable()).await;
        assert!(
            later.is_ok(),
            "a later writer hung: state after the cancelled leader {:?}",
            *sync.synced.borrow()
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
