//! Invoices by the keys their numbers can be found under, for the payments
//! of one day after another: the index holds only the invoices whose date
//! window is open on that day, a few thousand of a large ledger's, so that
//! it stays in cache where an index of every invoice would miss it on
//! nearly every probe.
//!
//! The keys of an invoice number are its digits (3 or more), its digits
//! with one deleted (from 4 digits on), and, for numbers with fewer than 3
//! digits, the whole normalized number (with more, a token equal to the
//! number has its digits and finds it by them). Looking up a token, its
//! digits and its digits with one deleted finds every invoice whose number
//! `Reference::find_in` sees in the token, exactly or one typo away, and more
//! that it does not: that is the pool `candidates` looks at.

use crate::index::{little_endian, FastMap, Prepared};
use crate::text::Description;
use crate::Day;
use std::collections::hash_map::Entry;

/// The keys of the invoice numbers whose window holds the day of the last
/// lookup: for each key, a list of its invoices linked through the nodes,
/// so that an invoice leaves in constant time and the index allocates
/// nothing as it moves. The nodes are laid out in `Prepared::order`, by
/// the first day of their invoice's window, so that those in the index are
/// close together in memory, a band that moves along as the days do.
pub(crate) struct RefSweep {
    /// Each invoice's keys: those of the `k`th in `Prepared::order` are
    /// `nodes[starts[k]..starts[k + 1]]`.
    nodes: Vec<Node>,
    starts: Vec<u32>,
    /// The first and last day of each window, in that order.
    opening: Vec<(Day, Day)>,
    /// The last day of each window and its place in that order, ascending.
    closing: Vec<(Day, u32)>,
    /// How many of `opening` and `closing` are behind.
    opened: usize,
    closed: usize,
    /// Per place in `opening`: whether its invoice is in the index.
    active: Vec<bool>,
    /// Key -> the first of its nodes.
    heads: FastMap<u64, u32>,
    /// Keys too long to pack into a number, numbered.
    long: FastMap<Vec<u8>, u64>,
    /// Bit `n` (63 for 63 and longer): some whole number, or digits key,
    /// has `n` bytes. Tokens of other lengths need no probe.
    whole_lengths: u64,
    digit_lengths: u64,
    /// Scratch for `lookup`.
    key: Vec<u8>,
    walks: Vec<Walk>,
}

/// A list `lookup` walks: the node it is at, and the places deleted that
/// name the invoice, when not every one does.
#[derive(Clone, Copy)]
struct Walk {
    node: u32,
    places: Option<(u8, u8)>,
}

/// A key of an invoice, in the list of the invoices under it.
#[derive(Clone, Copy)]
struct Node {
    key: u64,
    next: u32,
    prev: u32,
    /// The invoice's place in `Prepared::order`.
    place: u32,
    /// Under a key of its digits less one: the position of the deleted
    /// digit; else, and past position 254, `OWN`.
    deleted: u8,
}

const OWN: u8 = u8::MAX;

/// An invoice `RefSweep::lookup` finds: its position, whether the
/// description may name it, and its place in `Prepared::order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Found {
    pub inv: usize,
    pub named: bool,
    pub place: u32,
}
/// No node: the end of a list.
const NONE: u32 = u32::MAX;

/// Keys as numbers. Digits (up to 18) are `10^len + value`, below 2^61;
/// a whole number of up to 8 bytes is its ASCII bytes with the top bit
/// (free in ASCII) set; longer keys are numbered in `RefSweep::long`, and
/// their number has bit 62 set. So the three kinds never meet.
const WHOLE: u64 = 1 << 63;
const LONG: u64 = 1 << 62;

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

