use super::*;
use std::collections::HashMap;

fn key(t: u128, u: u128) -> Key {
    Key { tenant: t, user: u }
}

#[test]
fn exactly_the_budget_fits_in_a_window() {
    let mut t = Table::<64>::new();
    let k = key(1, 2);
    for i in 0..5 {
        assert_eq!(
            t.hit(k, 100, 5, 60),
            Decision::Allowed {
                remaining: 4 - i,
                reset_in: 60
            }
        );
    }
    assert_eq!(t.hit(k, 130, 5, 60), Decision::Limited { retry_after: 30 });
    assert_eq!(t.hit(k, 159, 5, 60), Decision::Limited { retry_after: 1 });
    // The window ends at 160: a fresh one starts with that request.
    assert_eq!(
        t.hit(k, 160, 5, 60),
        Decision::Allowed {
            remaining: 4,
            reset_in: 60
        }
    );
}

#[test]
fn keys_do_not_share_budgets() {
    let mut t = Table::<64>::new();
    assert_eq!(
        t.hit(key(1, 1), 0, 1, 10),
        Decision::Allowed {
            remaining: 0,
            reset_in: 10
        }
    );
    assert_eq!(
        t.hit(key(1, 1), 0, 1, 10),
        Decision::Limited { retry_after: 10 }
    );
    assert_eq!(
        t.hit(key(1, 2), 0, 1, 10),
        Decision::Allowed {
            remaining: 0,
            reset_in: 10
        }
    );
    assert_eq!(
        t.hit(key(2, 1), 0, 1, 10),
        Decision::Allowed {
            remaining: 0,
            reset_in: 10
        }
    );
    assert_eq!(
        t.hit(key(1, 0), 0, 1, 10),
        Decision::Allowed {
            remaining: 0,
            reset_in: 10
        }
    );
}

#[test]
fn a_lower_budget_applies_at_once() {
    let mut t = Table::<8>::new();
    let k = key(3, 0);
    for _ in 0..3 {
        t.hit(k, 0, 10, 100);
    }
    assert_eq!(t.hit(k, 1, 2, 100), Decision::Limited { retry_after: 99 });
}

#[test]
fn a_shorter_window_applies_to_the_running_one() {
    let mut t = Table::<8>::new();
    let k = key(4, 4);
    assert_eq!(
        t.hit(k, 0, 1, 3600),
        Decision::Allowed {
            remaining: 0,
            reset_in: 3600
        }
    );
    assert_eq!(t.hit(k, 10, 1, 60), Decision::Limited { retry_after: 60 });
    assert_eq!(
        t.hit(k, 70, 1, 60),
        Decision::Allowed {
            remaining: 0,
            reset_in: 60
        }
    );
}

#[test]
fn a_full_table_says_so_and_frees_expired_slots() {
    let mut t = Table::<4>::new();
    for u in 0..4 {
        assert!(matches!(
            t.hit(key(1, u), 0, 9, 10),
            Decision::Allowed { .. }
        ));
    }
    assert_eq!(t.hit(key(1, 99), 5, 9, 10), Decision::Full);
    // Known keys are still counted while full.
    assert_eq!(
        t.hit(key(1, 2), 5, 9, 10),
        Decision::Allowed {
            remaining: 7,
            reset_in: 5
        }
    );
    // Once the windows are over, their slots are reused.
    assert_eq!(
        t.hit(key(1, 99), 10, 9, 10),
        Decision::Allowed {
            remaining: 8,
            reset_in: 10
        }
    );
    assert_eq!(t.live(10), 1);
}

/// The obvious model: a map of live windows, with room for N of them.
struct Model {
    n: usize,
    windows: HashMap<Key, (i64, u32)>,
}

impl Model {
    fn hit(&mut self, k: Key, now: i64, budget: u32, window: u32) -> Decision {
        self.windows.retain(|_, w| w.0 > now);
        if !self.windows.contains_key(&k) {
            if self.windows.len() == self.n {
                return Decision::Full;
            }
            self.windows.insert(k, (now + i64::from(window), 0));
        }
        let w = self.windows.get_mut(&k).unwrap();
        w.0 = w.0.min(now + i64::from(window));
        let left = (w.0 - now) as u32;
        if w.1 >= budget {
            return Decision::Limited { retry_after: left };
        }
        w.1 += 1;
        Decision::Allowed {
            remaining: budget - w.1,
            reset_in: left,
        }
    }
}

fn rng(mut s: u64) -> impl FnMut(u64) -> u64 {
    move |m| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % m
    }
}

fn against_model<const N: usize>(seed: u64) {
    let mut next = rng(seed);
    let mut t = Table::<N>::new();
    let mut m = Model {
        n: N,
        windows: HashMap::new(),
    };
    let mut now = 1_000;
    for step in 0..20_000 {
        now += next(3) as i64;
        // Few tenants and users, so keys collide, fill the table and expire.
        let k = key(next(4) as u128, next(2 * N as u64) as u128);
        let budget = 1 + next(5) as u32;
        let window = 1 + next(40) as u32;
        assert_eq!(
            t.hit(k, now, budget, window),
            m.hit(k, now, budget, window),
            "N {N} seed {seed} step {step}"
        );
        assert_eq!(
            t.live(now),
            m.windows.len(),
            "N {N} seed {seed} step {step}"
        );
    }
}

#[test]
fn behaves_like_a_map_of_windows() {
    for seed in 1..=20 {
        against_model::<1>(seed);
        against_model::<7>(seed);
        against_model::<16>(seed);
        against_model::<64>(seed);
    }
}
