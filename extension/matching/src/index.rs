//! The input prepared for matching: the text work on each row done once
//! instead of once per pair, and the indexes that bound which pairs are
//! looked at. A match is still decided by the checks in `candidates` and
//! `score`; the
//! indexes only have to hand them every pair those checks could accept.

use crate::input::{Day, Invoice, Transaction};
use crate::names::NameIndex;
use crate::rules::{term_end, Rules};
use crate::text::{self, Description, Descriptions, RefEvidence, Reference};
use crate::units::AmountKeys;
use crate::watch::{beside, Watch};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// What the inner loops read of an invoice, in 40 bytes, where an `Invoice`
/// and its strings are spread over several cache lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    /// The invoice's `open_amount`, and its key (`AmountKeys`) when
    /// positive, else -1 (keys are never negative for positive amounts).
    pub open: Decimal,
    pub key: i64,
    /// The issue date and `term_end`.
    pub issue: Day,
    pub end: Day,
    /// The first and last day a payment may arrive (`date_window`).
    pub from: Day,
    pub to: Day,
    /// The counterparty, an index into `Prepared::names`.
    pub name: u32,
    /// The currency, interned with the transactions' currencies.
    pub currency: u32,
}

/// The input, with the invoice numbers, descriptions, counterparty names
/// and currencies taken apart once.
pub(crate) struct Prepared<'a> {
    pub invoices: &'a [Invoice],
    pub transactions: &'a [Transaction],
    pub rules: &'a Rules,
    /// The invoices by the first day of their window (then position), and
    /// each invoice's place in that order. The payments of one day read the
    /// invoices of a few weeks around it: kept in this order, those are
    /// close together in memory (see `RefSweep`), where by position they
    /// would be spread over the whole ledger.
    pub order: Vec<u32>,
    place: Vec<u32>,
    /// Per place in `order`.
    facts: Vec<Facts>,
    /// Per place in `order`: the invoice number, ready to look for in descriptions.
    refs: Vec<Reference>,
    /// Per transaction: the counterparty, an index into `names`, and the currency.
    t_name: Vec<u32>,
    t_currency: Vec<u32>,
    /// The distinct counterparty names, as the numbers of their words
    /// (`text::name_words`): names are compared by word numbers.
    names: Grouped<u32>,
    /// The names that may fit a payment, by their rare words.
    name_index: NameIndex,
    /// Per transaction: the numbers of the name words its description has
    /// as tokens, ascending: `t_words[t_words_start[t]..t_words_start[t + 1]]`.
    t_words: Vec<u32>,
    t_words_start: Vec<u32>,
    /// Per transaction: the description's tokens (none for payments out).
    descriptions: Descriptions,
    /// Whether no sum or difference of two amounts is rounded (`exact_sums`).
    pub exact_sums: bool,
    /// Integer keys for the positive open amounts.
    pub keys: AmountKeys,
}

/// The items (one per invoice, by position) laid out in `order`: made in
/// the input's order, where making them in `order` would read the input's
/// strings from all over memory.
fn in_order<T>(order: &[u32], items: impl Iterator<Item = T>) -> Vec<T> {
    let mut items: Vec<Option<T>> = items.map(Some).collect();
    // `order` holds each position once: each item is taken once.
    order
        .iter()
        .filter_map(|&i| items[i as usize].take())
        .collect()
}

/// Per transaction, the numbers of the name words among its description's
/// tokens, ascending and each once (`Prepared::t_words`).
fn description_words(
    descriptions: &Descriptions,
    count: usize,
    numbers: &Words,
) -> (Vec<u32>, Vec<u32>) {
    let (mut words, mut starts) = (Vec::new(), vec![0]);
    for t in 0..count {
        let start = words.len();
        let tokens = descriptions.get(t).tokens();
        words.extend(tokens.filter_map(|token| numbers.get(token)));
        words[start..].sort_unstable();
        let mut kept = start;
        for k in start..words.len() {
            if kept == start || words[kept - 1] != words[k] {
                words[kept] = words[k];
                kept += 1;
            }
        }
        words.truncate(kept);
        starts.push(words.len() as u32);
    }
    (words, starts)
}

/// The tokens of each transaction's description; none for payments out,
/// which are never matched.
fn descriptions(transactions: &[Transaction]) -> Descriptions {
    let mut d = Descriptions::default();
    for t in transactions {
        d.push(if t.amount > Decimal::ZERO {
            &t.description
        } else {
            ""
        });
    }
    d
}

