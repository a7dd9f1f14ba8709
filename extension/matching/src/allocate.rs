//! Allocation: candidates taken in score order while both the payment and
//! the invoice have room, graded `auto` only when nothing else scores close.

use crate::candidates::Candidate;
use crate::index::{Grouped, Prepared};
use crate::input::{Invoice, Transaction};
use crate::output::{Grade, Match, Reason};
use crate::score::AmountFit;
use crate::text::RefEvidence;
use rust_decimal::Decimal;

/// Scores closer than this are a tie: never `auto`.
pub(crate) const TIE_MARGIN: f64 = 0.05;

/// The date, invoice number and counterparty evidence of a pair.
pub(crate) fn evidence(
    inv: &Invoice,
    t: &Transaction,
    reference: Option<RefEvidence>,
    similarity: Decimal,
) -> [Reason; 3] {
    [
        Reason::Date {
            days_after_issue: t.booked_on - inv.issue_date,
            days_after_due: inv.due_date.map(|d| t.booked_on - d),
        },
        match reference {
            Some(e) => Reason::Reference {
                reference: inv.reference.clone(),
                exact: e == RefEvidence::Exact,
            },
            None => Reason::NoReference,
        },
        Reason::Counterparty { similarity },
    ]
}

/// The allocation so far: what each payment and invoice has left, the
/// matches made, and the counterparty similarities as decimals.
pub(crate) struct Books {
    pub(crate) t_left: Vec<Decimal>,
    pub(crate) open: Vec<Decimal>,
    pub(crate) matches: Vec<Match>,
    pub(crate) similarities: Vec<(u64, Decimal)>,
}

/// How many similarities `Books` keeps: a ledger has few distinct ones.
pub(crate) const SIMILARITIES: usize = 64;

impl Books {
    /// A counterparty fit as `Reason::Counterparty` reports it. Converting
    /// a float costs hundreds of instructions, so the decimals of the
    /// first few distinct fits are kept.
    pub(crate) fn similarity(&mut self, counterparty: f64) -> Decimal {
        let bits = counterparty.to_bits();
        if let Some(&(_, d)) = self.similarities.iter().find(|s| s.0 == bits) {
            return d;
        }
        let d = Decimal::from_f64_retain(counterparty)
            .unwrap_or_default()
            .round_dp(2);
        if self.similarities.len() < SIMILARITIES {
            self.similarities.push((bits, d));
        }
        d
    }
}

pub(crate) fn reasons_for(
    c: &Candidate,
    inv: &Invoice,
    t: &Transaction,
    allocated: Decimal,
    open_after: Decimal,
    similarity: Decimal,
) -> Vec<Reason> {
    let mut r = Vec::new();
    match c.fit {
        AmountFit::Equal => r.push(Reason::AmountEqual),
        AmountFit::Tolerance => r.push(Reason::AmountWithinTolerance {
            difference: (inv.open_amount - t.amount).abs(),
        }),
        AmountFit::Fee => r.push(Reason::BankFee {
            fee: inv.open_amount - t.amount,
        }),
        AmountFit::Partial => r.push(Reason::PartialPayment {
            remaining: open_after,
        }),
        AmountFit::Over => r.push(Reason::Overpayment {
            excess: t.amount - allocated,
        }),
    }
    r.extend(evidence(inv, t, c.reference, similarity));
    if !c.same_currency {
        r.push(Reason::CurrencyDiffers {
            invoice: inv.currency.clone(),
            transaction: t.currency.clone(),
        });
    }
    r
}

/// The whole settlements (`AmountFit::settles_whole`) of each payment, as
/// positions in the candidates, best first; and the scores of those of each
/// invoice. Who else fits about as well decides ties.
pub(crate) struct Rivals<'a> {
    pub(crate) cands: &'a [Candidate],
    pub(crate) per_t: Grouped<usize>,
    pub(crate) per_inv: Grouped<f64>,
}

impl<'a> Rivals<'a> {
    /// `cands` sorted best first.
    pub(crate) fn new(cands: &'a [Candidate], payments: usize, invoices: usize) -> Self {
        let whole = || {
            cands
                .iter()
                .enumerate()
                .filter(|(_, c)| c.fit.settles_whole())
        };
        Rivals {
            cands,
            per_t: Grouped::new(payments, whole().map(|(k, c)| (c.t, k))),
            per_inv: Grouped::new(invoices, whole().map(|(_, c)| (c.inv, c.score))),
        }
    }

