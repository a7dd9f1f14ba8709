//! What a running reconciliation does between its steps in a backend:
//! check Postgres' interrupts, so that a cancel, `statement_timeout` or
//! Ctrl-C stops it within a fraction of a second, report its phase to
//! `tenancy.reconcile_progress`, and keep Postgres' signals away from the
//! matcher's helper thread.

use crate::progress::{self, Report};
use tenancy_matching::{Phase, Watch};

pub struct Backend(pub Report);

impl Watch for Backend {
    fn tick(&mut self, _phase: Phase, _done: usize) {
        // Raises the pending cancel or timeout as an ERROR, which unwinds
        // the matcher (the helper thread is told to stop and joined).
        pgrx::check_for_interrupts!();
        self.0.phase(progress::Phase::Matching);
    }

    fn spawning(&mut self, spawn: &mut dyn FnMut()) -> bool {
        // SAFETY: sets this thread's own signal mask; the helper thread
        // starts with every signal blocked, so Postgres' handlers only ever
        // run on the backend's thread. The helper never calls into Postgres.
        #[allow(unsafe_code)]
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) != 0 {
                return false; // no helper, then: the work stays on this thread
            }
            old
        };
        // The mask is restored however `spawn` ends: should a thread fail to
        // start (a panic), signals must still reach this one.
        let _restore = Restore(old);
        spawn();
        true
    }
}

/// Restores the signal mask it holds when dropped.
struct Restore(libc::sigset_t);

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: restores this thread's own mask, saved above.
        #[allow(unsafe_code)]
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}