/// Whether no sum or difference of two of the amounts (open amounts,
/// payments, tolerance and fee ceiling) can be rounded: true when each is
/// below 10^15 with at most 10 decimals, as at a common scale their
/// mantissas then stay below 10^25 < 2^84, and Decimal holds 96 bits.
fn exact_sums(invoices: &[Invoice], transactions: &[Transaction], rules: &Rules) -> bool {
    let limit = Decimal::from(1_000_000_000_000_000_i64);
    let small = |d: &Decimal| d.scale() <= 10 && d.abs() < limit;
    invoices.iter().all(|i| small(&i.open_amount))
        && transactions.iter().all(|t| small(&t.amount))
        && small(&rules.amount_tolerance)
        && small(&rules.fee_ceiling)
}

/// What `Prepared::new` works out beside the descriptions: the invoices'
/// facts and places, and the names and currencies of both sides.
struct Rest<'a> {
    names: Names<'a>,
    keys: AmountKeys,
    facts: Vec<Facts>,
    order: Vec<u32>,
    place: Vec<u32>,
    t_name: Vec<u32>,
    t_currency: Vec<u32>,
}

impl<'a> Rest<'a> {
    fn new(invoices: &'a [Invoice], transactions: &'a [Transaction], rules: &'a Rules) -> Self {
        let mut names = Names::default();
        let mut currencies: FastMap<&str, u32> = FastMap::default();
        let mut currency = |c: &'a str| {
            let next = currencies.len() as u32;
            *currencies.entry(c).or_insert(next)
        };
        let positive = |d: &Decimal| !d.is_sign_negative() && !d.is_zero();
        let keys = AmountKeys::new(invoices.iter().map(|i| i.open_amount).filter(positive));
        let facts: Vec<Facts> = invoices
            .iter()
            .map(|inv| {
                let (from, to) = rules.date_window(inv);
                Facts {
                    open: inv.open_amount,
                    key: if positive(&inv.open_amount) {
                        keys.key(inv.open_amount)
                    } else {
                        -1
                    },
                    issue: inv.issue_date,
                    end: term_end(inv),
                    from,
                    to,
                    name: names.id(&inv.counterparty),
                    currency: currency(&inv.currency),
                }
            })
            .collect();
        let mut order: Vec<u32> = (0..invoices.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (facts[i as usize].from, i));
        let mut place = vec![0; order.len()];
        for (k, &i) in order.iter().enumerate() {
            place[i as usize] = k as u32;
        }
        let t_name = transactions
            .iter()
            .map(|t| names.id(&t.counterparty))
            .collect();
        let t_currency = transactions.iter().map(|t| currency(&t.currency)).collect();
        Rest {
            names,
            keys,
            facts,
            order,
            place,
            t_name,
            t_currency,
        }
    }
}

impl<'a> Prepared<'a> {
    /// `watch` may let the descriptions and invoice numbers be taken apart
    /// on a second thread.
    pub fn new(
        invoices: &'a [Invoice],
        transactions: &'a [Transaction],
        rules: &'a Rules,
        watch: &mut dyn Watch,
    ) -> Self {
        // The descriptions' tokens and the invoice numbers (about half of the
        // work here) beside the rest.
        let ((descriptions, refs), rest) = beside(
            watch,
            transactions.len(),
            || {
                let refs: Vec<Reference> = invoices
                    .iter()
                    .map(|i| Reference::new(&i.reference))
                    .collect();
                (descriptions(transactions), refs)
            },
            || Rest::new(invoices, transactions, rules),
        );
        let Names {
            lists: names,
            numbers,
            ..
        } = rest.names;
        let (t_words, t_words_start) =
            description_words(&descriptions, transactions.len(), &numbers);
        let name_index = NameIndex::new(&names, numbers.len());
        Prepared {
            invoices,
            transactions,
            rules,
            facts: rest.order.iter().map(|&i| rest.facts[i as usize]).collect(),
            refs: in_order(&rest.order, refs.into_iter()),
            order: rest.order,
            place: rest.place,
            t_name: rest.t_name,
            t_currency: rest.t_currency,
            names,
            name_index,
            t_words,
            t_words_start,
            descriptions,
            exact_sums: exact_sums(invoices, transactions, rules),
            keys: rest.keys,
        }
    }

    pub fn facts(&self, inv: usize) -> &Facts {
        &self.facts[self.place[inv] as usize]
    }

