//! Deterministic synthetic ledgers with ground truth, in roughly the
//! proportions real bank feeds have: for accuracy reports and benchmarks.
//! (Each example uses some of it.)
#![allow(dead_code)]

use rust_decimal::Decimal;
use tenancy_matching::{Day, Invoice, Transaction};

/// What produced a transaction, so reports can break results down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    ExactWithReference,
    ExactWithoutReference,
    BankFee,
    ReferenceTypo,
    LateOrEarly,
    SplitPayment,
    PartialPayment,
    /// Two open invoices of the same amount and counterparty, no reference.
    AmbiguousDuplicate,
    OtherCurrency,
    Unrelated,
    Outgoing,
}

pub struct Ledger {
    pub invoices: Vec<Invoice>,
    pub transactions: Vec<Transaction>,
    pub scenario: Vec<Scenario>,
    /// The true (invoice, transaction) pairs.
    pub truth: Vec<(usize, usize)>,
}

/// xorshift64: small, fast and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const COMPANIES: &[&str] = &[
    "Initech GmbH",
    "Umbrella Ltd",
    "Hooli SARL",
    "Vandelay Industries",
    "Wonka Industries",
    "Stark Retail",
    "Globex Corp",
    "Soylent AG",
    "Tyrell Inc",
    "Cyberdyne Systems",
    "Wayne Enterprises",
    "Acme Supplies",
    "Gringotts Bank",
    "Oceanic Airlines",
    "Pied Piper",
    "Aperture Science",
    "Black Mesa",
    "Monarch Solutions",
];

/// Syllables of coined company names, all two letters long so that
/// different sequences never spell the same word.
const SYLLABLES: &[&str] = &[
    "ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "re", "si", "to", "vu", "wa",
    "xe", "zo",
];
const LEGAL_FORMS: &[&str] = &["GmbH", "Ltd", "SARL", "Inc", "AG", "Corp"];

/// The customers of a ledger of `n` invoices: the 18 `COMPANIES` for every
/// 10,000 invoices or part of it, so that a customer bills about as often
/// (about one invoice a day) whatever the ledger's size. With a fixed list a
/// 100,000-invoice ledger would have each customer billed eight times a day,
/// which no real customer base looks like. Beyond the list, names are coined
/// from `SYLLABLES`: a distinct first word each and a legal form.
fn customers(n: usize) -> Vec<String> {
    let count = COMPANIES.len() * n.div_ceil(10_000).max(1);
    (0..count)
        .map(|k| match COMPANIES.get(k) {
            Some(name) => (*name).to_string(),
            None => {
                let mut word = String::new();
                let mut rest = k;
                while rest > 0 {
                    word.push_str(SYLLABLES[rest % SYLLABLES.len()]);
                    rest /= SYLLABLES.len();
                }
                let mut chars = word.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase());
                let word: String = first.into_iter().chain(chars).collect();
                format!("{word} {}", LEGAL_FORMS[k % LEGAL_FORMS.len()])
            }
        })
        .collect()
}

fn money(rng: &mut Rng) -> Decimal {
    Decimal::new(5_000 + rng.below(2_000_000) as i64, 2)
}

fn bank_name(rng: &mut Rng, company: &str) -> String {
    match rng.below(3) {
        0 => company.to_uppercase(),
        1 => company
            .split_whitespace()
            .next()
            .unwrap_or(company)
            .to_string(),
        _ => company.to_string(),
    }
}

fn mention(rng: &mut Rng, reference: &str) -> String {
    let digits: String = reference.chars().filter(char::is_ascii_digit).collect();
    match rng.below(5) {
        0 => format!("SEPA CREDIT {reference}"),
        1 => format!("Invoice {digits}"),
        2 => format!("payment {} thanks", reference.replace('-', "")),
        3 => format!("RE: {reference} / order {}", rng.below(900) + 100),
        _ => format!("{} {}", reference.to_lowercase(), rng.below(99_999)),
    }
}

