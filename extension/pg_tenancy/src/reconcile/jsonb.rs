//! `reasons` in jsonb's stored form, written byte for byte as `jsonb_in`
//! stores their JSON text (`src/backend/utils/adt/jsonb_util.c`), without
//! a call into Postgres: building them with `pushJsonbValue` took about a
//! sixth of a call at 100,000 invoices, most of it in the guard around each
//! call.
//!
//! The form: a container is a 32-bit header (its number of elements, or of
//! pairs, and whether it is an array or an object), one 32-bit entry per
//! child (an object's keys first, then its values), then the children's
//! bytes. An entry holds the child's type and its length, or, on every
//! 32nd child, the end of its bytes from the first child's start.
//! Containers and numerics start on a 4-byte boundary (from the varlena's
//! start), the padding counted in their length; an object's keys are sorted
//! by length, then bytes.

use super::numeric;
use tenancy_matching::explain::{self, Value};
use tenancy_matching::Reason;

const ARRAY: u32 = 0x4000_0000;
const OBJECT: u32 = 0x2000_0000;
const STRING: u32 = 0x0000_0000;
const NUMERIC: u32 = 0x1000_0000;
const FALSE: u32 = 0x2000_0000;
const TRUE: u32 = 0x3000_0000;
const NULL: u32 = 0x4000_0000;
const CONTAINER: u32 = 0x5000_0000;
const HAS_OFFSET: u32 = 0x8000_0000;
const STRIDE: usize = 32;
/// The longest a container's children may be.
pub const MAX_LENGTH: usize = 0x0FFF_FFFF;

/// The reasons as a jsonb array of objects, `[{"kind": ..., ...}, ...]`,
/// its varlena header included, into `out` (cleared first). None when it
/// would be longer than jsonb allows.
pub fn reasons(reasons: &[Reason], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    let mut pairs = Vec::with_capacity(3);
    container(out, ARRAY, reasons.len(), |out, i| {
        let (kind, fields) = explain::fields(&reasons[i]);
        pairs.clear();
        pairs.push(("kind", Value::Text(kind)));
        pairs.extend(fields.into_iter().flatten());
        pairs.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
        let n = pairs.len();
        container(out, OBJECT, n, |out, j| {
            if j < n {
                scalar(out, Value::Text(pairs[j].0))
            } else {
                scalar(out, pairs[j - n].1)
            }
        })
    })?;
    let size = u32::try_from(out.len())
        .ok()
        .filter(|&s| s as usize <= MAX_LENGTH)?;
    out[..4].copy_from_slice(&super::output::varlena_header(size));
    Some(())
}

/// Pads `out` to a 4-byte boundary; returns the bytes added.
fn align(out: &mut Vec<u8>) -> usize {
    let pad = (4 - out.len() % 4) % 4;
    out.resize(out.len() + pad, 0);
    pad
}

/// Writes a container of `n` children (`OBJECT`: n pairs, 2n children),
/// each written by `child` returning its type and length. Returns the
/// container's own type and length.
fn container(
    out: &mut Vec<u8>,
    kind: u32,
    n: usize,
    mut child: impl FnMut(&mut Vec<u8>, usize) -> Option<(u32, usize)>,
) -> Option<(u32, usize)> {
    let start = out.len();
    align(out);
    out.extend_from_slice(&(u32::try_from(n).ok()? | kind).to_ne_bytes());
    let children = if kind == OBJECT { 2 * n } else { n };
    let entries = out.len();
    out.resize(entries + 4 * children, 0);
    let mut end = 0;
    for i in 0..children {
        let (child_kind, len) = child(out, i)?;
        end += len;
        if end > MAX_LENGTH {
            return None;
        }
        let entry = if i % STRIDE == 0 {
            child_kind | end as u32 | HAS_OFFSET
        } else {
            child_kind | len as u32
        };
        out[entries + 4 * i..entries + 4 * i + 4].copy_from_slice(&entry.to_ne_bytes());
    }
    Some((CONTAINER, out.len() - start))
}

fn scalar(out: &mut Vec<u8>, v: Value) -> Option<(u32, usize)> {
    Some(match v {
        Value::Null => (NULL, 0),
        Value::Bool(b) => (if b { TRUE } else { FALSE }, 0),
        Value::Text(s) => {
            out.extend_from_slice(s.as_bytes());
            (STRING, s.len())
        }
        Value::Int(n) => number(out, n.into()),
        Value::Amount(d) => number(out, d),
    })
}

fn number(out: &mut Vec<u8>, d: rust_decimal::Decimal) -> (u32, usize) {
    let start = out.len();
    align(out);
    numeric::encode(d, out);
    (NUMERIC, out.len() - start)
}
