//! What a long reconciliation tells its caller as it goes, where the caller
//! may stop it, and how it may use a second thread. The extension checks
//! Postgres' interrupts in `tick` (so `statement_timeout` and a cancel stop
//! a call within a fraction of a second) and reports progress from it.

/// The phases of one reconciliation, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Taking the rows' text apart and building the indexes.
    Preparing,
    /// Looking up each payment's candidate invoices.
    Candidates,
    /// Allocating candidates in score order, splits included.
    Allocating,
}

pub trait Watch {
    /// Called from the calling thread at least every few thousand steps of
    /// each phase, with how many of the phase's payments (or candidates)
    /// are done. It may unwind (a panic): the call then stops at once,
    /// having changed nothing outside itself.
    fn tick(&mut self, _phase: Phase, _done: usize) {}

    /// Runs `spawn`, which starts a helper thread that computes without
    /// calling back. The default just runs it; the extension blocks
    /// signals around it, so that they keep going to the backend's thread.
    /// Return false to have no helper thread at all.
    fn spawning(&mut self, spawn: &mut dyn FnMut()) -> bool {
        spawn();
        true
    }
}

/// A `Watch` that watches nothing.
pub struct Unwatched;

impl Watch for Unwatched {}
