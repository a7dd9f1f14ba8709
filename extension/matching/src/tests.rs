//! What the matcher must handle, one case each, plus a property test over
//! random ledgers: no panic, never over-allocated, deterministic.

use super::*;
use rules::RuleError;
use score::{amount_fit, UnitFit};
use std::str::FromStr;
use subset_sum::{SubsetSum, SPLIT_FITS};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn inv(amount: &str, reference: &str, counterparty: &str, issue: Day) -> Invoice {
    Invoice {
        amount: d(amount),
        open_amount: d(amount),
        currency: "EUR".into(),
        issue_date: issue,
        due_date: Some(issue + 30),
        reference: reference.into(),
        counterparty: counterparty.into(),
    }
}

fn tx(amount: &str, description: &str, counterparty: &str, booked: Day) -> Transaction {
    Transaction {
        amount: d(amount),
        currency: "EUR".into(),
        booked_on: booked,
        description: description.into(),
        counterparty: counterparty.into(),
    }
}

fn run(invoices: &[Invoice], transactions: &[Transaction]) -> Vec<Match> {
    reconcile(invoices, transactions, &Rules::default()).unwrap()
}

fn only(ms: &[Match]) -> &Match {
    assert_eq!(ms.len(), 1, "expected one match: {ms:#?}");
    &ms[0]
}

/// Positions as keys, for the windows' tests.
impl crate::windows::Key for usize {
    fn bytes(&self) -> usize {
        std::mem::size_of::<usize>()
    }
}

#[test]
fn exact_payment_with_reference_is_auto() {
    let ms = run(
        &[inv("1200.00", "INV-1042", "Initech GmbH", 100)],
        &[tx("1200.00", "SEPA INV-1042", "INITECH", 114)],
    );
    let m = only(&ms);
    assert_eq!(
        (m.invoice, m.transaction, m.allocated, m.grade),
        (0, 0, d("1200.00"), Grade::Auto)
    );
    assert!(m.reasons.contains(&Reason::AmountEqual));
    assert!(m.reasons.contains(&Reason::Reference {
        reference: "INV-1042".into(),
        exact: true
    }));
    assert!(m.reasons.contains(&Reason::Date {
        days_after_issue: 14,
        days_after_due: Some(-16)
    }));
    assert!(m.score > 0.95);
}

#[test]
fn early_and_late_payments_inside_the_window_match() {
    let invoices = [inv("100.00", "INV-1", "Hooli", 100)];
    for booked in [96, 100, 131, 180] {
        let ms = run(&invoices, &[tx("100.00", "INV-1", "Hooli", booked)]);
        assert_eq!(only(&ms).grade, Grade::Auto, "booked on day {booked}");
    }
    // Outside the window the evidence is weaker: a suggestion at most, and
    // only within suggestion_days of it.
    for (booked, outside) in [(90, 5), (200, 10)] {
        let ms = run(&invoices, &[tx("100.00", "INV-1", "Hooli", booked)]);
        let m = only(&ms);
        assert_eq!(m.grade, Grade::Suggested, "booked on day {booked}");
        assert!(
            m.reasons.contains(&Reason::OutsideWindow { days: outside }),
            "{m:?}"
        );
    }
    for booked in [60, 300] {
        assert!(
            run(&invoices, &[tx("100.00", "INV-1", "Hooli", booked)]).is_empty(),
            "day {booked} is far outside the window"
        );
    }
}

#[test]
fn a_deducted_bank_fee_is_reported() {
    let ms = run(
        &[inv("350.50", "INV-1043", "Umbrella Ltd", 100)],
        &[tx(
            "348.00",
            "Payment INV1043 less fees",
            "Umbrella Ltd",
            110,
        )],
    );
    let m = only(&ms);
    assert_eq!(m.allocated, d("348.00"));
    assert!(m.reasons.contains(&Reason::BankFee { fee: d("2.50") }));
    assert_eq!(m.grade, Grade::Auto);
}

#[test]
fn a_typo_in_the_invoice_number_still_matches() {
    let ms = run(
        &[inv("980.00", "INV-1044", "Hooli SARL", 100)],
        &[tx("980.00", "invoice 1045 hooli", "HOOLI", 105)],
    );
    let m = only(&ms);
    assert!(m.reasons.contains(&Reason::Reference {
        reference: "INV-1044".into(),
        exact: false
    }));
    assert!(m.score >= 0.8, "{m:?}");
}

