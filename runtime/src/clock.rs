//! The runtime's one clock: every "now" of the engine, the server, the CLI, the pool's
//! threads and `flowc test` goes through a [`Clock`], so that a test clock moves all of them
//! at once and two engines in one process never share one by accident.
//!
//! In: the real time, and — on a database with a test clock — the offset stored in its
//! settings (`flowrt clock advance`) and whether `flowc test` stopped it. Out: [`Clock::now`],
//! in milliseconds since the Unix epoch. Cloning a clock shares it (the engine hands clones to
//! the threads it starts).

use crate::store::Millis;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// How far a test clock is ahead of the real one.
    offset: AtomicI64,
    /// The real instant a stopped test clock stands at; 0: it runs with the real time.
    stopped_at: AtomicI64,
}

impl Clock {
    /// The real time (until a test clock's offset is set).
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> Millis {
        let base = match self.0.stopped_at.load(Ordering::Relaxed) {
            0 => real_now(),
            stopped => stopped,
        };
        base.saturating_add(self.0.offset.load(Ordering::Relaxed))
    }

    pub(crate) fn offset(&self) -> i64 {
        self.0.offset.load(Ordering::Relaxed)
    }

    pub(crate) fn set_offset(&self, offset: i64) {
        self.0.offset.store(offset, Ordering::Relaxed);
    }

    /// Stops the clock where it stands: from then on only its offset moves it.
    pub(crate) fn stop(&self) {
        self.0.stopped_at.store(0, Ordering::Relaxed);
        self.0
            .stopped_at
            .store(real_now().max(1), Ordering::Relaxed);
    }
}

fn real_now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset_and_separate_clocks_do_not() {
        let clock = Clock::system();
        let shared = clock.clone();
        let other = Clock::system();
        let before = other.now();
        clock.set_offset(86_400_000);
        assert!(shared.now() >= before + 86_400_000);
        assert!(other.now() < before + 86_400_000);
    }

    #[test]
    fn a_stopped_clock_moves_only_by_its_offset() {
        let clock = Clock::system();
        clock.stop();
        let at = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(clock.now(), at);
        clock.set_offset(1_000);
        assert_eq!(clock.now(), at + 1_000);
    }
}
