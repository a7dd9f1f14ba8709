use super::*;

const KEY: &[u8] = b"a key every node of the cluster shares";
/// The global process id of the backend that signs the samples.
const ORIGIN: &str = "10000012345";

fn sample() -> Context {
    Context {
        tenant: "15d5cdf2-a422-442c-858c-7107778da2b1".into(),
        user: "0000000a-0000-4000-8000-000000000001".into(),
        acting_as: String::new(),
        login: "authenticator".into(),
        issued: 1_800_000_000,
        origin: ORIGIN.into(),
        path: "/rpc/apply_reconciliation".into(),
        request_id: String::new(),
        grants: vec![("invoices".into(), "read".into()), ("matches".into(), "*".into())],
    }
}

#[test]
fn a_signed_line_reads_back_as_it_was() {
    let line = sample().sign(KEY).unwrap();
    assert_eq!(Context::verify(&line, KEY, ORIGIN, 1_800_000_010, 1_800_000_010, 3600), Ok(sample()));
}

#[test]
fn no_grants_and_no_user_read_back_empty() {
    let c = Context { user: String::new(), grants: vec![], acting_as: "member".into(), ..sample() };
    let line = c.sign(KEY).unwrap();
    assert_eq!(Context::verify(&line, KEY, ORIGIN, c.issued, c.issued, 60), Ok(c));
}

#[test]
fn another_key_is_refused() {
    let line = sample().sign(b"another key").unwrap();
    assert_eq!(Context::verify(&line, KEY, ORIGIN, 1_800_000_000, 1_800_000_000, 3600), Err(Refusal::BadSignature));
}

#[test]
fn changing_any_field_breaks_the_signature() {
    let line = sample().sign(KEY).unwrap();
    let forged = [
        line.replace("15d5cdf2", "25d5cdf2"),
        line.replace("0000000a", "0000000b"),
        line.replace("invoices:read", "invoices:delete"),
        line.replace(";1800000000;", ";1800003000;"),
        line.replace(";;", ";admin;"),
        line.replace(";10000012345;", ";10000054321;"),
        line.replace(";authenticator;", ";postgres;"),
        line.replace("/rpc/apply_reconciliation", "/rpc/undo_match"),
    ];
    for f in forged {
        assert_ne!(f, line);
        assert_eq!(Context::verify(&f, KEY, ORIGIN, 1_800_000_000, 1_800_000_000, 3600), Err(Refusal::BadSignature), "{f}");
    }
}

#[test]
fn age_is_checked_both_ways() {
    let line = sample().sign(KEY).unwrap();
    // A transaction that started more than the lifetime after the signing.
    assert_eq!(
        Context::verify(&line, KEY, ORIGIN, 1_800_003_601, 1_800_003_601, 3600),
        Err(Refusal::Expired { age_secs: 3601 })
    );
    // A transaction that started in time may go on using it.
    assert!(Context::verify(&line, KEY, ORIGIN, 1_800_090_000, 1_800_000_100, 3600).is_ok());
    // A line signed after the worker's transaction began (set_tenant again
    // later in a long transaction) is fine; one from the future is not.
    assert!(Context::verify(&line, KEY, ORIGIN, 1_800_000_000, 1_799_000_000, 3600).is_ok());
    assert!(Context::verify(&line, KEY, ORIGIN, 1_800_000_000 - CLOCK_SKEW_SECS, 0, 3600).is_ok());
    assert_eq!(
        Context::verify(&line, KEY, ORIGIN, 1_800_000_000 - CLOCK_SKEW_SECS - 1, 0, 3600),
        Err(Refusal::FromTheFuture { ahead_secs: CLOCK_SKEW_SECS + 1 })
    );
}

#[test]
fn a_line_is_believed_only_where_its_backend_sent_it() {
    let line = sample().sign(KEY).unwrap();
    for other in ["10000054321", "", "20000012345"] {
        assert_eq!(
            Context::verify(&line, KEY, other, 1_800_000_000, 1_800_000_000, 60),
            Err(Refusal::OtherOrigin),
            "{other:?}"
        );
    }
}