    /// The facts of the invoice at place `k` in `order`.
    pub fn facts_at(&self, k: usize) -> &Facts {
        &self.facts[k]
    }

    pub fn description(&self, t: usize) -> Description<'_> {
        self.descriptions.get(t)
    }

    pub fn same_currency(&self, f: &Facts, t: usize) -> bool {
        f.currency == self.t_currency[t]
    }

    /// Whether payment `t` falls in the invoice's date window (`date_fit` is some).
    pub fn in_window(&self, f: &Facts, t: usize) -> bool {
        (f.from..=f.to).contains(&self.transactions[t].booked_on)
    }

    /// The number of the invoice at place `k` in `order`, ready to look for.
    pub fn reference_at(&self, k: usize) -> &Reference {
        &self.refs[k]
    }

    /// `Reference::find_in`: invoice `inv`'s number in payment `t`.
    pub fn reference(&self, inv: usize, t: usize) -> Option<RefEvidence> {
        self.refs[self.place[inv] as usize].find_in(self.descriptions.get(t))
    }

    /// The numbers of the name words among payment `t`'s description tokens.
    fn description_words(&self, t: usize) -> &[u32] {
        &self.t_words[self.t_words_start[t] as usize..self.t_words_start[t + 1] as usize]
    }

    /// The names whose `name_fit` to payment `t` is 0.5 or more, ascending.
    /// Only those `NameIndex` finds by their rare words are tried.
    pub fn fitting_names(&self, t: usize, out: &mut Vec<u32>) {
        out.clear();
        let mentioned = self.description_words(t);
        self.name_index.candidates(self.t_name[t], mentioned, out);
        out.sort_unstable();
        out.dedup();
        out.retain(|&name| self.name_fit(name, t) >= 0.5);
    }

    /// How well a counterparty fits payment `t`: 1 when the description
    /// mentions it (has every word of it as a token), else the similarity
    /// of the two names.
    pub fn name_fit(&self, name: u32, t: usize) -> f64 {
        let words = self.names.of(name as usize);
        let tokens = self.description_words(t);
        if !words.is_empty() && words.iter().all(|w| tokens.binary_search(w).is_ok()) {
            1.0
        } else {
            text::similarity(words, self.names.of(self.t_name[t] as usize))
        }
    }
}

/// `Prepared::name_fit` for one payment at a time: which names fit it at
/// least 0.5 (`Prepared::fitting_names`), and the fits worked out so far.
#[derive(Default)]
pub(crate) struct NameFits {
    t: Option<usize>,
    fitting: Vec<u32>,
    fits: Vec<(u32, f64)>,
}

impl NameFits {
    fn payment(&mut self, p: &Prepared, t: usize) {
        if self.t != Some(t) {
            self.t = Some(t);
            p.fitting_names(t, &mut self.fitting);
            self.fits.clear();
        }
    }

    /// `p.name_fit(name, t)`.
    pub fn get(&mut self, p: &Prepared, name: u32, t: usize) -> f64 {
        self.payment(p, t);
        if let Some(&(_, fit)) = self.fits.iter().find(|(n, _)| *n == name) {
            return fit;
        }
        let fit = p.name_fit(name, t);
        self.fits.push((name, fit));
        fit
    }

    /// Whether `p.name_fit(name, t) >= 0.5`.
    pub fn fits(&mut self, p: &Prepared, name: u32, t: usize) -> bool {
        self.payment(p, t);
        self.fitting.binary_search(&name).is_ok()
    }

    /// The names that fit payment `t` at least 0.5, ascending.
    pub fn fitting(&mut self, p: &Prepared, t: usize) -> &[u32] {
        self.payment(p, t);
        &self.fitting
    }
}

/// Counterparty names by their words: "Initech GmbH" and "INITECH" are one.
/// Each distinct word is numbered once, in order of first use; a name is the
/// ascending numbers of its words.
#[derive(Default)]
struct Names<'a> {
    by_text: FastMap<&'a str, u32>,
    numbers: Words,
    /// Each name's word numbers, and the name they make: those of up to two
    /// words packed into a number (`pair`), longer ones apart.
    lists: Grouped<u32>,
    by_pair: FastMap<u64, u32>,
    by_words: FastMap<Box<[u32]>, u32>,
    /// Scratch for the name being numbered.
    text: String,
    spans: Vec<std::ops::Range<usize>>,
    numbered: Vec<u32>,
}

