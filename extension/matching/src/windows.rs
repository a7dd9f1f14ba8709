//! Reconciling more than fits in memory at once: the payments are taken in
//! windows of consecutive days, each matched against the invoices that can
//! still be paid on those days, so what is held at any time is one window
//! and never the whole ledger.
//!
//! The sources come sorted: invoices by issue date, payments by booking
//! date. A window grows a day at a time while the payments of its days and
//! the invoices live on them -- those whose date window, widened by
//! `suggestion_days`, holds one of the days -- fit in the budget. An
//! invoice stays held, with what is still open on it, until its window has
//! closed before the next window's first day: a payment in a later window
//! still finds an invoice issued in an earlier one, so no match is lost at
//! a window's edge. Every invoice a payment could match is in the
//! payment's window; windows only change the order in which payments
//! compete for invoices (earlier days first).
//!
//! When everything fits, there is one window, and the result is exactly
//! `reconcile`'s on all rows ordered by key.

use crate::input::{Day, InputError, Invoice, Transaction};
use crate::output::Match;
use crate::rules::Rules;
use crate::watch::{Phase, Watch};
use rust_decimal::Decimal;

/// Bytes a row takes in a window besides its text: the row itself and its
/// share of the matcher's indexes, candidates and matches, and of the
/// matches waiting to be returned (measured on the synthetic ledger: a
/// backend's peak memory grew by 236 MB for 100,000 invoices and 91,655
/// payments, which these give within 3%). A payment costs more than an
/// invoice: its description's tokens, its candidates, its matches.
const INVOICE_BYTES: usize = 600;
const PAYMENT_BYTES: usize = 1_600;

/// `INVOICE_BYTES` and `PAYMENT_BYTES` hold for rows matched at once (the
/// caller's `whole`, which counts with them). In windows, rows are partly
/// held twice: invoices carried from window to window in `held`, the
/// vectors a window grows, the payments and matches of the window lent to
/// the matcher and returned. So a window's rows may take 3/5 of the
/// budget (measured with 1,000,000 invoices and payments under 256 MB: the
/// backend's private memory peaked at 1.38x the rows' share with none of
/// this margin, 1.07x with 7/10).
fn counted(rows: usize) -> usize {
    rows.saturating_mul(5) / 3
}

/// Why a window cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowError {
    /// The payments of one day and the invoices live on it need more than
    /// the budget.
    BudgetTooSmall {
        day: Day,
        needed: usize,
        budget: usize,
    },
    Input(InputError),
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowError::BudgetTooSmall { needed, budget, .. } => write!(
                f,
                "the payments of one day and the invoices open on it need about {} MB, more than the {} MB allowed",
                needed.div_ceil(1 << 20),
                budget >> 20
            ),
            WindowError::Input(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WindowError {}

impl From<InputError> for WindowError {
    fn from(e: InputError) -> Self {
        WindowError::Input(e)
    }
}

/// A match, with its invoice and payment named by their keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Keyed<K> {
    pub invoice: K,
    pub transaction: K,
    pub matched: Match,
}

/// What has been read and matched so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub invoices: usize,
    pub payments: usize,
    pub matches: usize,
    pub windows: usize,
}

/// An invoice held across windows, with what is still open on it.
struct Held<K> {
    key: K,
    invoice: Invoice,
    /// The first and last day a payment may arrive, suggestions included.
    from: Day,
    until: Day,
    bytes: usize,
}

type Row<K, T> = (K, T);

/// A reconciliation in windows: call `next` until it returns None.
pub struct Windows<K> {
    rules: Rules,
    budget: usize,
    held: Vec<Held<K>>,
    held_bytes: usize,
    /// Read from the sources and not yet placed.
    next_invoice: Option<Row<K, Invoice>>,
    next_payment: Option<Row<K, Transaction>>,
    /// A day's payments that did not fit the last window: the next one's first.
    carried: Vec<Row<K, Transaction>>,
    carried_bytes: usize,
    started: bool,
    groups: usize,
    counts: Counts,
}

/// The bytes `invoice` and `payment` are counted for in a window's budget.
pub fn invoice_bytes<K: Key>(key: &K, i: &Invoice) -> usize {
    INVOICE_BYTES + key.bytes() + 2 * (i.reference.len() + i.counterparty.len() + i.currency.len())
}

pub fn payment_bytes<K: Key>(key: &K, t: &Transaction) -> usize {
    PAYMENT_BYTES
        + key.bytes()
        + 3 * t.description.len()
        + 2 * (t.counterparty.len() + t.currency.len())
}