#[test]
fn without_a_reference_amount_date_and_counterparty_suggest() {
    let ms = run(
        &[inv("480.00", "INV-1045", "Vandelay Industries", 100)],
        &[tx("480.00", "transfer", "VANDELAY INDUSTRIES", 110)],
    );
    let m = only(&ms);
    assert_eq!(m.grade, Grade::Suggested);
    assert!(m.reasons.contains(&Reason::NoReference));
}

#[test]
fn one_payment_can_cover_several_invoices() {
    let invoices = [
        inv("100.00", "INV-1", "Acme", 100),
        inv("250.00", "INV-2", "Acme", 101),
        inv("70.00", "INV-3", "Acme", 102),
        inv("250.00", "INV-4", "Other Co", 102),
    ];
    let ms = run(&invoices, &[tx("350.00", "INV-1 INV-2", "ACME", 110)]);
    assert_eq!(ms.len(), 2, "{ms:#?}");
    assert_eq!(ms.iter().map(|m| m.invoice).collect::<Vec<_>>(), vec![0, 1]);
    assert!(ms.iter().all(
        |m| m.group == ms[0].group && m.reasons.contains(&Reason::SplitPayment { invoices: 2 })
    ));
    assert_eq!(ms.iter().map(|m| m.allocated).sum::<Decimal>(), d("350.00"));
    assert!(ms.iter().all(|m| m.grade == Grade::Auto));
}

#[test]
fn several_partial_payments_settle_one_invoice() {
    let invoices = [inv("1000.00", "INV-7", "Globex", 100)];
    let ms = run(
        &invoices,
        &[
            tx("400.00", "INV-7 part 1", "Globex", 105),
            tx("600.00", "INV-7 rest", "Globex", 120),
        ],
    );
    assert_eq!(ms.len(), 2, "{ms:#?}");
    assert_eq!(
        ms.iter().map(|m| m.allocated).sum::<Decimal>(),
        d("1000.00")
    );
    assert!(ms[0].reasons.contains(&Reason::PartialPayment {
        remaining: d("600.00")
    }));
}

#[test]
fn a_partial_payment_naming_its_invoice_beats_a_fee_on_another() {
    // 400.00 is within the fee ceiling of INV-8, but the payment names INV-7.
    let invoices = [
        inv("1000.00", "INV-7", "Globex", 100),
        inv("410.00", "INV-8", "Globex", 100),
    ];
    let ms = run(
        &invoices,
        &[
            tx("400.00", "INV-7 part 1", "Globex", 105),
            tx("600.00", "INV-7 rest", "Globex", 120),
        ],
    );
    assert_eq!(ms.len(), 2, "{ms:#?}");
    assert!(ms.iter().all(|m| m.invoice == 0), "{ms:#?}");
    assert_eq!(
        ms.iter().map(|m| m.allocated).sum::<Decimal>(),
        d("1000.00")
    );
    assert!(ms[1].reasons.contains(&Reason::PartialPayment {
        remaining: d("0.00")
    }));
}

#[test]
fn three_partial_payments_settle_one_invoice_next_to_a_look_alike() {
    // INV-8 is within the fee ceiling of the first two payments, without a
    // reference; the payments name INV-7.
    let invoices = [
        inv("1000.00", "INV-7", "Globex", 100),
        inv("305.00", "INV-8", "Globex", 100),
    ];
    let ms = run(
        &invoices,
        &[
            tx("300.00", "INV-7 1/3", "Globex", 105),
            tx("300.00", "INV-7 2/3", "Globex", 115),
            tx("400.00", "INV-7 3/3", "Globex", 125),
        ],
    );
    assert_eq!(ms.len(), 3, "{ms:#?}");
    assert!(ms.iter().all(|m| m.invoice == 0), "{ms:#?}");
    let remaining: Vec<Reason> = ms.iter().map(|m| m.reasons[0].clone()).collect();
    assert_eq!(
        remaining,
        ["700.00", "400.00", "0.00"].map(|r| Reason::PartialPayment { remaining: d(r) })
    );
}