impl<'a> Names<'a> {
    fn id(&mut self, name: &'a str) -> u32 {
        if let Some(&id) = self.by_text.get(name) {
            return id;
        }
        text::name_words(name, &mut self.text, &mut self.spans);
        self.numbered.clear();
        for span in &self.spans {
            self.numbered
                .push(self.numbers.number(&self.text[span.clone()]));
        }
        self.numbered.sort_unstable();
        let next = self.lists.len() as u32;
        let id = match pair(&self.numbered) {
            Some(key) => *self.by_pair.entry(key).or_insert(next),
            None => number_of(&mut self.by_words, self.numbered.as_slice(), next),
        };
        if id == next {
            self.lists.push(&self.numbered);
        }
        self.by_text.insert(name, id);
        id
    }
}

/// Up to two word numbers as one number, each kept apart by adding 1.
fn pair(words: &[u32]) -> Option<u64> {
    let plus = |w: u32| u64::from(w) + 1;
    match *words {
        [] => Some(0),
        [a] => Some(plus(a)),
        [a, b] => Some(plus(a) << 32 | plus(b)),
        _ => None,
    }
}

/// Words numbered in order of first use. Most words have 8 bytes or fewer
/// (upper-case ASCII letters and digits, never 0): those are looked up as
/// their bytes packed into a number, without a string of their own.
#[derive(Default)]
pub(crate) struct Words {
    short: FastMap<u64, u32>,
    long: FastMap<Box<str>, u32>,
}

impl Words {
    fn packed(word: &str) -> Option<u64> {
        (word.len() <= 8).then(|| little_endian(word.as_bytes()))
    }

    pub(crate) fn get(&self, word: &str) -> Option<u32> {
        match Words::packed(word) {
            Some(key) => self.short.get(&key).copied(),
            None => self.long.get(word).copied(),
        }
    }

    /// The word's number, given it now if it has none.
    fn number(&mut self, word: &str) -> u32 {
        let next = self.len() as u32;
        match Words::packed(word) {
            Some(key) => *self.short.entry(key).or_insert(next),
            None => number_of(&mut self.long, word, next),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
}

/// The number `key` has in `map`, or `next`, which it is given: the key is
/// boxed only when it is new.
fn number_of<K>(map: &mut FastMap<Box<K>, u32>, key: &K, next: u32) -> u32
where
    K: std::hash::Hash + Eq + ?Sized,
    Box<K>: for<'k> From<&'k K>,
{
    match map.get(key) {
        Some(&n) => n,
        None => {
            map.insert(key.into(), next);
            next
        }
    }
}

/// Up to 8 bytes as a little-endian number, zero-padded; by shifts, where a
/// copy of a variable length into an array would be a call to memcpy.
pub(crate) fn little_endian(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |w, (k, &b)| w | u64::from(b) << (8 * k))
}

/// FxHash (rustc's hash: a rotate, xor and multiply per word) with a final
/// mix, several times faster than std's SipHash on the short keys here. It
/// is not meant to resist crafted collisions, which would only slow down a
/// tenant's own call; and no map is iterated in an order that reaches the
/// output, so the hash never changes a result.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes at a time, the rest zero-padded.
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(little_endian(rest));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits, which pick the bucket, weak: mix
        // the high ones down (MurmurHash3's finalizer).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

/// Open invoices by open amount: those near a payment. An invoice whose
/// number the description does not carry needs the payment's exact amount
/// or a counterparty that fits (`unnamed_may_fit`), so the amounts near a
/// payment are looked up among the invoices of each payer that fits, and
/// only the exact amount among everyone's: a few invoices instead of all
/// the ledger's within a fee of the payment.
pub(crate) struct AmountIndex {
    /// Per currency.
    by_currency: Vec<ByAmount>,
    /// Per (currency, counterparty name): its run of `payers`.
    by_payer: FastMap<(u32, u32), (u32, u32)>,
    /// Every payer's open invoices, by payer and then as `ByAmount` has
    /// them: one vector for all, where one per payer would take thousands
    /// of allocations.
    payers: ByAmount,
}

/// Open invoices by open amount (then position): the amounts apart from
/// the rest, so that scanning either reads few cache lines.
#[derive(Clone, Default)]
struct ByAmount {
    /// The open amounts' keys (`AmountKeys`).
    opens: Vec<i64>,
    invoices: Vec<Near>,
    /// Every `COARSE`th key: a first search over these stays in cache, and
    /// leaves a block of one cache line to search among the keys.
    coarse: Vec<i64>,
}

/// What `candidates` checks of an invoice near a payment's amount before
/// reading more of it.
#[derive(Clone, Copy)]
pub(crate) struct Near {
    pub from: Day,
    pub to: Day,
    pub inv: u32,
    /// The invoice's place in `Prepared::order`.
    pub place: u32,
    pub name: u32,
}

const COARSE: usize = 8;

impl AmountIndex {
    pub fn new(p: &Prepared) -> Self {
        let mut by_currency: Vec<Vec<(i64, Near)>> = Vec::new();
        let mut payers: Vec<((u32, u32), i64, Near)> = Vec::new();
        for (k, f) in p.facts.iter().enumerate() {
            let inv = p.order[k] as usize;
            if f.open > Decimal::ZERO {
                let c = f.currency as usize;
                if by_currency.len() <= c {
                    by_currency.resize(c + 1, Vec::new());
                }
                let near = Near {
                    from: f.from,
                    to: f.to,
                    inv: inv as u32,
                    place: k as u32,
                    name: f.name,
                };
                by_currency[c].push((f.key, near));
                payers.push(((f.currency, f.name), f.key, near));
            }
        }
        payers.sort_unstable_by_key(|e| (e.0, e.1, e.2.inv));
        let mut by_payer = FastMap::default();
        let mut start = 0;
        for run in payers.chunk_by(|a, b| a.0 == b.0) {
            let end = start + run.len() as u32;
            by_payer.insert(run[0].0, (start, end));
            start = end;
        }
        AmountIndex {
            by_currency: by_currency.into_iter().map(ByAmount::new).collect(),
            by_payer,
            payers: ByAmount::sorted(
                payers
                    .into_iter()
                    .map(|(_, key, near)| (key, near))
                    .collect(),
            ),
        }
    }

