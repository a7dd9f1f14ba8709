//! The reconciliation rules: their names, defaults and ranges, defined here
//! once. The extension stores a tenant's values (NULL = the default here),
//! hands them over by name as text, and reports range errors with `ranges()`.

use crate::input::{Day, Invoice};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Per-tenant rules, overridable per call.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Largest difference, in currency units, still counted as the same amount.
    pub amount_tolerance: Decimal,
    /// The same, as a percentage of the invoice's open amount (the larger wins).
    pub amount_tolerance_pct: Decimal,
    /// Largest shortfall reported as a bank fee deducted from the payment.
    pub fee_ceiling: Decimal,
    /// How many days before the issue date a payment may arrive.
    pub days_before: i32,
    /// How many days after the due date (or issue date) a payment may arrive.
    pub days_after: i32,
    /// Lowest score graded `auto`; ties and near-ties are never `auto`.
    pub min_auto_score: f64,
    /// Most invoices one payment may settle.
    pub max_invoices_per_payment: usize,
    /// Whether an invoice and a payment in different currencies may match
    /// (then only on the invoice number, and never `auto`).
    pub allow_currency_mismatch: bool,
    /// How many days outside the date window a payment that names an
    /// invoice's number and pays exactly its open amount is still suggested
    /// (never `auto`): a prepayment a week early, a payment a month late.
    pub suggestion_days: i32,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            amount_tolerance: Decimal::new(1, 2),
            amount_tolerance_pct: Decimal::ZERO,
            fee_ceiling: Decimal::new(25, 0),
            days_before: 5,
            days_after: 60,
            min_auto_score: 0.8,
            max_invoices_per_payment: 5,
            allow_currency_mismatch: false,
            suggestion_days: 30,
        }
    }
}

/// What values a rule takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Currency units, 0 or more.
    Amount,
    /// A percentage, 0 to 100.
    Percent,
    /// Whole days, 0 to 3660.
    Days,
    /// A score, 0 to 1.
    Score,
    /// Whole invoices, 1 to 10.
    Invoices,
    /// true or false.
    Flag,
}

impl Kind {
    /// The values allowed, as the error hints say them.
    pub fn range(self) -> &'static str {
        match self {
            Kind::Amount => ">= 0",
            Kind::Percent => "0..100",
            Kind::Days => "0..3660",
            Kind::Score => "0..1",
            Kind::Invoices => "1..10",
            Kind::Flag => "true or false",
        }
    }

    /// What type a value must have, as the error hints say it.
    fn what(self) -> &'static str {
        match self {
            Kind::Amount | Kind::Percent | Kind::Score => "a number",
            Kind::Days | Kind::Invoices => "a whole number",
            Kind::Flag => "true or false",
        }
    }
}

/// Every rule by name, in the order they are listed to users.
pub const RULES: [(&str, Kind); 9] = [
    ("amount_tolerance", Kind::Amount),
    ("amount_tolerance_pct", Kind::Percent),
    ("fee_ceiling", Kind::Amount),
    ("days_before", Kind::Days),
    ("days_after", Kind::Days),
    ("min_auto_score", Kind::Score),
    ("max_invoices_per_payment", Kind::Invoices),
    ("allow_currency_mismatch", Kind::Flag),
    ("suggestion_days", Kind::Days),
];

/// The rule names, comma-separated, for hints.
pub fn names() -> String {
    RULES.map(|(name, _)| name).join(", ")
}

/// Every rule's range, for hints: "Ranges: amount_tolerance >= 0, ...".
pub fn ranges() -> String {
    let each = RULES.map(|(name, kind)| format!("{name} {}", kind.range()));
    format!("Ranges: {}.", each.join(", "))
}

/// A rule value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleError {
    /// No rule has this name.
    Unknown(String),
    /// The value is not of the rule's type.
    Invalid { rule: &'static str, value: String },
    /// The value is of the rule's type but outside its range.
    OutOfRange { rule: &'static str },
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleError::Unknown(name) => {
                let name: String = name.chars().take(100).collect();
                write!(f, "unknown rule \"{name}\"")
            }
            RuleError::Invalid { rule, value } => {
                let value: String = value.chars().take(100).collect();
                write!(f, "rule \"{rule}\" has an invalid value: {value}")
            }
            RuleError::OutOfRange { rule } => write!(f, "rule {rule} is out of range"),
        }
    }
}