#[test]
fn a_split_payment_without_reference_is_found_by_counterparty() {
    // Eighteen open invoices of the payer issued closer to the payment than
    // the two it pays; none of them adds up with another to the amount.
    let mut invoices: Vec<Invoice> = (0..18)
        .map(|j| {
            let amount = Decimal::new(700_100 + 317 * j, 2);
            let mut i = inv(
                "1.00",
                &format!("INV-{}", 5000 + j),
                "Acme Supplies",
                196 + j as Day,
            );
            (i.amount, i.open_amount) = (amount, amount);
            i
        })
        .collect();
    invoices.push(inv("4321.09", "INV-4001", "Acme Supplies", 180));
    invoices.push(inv("2765.43", "INV-4002", "Acme Supplies", 181));
    let ms = run(
        &invoices,
        &[tx("7086.52", "batch payment", "ACME SUPPLIES", 210)],
    );
    assert_eq!(
        ms.iter().map(|m| m.invoice).collect::<Vec<_>>(),
        vec![18, 19],
        "{ms:#?}"
    );
    assert!(ms.iter().all(|m| m.grade == Grade::Suggested
        && m.reasons.contains(&Reason::SplitPayment { invoices: 2 })
        && m.reasons.contains(&Reason::NoReference)));
    assert_eq!(
        ms.iter().map(|m| m.allocated).sum::<Decimal>(),
        d("7086.52")
    );
}

#[test]
fn a_fee_sized_gap_without_a_reference_does_not_break_up_a_split() {
    // 350.00 is 10.00 short of INV-3, and exactly INV-1 + INV-2.
    let invoices = [
        inv("100.00", "INV-1", "Acme", 100),
        inv("250.00", "INV-2", "Acme", 101),
        inv("360.00", "INV-3", "Acme", 102),
    ];
    let ms = run(&invoices, &[tx("350.00", "transfer", "ACME", 110)]);
    assert_eq!(
        ms.iter().map(|m| m.invoice).collect::<Vec<_>>(),
        vec![0, 1],
        "{ms:#?}"
    );
    assert!(ms
        .iter()
        .all(|m| m.reasons.contains(&Reason::SplitPayment { invoices: 2 })));
}

#[test]
fn a_payment_naming_the_invoices_it_splits_into_beats_a_fee_on_another() {
    // INV-1003 is one digit off INV-1002 and 10.00 above the payment.
    let invoices = [
        inv("100.00", "INV-1001", "Acme", 100),
        inv("250.00", "INV-1002", "Acme", 101),
        inv("360.00", "INV-1003", "Acme", 102),
    ];
    let ms = run(&invoices, &[tx("350.00", "INV-1001 INV-1002", "ACME", 110)]);
    assert_eq!(
        ms.iter().map(|m| m.invoice).collect::<Vec<_>>(),
        vec![0, 1],
        "{ms:#?}"
    );
    assert!(ms.iter().all(
        |m| m.grade == Grade::Auto && m.reasons.contains(&Reason::SplitPayment { invoices: 2 })
    ));
}

#[test]
fn a_number_in_someone_elses_payment_waits_for_the_split_search() {
    // "card 5001" names Globex's INV-5001, but Hooli pays, exactly its two
    // open invoices.
    let invoices = [
        inv("1000.00", "INV-5001", "Globex", 100),
        inv("300.00", "INV-6001", "Hooli", 100),
        inv("400.00", "INV-6003", "Hooli", 101),
    ];
    let ms = run(&invoices, &[tx("700.00", "card 5001", "Hooli", 110)]);
    assert_eq!(
        ms.iter().map(|m| m.invoice).collect::<Vec<_>>(),
        vec![1, 2],
        "{ms:#?}"
    );
}

#[test]
fn subset_sum_finds_every_fit_within_the_limits() {
    let amounts = ["1", "2", "3", "4", "5"].map(d);
    assert_eq!(
        SubsetSum::run(&amounts, d("5"), Decimal::ZERO, 5),
        vec![vec![0, 3], vec![1, 2]],
        "a single amount is no split"
    );
    let ones = ["1", "1", "1", "1"].map(d);
    assert!(SubsetSum::run(&ones, d("4"), Decimal::ZERO, 3).is_empty());
    assert_eq!(
        SubsetSum::run(&ones, d("4"), Decimal::ZERO, 4),
        vec![vec![0, 1, 2, 3]]
    );
    assert_eq!(
        SubsetSum::run(&["10.00", "20.005", "50"].map(d), d("30"), d("0.01"), 5),
        vec![vec![0, 1]]
    );
    // Many equal amounts: the search stops at SPLIT_FITS.
    let many = vec![d("100"); 24];
    assert_eq!(
        SubsetSum::run(&many, d("200"), Decimal::ZERO, 5).len(),
        SPLIT_FITS
    );
}

