//! Which counterparty names fit a payment, found at a cost that follows the
//! rare words of the payment's names and not the number of customers.
//!
//! A name fits a payment at least 0.5 (`Prepared::name_fit`) when the
//! description mentions it (has every word of it) or when its similarity
//! with the payer's name (shared words over all words) is 0.5 or more.
//! Looking up every name that shares some word with the payer would read
//! every customer of a ledger whose names share a word ("Customer 1" ..
//! "Customer 40000"). Instead, words are ranked rarest first, and:
//!
//! - a name is mentioned only if its rarest word is among the description's
//!   words, so names are indexed by their rarest word alone;
//! - a name B of `s` words has similarity 0.5 or more with a payer name A of
//!   `a` words only if `a/2 <= s <= 2a` and they share at least
//!   `o = ceil((a + s) / 3)` words (shared / (a + s - shared) >= 1/2), so at
//!   least one of them is among A's `a - o + 1` rarest words: names are
//!   indexed by (word, size), and for each size only those of A's words are
//!   looked up.
//!
//! Both filters keep every name that fits (the exact tests run after them):
//! the set found is the same as a look at every name would find.

use crate::index::Grouped;

pub(crate) struct NameIndex {
    /// Each name's words, rarest first.
    ranked: Grouped<u32>,
    /// Per word: the names with it, each as (number of words, name), by
    /// number of words.
    by_word: Grouped<(u32, u32)>,
    /// Per word: the names whose rarest word it is.
    by_rarest: Grouped<u32>,
}

/// Words a payer name shares at least with a name of `s` words, for a
/// similarity of 0.5 with its `a` words.
fn overlap(a: usize, s: usize) -> usize {
    (a + s).div_ceil(3)
}

impl NameIndex {
    /// `names`: each name's word numbers, ascending; `words`: how many word
    /// numbers there are.
    pub fn new(names: &Grouped<u32>, words: usize) -> Self {
        let mut frequency = vec![0u32; words];
        for name in names.iter() {
            for &w in name {
                frequency[w as usize] += 1;
            }
        }
        let mut ranked = Grouped::default();
        let mut r = Vec::new();
        for name in names.iter() {
            r.clear();
            r.extend_from_slice(name);
            r.sort_unstable_by_key(|&w| (frequency[w as usize], w));
            ranked.push(&r);
        }
        // The names by their number of words, so that each word's group
        // comes by size.
        let by_size = Grouped::new(
            names.iter().map(<[u32]>::len).max().unwrap_or(0) + 1,
            names.iter().map(<[u32]>::len).zip(0u32..),
        );
        let by_word = Grouped::new(
            words,
            (0..by_size.len()).flat_map(|size| {
                by_size.of(size).iter().flat_map(move |&n| {
                    names
                        .of(n as usize)
                        .iter()
                        .map(move |&w| (w as usize, (size as u32, n)))
                })
            }),
        );
        let by_rarest = Grouped::new(
            words,
            ranked
                .iter()
                .zip(0u32..)
                .filter_map(|(r, n)| r.first().map(|&w| (w as usize, n))),
        );
        NameIndex {
            ranked,
            by_word,
            by_rarest,
        }
    }

    /// Appends the names that may fit a payment whose payer is name `payer`
    /// and whose description has the name words `mentioned`: a superset of
    /// those that fit, in no order and perhaps more than once.
    pub fn candidates(&self, payer: u32, mentioned: &[u32], out: &mut Vec<u32>) {
        for &w in mentioned {
            out.extend_from_slice(self.by_rarest.of(w as usize));
        }
        let a_words = self.ranked.of(payer as usize);
        let a = a_words.len();
        if a == 0 {
            return;
        }
        for s in a.div_ceil(2)..=2 * a {
            let prefix = a + 1 - overlap(a, s).min(a);
            for &w in &a_words[..prefix] {
                let with = self.by_word.of(w as usize);
                let from = with.partition_point(|e| (e.0 as usize) < s);
                let to = from + with[from..].partition_point(|e| e.0 as usize == s);
                out.extend(with[from..to].iter().map(|e| e.1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::similarity;

    /// Every name with a similarity of 0.5 or more to the payer, or whose
    /// words the description all has, is among the candidates.
    #[test]
    fn candidates_hold_every_name_that_fits() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as u32
        };
        for _ in 0..200 {
            let words = 1 + next(12) as usize;
            let names: Vec<Vec<u32>> = (0..1 + next(40))
                .map(|_| {
                    let mut n: Vec<u32> = (0..next(6)).map(|_| next(words as u64)).collect();
                    n.sort_unstable();
                    n.dedup();
                    n
                })
                .collect();
            let mut lists = Grouped::default();
            for name in &names {
                lists.push(name);
            }
            let index = NameIndex::new(&lists, words);
            for payer in 0..names.len() as u32 {
                let mut mentioned: Vec<u32> = (0..next(4)).map(|_| next(words as u64)).collect();
                mentioned.sort_unstable();
                mentioned.dedup();
                let mut found = Vec::new();
                index.candidates(payer, &mentioned, &mut found);
                for (n, name) in names.iter().enumerate() {
                    let is_mentioned =
                        !name.is_empty() && name.iter().all(|w| mentioned.contains(w));
                    let fits = is_mentioned || similarity(name, &names[payer as usize]) >= 0.5;
                    assert!(
                        !fits || found.contains(&(n as u32)),
                        "name {name:?} fits payer {:?} / {mentioned:?} but was not found",
                        names[payer as usize]
                    );
                }
            }
        }
    }
}
