//! Text evidence: invoice numbers inside free-text descriptions (exact or
//! with one typo in the digits) and counterparty similarity.

use std::ops::Range;

/// The tokens of descriptions (those of `Description::tokens`), each with its
/// digits and its letter part worked out once, so that comparing them with
/// many invoice numbers allocates nothing; all descriptions in one place.
#[derive(Debug, Default)]
pub(crate) struct Descriptions {
    /// The tokens, one after the other.
    text: String,
    /// Their digits, one after the other.
    digits: Vec<u8>,
    spans: Vec<Span>,
    /// Per description: where its spans end, and where its tokens and
    /// digits start.
    ends: Vec<Placed>,
}

#[derive(Clone, Copy, Debug)]
struct Placed {
    spans_end: usize,
    text_start: usize,
    digits_start: usize,
}

/// Where a token and its digits are among its description's, in 20 bytes:
/// offsets from where the description's tokens and digits start.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    end: u32,
    /// Where the letter part ends: the token without its trailing digits.
    stem_end: u32,
    digits_start: u32,
    digits_end: u32,
}

impl Span {
    fn token(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    fn stem(self) -> Range<usize> {
        self.start as usize..self.stem_end as usize
    }

    fn digits(self) -> Range<usize> {
        self.digits_start as usize..self.digits_end as usize
    }
}

/// One description's tokens in `Descriptions`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Description<'a> {
    text: &'a str,
    digits: &'a [u8],
    spans: &'a [Span],
}

/// Bytes of a description taken apart: its tokens are about twice as long
/// (each run, and each pair of neighbouring runs), so their offsets fit in
/// a `u32`. Longer texts are beyond any column (Postgres' text ends at 1 GB).
const DESCRIPTION_MAX: usize = (u32::MAX / 2) as usize;

impl Descriptions {
    /// Adds a description's tokens: its runs of ASCII letters and digits,
    /// upper-cased, and each pair of neighbouring runs joined.
    pub(crate) fn push(&mut self, description: &str) {
        let bytes = &description.as_bytes()[..description.len().min(DESCRIPTION_MAX)];
        let base = (self.text.len(), self.digits.len());
        let mut previous: Option<&str> = None;
        let mut i = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if i == start {
                i += 1; // not a letter or digit (or a byte of a non-ASCII one)
                continue;
            }
            let run = &description[start..i];
            self.push_token(&[run], base);
            if let Some(previous) = previous {
                self.push_token(&[previous, run], base);
            }
            previous = Some(run);
        }
        self.ends.push(Placed {
            spans_end: self.spans.len(),
            text_start: base.0,
            digits_start: base.1,
        });
    }

    /// Adds the token `parts` make, upper-cased, to the description whose
    /// tokens and digits start at `base`.
    fn push_token(&mut self, parts: &[&str], base: (usize, usize)) {
        let start = self.text.len();
        for part in parts {
            self.text.push_str(part);
        }
        self.text[start..].make_ascii_uppercase();
        // Byte by byte: no byte of a non-ASCII character is an ASCII digit.
        let token = &self.text.as_bytes()[start..];
        let digits_start = self.digits.len();
        self.digits
            .extend(token.iter().filter(|b| b.is_ascii_digit()));
        let stem = token
            .iter()
            .rposition(|b| !b.is_ascii_digit())
            .map_or(0, |k| k + 1);
        let text = |at: usize| (at - base.0) as u32;
        let digits = |at: usize| (at - base.1) as u32;
        self.spans.push(Span {
            start: text(start),
            end: text(self.text.len()),
            stem_end: text(start + stem),
            digits_start: digits(digits_start),
            digits_end: digits(self.digits.len()),
        });
    }

    /// The `i`th description pushed.
    pub(crate) fn get(&self, i: usize) -> Description<'_> {
        let start = i.checked_sub(1).map_or(0, |j| self.ends[j].spans_end);
        let placed = self.ends[i];
        Description {
            text: &self.text[placed.text_start..],
            digits: &self.digits[placed.digits_start..],
            spans: &self.spans[start..placed.spans_end],
        }
    }
}

impl<'a> Description<'a> {
    pub(crate) fn tokens(self) -> impl Iterator<Item = &'a str> {
        self.spans.iter().map(move |s| &self.text[s.token()])
    }

    /// Each token with its digits.
    pub(crate) fn tokens_and_digits(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.spans
            .iter()
            .map(move |s| (&self.text.as_bytes()[s.token()], &self.digits[s.digits()]))
    }
}

/// Upper-case ASCII letters and digits only: "inv-1042 " -> "INV1042".
fn normalized(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
}