fn typo(rng: &mut Rng, reference: &str) -> String {
    let mut chars: Vec<char> = reference.chars().collect();
    let digit_positions: Vec<usize> = (0..chars.len())
        .filter(|i| chars[*i].is_ascii_digit())
        .collect();
    let i = *rng.pick(&digit_positions);
    let d = chars[i].to_digit(10).unwrap_or(0);
    chars[i] = char::from_digit((d + 1 + rng.below(8) as u32) % 10, 10).unwrap_or('0');
    chars.into_iter().collect()
}

/// About `n` invoices and as many transactions; the same seed gives the same ledger.
pub fn ledger(seed: u64, n: usize) -> Ledger {
    let mut rng = Rng::new(seed);
    let mut l = Ledger {
        invoices: Vec::new(),
        transactions: Vec::new(),
        scenario: Vec::new(),
        truth: Vec::new(),
    };
    let mut number = 10_000;
    let mut new_invoice =
        |rng: &mut Rng, l: &mut Ledger, company: &str, amount: Decimal, issue: Day| {
            number += 1 + rng.below(3) as usize;
            l.invoices.push(Invoice {
                amount,
                open_amount: amount,
                currency: "EUR".into(),
                issue_date: issue,
                due_date: Some(issue + 30),
                reference: format!("INV-{number}"),
                counterparty: company.into(),
            });
            l.invoices.len() - 1
        };
    let pay = |l: &mut Ledger,
               s: Scenario,
               amount: Decimal,
               day: Day,
               description: String,
               cp: String,
               invoices: &[usize]| {
        l.transactions.push(Transaction {
            amount,
            currency: "EUR".into(),
            booked_on: day,
            description,
            counterparty: cp,
        });
        l.scenario.push(s);
        let t = l.transactions.len() - 1;
        l.truth.extend(invoices.iter().map(|&i| (i, t)));
        t
    };
    let customers = customers(n);
    while l.invoices.len() < n {
        let company = rng.pick(&customers).as_str();
        let issue = rng.below(700) as Day;
        let amount = money(&mut rng);
        let roll = rng.below(100);
        let cp = bank_name(&mut rng, company);
        let on_time = issue + 5 + rng.below(30) as Day;
        match roll {
            0..=41 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let d = mention(&mut rng, &l.invoices[i].reference.clone());
                pay(
                    &mut l,
                    Scenario::ExactWithReference,
                    amount,
                    on_time,
                    d,
                    cp,
                    &[i],
                );
            }
            42..=51 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                pay(
                    &mut l,
                    Scenario::ExactWithoutReference,
                    amount,
                    on_time,
                    "transfer".into(),
                    cp,
                    &[i],
                );
            }
            52..=59 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let fee = Decimal::new(50 + rng.below(1_500) as i64, 2);
                let d = mention(&mut rng, &l.invoices[i].reference.clone());
                pay(
                    &mut l,
                    Scenario::BankFee,
                    amount - fee,
                    on_time,
                    d,
                    cp,
                    &[i],
                );
            }
            60..=66 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let r = typo(&mut rng, &l.invoices[i].reference.clone());
                pay(
                    &mut l,
                    Scenario::ReferenceTypo,
                    amount,
                    on_time,
                    format!("payment {r}"),
                    cp,
                    &[i],
                );
            }
            67..=71 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let day = if rng.below(2) == 0 {
                    issue - 1 - rng.below(4) as Day
                } else {
                    issue + 35 + rng.below(50) as Day
                };
                let d = mention(&mut rng, &l.invoices[i].reference.clone());
                pay(&mut l, Scenario::LateOrEarly, amount, day, d, cp, &[i]);
            }
            72..=78 => {
                let k = 2 + rng.below(2) as usize;
                let mut ids = Vec::new();
                for j in 0..k {
                    let part = money(&mut rng);
                    ids.push(new_invoice(
                        &mut rng,
                        &mut l,
                        company,
                        part,
                        issue + j as Day,
                    ));
                }
                let total: Decimal = ids.iter().map(|&i| l.invoices[i].amount).sum();
                let d = if rng.below(2) == 0 {
                    ids.iter()
                        .map(|&i| l.invoices[i].reference.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    format!("{company} batch payment")
                };
                pay(
                    &mut l,
                    Scenario::SplitPayment,
                    total,
                    on_time + 3,
                    d,
                    cp,
                    &ids,
                );
            }
            79..=83 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let first = (amount * Decimal::new(30 + rng.below(40) as i64, 2)).round_dp(2);
                let r = l.invoices[i].reference.clone();
                pay(
                    &mut l,
                    Scenario::PartialPayment,
                    first,
                    on_time,
                    format!("{r} part 1"),
                    cp.clone(),
                    &[i],
                );
                pay(
                    &mut l,
                    Scenario::PartialPayment,
                    amount - first,
                    on_time + 20,
                    format!("{r} rest"),
                    cp,
                    &[i],
                );
            }
            84..=87 => {
                let a = new_invoice(&mut rng, &mut l, company, amount, issue);
                let _b = new_invoice(&mut rng, &mut l, company, amount, issue + 2);
                pay(
                    &mut l,
                    Scenario::AmbiguousDuplicate,
                    amount,
                    issue + 10,
                    "monthly fee".into(),
                    cp,
                    &[a],
                );
            }
            88..=89 => {
                let i = new_invoice(&mut rng, &mut l, company, amount, issue);
                let d = mention(&mut rng, &l.invoices[i].reference.clone());
                let t = pay(&mut l, Scenario::OtherCurrency, amount, on_time, d, cp, &[]);
                l.transactions[t].currency = "USD".into();
            }
            90..=94 => {
                let _unpaid = new_invoice(&mut rng, &mut l, company, amount, issue);
                let other = rng.pick(&customers).as_str();
                pay(
                    &mut l,
                    Scenario::Unrelated,
                    money(&mut rng),
                    on_time,
                    format!("card {}", rng.below(99_999)),
                    other.into(),
                    &[],
                );
            }
            _ => {
                let _unpaid = new_invoice(&mut rng, &mut l, company, amount, issue);
                pay(
                    &mut l,
                    Scenario::Outgoing,
                    -money(&mut rng),
                    on_time,
                    "supplier payment".into(),
                    "Staples".into(),
                    &[],
                );
            }
        }
    }
    l
}

