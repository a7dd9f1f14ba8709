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
        // SAFETY: sets and restores this thread's own signal mask; the
        // helper thread starts with every signal blocked, so Postgres'
        // handlers only ever run on the backend's thread. The helper never
        // calls into Postgres.
        #[allow(unsafe_code)]
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) != 0 {
                return false; // no helper, then: the work stays on this thread
            }
            spawn();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        true
    }
}