    /// Open invoices in payment `t`'s currency whose open amount's key is
    /// in [lo, hi]: of counterparty `name`, or of anyone.
    pub fn near(&self, p: &Prepared, t: usize, name: Option<u32>, lo: i64, hi: i64) -> &[Near] {
        let currency = p.t_currency[t];
        match name {
            Some(name) => self
                .by_payer
                .get(&(currency, name))
                .map_or(&[], |&(from, to)| {
                    self.payers.within(from as usize..to as usize, lo, hi)
                }),
            None => self
                .by_currency
                .get(currency as usize)
                .map_or(&[], |b| b.between(lo, hi)),
        }
    }

    /// The open invoices of the counterparties that fit payment `t` at
    /// least 0.5 (`Prepared::fitting_names`) whose date window holds the
    /// payment, in its currency and, when the payment is `paid` units,
    /// below that: the others would not pass the split search. (The
    /// others' invoices pass it only when the description names their
    /// number exactly, and then `RefSweep` finds them.)
    pub fn payers_invoices(
        &self,
        p: &Prepared,
        t: usize,
        paid: Option<i64>,
        fits: &mut NameFits,
        out: &mut Vec<usize>,
    ) {
        let day = p.transactions[t].booked_on;
        let below = paid.map_or(i64::MAX, |paid| paid - 1);
        for &name in fits.fitting(p, t) {
            let list = self.near(p, t, Some(name), i64::MIN, below);
            let holds = |e: &&Near| e.from <= day && day <= e.to;
            out.extend(list.iter().filter(holds).map(|e| e.inv as usize));
        }
    }
}

impl ByAmount {
    fn new(mut list: Vec<(i64, Near)>) -> Self {
        list.sort_unstable_by_key(|e| (e.0, e.1.inv));
        Self::sorted(list)
    }

    /// The list as it is: `between` needs it by amount, then position;
    /// `within`, each run so.
    fn sorted(list: Vec<(i64, Near)>) -> Self {
        let opens: Vec<i64> = list.iter().map(|e| e.0).collect();
        ByAmount {
            coarse: opens.iter().step_by(COARSE).copied().collect(),
            opens,
            invoices: list.into_iter().map(|e| e.1).collect(),
        }
    }

    fn between(&self, lo: i64, hi: i64) -> &[Near] {
        // The first amount >= lo is in the block after the last coarse amount < lo.
        let block = self.coarse.partition_point(|a| *a < lo);
        let from = block.saturating_sub(1) * COARSE;
        let to = (block * COARSE + 1).min(self.opens.len());
        let start = from + self.opens[from..to].partition_point(|a| *a < lo);
        let end = start + gallop(&self.opens[start..], |a| *a <= hi);
        &self.invoices[start..end]
    }