#[test]
fn garbage_and_missing_keys_are_refused() {
    for line in ["", "v1", "x;y", "v1;a;b;c;1;;zz", "v1;a;b;c;1;;", "v3;a;b;c;d;1;;p;r;;zz"] {
        assert_eq!(Context::verify(line, KEY, ORIGIN, 0, 0, 60), Err(Refusal::Malformed), "{line:?}");
    }
    let line = sample().sign(KEY).unwrap();
    assert_eq!(Context::verify(&line, b"", ORIGIN, 1_800_000_000, 1_800_000_000, 60), Err(Refusal::NoKey));
    // The tag is lowercase hex only (from_str_radix would take "+f").
    let plus = format!("{};+f{}", line.rsplit_once(';').unwrap().0, &line[line.len() - 62..]);
    assert_eq!(Context::verify(&plus, KEY, ORIGIN, 1_800_000_000, 1_800_000_000, 60), Err(Refusal::Malformed));
}

#[test]
fn a_wrong_version_or_field_count_is_malformed_even_when_signed() {
    let body = "v3;t;u;;1;";
    let tag = mac(KEY, body).finalize().into_bytes();
    assert_eq!(Context::verify(&format!("{body};{}", hex(&tag)), KEY, ORIGIN, 1, 1, 60), Err(Refusal::Malformed));
    // The format before logins and requests (v2), signed with the right key.
    let body = format!("v2;t;u;;1;{ORIGIN};");
    let tag = mac(KEY, &body).finalize().into_bytes();
    assert_eq!(Context::verify(&format!("{body};{}", hex(&tag)), KEY, ORIGIN, 1, 1, 60), Err(Refusal::Malformed));
    // A signed v3 line whose free text is not valid percent-encoding.
    for bad in ["%zz", "%4", "%C3"] {
        let body = format!("v3;t;u;;{bad};1;{ORIGIN};;;");
        let tag = mac(KEY, &body).finalize().into_bytes();
        assert_eq!(Context::verify(&format!("{body};{}", hex(&tag)), KEY, ORIGIN, 1, 1, 60), Err(Refusal::Malformed), "{bad}");
    }
    // The format before origins (v1), signed with the right key.
    let body = "v1;t;u;;1;";
    let tag = mac(KEY, body).finalize().into_bytes();
    assert_eq!(Context::verify(&format!("{body};{}", hex(&tag)), KEY, ORIGIN, 1, 1, 60), Err(Refusal::Malformed));
    let body = "v1;t;u;1;";
    let tag = mac(KEY, body).finalize().into_bytes();
    assert_eq!(Context::verify(&format!("{body};{}", hex(&tag)), KEY, ORIGIN, 1, 1, 60), Err(Refusal::Malformed));
}

#[test]
fn reserved_characters_cannot_be_signed() {
    for bad in ["a;b", "a,b", "a:b", "it's", "a\\b", "ä"] {
        let c = Context { acting_as: bad.into(), ..sample() };
        assert_eq!(c.sign(KEY), None, "{bad}");
    }
}

#[test]
fn free_text_travels_escaped_and_reads_back_exactly() {
    let c = Context {
        login: "Ünïcode; login, 'quoted'".into(),
        path: "/rpc/x;y,z:'\\%41 ünï".into(),
        request_id: "req-1; DROP TABLE x; --\n".into(),
        ..sample()
    };
    let line = c.sign(KEY).unwrap();
    assert!(!line.contains(['\'', '\\', ' ', '\n']), "{line}");
    assert_eq!(line.matches(';').count(), 10, "{line}");
    assert_eq!(Context::verify(&line, KEY, ORIGIN, c.issued, c.issued, 60), Ok(c));
}

#[test]
fn holds_follows_wildcards() {
    let c = sample();
    assert!(c.holds("invoices", "read"));
    assert!(!c.holds("invoices", "delete"));
    assert!(c.holds("matches", "delete"));
    assert!(!c.holds("bank_transactions", "read"));
    let all = Context { grants: vec![("*".into(), "*".into())], ..sample() };
    assert!(all.holds("anything", "at_all"));
}
