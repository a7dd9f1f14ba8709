//! Fixed-window request counters in a table of slots the caller provides.
//!
//! The slots are plain data (no pointers, no heap), so the extension can
//! place them in PostgreSQL shared memory,
//! as many as a setting asks for, and guard them with one lightweight lock:
//! every backend sees the same counters, and a request never writes a row.
//!
//! A key is (tenant, user); user 0 stands for "the whole tenant". A key's
//! window starts with its first request and lasts `window` seconds; within
//! it, the first `budget` requests are allowed and the rest are limited until
//! the window ends. Slots are found by linear probing from the key's hash,
//! at most `REACH` slots from it. Expired slots met on the way are deleted
//! with a backward shift, so probe chains stay short and the table never
//! needs a sweep. A table never refuses a key: when the `REACH` slots from
//! its home all hold live windows (the table is full, or nearly), the window
//! among them nearest its end is recycled for the new key. That key's count
//! then starts again early: it may get up to one extra budget in its window,
//! and nobody is turned away because others are active.

#[cfg(test)]
mod tests;

/// Who is counted: a tenant and a user of it (0 = the tenant as a whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub tenant: u128,
    pub user: u128,
}

/// The outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Counted; `remaining` more fit in the window, which ends in `reset_in` s.
    Allowed { remaining: u32, reset_in: u32 },
    /// Over budget; the window ends (and requests fit again) in `retry_after` s.
    Limited { retry_after: u32 },
}

/// How many slots from its home a key may be found in.
pub const REACH: usize = 128;

/// One key's window, or `EMPTY`. Plain data.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Slot {
    key: Key,
    /// Unix time (s) at which the window ends.
    reset_at: i64,
    count: u32,
    used: bool,
}

impl Slot {
    pub const EMPTY: Slot = Slot {
        key: Key { tenant: 0, user: 0 },
        reset_at: 0,
        count: 0,
        used: false,
    };
}

/// The counters, over slots that hold them between calls (each distinct
/// key with a live window takes one).
pub struct Table<'a> {
    slots: &'a mut [Slot],
}

fn home(key: Key, n: usize) -> usize {
    // splitmix64's finaliser over both halves of both ids: v4 uuids are
    // random, but "tenant, user 0" keys and sequential test ids are not.
    let fold = |v: u128| (v as u64) ^ ((v >> 64) as u64);
    let mut x = fold(key.tenant) ^ fold(key.user).rotate_left(32);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % n as u64) as usize
}

/// Seconds from `now` to `at`, at least 1 (a window never ends "in 0 s").
fn secs_until(at: i64, now: i64) -> u32 {
    (at - now).clamp(1, i64::from(u32::MAX)) as u32
}

impl<'a> Table<'a> {
    /// The table held in `slots` (at least one).
    pub fn new(slots: &'a mut [Slot]) -> Self {
        assert!(!slots.is_empty(), "a table needs a slot");
        Table { slots }
    }

    /// Counts one request of `key` at unix time `now` (seconds) against
    /// `budget` requests per `window` seconds (both at least 1).
    pub fn hit(&mut self, key: Key, now: i64, budget: u32, window: u32) -> Decision {
        let budget = budget.max(1);
        let window = i64::from(window.max(1));
        let i = self.find_or_free(key, now);
        let slot = &mut self.slots[i];
        if !slot.used || slot.key != key || slot.reset_at <= now {
            *slot = Slot {
                key,
                reset_at: now + window,
                count: 0,
                used: true,
            };
        }
        // A window made shorter applies to the running one too.
        slot.reset_at = slot.reset_at.min(now + window);
        if slot.count >= budget {
            return Decision::Limited {
                retry_after: secs_until(slot.reset_at, now),
            };
        }
        slot.count += 1;
        Decision::Allowed {
            remaining: budget - slot.count,
            reset_in: secs_until(slot.reset_at, now),
        }
    }

    /// The slot holding `key`, or a free one for it, or the one of a live
    /// window nearest its end among the `REACH` from the key's home (which
    /// the caller recycles). Deletes the expired slots it meets.
    fn find_or_free(&mut self, key: Key, now: i64) -> usize {
        let n = self.slots.len();
        'probe: loop {
            let mut i = home(key, n);
            let mut ending = i;
            for _ in 0..REACH.min(n) {
                let slot = self.slots[i];
                if !slot.used || slot.key == key {
                    return i;
                }
                if slot.reset_at <= now {
                    // Another key's window is over: delete it and probe again
                    // from the home slot, since deleting shifts later entries
                    // (perhaps wrapped around to before this one) back.
                    self.delete(i);
                    continue 'probe;
                }
                let e = self.slots[ending];
                if (slot.reset_at, slot.key) < (e.reset_at, e.key) {
                    ending = i;
                }
                i = (i + 1) % n;
            }
            return ending;
        }
    }

    /// Backward-shift deletion: empties slot `i` and moves later entries of
    /// the same cluster back so that every entry stays reachable from its home.
    fn delete(&mut self, mut i: usize) {
        let n = self.slots.len();
        let mut j = i;
        loop {
            self.slots[i] = Slot::EMPTY;
            loop {
                j = (j + 1) % n;
                if !self.slots[j].used {
                    return;
                }
                let h = home(self.slots[j].key, n);
                // The entry at j may fill the hole at i unless its home lies
                // cyclically in (i, j].
                let stays = if i <= j {
                    i < h && h <= j
                } else {
                    i < h || h <= j
                };
                if !stays {
                    break;
                }
            }
            self.slots[i] = self.slots[j];
            i = j;
        }
    }

    /// Keys with a live window at `now` (for monitoring and tests).
    pub fn live(&self, now: i64) -> usize {
        live(self.slots, now)
    }
}

/// How many of `slots` hold a live window at unix time `now`: read-only, so
/// a caller may hold the table's lock shared.
pub fn live(slots: &[Slot], now: i64) -> usize {
    slots.iter().filter(|s| s.used && s.reset_at > now).count()
}
