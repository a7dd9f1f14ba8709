use super::*;
use std::collections::HashMap;

/// `n` empty slots, as zeroed shared memory is.
fn slots(n: usize) -> Vec<Slot> {
    vec![Slot::EMPTY; n]
}

fn key(t: u128, u: u128) -> Key {
    Key { tenant: t, user: u }
}

#[test]
fn exactly_the_budget_fits_in_a_window() {
    let mut s = slots(64);
    let mut t = Table::new(&mut s);
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
    let mut s = slots(64);
    let mut t = Table::new(&mut s);
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
    let mut s = slots(8);
    let mut t = Table::new(&mut s);
    let k = key(3, 0);
    for _ in 0..3 {
        t.hit(k, 0, 10, 100);
    }
    assert_eq!(t.hit(k, 1, 2, 100), Decision::Limited { retry_after: 99 });
}

#[test]
fn a_shorter_window_applies_to_the_running_one() {
    let mut s = slots(8);
    let mut t = Table::new(&mut s);
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
fn a_full_table_serves_new_keys_by_recycling_the_window_nearest_its_end() {
    let mut s = slots(4);
    let mut t = Table::new(&mut s);
    // Four keys whose windows end at 10, 11, 12 and 13.
    for u in 0..4 {
        assert!(matches!(
            t.hit(key(1, u), u as i64, 2, 10),
            Decision::Allowed { .. }
        ));
    }
    // Full: a new key is still served; the window ending at 10 gives way.
    assert_eq!(
        t.hit(key(1, 99), 5, 2, 10),
        Decision::Allowed {
            remaining: 1,
            reset_in: 10
        }
    );
    assert_eq!(t.live(5), 4);
    // The others keep counting, and are still limited over budget.
    assert_eq!(
        t.hit(key(1, 3), 5, 2, 10),
        Decision::Allowed {
            remaining: 0,
            reset_in: 8
        }
    );
    assert_eq!(
        t.hit(key(1, 3), 6, 2, 10),
        Decision::Limited { retry_after: 7 }
    );
    // The recycled key starts a new window when it comes back.
    assert_eq!(
        t.hit(key(1, 0), 6, 2, 10),
        Decision::Allowed {
            remaining: 1,
            reset_in: 10
        }
    );
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
                // Full: the window nearest its end is recycled.
                let (&ending, _) = self.windows.iter().min_by_key(|(k, w)| (w.0, **k)).unwrap();
                self.windows.remove(&ending);
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

fn against_model(n: usize, seed: u64) {
    let mut next = rng(seed);
    let mut s = slots(n);
    let mut t = Table::new(&mut s);
    let mut m = Model {
        n,
        windows: HashMap::new(),
    };
    let mut now = 1_000;
    for step in 0..20_000 {
        now += next(3) as i64;
        // Few tenants and users, so keys collide, fill the table and expire.
        let k = key(next(4) as u128, next(2 * n as u64) as u128);
        let budget = 1 + next(5) as u32;
        let window = 1 + next(40) as u32;
        assert_eq!(
            t.hit(k, now, budget, window),
            m.hit(k, now, budget, window),
            "n {n} seed {seed} step {step}"
        );
        assert_eq!(
            t.live(now),
            m.windows.len(),
            "n {n} seed {seed} step {step}"
        );
    }
}

#[test]
fn behaves_like_a_map_of_windows() {
    for seed in 1..=20 {
        // Up to REACH slots a key may be anywhere: full means full.
        for n in [1, 7, 16, 64, REACH] {
            against_model(n, seed);
        }
    }
}

#[test]
fn a_large_table_stays_within_reach_and_keeps_counting() {
    // Far more keys than slots, in a table larger than REACH: every request
    // is served or limited, never refused, and a key hit over and over keeps
    // its count while others come and go.
    let mut s = slots(4 * REACH);
    let mut t = Table::new(&mut s);
    let heavy = key(7, 7);
    let mut limited = 0;
    for i in 0..20_000u128 {
        t.hit(key(1, 1_000 + i), 0, 5, 3_600);
        if let Decision::Limited { .. } = t.hit(heavy, 0, 3, 3_600) {
            limited += 1;
        }
    }
    assert!(t.live(0) <= 4 * REACH);
    // The heavy key was used 20,000 times in one window with a budget of 3;
    // recycled at times, it is still limited nearly always.
    assert!(limited > 19_000, "limited {limited} times");
}