    /// `between` among the invoices in `run`, themselves by amount (a
    /// payer's, a few: no coarse search).
    fn within(&self, run: std::ops::Range<usize>, lo: i64, hi: i64) -> &[Near] {
        let opens = &self.opens[run.clone()];
        let start = opens.partition_point(|a| *a < lo);
        let end = start + gallop(&opens[start..], |a| *a <= hi);
        &self.invoices[run.start + start..run.start + end]
    }
}

/// `list.partition_point(pred)`, searching from the front in doubling steps:
/// quicker when the point is near the front, as a payment's neighbours are.
fn gallop<T>(list: &[T], pred: impl Fn(&T) -> bool) -> usize {
    let mut end = 1;
    while end < list.len() && pred(&list[end]) {
        end *= 2;
    }
    let from = end / 2;
    let end = end.min(list.len());
    from + list[from..end].partition_point(pred)
}

/// Items grouped by a key in one vector: those of key `k` are
/// `items[starts[k]..starts[k + 1]]`, in the order they were given. One
/// allocation for all the groups, where a vector per group would take one
/// each.
#[derive(Default)]
pub(crate) struct Grouped<T> {
    starts: Vec<usize>,
    items: Vec<T>,
}

impl<T: Copy + Default> Grouped<T> {
    pub(crate) fn new(n: usize, items: impl Iterator<Item = (usize, T)> + Clone) -> Self {
        let mut starts = vec![0; n + 1];
        for (k, _) in items.clone() {
            starts[k + 1] += 1;
        }
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut fill = starts.clone();
        let mut grouped = vec![T::default(); starts[n]];
        for (k, item) in items {
            grouped[fill[k]] = item;
            fill[k] += 1;
        }
        Grouped {
            starts,
            items: grouped,
        }
    }

    pub(crate) fn of(&self, k: usize) -> &[T] {
        &self.items[self.starts[k]..self.starts[k + 1]]
    }

    /// The number of groups.
    pub(crate) fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Adds group `len()`.
    pub(crate) fn push(&mut self, group: &[T]) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.items.extend_from_slice(group);
        self.starts.push(self.items.len());
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[T]> + Clone {
        (0..self.len()).map(|k| self.of(k))
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    /// Names with the same words are one, whatever their case, punctuation,
    /// legal forms, order or repeated words; others are told apart; each
    /// word is numbered once, in order of first use.
    #[test]
    fn names_with_the_same_words_are_one_name() {
        let mut names = Names::default();
        let acme = names.id("Acme GmbH");
        assert_eq!(names.id("ACME"), acme);
        assert_eq!(names.id("acme, gmbh."), acme);
        let ab = names.id("Alpha Beta");
        assert_eq!(names.id("beta alpha-alpha"), ab);
        assert_ne!(ab, acme);
        let alpha = names.id("Alpha");
        assert!(alpha != ab && alpha != acme);
        assert_eq!(names.numbers.len(), 3, "ACME, ALPHA, BETA");
        // Words past 8 bytes and names of three words or more are keyed
        // apart from the packed ones, by the same rules.
        let long = names.id("Globex Corporation International");
        assert_eq!(names.id("INTERNATIONAL globex corporation"), long);
        assert_ne!(names.id("Globex Corporation"), long);
        assert_ne!(names.id("Corporation"), names.id("Corporations"));
        let three = names.id("Alpha Beta Gamma");
        assert_eq!(names.id("gamma, beta & alpha"), three);
        assert!(three != ab && three != alpha);
        let before = names.numbers.len();
        names.id("Alpha Beta Gamma Corporation");
        assert_eq!(names.numbers.len(), before, "every word already numbered");
        assert_eq!(names.lists.of(ab as usize), &[1, 2]);
        assert_eq!(names.lists.of(alpha as usize), &[1]);

        let written: Vec<String> = (0..5_000).map(|k| format!("Customer {k} Ltd")).collect();
        let again: Vec<String> = (0..5_000).map(|k| format!("{k} CUSTOMER")).collect();
        let ids: Vec<u32> = written.iter().map(|n| names.id(n)).collect();
        for (n, &id) in again.iter().zip(&ids) {
            assert_eq!(names.id(n), id, "{n}");
        }
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5_000);
        assert_eq!(names.lists.len(), 9 + 5_000);
    }
}