#[test]
fn other_currencies_never_match_unless_allowed() {
    let invoices = [inv("100.00", "INV-9", "Acme", 100)];
    let mut t = tx("100.00", "INV-9", "Acme", 105);
    t.currency = "USD".into();
    assert!(run(&invoices, std::slice::from_ref(&t)).is_empty());
    let rules = Rules {
        allow_currency_mismatch: true,
        ..Rules::default()
    };
    let ms = reconcile(&invoices, &[t], &rules).unwrap();
    let m = only(&ms);
    assert_eq!(m.grade, Grade::Suggested);
    assert!(m.reasons.contains(&Reason::CurrencyDiffers {
        invoice: "EUR".into(),
        transaction: "USD".into()
    }));
}

#[test]
fn a_payment_in_another_currency_comes_after_one_in_the_invoices() {
    let invoices = [inv("100.00", "INV-9", "Acme", 100)];
    let mut usd = tx("100.00", "INV-9", "Acme", 105);
    usd.currency = "USD".into();
    let eur = tx("100.00", "transfer", "Acme", 106);
    let rules = Rules {
        allow_currency_mismatch: true,
        ..Rules::default()
    };
    let ms = reconcile(&invoices, &[usd, eur], &rules).unwrap();
    let m = only(&ms);
    assert_eq!((m.transaction, m.allocated), (1, d("100.00")), "{m:?}");
}

#[test]
fn recurring_equal_amounts_are_never_auto_and_every_tied_invoice_is_offered() {
    // A monthly retainer: three open invoices of the same amount, issued
    // days apart, one payment without a reference.
    let invoices = [
        inv("500.00", "R-01", "Stark Retail", 100),
        inv("500.00", "R-02", "Stark Retail", 101),
        inv("500.00", "R-03", "Stark Retail", 103),
    ];
    let ms = run(
        &invoices,
        &[tx("500.00", "monthly retainer", "Stark Retail", 110)],
    );
    assert_eq!(ms.len(), 3, "{ms:#?}");
    for (m, i) in ms.iter().zip(0..) {
        assert_eq!((m.invoice, m.transaction), (i, 0), "{m:?}");
        assert_eq!(m.grade, Grade::Suggested, "{m:?}");
        assert_eq!(m.allocated, d("500.00"), "{m:?}");
        assert!(m.reasons.contains(&Reason::Tie { candidates: 3 }), "{m:?}");
        assert_eq!(m.group, 1, "one payment, one group: {m:?}");
    }
    // The one allocated also says how close the others came.
    assert!(ms[0].reasons.contains(&Reason::Ambiguous { candidates: 3 }));
}