impl std::error::Error for RuleError {}

impl RuleError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            RuleError::Unknown(_) => format!("Rules: {}.", names()),
            RuleError::Invalid { rule, .. } => {
                let kind = RULES.iter().find(|(n, _)| n == rule).map(|r| r.1);
                let what = kind.map_or("a number", Kind::what);
                format!("{rule} is {what}. {}", ranges())
            }
            RuleError::OutOfRange { .. } => ranges(),
        }
    }
}

/// PostgreSQL's spellings of a boolean, as `jsonb_populate_record` took them.
fn flag(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl Rules {
    /// Sets rule `name` from the text of its value (a JSON scalar, or SQL
    /// text); `None` (JSON null) restores its default. Ranges are checked
    /// by `check`, once all rules are set.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), RuleError> {
        let Some(&(rule, _)) = RULES.iter().find(|(n, _)| *n == name) else {
            return Err(RuleError::Unknown(name.to_string()));
        };
        let default;
        let text = match value {
            Some(text) => text.trim(),
            None => {
                default = Rules::default().get(rule);
                &default
            }
        };
        let invalid = || RuleError::Invalid {
            rule,
            value: text.to_string(),
        };
        let number = || Decimal::from_str(text).map_err(|_| invalid());
        let whole = || text.parse::<i64>().map_err(|_| invalid());
        // A whole number beyond i32 is out of range rather than invalid.
        let days = |v: i64| i32::try_from(v).unwrap_or(if v < 0 { -1 } else { i32::MAX });
        match rule {
            "amount_tolerance" => self.amount_tolerance = number()?,
            "amount_tolerance_pct" => self.amount_tolerance_pct = number()?,
            "fee_ceiling" => self.fee_ceiling = number()?,
            "days_before" => self.days_before = days(whole()?),
            "days_after" => self.days_after = days(whole()?),
            "suggestion_days" => self.suggestion_days = days(whole()?),
            "min_auto_score" => self.min_auto_score = text.parse().map_err(|_| invalid())?,
            "max_invoices_per_payment" => {
                self.max_invoices_per_payment = usize::try_from(whole()?).unwrap_or(0)
            }
            "allow_currency_mismatch" => {
                self.allow_currency_mismatch = flag(text).ok_or_else(invalid)?
            }
            // A rule of RULES without an arm here is refused, not misread.
            _ => return Err(RuleError::Unknown(rule.to_string())),
        }
        Ok(())
    }

    /// The text of rule `rule`'s value, as `set` reads it.
    pub fn get(&self, rule: &str) -> String {
        match rule {
            "amount_tolerance" => self.amount_tolerance.to_string(),
            "amount_tolerance_pct" => self.amount_tolerance_pct.to_string(),
            "fee_ceiling" => self.fee_ceiling.to_string(),
            "days_before" => self.days_before.to_string(),
            "days_after" => self.days_after.to_string(),
            "suggestion_days" => self.suggestion_days.to_string(),
            "min_auto_score" => self.min_auto_score.to_string(),
            "max_invoices_per_payment" => self.max_invoices_per_payment.to_string(),
            "allow_currency_mismatch" => self.allow_currency_mismatch.to_string(),
            _ => String::new(),
        }
    }

    /// Errors unless every rule is within its range (`RULES`).
    pub fn check(&self) -> Result<(), RuleError> {
        let within = |rule: &str| -> bool {
            let amount = |d: Decimal| d >= Decimal::ZERO;
            match rule {
                "amount_tolerance" => amount(self.amount_tolerance),
                "amount_tolerance_pct" => {
                    amount(self.amount_tolerance_pct)
                        && self.amount_tolerance_pct <= Decimal::ONE_HUNDRED
                }
                "fee_ceiling" => amount(self.fee_ceiling),
                "days_before" => (0..=3660).contains(&self.days_before),
                "days_after" => (0..=3660).contains(&self.days_after),
                "suggestion_days" => (0..=3660).contains(&self.suggestion_days),
                "min_auto_score" => (0.0..=1.0).contains(&self.min_auto_score),
                "max_invoices_per_payment" => (1..=10).contains(&self.max_invoices_per_payment),
                "allow_currency_mismatch" => true,
                // A rule of RULES without a range here is never in range.
                _ => false,
            }
        };
        match RULES.iter().find(|(rule, _)| !within(rule)) {
            Some(&(rule, _)) => Err(RuleError::OutOfRange { rule }),
            None => Ok(()),
        }
    }

    /// The largest difference still counted as the same amount, for an
    /// invoice with `open` still open.
    pub(crate) fn tolerance(&self, open: Decimal) -> Decimal {
        if self.amount_tolerance_pct.is_zero() {
            return self.amount_tolerance; // not negative: the same, without a division
        }
        self.amount_tolerance
            .max(open * self.amount_tolerance_pct / Decimal::ONE_HUNDRED)
    }

    /// The first and last day a payment of the invoice may arrive. Wrapping
    /// as `score::date_fit` does in release builds, where it never panics:
    /// an invoice dated near the end of time then has a window that holds
    /// no day.
    pub(crate) fn date_window(&self, inv: &Invoice) -> (Day, Day) {
        (
            inv.issue_date.wrapping_sub(self.days_before),
            term_end(inv).wrapping_add(self.days_after),
        )
    }
}

