//! Background work the process must not drop on the floor at exit: a machine call that
//! outlived its "node busy" budget and still runs, or the remaining steps of a multi-step Nova
//! plan (rescue then reboot, unrescue then stop, the boot-flag update after a boot).
//!
//! Every such task is spawned through [`Tasks::spawn`] with a line saying what it does, which
//! the task keeps current through its [`Note`] ("waiting for Nova to finish rescue; left:
//! reboot HARD"). At SIGTERM the daemon calls [`Tasks::drain`]: it waits for all of them,
//! bounded by `--shutdown-timeout`, and logs each one that did not finish with its note, so an
//! action Nova may still carry out is never lost silently (issue 15 item 12).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The set of tracked background tasks (cheap to clone: one shared registry).
#[derive(Clone, Debug, Default)]
pub struct Tasks(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    tracker: TaskTracker,
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Note>>,
}

/// What one tracked task is doing and has left to do (updated by the task itself).
#[derive(Clone, Debug, Default)]
pub struct Note(Arc<Mutex<String>>);

impl Note {
    /// Replace the description.
    pub fn set(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what.into();
    }

    /// The description.
    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Removes a task's entry when the task ends, however it ends (returns, panics, is aborted).
struct Registered(Arc<Inner>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawn a tracked task described by `what`; `f` gets the task's [`Note`] to keep the
    /// description current.
    pub fn spawn<F, Fut>(&self, what: impl Into<String>, f: F)
    where
        F: FnOnce(Note) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let note = Note::default();
        note.set(what);
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, note.clone());
        let guard = Registered(self.0.clone(), id);
        let fut = f(note);
        self.0.tracker.spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    /// The descriptions of the tasks still running.
    pub fn running(&self) -> Vec<String> {
        self.0
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Note::get)
            .collect()
    }

    /// Wait for every tracked task, at most `timeout`; log each one that did not finish, with
    /// what it had left to do. Returns how many did not finish. Tasks spawned while waiting
    /// (a plan's next step) are waited for too.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let n = self.0.tracker.len();
        if n > 0 {
            info!(
                tasks = n,
                timeout_secs = timeout.as_secs_f64(),
                "shutdown: waiting for background tasks (power actions, Nova plans)"
            );
        }
        self.0.tracker.close();
        if tokio::time::timeout(timeout, self.0.tracker.wait())
            .await
            .is_ok()
        {
            if n > 0 {
                info!("shutdown: all background tasks finished");
            }
            return 0;
        }
        let left = self.running();
        for what in &left {
            warn!(
                timeout_secs = timeout.as_secs_f64(),
                "shutdown: background task not finished: {what}"
            );
        }
        left.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_and_names_what_is_left() {
        let t = Tasks::new();
        t.spawn("quick", |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await
        });
        t.spawn("slow", |n| async move {
            n.set("slow: step 2 of 2 left");
            tokio::time::sleep(Duration::from_secs(3600)).await
        });
        tokio::task::yield_now().await;
        assert_eq!(t.drain(Duration::from_millis(300)).await, 1);
        assert_eq!(t.running(), vec!["slow: step 2 of 2 left".to_string()]);
        let done = Tasks::new();
        done.spawn("quick", |_| async {});
        assert_eq!(done.drain(Duration::from_secs(10)).await, 0);
        assert!(done.running().is_empty());
    }
}
