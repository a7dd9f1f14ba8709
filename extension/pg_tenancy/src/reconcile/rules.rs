//! The rules of one call, handed over as the text of one JSON object (the tenant's
//! stored rules with the call's overrides on top) and read into the
//! matcher's `Rules`, which defines their names, defaults and ranges.

use crate::error::raise;
use pgrx::prelude::*;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tenancy_matching::rules::{self, RuleError};
use tenancy_matching::Rules;

/// Raises a rule error: SQLSTATE 22023, INVALID_ARGUMENT's (the SQL
/// wrapper `tenancy._call_rules` raises it as that code over HTTP).
fn refuse(e: &RuleError) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        e.to_string(),
        &e.hint(),
    )
}

/// The rules a JSON object gives, checked: names, types and ranges. JSON
/// null means the default.
pub fn parse(rules: Option<&str>) -> Rules {
    let text = rules.unwrap_or("{}");
    let Ok(pairs) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(text) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "rules must be a JSON object",
            &format!("Rules: {}.", rules::names()),
        );
    };
    let mut out = Rules::default();
    for (name, raw) in &pairs {
        let raw = raw.get();
        // Scalars are read from their text; a JSON string from its contents,
        // so that {"days_after": "30"} works as it always has.
        let value = match raw.as_bytes().first() {
            Some(b'"') => Some(serde_json::from_str::<String>(raw).unwrap_or_default()),
            Some(b'n') => None,
            Some(b'[' | b'{') => refuse(&invalid(name, raw)),
            _ => Some(raw.to_string()),
        };
        if let Err(e) = out.set(name, value.as_deref()) {
            // The message quotes the value as JSON, as it was given.
            refuse(&match e {
                RuleError::Invalid { rule, .. } => RuleError::Invalid {
                    rule,
                    value: raw.to_string(),
                },
                other => other,
            });
        }
    }
    if let Err(e) = out.check() {
        refuse(&e);
    }
    out
}

fn invalid(name: &str, raw: &str) -> RuleError {
    match rules::RULES.iter().find(|(n, _)| *n == name) {
        Some(&(rule, _)) => RuleError::Invalid {
            rule,
            value: raw.to_string(),
        },
        None => RuleError::Unknown(name.to_string()),
    }
}

/// Checks a rules object (names, types, ranges) and returns the rules it
/// sets, each value in its canonical form and JSON nulls left out: what `tenancy.effective_reconcile_rules` shows and
/// `tenancy.set_reconcile_rules` stores.
#[pg_extern(stable, parallel_safe, name = "_reconcile_rules")]
fn checked_rules(rules: Option<String>) -> String {
    let text = rules;
    let parsed = parse(text.as_deref());
    // `parse` accepted it, so it is an object.
    let given: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text.as_deref().unwrap_or("{}")).unwrap_or_default();
    let set = rules::RULES
        .iter()
        .filter(|(name, _)| given.get(*name).is_some_and(|v| v.get() != "null"))
        // Every canonical value is a JSON number or boolean as it is.
        .map(|(name, _)| format!("\"{name}\": {}", parsed.get(name)))
        .collect::<Vec<_>>();
    format!("{{{}}}", set.join(", "))
}