/// The last day of the invoice's term: its due date, or its issue date.
pub(crate) fn term_end(inv: &Invoice) -> Day {
    inv.due_date.unwrap_or(inv.issue_date).max(inv.issue_date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_can_be_set_by_name_and_reset_with_null() {
        let mut r = Rules::default();
        for (name, value) in [
            ("amount_tolerance", "0.05"),
            ("amount_tolerance_pct", "1.5"),
            ("fee_ceiling", "12"),
            ("days_before", "7"),
            ("days_after", "90"),
            ("min_auto_score", "0.9"),
            ("max_invoices_per_payment", "3"),
            ("allow_currency_mismatch", "true"),
            ("suggestion_days", "14"),
        ] {
            r.set(name, Some(value)).unwrap();
        }
        let expected = Rules {
            amount_tolerance: Decimal::new(5, 2),
            amount_tolerance_pct: Decimal::new(15, 1),
            fee_ceiling: Decimal::new(12, 0),
            days_before: 7,
            days_after: 90,
            min_auto_score: 0.9,
            max_invoices_per_payment: 3,
            allow_currency_mismatch: true,
            suggestion_days: 14,
        };
        assert_eq!(r, expected);
        assert_eq!(r.check(), Ok(()));
        for (name, _) in RULES {
            r.set(name, None).unwrap();
        }
        assert_eq!(r, Rules::default());
    }

    #[test]
    fn names_types_and_ranges_are_errors_naming_the_rule() {
        let mut r = Rules::default();
        assert_eq!(
            r.set("fee_cap", Some("5")).unwrap_err().to_string(),
            "unknown rule \"fee_cap\""
        );
        let e = r.set("days_after", Some("\"soon\"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rule \"days_after\" has an invalid value: \"soon\""
        );
        assert!(
            e.hint().contains("days_after is a whole number"),
            "{}",
            e.hint()
        );
        r.set("min_auto_score", Some("2")).unwrap();
        let e = r.check().unwrap_err();
        assert_eq!(e.to_string(), "rule min_auto_score is out of range");
        assert!(e.hint().contains("min_auto_score 0..1"), "{}", e.hint());
        let mut r = Rules::default();
        r.set("days_before", Some("99999999999")).unwrap();
        assert_eq!(
            r.check(),
            Err(RuleError::OutOfRange {
                rule: "days_before"
            })
        );
        assert!(ranges().starts_with("Ranges: amount_tolerance >= 0, amount_tolerance_pct 0..100"));
    }
}