impl RefSweep {
    /// The numbers of the invoices at the places `keep` keeps, each found
    /// on the days of its date window widened by `margin` days each side.
    pub fn new(p: &Prepared, margin: Day, keep: &dyn Fn(usize) -> bool) -> Self {
        let n = p.order.len();
        let window = |k: usize| {
            let f = p.facts_at(k);
            (f.from.saturating_sub(margin), f.to.saturating_add(margin))
        };
        let mut closing: Vec<(Day, u32)> = (0..n).map(|k| (window(k).1, k as u32)).collect();
        closing.sort_unstable();
        let mut index = RefSweep {
            nodes: Vec::new(),
            starts: Vec::with_capacity(n + 1),
            opening: (0..n).map(window).collect(),
            closing,
            opened: 0,
            closed: 0,
            active: vec![false; n],
            heads: FastMap::default(),
            long: FastMap::default(),
            whole_lengths: 0,
            digit_lengths: 0,
            key: Vec::new(),
            walks: Vec::new(),
        };
        index.starts.push(0);
        let mut key = Vec::new();
        for place in 0..n {
            if !keep(place) {
                index.starts.push(index.nodes.len() as u32);
                continue;
            }
            let r = p.reference_at(place);
            let d = r.digits();
            if d.len() < 3 {
                if !r.full().is_empty() {
                    index.add(true, r.full(), place, OWN);
                }
            } else {
                index.add_digits(d, None, place, &mut key);
                if d.len() >= 4 {
                    for k in 0..d.len() {
                        index.add_digits(d, Some(k), place, &mut key);
                    }
                }
            }
            index.starts.push(index.nodes.len() as u32);
        }
        index
    }

    /// Adds the key of digits `d`, or of `d` with the digit at `deleted`
    /// deleted: worked out on the number of `d` when it has one.
    fn add_digits(&mut self, d: &[u8], deleted: Option<usize>, place: usize, key: &mut Vec<u8>) {
        let at = deleted.map_or(OWN, place_byte);
        match (deleted, d.len() <= MAX_DIGITS) {
            (None, _) => self.add(false, d, place, OWN),
            (Some(k), true) => {
                self.digit_lengths |= length_bit(d.len() - 1);
                let number = deletion_number(digits_value(d), d.len(), k);
                self.push(number, place, at);
            }
            (Some(k), false) => self.add(false, deletion(d, k, key), place, at),
        }
    }

    fn add(&mut self, whole: bool, key: &[u8], place: usize, deleted: u8) {
        if whole {
            self.whole_lengths |= length_bit(key.len());
        } else {
            self.digit_lengths |= length_bit(key.len());
        }
        let key = match self.key(whole, key) {
            Some(k) => k,
            None => {
                let next = LONG | self.long.len() as u64;
                *self.long.entry(long_key(whole, key)).or_insert(next)
            }
        };
        self.push(key, place, deleted);
    }

    fn push(&mut self, key: u64, place: usize, deleted: u8) {
        self.nodes.push(Node {
            key,
            next: NONE,
            prev: NONE,
            place: place as u32,
            deleted,
        });
    }

    /// The number of a key, if some invoice has it or it packs into one.
    fn key(&self, whole: bool, key: &[u8]) -> Option<u64> {
        match (whole, key.len()) {
            (true, 0..=8) => Some(little_endian(key) | WHOLE),
            (false, 0..=MAX_DIGITS) => Some(digits_number(key.len(), digits_value(key))),
            _ => self.long.get(&long_key(whole, key)).copied(),
        }
    }

    /// Moves to `day`: the invoices whose window holds it, and no others.
    fn advance(&mut self, day: Day) {
        while let Some(&(from, to)) = self.opening.get(self.opened) {
            if from > day {
                break;
            }
            let k = self.opened;
            self.opened += 1;
            // A window that closed before the day never enters.
            if to >= day {
                self.active[k] = true;
                self.link(k);
            }
        }
        while let Some(&(to, k)) = self.closing.get(self.closed) {
            if to >= day {
                break;
            }
            self.closed += 1;
            if std::mem::take(&mut self.active[k as usize]) {
                self.unlink(k as usize);
            }
        }
    }
    /// The nodes of the `k`th invoice by the first day of its window.
    fn nodes(&self, k: usize) -> std::ops::Range<usize> {
        self.starts[k] as usize..self.starts[k + 1] as usize
    }

    fn link(&mut self, k: usize) {
        for node in self.nodes(k) {
            let n = node as u32;
            let next = match self.heads.entry(self.nodes[node].key) {
                Entry::Occupied(mut head) => head.insert(n),
                Entry::Vacant(head) => {
                    head.insert(n);
                    NONE
                }
            };
            if next != NONE {
                self.nodes[next as usize].prev = n;
            }
            self.nodes[node].next = next;
            self.nodes[node].prev = NONE;
        }
    }