/// What names a row: ordered, and of a known size.
pub trait Key: Ord + Clone {
    /// The bytes a key takes, its own and those it points to.
    fn bytes(&self) -> usize;
}

impl Key for String {
    fn bytes(&self) -> usize {
        std::mem::size_of::<String>() + self.capacity()
    }
}

impl<K: Key> Windows<K> {
    /// `budget`: the bytes one window may hold.
    pub fn new(rules: Rules, budget: usize) -> Result<Self, InputError> {
        rules.check()?;
        Ok(Windows {
            rules,
            budget,
            held: Vec::new(),
            held_bytes: 0,
            next_invoice: None,
            next_payment: None,
            carried: Vec::new(),
            carried_bytes: 0,
            started: false,
            groups: 0,
            counts: Counts::default(),
        })
    }

    /// Rows read and matches made so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The matches of the next window, or None once every payment has had
    /// its window. `invoices` and `payments` give the next row of each
    /// source (sorted as the module says), or None at its end.
    pub fn next(
        &mut self,
        invoices: &mut dyn FnMut() -> Option<Row<K, Invoice>>,
        payments: &mut dyn FnMut() -> Option<Row<K, Transaction>>,
        watch: &mut dyn Watch,
    ) -> Result<Option<Vec<Keyed<K>>>, WindowError> {
        if !self.started {
            self.started = true;
            self.next_invoice = invoices();
            self.next_payment = payments();
            self.counts.payments += usize::from(self.next_payment.is_some());
        }
        let mut window = std::mem::take(&mut self.carried);
        let mut window_bytes = std::mem::take(&mut self.carried_bytes);
        let first_day = match (window.first(), &self.next_payment) {
            (Some((_, t)), _) | (None, Some((_, t))) => t.booked_on,
            (None, None) => return Ok(None),
        };
        // Invoices whose window closed before this one's first day are done.
        self.held.retain(|h| h.until >= first_day);
        self.held_bytes = self.held.iter().map(|h| h.bytes).sum();
        if counted(self.held_bytes + window_bytes) > self.budget {
            return Err(WindowError::BudgetTooSmall {
                day: first_day,
                needed: counted(self.held_bytes + window_bytes),
                budget: self.budget,
            });
        }
        let mut last_day = window.last().map(|(_, t)| t.booked_on);
        while let Some(day) = self.next_payment.as_ref().map(|(_, t)| t.booked_on) {
            let mut day_payments = Vec::new();
            let mut day_bytes = 0;
            while let Some((k, t)) = self.next_payment.take() {
                if t.booked_on != day {
                    self.next_payment = Some((k, t));
                    break;
                }
                day_bytes += payment_bytes(&k, &t);
                day_payments.push((k, t));
                self.next_payment = payments();
                self.counts.payments += usize::from(self.next_payment.is_some());
            }
            self.hold(day, first_day, invoices);
            let needed = counted(self.held_bytes + window_bytes + day_bytes);
            if needed > self.budget {
                if window.is_empty() {
                    return Err(WindowError::BudgetTooSmall {
                        day,
                        needed,
                        budget: self.budget,
                    });
                }
                self.carried = day_payments;
                self.carried_bytes = day_bytes;
                break;
            }
            window.extend(day_payments);
            window_bytes += day_bytes;
            last_day = Some(day);
            watch.tick(Phase::Preparing, self.counts.payments);
        }
        let last_day = last_day.unwrap_or(first_day);
        self.matched(window, last_day, watch).map(Some)
    }

    /// Matches all the rows given as one window, in whatever order they
    /// come: what `next` would do when everything fits the budget (the
    /// caller has counted it with `invoice_bytes` and `payment_bytes`).
    pub fn whole(
        &mut self,
        invoices: Vec<Row<K, Invoice>>,
        payments: Vec<Row<K, Transaction>>,
        watch: &mut dyn Watch,
    ) -> Result<Vec<Keyed<K>>, WindowError> {
        self.started = true;
        self.counts.invoices += invoices.len();
        self.counts.payments += payments.len();
        if payments.is_empty() {
            return Ok(Vec::new());
        }
        // Nothing is carried to a next window: the invoices are not held.
        let open = invoices
            .into_iter()
            .filter(|(_, i)| i.open_amount > Decimal::ZERO);
        let (invoice_keys, invoices) = by_key(open.collect());
        let (payment_keys, payments) = by_key(payments);
        let (matches, _) = crate::matched(&invoices, &payments, &self.rules, watch)?;
        let invoice_key = |i: usize| invoice_keys[i].clone();
        Ok(keyed(
            &mut self.groups,
            &mut self.counts,
            matches,
            invoice_key,
            &payment_keys,
        ))
    }