/// Equal, or one insertion, deletion or substitution apart (an edit
/// distance of at most one), without allocating.
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let same = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    match long.len() - short.len() {
        0 => {
            short[same..]
                .iter()
                .zip(&long[same..])
                .filter(|(x, y)| x != y)
                .count()
                <= 1
        }
        1 => short[same..] == long[same + 1..],
        _ => false,
    }
}

/// `a == b`, compared in place: these are a few bytes, for which a call
/// to `memcmp` costs more than the comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
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

/// An invoice number prepared for `find_in`: normalized, and its
/// digits, in 32 bytes (in place for all but long numbers).
#[derive(Debug)]
pub(crate) struct Reference {
    /// The normalized number, then its digits: ASCII letters and digits.
    text: Bytes,
    full_end: u32,
    /// Where the letter part of the normalized number ends (before its trailing digits).
    stem_end: u32,
}

/// Up to 22 bytes kept in place, more on the heap: an array of these is
/// read without chasing pointers.
#[derive(Debug)]
enum Bytes {
    Inline(u8, [u8; 22]),
    Heap(Box<[u8]>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Bytes::Heap(bytes) => bytes,
        }
    }
}

impl Reference {
    pub(crate) fn new(reference: &str) -> Self {
        // `normalize` and then its digits, in one pass over the bytes (no
        // byte of a non-ASCII character is an ASCII letter or digit).
        let mut inline = [0; 22];
        let (mut full_end, mut stem_end, mut digits) = (0, 0, 0);
        for b in reference.bytes().filter(u8::is_ascii_alphanumeric) {
            if let Some(slot) = inline.get_mut(full_end) {
                *slot = b.to_ascii_uppercase();
            }
            full_end += 1;
            if b.is_ascii_digit() {
                digits += 1;
            } else {
                stem_end = full_end; // the trailing digits start after it
            }
        }
        let text = if full_end + digits <= inline.len() {
            let mut end = full_end;
            for k in 0..full_end {
                if inline[k].is_ascii_digit() {
                    inline[end] = inline[k];
                    end += 1;
                }
            }
            Bytes::Inline(end as u8, inline)
        } else {
            let full = reference.bytes().filter(u8::is_ascii_alphanumeric);
            let full = full.map(|b| b.to_ascii_uppercase());
            Bytes::Heap(
                full.clone()
                    .chain(full.filter(u8::is_ascii_digit))
                    .collect(),
            )
        };
        Reference {
            text,
            full_end: full_end as u32,
            stem_end: stem_end as u32,
        }
    }

    /// The normalized number, empty when it has no letters or digits.
    pub(crate) fn full(&self) -> &[u8] {
        &self.text.get()[..self.full_end as usize]
    }

    pub(crate) fn digits(&self) -> &[u8] {
        &self.text.get()[self.full_end as usize..]
    }

    /// How this number appears among a description's tokens, if it does.
    /// Digit comparisons need at least 3 digits, typos at least 4, so that
    /// short numbers in free text do not pass for invoice numbers.
    pub(crate) fn find_in(&self, description: Description) -> Option<RefEvidence> {
        let (full, ref_digits) = self.text.get().split_at(self.full_end as usize);
        if full.is_empty() {
            return None;
        }
        let stem = &full[..self.stem_end as usize];
        let (text, digits) = (description.text.as_bytes(), description.digits);
        let mut typo = false;
        for s in description.spans {
            let t = &text[s.token()];
            if same(t, full) {
                return Some(RefEvidence::Exact);
            }
            let t_digits = &digits[s.digits()];
            // Digits alone, when the token is only digits or carries the same prefix.
            let letters_ok = t.len() == t_digits.len() || same(&text[s.stem()], stem);
            if ref_digits.len() >= 3 && same(t_digits, ref_digits) && letters_ok {
                return Some(RefEvidence::Exact);
            }
            if ref_digits.len() >= 4
                && t_digits.len() >= 4
                && letters_ok
                && within_one_edit(t_digits, ref_digits)
            {
                typo = true;
            }
        }
        typo.then_some(RefEvidence::Typo)
    }
}

const LEGAL_FORMS: &[&str] = &[
    "GMBH", "AG", "LTD", "LIMITED", "INC", "LLC", "SARL", "SA", "SAS", "BV", "NV", "CO", "CORP",
    "PLC", "KG", "SRL", "SPA",
];

/// The words of a name, normalized, without legal forms, ascending and each
/// once: written one after the other into `text`, their spans into `spans`
/// (both cleared first), so that naming many names allocates nothing.
pub(crate) fn name_words(name: &str, text: &mut String, spans: &mut Vec<Range<usize>>) {
    text.clear();
    spans.clear();
    for word in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let start = text.len();
        text.extend(normalized(word));
        if LEGAL_FORMS.contains(&&text[start..]) {
            text.truncate(start);
        } else {
            spans.push(start..text.len());
        }
    }
    spans.sort_unstable_by(|a, b| text[a.clone()].cmp(&text[b.clone()]));
    spans.dedup_by(|a, b| text[a.clone()] == text[b.clone()]);
}