    fn unlink(&mut self, k: usize) {
        for node in self.nodes(k) {
            let Node {
                key, prev, next, ..
            } = self.nodes[node];
            if next != NONE {
                self.nodes[next as usize].prev = prev;
            }
            if prev != NONE {
                self.nodes[prev as usize].next = next;
            } else if next != NONE {
                self.heads.insert(key, next);
            } else {
                self.heads.remove(&key);
            }
        }
    }

    /// The invoices whose number may appear among the tokens and whose date
    /// window holds `day`, each with whether the description may name it
    /// (`Reference::find_in` tells); it names none of the others, those only
    /// found by deleting a digit at another place than in the token (two
    /// edits apart). Those only with `unnamed_too`. `day` is never before
    /// the day of the previous call.
    pub fn lookup(
        &mut self,
        order: &[u32],
        d: Description,
        day: Day,
        unnamed_too: bool,
        out: &mut Vec<Found>,
    ) {
        self.advance(day);
        let mut key = std::mem::take(&mut self.key);
        let mut walks = std::mem::take(&mut self.walks);
        walks.clear();
        for (i, (token, digits)) in d.tokens_and_digits().enumerate() {
            self.probe(true, token, None, &mut walks);
            // "INV10042" and "10042" have the same digits: look them up once.
            // (A description has a few tokens: looking back at them costs
            // less than keeping a set.)
            let mut before = d.tokens_and_digits().take(i);
            if digits.len() < 3 || before.any(|(_, seen)| seen == digits) {
                continue;
            }
            self.probe(false, digits, None, &mut walks);
            if digits.len() < 4 {
                continue;
            }
            let value = (digits.len() <= MAX_DIGITS).then(|| digits_value(digits));
            // Deleting any digit of a run gives the same key: once per run.
            let mut k = 0;
            while k < digits.len() {
                let run = k + digits[k..].iter().take_while(|&&c| c == digits[k]).count();
                // The same digit deleted in both: one substitution apart.
                let places = Some((place_byte(k), place_byte(run)));
                match value {
                    Some(value) if self.digit_lengths & length_bit(digits.len() - 1) != 0 => {
                        let number = deletion_number(value, digits.len(), k);
                        self.head(number, places, &mut walks);
                    }
                    Some(_) => {}
                    None => {
                        let key = deletion(digits, k, &mut key);
                        self.probe(false, key, places, &mut walks);
                    }
                }
                k = run;
            }
        }
        self.walk(order, &mut walks, unnamed_too, out);
        self.key = key;
        self.walks = walks;
    }

    /// Adds the list of the active invoices under a key to `walks`.
    fn probe(&self, whole: bool, key: &[u8], places: Option<(u8, u8)>, walks: &mut Vec<Walk>) {
        let lengths = if whole {
            self.whole_lengths
        } else {
            self.digit_lengths
        };
        if lengths & length_bit(key.len()) == 0 {
            return;
        }
        if let Some(key) = self.key(whole, key) {
            self.head(key, places, walks);
        }
    }

    /// Adds the list of the key numbered `key` to `walks`, if it has one.
    fn head(&self, key: u64, places: Option<(u8, u8)>, walks: &mut Vec<Walk>) {
        if let Some(&node) = self.heads.get(&key) {
            walks.push(Walk { node, places });
        }
    }

    /// Walks the lists side by side, a node of each in turn: the nodes are
    /// spread over memory, and the next nodes of different lists can be
    /// fetched at once, where one list's must wait for the node before.
    fn walk(&self, order: &[u32], walks: &mut Vec<Walk>, unnamed_too: bool, out: &mut Vec<Found>) {
        while !walks.is_empty() {
            let mut k = 0;
            while k < walks.len() {
                let Walk { node, places } = walks[k];
                let e = &self.nodes[node as usize];
                let named = e.deleted == OWN
                    || places.is_none_or(|(from, to)| (from..to).contains(&e.deleted));
                if named || unnamed_too {
                    out.push(Found {
                        inv: order[e.place as usize] as usize,
                        named,
                        place: e.place,
                    });
                }
                if e.next == NONE {
                    walks.swap_remove(k);
                } else {
                    walks[k].node = e.next;
                    k += 1;
                }
            }
        }
    }
}