#[test]
fn the_same_input_gives_the_same_output() {
    let (invoices, transactions) = random_ledger(7, 60);
    let a = reconcile(&invoices, &transactions, &Rules::default()).unwrap();
    let b = reconcile(&invoices, &transactions, &Rules::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_input_is_an_error_naming_the_row() {
    let mut bad = inv("100.00", "X-1", "A", 1);
    bad.amount = d("0");
    assert_eq!(
        reconcile(&[bad], &[], &Rules::default()),
        Err(InputError::InvoiceAmountNotPositive { invoice: 0 })
    );
    let mut bad = inv("100.00", "X-1", "A", 1);
    bad.open_amount = d("100.01");
    let e = reconcile(&[bad], &[], &Rules::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invoice #1 has an open_amount below zero or above its amount"
    );
    let rules = Rules {
        days_after: -1,
        ..Rules::default()
    };
    assert_eq!(
        reconcile(&[], &[], &rules),
        Err(InputError::Rules(RuleError::OutOfRange {
            rule: "days_after"
        }))
    );
}

#[test]
fn payments_out_are_ignored() {
    assert!(run(
        &[inv("45.90", "INV-1", "Staples", 100)],
        &[tx("-45.90", "INV-1", "Staples", 101)]
    )
    .is_empty());
}

/// A small deterministic generator (xorshift), so the property test needs
/// no extra crate and fails the same way every time.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_ledger(seed: u64, n: usize) -> (Vec<Invoice>, Vec<Transaction>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let names = ["Acme", "Globex", "Initech GmbH", "Hooli", "Umbrella Ltd"];
    let mut invoices = Vec::new();
    let mut transactions = Vec::new();
    for i in 0..n {
        let cents = 100 + rng.below(500_000) as i64;
        let amount = Decimal::new(cents, 2);
        let open = if rng.below(5) == 0 {
            Decimal::new(rng.below(cents as u64 + 1) as i64, 2)
        } else {
            amount
        };
        let issue = rng.below(400) as Day;
        let name = names[rng.below(names.len() as u64) as usize];
        invoices.push(Invoice {
            amount,
            open_amount: open,
            currency: if rng.below(10) == 0 {
                "USD".into()
            } else {
                "EUR".into()
            },
            issue_date: issue,
            due_date: if rng.below(4) == 0 {
                None
            } else {
                Some(issue + rng.below(60) as Day)
            },
            reference: format!("INV-{}", 1000 + i),
            counterparty: name.into(),
        });
        let paid = match rng.below(6) {
            0 => amount,
            1 => amount - Decimal::new(rng.below(3000) as i64, 2),
            2 => amount + Decimal::new(rng.below(100) as i64, 2),
            3 => Decimal::new(rng.below(cents as u64) as i64 + 1, 2),
            4 => -amount,
            _ => amount * Decimal::TWO,
        };
        let reference = match rng.below(4) {
            0 => format!("INV-{}", 1000 + i),
            1 => format!("INV{}", 1000 + rng.below(n as u64 + 5)),
            2 => format!("payment {}", rng.below(100_000)),
            _ => String::new(),
        };
        transactions.push(Transaction {
            amount: paid,
            currency: if rng.below(12) == 0 {
                "USD".into()
            } else {
                "EUR".into()
            },
            booked_on: issue + rng.below(90) as Day - 10,
            description: reference,
            counterparty: names[rng.below(names.len() as u64) as usize].into(),
        });
    }
    (invoices, transactions)
}

#[test]
fn random_ledgers_never_over_allocate_and_are_deterministic() {
    for seed in 1..=200u64 {
        let (invoices, transactions) = random_ledger(seed, 5 + (seed as usize % 40));
        for rules in [
            Rules::default(),
            Rules {
                amount_tolerance_pct: d("2"),
                fee_ceiling: d("50"),
                ..Rules::default()
            },
        ] {
            let ms = reconcile(&invoices, &transactions, &rules).unwrap();
            assert_eq!(
                ms,
                reconcile(&invoices, &transactions, &rules).unwrap(),
                "seed {seed}"
            );
            // Tied rows are alternatives: one of them counts.
            let mut per_inv = vec![Decimal::ZERO; invoices.len()];
            let mut per_tx = vec![Decimal::ZERO; transactions.len()];
            let mut tied = vec![Decimal::ZERO; transactions.len()];
            for m in &ms {
                assert!(m.allocated > Decimal::ZERO, "seed {seed}: {m:?}");
                assert!((0.0..=1.0).contains(&m.score), "seed {seed}: {m:?}");
                if m.reasons.iter().any(|r| matches!(r, Reason::Tie { .. })) {
                    assert_eq!(m.grade, Grade::Suggested, "seed {seed}: {m:?}");
                    tied[m.transaction] = tied[m.transaction].max(m.allocated);
                } else {
                    per_inv[m.invoice] += m.allocated;
                    per_tx[m.transaction] += m.allocated;
                }
            }
            for (t, extra) in tied.iter().enumerate() {
                per_tx[t] += extra;
            }
            for (i, inv) in invoices.iter().enumerate() {
                assert!(
                    per_inv[i] <= inv.open_amount,
                    "seed {seed}: invoice {i} over-allocated"
                );
            }
            for (t, tx) in transactions.iter().enumerate() {
                assert!(
                    per_tx[t] <= tx.amount.max(Decimal::ZERO),
                    "seed {seed}: transaction {t} over-allocated"
                );
            }
        }
    }
}

#[test]
fn amount_fit_on_units_is_amount_fit() {
    let amounts = [
        "0.01", "0.02", "1", "24.99", "25", "25.01", "99.99", "100", "100.01", "125",
    ];
    let keys = units::AmountKeys::new(amounts.iter().map(|a| d(a)));
    for tolerance in ["0", "0.01", "0.005", "1"] {
        for fee in ["0", "25", "0.015"] {
            let rules = Rules {
                amount_tolerance: d(tolerance),
                fee_ceiling: d(fee),
                ..Rules::default()
            };
            let p_rules = UnitFit {
                tolerance: keys.floor(rules.amount_tolerance).unwrap(),
                fee: keys.floor(rules.fee_ceiling).unwrap(),
                paid: 0,
            };
            for open in amounts {
                for paid in amounts {
                    for named in [false, true] {
                        let u = UnitFit {
                            paid: keys.units(d(paid)).unwrap(),
                            ..p_rules
                        };
                        assert_eq!(
                            u.fit(keys.units(d(open)).unwrap(), named),
                            amount_fit(&rules, d(open), d(paid), named),
                            "open {open}, paid {paid}, tolerance {tolerance}, fee {fee}"
                        );
                    }
                }
            }
        }
    }
}

/// The subset search against every subset, on pools small enough that
/// neither of its limits can stop it.
#[test]
fn subset_sum_is_every_subset_that_fits() {
    let mut rng = Rng(7);
    for _ in 0..300 {
        let n = 2 + rng.below(10) as usize;
        let amounts: Vec<i64> = (0..n).map(|_| 1 + rng.below(40) as i64).collect();
        let (target, tol) = (rng.below(120) as i64, rng.below(3) as i64);
        let max_k = 2 + rng.below(4) as usize;
        let mut expected: Vec<Vec<usize>> = (0..1_u32 << n)
            .filter(|set| (2..=max_k as u32).contains(&set.count_ones()))
            .map(|set| (0..n).filter(|&k| set >> k & 1 == 1).collect::<Vec<_>>())
            .filter(|s| (s.iter().map(|&k| amounts[k]).sum::<i64>() - target).abs() <= tol)
            .collect();
        let mut found = SubsetSum::search(&amounts, target, tol, max_k);
        if expected.len() < SPLIT_FITS {
            expected.sort();
            found.sort();
            assert_eq!(found, expected, "{amounts:?} {target} {tol} {max_k}");
        }
    }
}

#[test]
fn a_percentage_tolerance_over_half_still_finds_the_invoice() {
    // A gap of 60 is within 60 % of the open amount of 100 (and 99 within
    // 100 %): the invoice must be a candidate though the description does
    // not name it, at any percentage the rules allow.
    for (pct, paid, gap) in [("60", "40", "60"), ("100", "1", "99")] {
        let rules = Rules {
            amount_tolerance_pct: d(pct),
            ..Rules::default()
        };
        let invoices = [inv("100", "INV-7", "Acme GmbH", 10)];
        let transactions = [tx(paid, "transfer", "ACME", 12)];
        let ms = reconcile(&invoices, &transactions, &rules).unwrap();
        let m = only(&ms);
        assert_eq!(
            (m.invoice, m.allocated, m.grade),
            (0, d(paid), Grade::Suggested)
        );
        assert!(m
            .reasons
            .contains(&Reason::AmountWithinTolerance { difference: d(gap) }));
    }
}

#[test]
fn amounts_up_to_the_limit_never_overflow_and_larger_ones_are_errors() {
    let big = MAX_AMOUNT - d("0.01");
    let widest = Rules {
        amount_tolerance_pct: Decimal::ONE_HUNDRED,
        amount_tolerance: Decimal::MAX,
        fee_ceiling: Decimal::MAX,
        max_invoices_per_payment: 10,
        ..Rules::default()
    };
    let nearly_all = Rules {
        amount_tolerance_pct: d("99.9999999999999999999999999"),
        ..widest.clone()
    };
    // Ten invoices of the largest amount and one payment of nearly all of
    // them (a split search over sums beyond 10^20), payments of a tiny and
    // the largest amount, out and in.
    let invoices: Vec<Invoice> = (0..10)
        .map(|k| inv(&big.to_string(), &format!("INV-{k}"), "Acme", 10))
        .collect();
    let transactions = [
        tx(&big.to_string(), "INV-0", "Acme", 12),
        tx(&(-big).to_string(), "refund", "Acme", 12),
        tx("0.0000000000000000000000000001", "INV-1", "Acme", 12),
        tx(&(big - d("5")).to_string(), "Acme batch", "Acme", 13),
    ];
    for rules in [Rules::default(), widest, nearly_all] {
        let ms = reconcile(&invoices, &transactions, &rules).unwrap();
        assert!(!ms.is_empty());
    }
    let too_big = MAX_AMOUNT.to_string();
    let err = reconcile(
        &[inv(&too_big, "INV-1", "Acme", 10)],
        &[],
        &Rules::default(),
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "invoice #1 has an amount of 10^20 or more, beyond what reconcile handles"
    );
    let err = reconcile(
        &[],
        &[tx(&format!("-{too_big}"), "", "", 1)],
        &Rules::default(),
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "transaction #1 has an amount of 10^20 or more, beyond what reconcile handles"
    );
    assert_eq!(MAX_AMOUNT, d("100000000000000000000"));
}

#[test]
fn a_payment_naming_an_invoice_outside_the_date_window_is_suggested_with_the_gap() {
    // A prepayment a week before the invoice date (days_before is 5), and a
    // payment 70 days after the due date (days_after is 60).
    let early = inv("250.00", "INV-7001", "Initech", 100);
    let late = Invoice {
        due_date: Some(130),
        ..inv("90.00", "INV-7002", "Hooli", 100)
    };
    let ms = run(
        &[early, late],
        &[
            tx("250.00", "prepayment INV-7001", "Initech", 93),
            tx("90.00", "INV-7002 finally", "Hooli", 200),
        ],
    );
    assert_eq!(ms.len(), 2, "{ms:#?}");
    for (m, (i, days)) in ms.iter().zip([(0, 2), (1, 10)]) {
        assert_eq!((m.invoice, m.transaction), (i, i), "{m:?}");
        assert_eq!(m.grade, Grade::Suggested, "never auto: {m:?}");
        assert!(m.reasons.contains(&Reason::OutsideWindow { days }), "{m:?}");
    }
    // Beyond suggestion_days, or with another amount, nothing.
    let rules = Rules {
        suggestion_days: 1,
        ..Rules::default()
    };
    let invoices = [inv("250.00", "INV-7001", "Initech", 100)];
    let payment = [tx("250.00", "prepayment INV-7001", "Initech", 93)];
    assert!(reconcile(&invoices, &payment, &rules).unwrap().is_empty());
    let payment = [tx("240.00", "prepayment INV-7001", "Initech", 93)];
    assert!(run(&invoices, &payment).is_empty());
}

/// Runs `Windows` over the rows (keys: their positions), fed in the order
/// the extension reads them: invoices by issue date, payments by day.
fn windowed(
    invoices: &[Invoice],
    transactions: &[Transaction],
    rules: &Rules,
    budget: usize,
) -> Result<(Vec<Keyed<usize>>, Counts), WindowError> {
    let mut inv: Vec<usize> = (0..invoices.len()).collect();
    inv.sort_by_key(|&i| (invoices[i].issue_date, i));
    let mut tx: Vec<usize> = (0..transactions.len()).collect();
    tx.sort_by_key(|&t| (transactions[t].booked_on, t));
    let (mut inv, mut tx) = (inv.into_iter(), tx.into_iter());
    let mut w = Windows::new(rules.clone(), budget)?;
    let mut out = Vec::new();
    while let Some(ms) = w.next(
        &mut || inv.next().map(|i| (i, invoices[i].clone())),
        &mut || tx.next().map(|t| (t, transactions[t].clone())),
        &mut Unwatched,
    )? {
        out.extend(ms);
    }
    Ok((out, w.counts()))
}

/// The matches with their keys (positions here) as their invoice and payment.
fn unkeyed(keyed: Vec<Keyed<usize>>) -> Vec<Match> {
    keyed
        .into_iter()
        .map(|k| Match {
            invoice: k.invoice,
            transaction: k.transaction,
            ..k.matched
        })
        .collect()
}

#[test]
fn one_window_is_reconcile_itself() {
    for seed in 1..=60u64 {
        let (invoices, transactions) = random_ledger(seed, 5 + (seed as usize % 40));
        let rules = Rules::default();
        let whole = reconcile(&invoices, &transactions, &rules).unwrap();
        let (keyed, counts) = windowed(&invoices, &transactions, &rules, usize::MAX).unwrap();
        assert_eq!(
            counts.windows,
            usize::from(!transactions.is_empty()),
            "seed {seed}"
        );
        assert_eq!(unkeyed(keyed), whole, "seed {seed}");
        // Handed over all at once and in any order (reversed, shuffled): the same.
        let reversed = |n: usize| (0..n).rev().collect();
        let shuffled = |n: usize| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&k| (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed);
            order
        };
        let orders: [&dyn Fn(usize) -> Vec<usize>; 2] = [&reversed, &shuffled];
        for order in orders {
            let mut w = Windows::new(rules.clone(), usize::MAX).unwrap();
            let at_once = w
                .whole(
                    order(invoices.len())
                        .into_iter()
                        .map(|i| (i, invoices[i].clone()))
                        .collect(),
                    order(transactions.len())
                        .into_iter()
                        .map(|t| (t, transactions[t].clone()))
                        .collect(),
                    &mut Unwatched,
                )
                .unwrap();
            assert_eq!(unkeyed(at_once), whole, "seed {seed}");
        }
    }
}