/// Similarity of two counterparty names, given as their `name_tokens`, in
/// [0, 1]: shared words over all words, so that case, punctuation and legal
/// forms do not count ("Initech GmbH" vs "INITECH" is 1).
pub(crate) fn similarity<T: PartialEq>(ta: &[T], tb: &[T]) -> f64 {
    if ta.is_empty() || tb.is_empty() {
        return 0.0;
    }
    let shared = ta.iter().filter(|t| tb.contains(t)).count();
    let union = ta.len() + tb.len() - shared;
    shared as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Helpers for the tests: the strings the matcher works on, made the slow way.

    fn normalize(s: &str) -> String {
        normalized(s).collect()
    }

    /// The words of a name (`name_words`), as strings.
    fn name_tokens(name: &str) -> Vec<String> {
        let (mut text, mut spans) = (String::new(), Vec::new());
        name_words(name, &mut text, &mut spans);
        spans.into_iter().map(|s| text[s].to_string()).collect()
    }

    fn digits(s: &str) -> String {
        s.chars().filter(char::is_ascii_digit).collect()
    }

    /// Every run of letters and digits of a description, plus every pair
    /// of adjacent runs joined ("INV 1042" -> "INV1042"), normalized.
    fn tokens(description: &str) -> Vec<String> {
        let mut d = Descriptions::default();
        d.push(description);
        let mut out: Vec<String> = d.get(0).tokens().map(str::to_string).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether `reference` appears in a description made of these tokens.
    fn find_reference(reference: &str, tokens: &[String]) -> Option<RefEvidence> {
        let mut d = Descriptions::default();
        d.push(&tokens.join(" "));
        Reference::new(reference).find_in(d.get(0))
    }

    fn counterparty_similarity(a: &str, b: &str) -> f64 {
        similarity(&name_tokens(a), &name_tokens(b))
    }

    fn mentions(description: &str, name: &str) -> bool {
        let (words, tokens) = (name_tokens(name), tokens(description));
        !words.is_empty() && words.iter().all(|n| tokens.contains(n))
    }

    /// Levenshtein distance, stopping early once it exceeds `max`: the
    /// oracle for `within_one_edit`.
    fn within_edits(a: &str, b: &str, max: usize) -> Option<usize> {
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
    fn references_are_normalized_then_their_digits() {
        let long = "Rechnung Nr. 2024-000123 vom 01.02.2024";
        for r in [
            "INV-1042",
            "inv 10/42 é",
            "",
            "---",
            "AB",
            "ÄÖ-12",
            "12AB",
            long,
        ] {
            let reference = Reference::new(r);
            let full = normalize(r);
            let stem = full.trim_end_matches(|c: char| c.is_ascii_digit());
            assert_eq!(reference.full(), full.as_bytes(), "{r}");
            assert_eq!(reference.digits(), digits(r).as_bytes(), "{r}");
            assert_eq!(reference.stem_end as usize, stem.len(), "{r}");
        }
    }

    #[test]
    fn counterparties_compare_by_words() {
        assert_eq!(counterparty_similarity("Initech GmbH", "INITECH"), 1.0);
        assert_eq!(counterparty_similarity("Umbrella Ltd", "Hooli SARL"), 0.0);
        assert!(counterparty_similarity("Wonka Industries", "WONKA IND") > 0.3);
        assert_eq!(counterparty_similarity("", "x"), 0.0);
        assert!(mentions("WIRE GX-2001 WONKA", "Wonka"));
    }

    #[test]
    fn edit_distance_stops_early() {
        assert_eq!(within_edits("1042", "1043", 1), Some(1));
        assert_eq!(within_edits("1042", "1024", 1), None);
        assert_eq!(within_edits("10420", "1042", 1), Some(1));
        assert_eq!(within_edits("1", "12345", 1), None);
    }

    #[test]
    fn one_edit_is_an_edit_distance_of_at_most_one() {
        let words = [
            "", "1", "12", "1042", "1043", "1024", "10420", "10942", "0142", "1002", "1020",
            "10042", "100042", "2042", "104", "042",
        ];
        for a in words {
            for b in words {
                let expected = within_edits(a, b, 1).is_some();
                assert_eq!(
                    within_one_edit(a.as_bytes(), b.as_bytes()),
                    expected,
                    "{a} {b}"
                );
            }
        }
    }
}