/// A place in a token's digits, as `Node::deleted` holds it (`OWN` past 254).
fn place_byte(k: usize) -> u8 {
    u8::try_from(k).unwrap_or(OWN)
}

/// A long key, told apart by its kind.
fn long_key(whole: bool, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(u8::from(whole));
    k.extend_from_slice(key);
    k
}

/// Digits keys of up to this many digits are numbers.
const MAX_DIGITS: usize = 18;

/// The value of up to `MAX_DIGITS` digits.
fn digits_value(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |v, c| v * 10 + u64::from(c - b'0'))
}

/// The number of a digits key of `len` digits whose value is `value`.
fn digits_number(len: usize, value: u64) -> u64 {
    10_u64.pow(len as u32) + value
}

/// The number of `len` digits of value `value` with the digit at `k`
/// deleted: the digits before it moved down one place, and those after.
fn deletion_number(value: u64, len: usize, k: usize) -> u64 {
    let after = 10_u64.pow((len - 1 - k) as u32);
    digits_number(len - 1, value / (after * 10) * after + value % after)
}

/// `digits` without the digit at `k`, into `key`.
fn deletion<'k>(digits: &[u8], k: usize, key: &'k mut Vec<u8>) -> &'k [u8] {
    key.clear();
    key.extend_from_slice(&digits[..k]);
    key.extend_from_slice(&digits[k + 1..]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rules;
    use crate::{Invoice, Transaction};
    use rust_decimal::Decimal;
    use std::collections::BTreeMap;

    /// Which invoices a description finds, each with whether it is named.
    fn found(numbers: &[&str], description: &str, unnamed_too: bool) -> BTreeMap<String, bool> {
        let invoices: Vec<Invoice> = numbers
            .iter()
            .map(|n| Invoice {
                amount: Decimal::ONE_HUNDRED,
                open_amount: Decimal::ONE_HUNDRED,
                currency: "EUR".into(),
                issue_date: 10,
                reference: format!("INV-{n}"),
                ..Invoice::default()
            })
            .collect();
        let transactions = [Transaction {
            amount: Decimal::ONE_HUNDRED,
            currency: "EUR".into(),
            booked_on: 12,
            description: description.into(),
            ..Transaction::default()
        }];
        let rules = Rules::default();
        let p = Prepared::new(&invoices, &transactions, &rules, &mut crate::Unwatched);
        let mut sweep = RefSweep::new(&p, 0, &|_| true);
        let mut out = Vec::new();
        sweep.lookup(&p.order, p.description(0), 12, unnamed_too, &mut out);
        let mut by_number = BTreeMap::new();
        for f in out {
            *by_number.entry(numbers[f.inv].to_string()).or_insert(false) |= f.named;
        }
        by_number
    }

    #[test]
    fn a_token_finds_the_numbers_one_edit_away_as_named_and_two_only_when_asked() {
        let numbers = ["12345", "2345", "123456", "12395", "99999", "81234"];
        let named = |ns: &[&str]| -> BTreeMap<String, bool> {
            ns.iter().map(|n| (n.to_string(), true)).collect()
        };
        // Exact; one digit more than the token; one less; one substituted.
        assert_eq!(
            found(&numbers, "Paying INV-12345", false),
            named(&["12345", "123456", "12395", "2345"])
        );
        // 81234 less its 8 is 12345 less its 5: two edits apart, found
        // (not named) only when asked for; 81234 itself is exact.
        let mut both = named(&["81234"]);
        assert_eq!(found(&numbers, "ref 81234", false), both);
        both.insert("12345".into(), false);
        assert_eq!(found(&numbers, "ref 81234", true), both);
        assert_eq!(found(&numbers, "nothing here", true), BTreeMap::new());
    }

    #[test]
    fn deletions_by_number_are_deletions_of_the_digits() {
        let mut key = Vec::new();
        for digits in ["1000", "10042", "90909", "000123", "123456789012345678"] {
            let d = digits.as_bytes();
            for k in 0..d.len() {
                let deleted = deletion(d, k, &mut key);
                assert_eq!(
                    deletion_number(digits_value(d), d.len(), k),
                    digits_number(deleted.len(), digits_value(deleted)),
                    "{digits} without position {k}"
                );
            }
        }
    }
}
