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

/// Payments below which a second thread is not worth starting.
pub(crate) const PARALLEL_FROM: usize = 4_096;

/// Runs `side` on a helper thread while `main` runs on this one, when
/// there are `payments` enough and `watch` lets a thread start; returns
/// both results.
pub(crate) fn beside<A: Send, B>(
    watch: &mut dyn Watch,
    payments: usize,
    side: impl FnOnce() -> A + Send,
    main: impl FnOnce() -> B,
) -> (A, B) {
    if payments < PARALLEL_FROM {
        return (side(), main());
    }
    std::thread::scope(|s| {
        let mut side = Some(side);
        let mut helper = None;
        watch.spawning(&mut || {
            if let Some(f) = side.take() {
                helper = Some(s.spawn(f));
            }
        });
        let b = main();
        let a = match (helper, side) {
            (Some(h), _) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            (None, Some(f)) => f(),
            (None, None) => unreachable!("a side that neither ran nor started"),
        };
        (a, b)
    })
}
