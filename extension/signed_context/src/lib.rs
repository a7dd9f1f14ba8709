//! The tenant context as one signed line of text.
//!
//! On Citus the coordinator runs a statement's shards on other nodes, in
//! connections of their own. The only state that travels with them is a
//! `SET LOCAL` (Citus forwards those, as the current role), so the context
//! cannot be a superuser-only setting there, and an ordinary setting could
//! be set by anyone. The coordinator therefore signs what a worker needs to
//! decide — tenant, user, the RBAC role a SQL login acts as, and the grants —
//! with a key every node holds and no API role can read, and the worker
//! believes the line only if the signature and its age check out.
//!
//! It also carries who is behind the statement, for the audit log a worker
//! writes: the database login (`session_user` on the coordinator; a worker's
//! connection runs as the current role instead) and the HTTP request's path
//! and `X-Request-Id`.
//!
//! A line also names the coordinator backend that signed it (`origin`,
//! Citus' global process id): a worker believes it only in a connection
//! that backend opened, so a line seen in a worker's logs or
//! `pg_stat_activity` cannot be used again from another session.
//!
//! Format (every field is plain ASCII; `;` and `,` never occur inside one):
//! `v3;<tenant>;<user>;<acting_as>;<login>;<issued>;<origin>;<path>;<request_id>;<grants>;<mac>`
//! where `grants` is `resource:action` pairs joined by `,`, `mac` is the hex
//! HMAC-SHA256 of everything before its `;`, and login, path and request id
//! (free text) are percent-encoded.

#![deny(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const VERSION: &str = "v3";
/// How far a worker's clock may be behind the coordinator's.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// What a worker may believe about the transaction it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub tenant: String,
    /// Empty for SQL sessions (no JWT user).
    pub user: String,
    /// The RBAC role a database login bound to the tenant acts as; empty otherwise.
    pub acting_as: String,
    /// The database login of the coordinator's session.
    pub login: String,
    /// Unix seconds at which the coordinator signed it.
    pub issued: i64,
    /// The backend that signed it (Citus' global process id); the worker
    /// compares it with the one its connection was opened for.
    pub origin: String,
    /// The HTTP request's path and X-Request-Id; empty outside a request.
    pub path: String,
    pub request_id: String,
    /// (resource, action) pairs; `*` matches any.
    pub grants: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not the shape above (or a field holds a separator).
    Malformed,
    /// The key that signed it is not this node's, or a field was changed.
    BadSignature,
    /// Signed longer ago than the lifetime allows.
    Expired { age_secs: i64 },
    /// Signed in the future, beyond the clock skew allowed.
    FromTheFuture { ahead_secs: i64 },
    /// No key is configured on this node.
    NoKey,
    /// Signed by another backend than the one this connection serves.
    OtherOrigin,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => write!(f, "it is malformed"),
            Refusal::BadSignature => write!(f, "its signature does not match this node's key"),
            Refusal::Expired { age_secs } => write!(f, "it was signed {age_secs} s ago, longer than its lifetime"),
            Refusal::FromTheFuture { ahead_secs } => {
                write!(f, "it was signed {ahead_secs} s in this node's future")
            }
            Refusal::NoKey => write!(f, "this node has no key to check it with"),
            Refusal::OtherOrigin => {
                write!(f, "it was signed for another session than the one this connection serves")
            }
        }
    }
}

fn field_ok(s: &str) -> bool {
    !s.contains([';', ',', ':', '\'', '\\']) && s.is_ascii() && !s.chars().any(|c| c.is_ascii_control())
}

/// Free text as a field: every byte but letters, digits and `-._~/` as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push_str(&hex(&[b]).to_uppercase());
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digits = s.get(i + 1..i + 3).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn mac(key: &[u8], body: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(body.as_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Context {
    /// The signed line, or None when a field holds a character the format
    /// reserves (names and uuids never do).
    pub fn sign(&self, key: &[u8]) -> Option<String> {
        let plain = [&self.tenant, &self.user, &self.acting_as, &self.origin];
        if !plain.iter().all(|f| field_ok(f))
            || !self.grants.iter().all(|(r, a)| field_ok(r) && field_ok(a))
        {
            return None;
        }
        let grants: Vec<String> = self.grants.iter().map(|(r, a)| format!("{r}:{a}")).collect();
        let body = format!(
            "{VERSION};{};{};{};{};{};{};{};{};{}",
            self.tenant,
            self.user,
            self.acting_as,
            escape(&self.login),
            self.issued,
            self.origin,
            escape(&self.path),
            escape(&self.request_id),
            grants.join(",")
        );
        let tag = mac(key, &body).finalize().into_bytes();
        Some(format!("{body};{}", hex(&tag)))
    }

    /// Reads and checks a signed line: signature first (nothing of an
    /// unsigned line is believed), then its origin (the backend the
    /// connection serves, `origin`), then its time (unix seconds): not after
    /// `now` (beyond the clock skew), and signed no longer than the lifetime
    /// before `started`, the start of the transaction that uses it (a later
    /// transaction cannot use an old line; a long one keeps the line it got).
    pub fn verify(
        line: &str,
        key: &[u8],
        origin: &str,
        now: i64,
        started: i64,
        lifetime_secs: i64,
    ) -> Result<Context, Refusal> {
        if key.is_empty() {
            return Err(Refusal::NoKey);
        }
        let (body, tag) = line.rsplit_once(';').ok_or(Refusal::Malformed)?;
        let tag = unhex(tag).filter(|t| t.len() == 32).ok_or(Refusal::Malformed)?;
        mac(key, body).verify_slice(&tag).map_err(|_| Refusal::BadSignature)?;
        let fields: Vec<&str> = body.split(';').collect();
        let [version, tenant, user, acting_as, login, issued, signer, path, request_id, grants] = fields[..] else {
            return Err(Refusal::Malformed);
        };
        if version != VERSION {
            return Err(Refusal::Malformed);
        }
        if signer != origin {
            return Err(Refusal::OtherOrigin);
        }
        let issued: i64 = issued.parse().map_err(|_| Refusal::Malformed)?;
        let [login, path, request_id] =
            [login, path, request_id].map(|f| unescape(f).ok_or(Refusal::Malformed));
        let grants = if grants.is_empty() {
            Vec::new()
        } else {
            grants
                .split(',')
                .map(|g| g.split_once(':').map(|(r, a)| (r.to_string(), a.to_string())))
                .collect::<Option<Vec<_>>>()
                .ok_or(Refusal::Malformed)?
        };
        if issued > now + CLOCK_SKEW_SECS {
            return Err(Refusal::FromTheFuture { ahead_secs: issued - now });
        }
        if started - issued > lifetime_secs {
            return Err(Refusal::Expired { age_secs: started - issued });
        }
        Ok(Context {
            tenant: tenant.to_string(),
            user: user.to_string(),
            acting_as: acting_as.to_string(),
            login: login?,
            issued,
            origin: signer.to_string(),
            path: path?,
            request_id: request_id?,
            grants,
        })
    }

    /// Whether the grants allow `action` on `resource`.
    pub fn holds(&self, resource: &str, action: &str) -> bool {
        self.grants
            .iter()
            .any(|(r, a)| (r == "*" || r == resource) && (a == "*" || a == action))
    }
}

#[cfg(test)]
mod tests;