#[test]
fn small_windows_lose_no_match_at_their_edges_and_never_over_allocate() {
    // An invoice issued on day 100 and paid on day 150, naming it, with
    // other payments on every day in between: a budget of a few days of
    // payments puts the invoice and its payment in different windows.
    let mut invoices = vec![inv("4321.00", "INV-9001", "Initech", 100)];
    let mut transactions = Vec::new();
    for day in 100..=160 {
        invoices.push(inv("10.00", &format!("F-{day}"), "Filler", day));
        transactions.push(tx("10.00", &format!("F-{day}"), "Filler", day));
    }
    transactions.push(tx("4321.00", "Payment INV-9001", "Initech", 150));
    let rules = Rules::default();
    let (keyed, counts) = windowed(&invoices, &transactions, &rules, 67_000).unwrap();
    assert!(counts.windows > 5, "{counts:?}");
    let paid = transactions.len() - 1;
    let m = keyed
        .iter()
        .find(|k| k.transaction == paid)
        .expect("the payment of the invoice of an earlier window is matched");
    assert_eq!((m.invoice, m.matched.grade), (0, Grade::Auto), "{m:?}");
    assert_eq!(
        keyed.len(),
        transactions.len(),
        "every payment matched once"
    );
    // Groups keep counting across windows.
    let mut groups: Vec<usize> = keyed.iter().map(|k| k.matched.group).collect();
    groups.dedup();
    assert_eq!(groups.len(), keyed.len());

    for seed in 1..=60u64 {
        let (invoices, transactions) = random_ledger(seed, 10 + (seed as usize % 40));
        for budget in [14_000, 34_000, 100_000] {
            let Ok((keyed, _)) = windowed(&invoices, &transactions, &rules, budget) else {
                continue; // one day needs more than this budget
            };
            let again = windowed(&invoices, &transactions, &rules, budget)
                .unwrap()
                .0;
            assert_eq!(keyed, again, "seed {seed}: deterministic");
            let mut per_inv = vec![Decimal::ZERO; invoices.len()];
            for k in &keyed {
                if !k
                    .matched
                    .reasons
                    .iter()
                    .any(|r| matches!(r, Reason::Tie { .. }))
                {
                    per_inv[k.invoice] += k.matched.allocated;
                }
            }
            for (i, inv) in invoices.iter().enumerate() {
                assert!(per_inv[i] <= inv.open_amount, "seed {seed}: invoice {i}");
            }
        }
    }
}

#[test]
fn a_day_larger_than_the_budget_is_a_clear_error() {
    let invoices = [inv("100.00", "INV-1", "Hooli", 100)];
    let transactions = [tx("100.00", "INV-1", "Hooli", 101)];
    let e = windowed(&invoices, &transactions, &Rules::default(), 1_000).unwrap_err();
    assert!(
        matches!(e, WindowError::BudgetTooSmall { day: 101, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("more than the 0 MB allowed"), "{e}");
}