    /// Other whole settlements within the tie margin of `c`, of its payment
    /// or of its invoice, whichever has more.
    fn of(&self, c: &Candidate) -> usize {
        let of_t = self.per_t.of(c.t).iter().map(|&k| self.cands[k].score);
        let of_t = of_t.filter(|x| *x >= c.score - TIE_MARGIN).count();
        let of_inv = self.per_inv.of(c.inv).iter();
        let of_inv = of_inv.filter(|x| **x >= c.score - TIE_MARGIN).count();
        of_t.max(of_inv).saturating_sub(1)
    }
}

/// Allocates one candidate pair if both sides still have room.
pub(crate) fn allocate(c: &Candidate, p: &Prepared, rivals: &Rivals, books: &mut Books) {
    let (t, inv) = (&p.transactions[c.t], &p.invoices[c.inv]);
    if books.t_left[c.t].is_zero() || books.open[c.inv].is_zero() {
        return;
    }
    let whole = c.fit.settles_whole();
    if whole && (books.t_left[c.t] != t.amount || books.open[c.inv] != inv.open_amount) {
        return; // a full settlement needs both sides untouched
    }
    let allocated = if !c.same_currency {
        books.open[c.inv]
    } else {
        books.t_left[c.t].min(books.open[c.inv])
    };
    if allocated <= Decimal::ZERO {
        return;
    }
    books.open[c.inv] -= allocated;
    books.t_left[c.t] -= allocated;
    if whole || !c.same_currency {
        books.t_left[c.t] = Decimal::ZERO; // the payment is spent (fee or tolerance)
    }
    if matches!(c.fit, AmountFit::Fee | AmountFit::Tolerance) {
        books.open[c.inv] = Decimal::ZERO; // settled; the gap is a fee or rounding
    }
    let ties = rivals.of(c);
    let similarity = books.similarity(c.counterparty);
    let mut reasons = reasons_for(c, inv, t, allocated, books.open[c.inv], similarity);
    if ties > 0 {
        reasons.push(Reason::Ambiguous {
            candidates: ties + 1,
        });
    }
    let auto = ties == 0 && c.score >= p.rules.min_auto_score && c.same_currency;
    books.matches.push(Match {
        invoice: c.inv,
        transaction: c.t,
        allocated,
        score: c.score,
        grade: if auto { Grade::Auto } else { Grade::Suggested },
        group: 0,
        reasons,
    });
    if ties > 0 && whole {
        offer_tied(c, p, rivals, books);
    }
}

/// The other invoices that settle `c`'s payment about as well as `c` does
/// and are still untouched, each offered as a suggestion beside it, so
/// that a person can pick (identical invoices issued days apart, say).
/// Every row of such a set, `c`'s included, says so with `Reason::Tie`.
/// The others take nothing from the books: only `c` is allocated.
fn offer_tied(c: &Candidate, p: &Prepared, rivals: &Rivals, books: &mut Books) {
    let t = &p.transactions[c.t];
    let chosen = books.matches.len() - 1;
    for &k in rivals.per_t.of(c.t) {
        let alt = &rivals.cands[k];
        if alt.score < c.score - TIE_MARGIN {
            break; // best first: no other is closer
        }
        let inv = &p.invoices[alt.inv];
        if alt.inv == c.inv || !alt.same_currency || books.open[alt.inv] != inv.open_amount {
            continue;
        }
        let allocated = t.amount.min(inv.open_amount);
        let similarity = books.similarity(alt.counterparty);
        let open_after = inv.open_amount - allocated;
        books.matches.push(Match {
            invoice: alt.inv,
            transaction: c.t,
            allocated,
            score: alt.score,
            grade: Grade::Suggested,
            group: 0,
            reasons: reasons_for(alt, inv, t, allocated, open_after, similarity),
        });
    }
    let offered = books.matches.len() - chosen;
    if offered > 1 {
        for m in &mut books.matches[chosen..] {
            m.reasons.push(Reason::Tie {
                candidates: offered,
            });
        }
    }
}
