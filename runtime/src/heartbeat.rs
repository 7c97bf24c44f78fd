//! The heartbeat that keeps a live process's claims alive.
//!
//! In: the database (its `--db` spec), the owner name the process claims runs under, and the
//! lease. Out: a thread with a store connection of its own that extends every claim of that
//! owner to `now + lease` every third of the lease, until the [`Heartbeat`] is dropped.
//!
//! Why a thread of its own: the engine thread is busy for as long as a tool call takes (an
//! `exec` command may run for minutes), and a claim it does not renew expires and lets
//! another process start the same call again. The heartbeat does not depend on what the
//! engine does, so a claim lives exactly as long as its process: a process that died stops
//! renewing, and its runs are taken over once the lease has passed.

use crate::clock::Clock;
use crate::store::{self, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Renews the claims of one owner while it lives.
pub struct Heartbeat {
    /// Dropping it stops the thread (at its next beat at the latest; it is not waited for).
    _stop: mpsc::Sender<()>,
    lease_ms: Arc<AtomicI64>,
}

impl Heartbeat {
    /// Opens a connection to the database and starts beating. Fails when the database
    /// cannot be opened.
    pub fn start(
        db: &str,
        owner: &str,
        lease_ms: i64,
        clock: Clock,
    ) -> Result<Heartbeat, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let (opened, open_result) = mpsc::channel::<Result<(), StoreError>>();
        let lease = Arc::new(AtomicI64::new(lease_ms.max(1)));
        let (db, owner, beat_lease) = (db.to_string(), owner.to_string(), lease.clone());
        std::thread::Builder::new()
            .name("flowrt-heartbeat".into())
            .spawn(move || {
                // A store is not `Send`: it is opened on the thread that uses it.
                let store = match store::open(&db) {
                    Ok(store) => {
                        let _ = opened.send(Ok(()));
                        store
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                beat(store, &owner, &beat_lease, &stopped, &clock);
            })
            .map_err(|e| StoreError::Database(format!("cannot start the heartbeat thread: {e}")))?;
        open_result.recv().map_err(|_| {
            StoreError::Database("the heartbeat thread stopped while opening the database".into())
        })??;
        Ok(Heartbeat {
            _stop: stop,
            lease_ms: lease,
        })
    }

    /// Changes the lease the claims are extended by (from the next beat on).
    pub fn set_lease(&self, lease_ms: i64) {
        self.lease_ms.store(lease_ms.max(1), Ordering::Relaxed);
    }
}

/// Renews every third of the lease until `stopped` says so (or its sender is gone). A failed
/// renewal (the database restarting) is reported once and tried again at the next beat.
fn beat(
    mut store: Box<dyn store::Store>,
    owner: &str,
    lease_ms: &AtomicI64,
    stopped: &mpsc::Receiver<()>,
    clock: &Clock,
) {
    let mut failing = false;
    loop {
        let lease = lease_ms.load(Ordering::Relaxed);
        let every = Duration::from_millis(u64::try_from(lease / 3).unwrap_or(0).max(1));
        match stopped.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        match store.renew_claims(owner, clock.now().saturating_add(lease)) {
            Ok(_) => {
                if failing {
                    tracing::info!(owner, "claims renewed again");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(owner, %error, "cannot renew this process's claims; retrying");
                }
                failing = true;
            }
        }
    }
}