/// The easiest case there is, with as many customers as asked: `n` open
/// invoices of customers named "Customer 1" .. "Customer {customers}", each
/// paid exactly, on time, by one payment whose description names its number.
/// Amounts and dates are spread out (two years of invoices). What it
/// measures is how the cost of a payment grows with the number of customers
/// and of open items.
pub fn easy_ledger(seed: u64, n: usize, customers: usize) -> Ledger {
    let mut rng = Rng::new(seed);
    let mut l = Ledger {
        invoices: Vec::with_capacity(n),
        transactions: Vec::with_capacity(n),
        scenario: Vec::with_capacity(n),
        truth: Vec::with_capacity(n),
    };
    for i in 0..n {
        let customer = format!("Customer {}", 1 + rng.below(customers as u64));
        let issue = rng.below(730) as Day;
        let amount = money(&mut rng);
        let reference = format!("INV-{:07}", i + 1);
        l.invoices.push(Invoice {
            amount,
            open_amount: amount,
            currency: "EUR".into(),
            issue_date: issue,
            due_date: Some(issue + 30),
            reference: reference.clone(),
            counterparty: customer.clone(),
        });
        l.transactions.push(Transaction {
            amount,
            currency: "EUR".into(),
            booked_on: issue + rng.below(30) as Day,
            description: format!("Payment {reference}"),
            counterparty: customer,
        });
        l.scenario.push(Scenario::ExactWithReference);
        l.truth.push((i, i));
    }
    l
}