    /// Holds the invoices that open by `day`, but for those closed before
    /// `first_day` or with nothing open.
    fn hold(
        &mut self,
        day: Day,
        first_day: Day,
        invoices: &mut dyn FnMut() -> Option<Row<K, Invoice>>,
    ) {
        let margin = self.rules.suggestion_days;
        while let Some((k, inv)) = self.next_invoice.take() {
            let (from, to) = self.rules.date_window(&inv);
            let (from, until) = (from.saturating_sub(margin), to.saturating_add(margin));
            if from > day {
                self.next_invoice = Some((k, inv));
                break;
            }
            self.next_invoice = invoices();
            self.counts.invoices += 1;
            if until < first_day || inv.open_amount <= Decimal::ZERO {
                continue;
            }
            let bytes = invoice_bytes(&k, &inv);
            self.held_bytes += bytes;
            self.held.push(Held {
                key: k,
                invoice: inv,
                from,
                until,
                bytes,
            });
        }
    }

    /// Matches the payments of one window (its last day `last_day`) against
    /// the invoices held that are open by then, and keeps what is left open.
    fn matched(
        &mut self,
        window: Vec<Row<K, Transaction>>,
        last_day: Day,
        watch: &mut dyn Watch,
    ) -> Result<Vec<Keyed<K>>, WindowError> {
        // By key, as a single window over everything would have them.
        let (payment_keys, payments) = by_key(window);
        let mut used: Vec<usize> = (0..self.held.len())
            .filter(|&h| self.held[h].from <= last_day)
            .collect();
        used.sort_unstable_by(|&a, &b| self.held[a].key.cmp(&self.held[b].key));
        // Lent to the matcher and given back.
        let take = |h: &mut Held<K>| std::mem::take(&mut h.invoice);
        let invoices: Vec<Invoice> = used.iter().map(|&h| take(&mut self.held[h])).collect();
        let matched = crate::matched(&invoices, &payments, &self.rules, watch);
        for (invoice, &h) in invoices.into_iter().zip(&used) {
            self.held[h].invoice = invoice;
        }
        let (matches, open) = matched?;
        for (k, &h) in used.iter().enumerate() {
            self.held[h].invoice.open_amount = open[k];
        }
        // Named before the invoices settled here are let go (`next` counts
        // what stays held again).
        let held = &self.held;
        let invoice_key = |i: usize| held[used[i]].key.clone();
        let keyed = keyed(
            &mut self.groups,
            &mut self.counts,
            matches,
            invoice_key,
            &payment_keys,
        );
        self.held.retain(|h| h.invoice.open_amount > Decimal::ZERO);
        Ok(keyed)
    }
}

/// A window's matches named by their keys, their groups numbered on from
/// the last window's.
fn keyed<K: Key>(
    groups: &mut usize,
    counts: &mut Counts,
    matches: Vec<Match>,
    invoice_key: impl Fn(usize) -> K,
    payment_keys: &[K],
) -> Vec<Keyed<K>> {
    let first = *groups;
    *groups += matches.last().map_or(0, |m| m.group);
    counts.matches += matches.len();
    counts.windows += 1;
    matches
        .into_iter()
        .map(|mut m| {
            m.group += first;
            Keyed {
                invoice: invoice_key(m.invoice),
                transaction: payment_keys[m.transaction].clone(),
                matched: m,
            }
        })
        .collect()
}

/// The rows' keys and values apart, both ordered by key: the keys are
/// sorted where they lie side by side, and nothing is copied.
fn by_key<K: Key, T>(rows: Vec<Row<K, T>>) -> (Vec<K>, Vec<T>) {
    let (mut keys, mut values): (Vec<K>, Vec<T>) = rows.into_iter().unzip();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
    permute(&mut values, &mut order.clone());
    permute(&mut keys, &mut order);
    (keys, values)
}

/// Puts what was at `order[k]` at `k`, for every `k` (`order` is a
/// permutation, left as the identity), one cycle of it after another.
fn permute<T>(items: &mut [T], order: &mut [usize]) {
    for start in 0..items.len() {
        let mut at = start;
        while order[at] != start {
            let from = order[at];
            items.swap(at, from);
            order[at] = at;
            at = from;
        }
        order[at] = at;
    }
}
