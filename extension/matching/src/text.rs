//! Text evidence: invoice numbers inside free-text descriptions (exact or
//! with one typo in the digits) and counterparty similarity.

/// Upper-case ASCII letters and digits only: "inv-1042 " -> "INV1042".
pub fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The digits of a string, in order: "INV-10/42" -> "1042".
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Candidate invoice numbers found in a description: every run of letters
/// and digits, plus every pair of adjacent runs joined ("INV 1042" -> "INV1042").
pub fn tokens(description: &str) -> Vec<String> {
    let runs: Vec<String> = description
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(normalize)
        .collect();
    let mut out = runs.clone();
    for pair in runs.windows(2) {
        out.push(format!("{}{}", pair[0], pair[1]));
    }
    out.sort();
    out.dedup();
    out
}

/// Levenshtein distance, stopping early once it exceeds `max`.
pub fn within_edits(a: &str, b: &str, max: usize) -> Option<usize> {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        let mut row_min = cur[0];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        if row_min > max {
            return None;
        }
        prev = cur;
    }
    let d = prev[b.len()];
    (d <= max).then_some(d)
}

/// How an invoice's number appears in a description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefEvidence {
    /// The number itself, e.g. "INV-1042" or "1042".
    Exact,
    /// The digits with one typo, e.g. "INV1024" for INV-1042 is not one (two
    /// edits), "INV1043" is.
    Typo,
}

/// Whether `reference` (an invoice number) appears in the description tokens.
/// Digit comparisons need at least 3 digits, typos at least 4, so that short
/// numbers in free text do not pass for invoice numbers.
pub fn find_reference(reference: &str, tokens: &[String]) -> Option<RefEvidence> {
    let full = normalize(reference);
    let ref_digits = digits(reference);
    if full.is_empty() {
        return None;
    }
    let mut typo = false;
    for t in tokens {
        if *t == full {
            return Some(RefEvidence::Exact);
        }
        let t_digits = digits(t);
        // Digits alone, when the token is only digits or carries the same prefix.
        let letters_ok = t.len() == t_digits.len()
            || t.trim_end_matches(|c: char| c.is_ascii_digit())
                == full.trim_end_matches(|c: char| c.is_ascii_digit());
        if ref_digits.len() >= 3 && t_digits == ref_digits && letters_ok {
            return Some(RefEvidence::Exact);
        }
        if ref_digits.len() >= 4
            && t_digits.len() >= 4
            && letters_ok
            && within_edits(&t_digits, &ref_digits, 1).is_some()
        {
            typo = true;
        }
    }
    typo.then_some(RefEvidence::Typo)
}

const LEGAL_FORMS: &[&str] = &[
    "GMBH", "AG", "LTD", "LIMITED", "INC", "LLC", "SARL", "SA", "SAS", "BV", "NV", "CO", "CORP",
    "PLC", "KG", "SRL", "SPA",
];

/// The words of a name, normalized, without legal forms.
pub fn name_tokens(name: &str) -> Vec<String> {
    let mut t: Vec<String> = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(normalize)
        .filter(|t| !LEGAL_FORMS.contains(&t.as_str()))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// Similarity of two counterparty names in [0, 1]: shared words over all
/// words, ignoring case, punctuation and legal forms ("Initech GmbH" vs
/// "INITECH" is 1).
pub fn counterparty_similarity(a: &str, b: &str) -> f64 {
    let (ta, tb) = (name_tokens(a), name_tokens(b));
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let shared = ta.iter().filter(|t| tb.contains(t)).count();
    let union = ta.len() + tb.len() - shared;
    shared as f64 / union as f64
}

/// Whether a description mentions the counterparty's name (payments often
/// carry it there when the counterparty field is empty).
pub fn mentions(description_tokens: &[String], name: &str) -> bool {
    let names = name_tokens(name);
    !names.is_empty() && names.iter().all(|n| description_tokens.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_exactly_or_with_one_typo() {
        let t = tokens("SEPA credit INV-1042 Initech");
        assert_eq!(find_reference("INV-1042", &t), Some(RefEvidence::Exact));
        assert_eq!(find_reference("INV-1043", &t), Some(RefEvidence::Typo));
        assert_eq!(find_reference("INV-2042", &t), Some(RefEvidence::Typo));
        assert_eq!(find_reference("INV-1024", &t), None);
        assert_eq!(
            find_reference("INV-1042", &tokens("Payment INV1042")),
            Some(RefEvidence::Exact)
        );
        assert_eq!(
            find_reference("INV-1042", &tokens("Payment inv 1042")),
            Some(RefEvidence::Exact)
        );
        assert_eq!(
            find_reference("INV-1042", &tokens("Payment 1042")),
            Some(RefEvidence::Exact)
        );
        assert_eq!(find_reference("INV-1042", &tokens("order 42 paid")), None);
        assert_eq!(
            find_reference("GX-2001", &tokens("INV2001")),
            None,
            "another prefix is another number"
        );
    }

    #[test]
    fn counterparties_compare_by_words() {
        assert_eq!(counterparty_similarity("Initech GmbH", "INITECH"), 1.0);
        assert_eq!(counterparty_similarity("Umbrella Ltd", "Hooli SARL"), 0.0);
        assert!(counterparty_similarity("Wonka Industries", "WONKA IND") > 0.3);
        assert_eq!(counterparty_similarity("", "x"), 0.0);
        assert!(mentions(&tokens("WIRE GX-2001 WONKA"), "Wonka"));
    }

    #[test]
    fn edit_distance_stops_early() {
        assert_eq!(within_edits("1042", "1043", 1), Some(1));
        assert_eq!(within_edits("1042", "1024", 1), None);
        assert_eq!(within_edits("10420", "1042", 1), Some(1));
        assert_eq!(within_edits("1", "12345", 1), None);
    }
}
