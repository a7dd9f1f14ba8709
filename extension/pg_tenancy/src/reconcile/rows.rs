//! The rows `_reconcile` returns, made in two steps. First each match's
//! values are written in their stored forms (text, numeric, jsonb) by plain
//! Rust, into blocks of rows; then the backend's thread copies a finished
//! row into datums and hands it to Postgres. For a window of many matches
//! a helper thread writes the blocks while the backend returns the rows
//! before them: both cores work, where the first step alone took about
//! half of the returning. The helper never calls into Postgres, and at most
//! `WAITING` blocks wait for the backend, so memory stays bounded.

use super::id::Id;
use super::output::{Jsonb, Numeric, Text};
use super::{jsonb, numeric};
use pgrx::prelude::*;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use tenancy_matching::{Grade, Keyed, Watch};

/// Rows written, and handed over, together.
const BLOCK: usize = 4_096;
/// Blocks that may wait for the backend's thread.
const WAITING: usize = 2;

/// One row of `_reconcile`.
pub type Output = (Text, Text, Numeric, Numeric, Text, i64, Jsonb);

/// Rows in stored form: each row's six varlenas (invoice id, transaction
/// id, allocated amount, score, grade, reasons), back to back in `bytes`.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    rows: Vec<Row>,
}

struct Row {
    /// Where each value starts in `bytes`, and where the last one ends.
    bounds: [usize; 7],
    group: i64,
    /// The reasons are longer than jsonb allows.
    too_long: bool,
}

/// Writes rows; it keeps each distinct score's decimal (scores are rounded
/// to four places, so few distinct ones repeat over many rows).
#[derive(Default)]
struct Writer {
    scores: HashMap<u64, Decimal>,
    reasons: Vec<u8>,
}

impl Writer {
    fn block(&mut self, matches: impl Iterator<Item = Keyed<Id>>) -> Block {
        let mut b = Block::default();
        for k in matches {
            self.row(k, &mut b);
        }
        b
    }

    fn row(&mut self, k: Keyed<Id>, b: &mut Block) {
        let m = k.matched;
        let score = *self
            .scores
            .entry(m.score.to_bits())
            .or_insert_with(|| Decimal::from_str(&format!("{:.4}", m.score)).unwrap_or_default());
        let out = &mut b.bytes;
        let mut bounds = [out.len(); 7];
        k.invoice.with_text(|s| text(s, out));
        bounds[1] = out.len();
        k.transaction.with_text(|s| text(s, out));
        bounds[2] = out.len();
        numeric::encode(m.allocated, out);
        bounds[3] = out.len();
        numeric::encode(score, out);
        bounds[4] = out.len();
        text(
            match m.grade {
                Grade::Auto => "auto",
                Grade::Suggested => "suggested",
            },
            out,
        );
        bounds[5] = out.len();
        // Written apart and copied: jsonb aligns its values from the
        // varlena's start, which is not aligned in `out`.
        let too_long = jsonb::reasons(&m.reasons, &mut self.reasons).is_none();
        if !too_long {
            out.extend_from_slice(&self.reasons);
        }
        bounds[6] = out.len();
        b.rows.push(Row {
            bounds,
            group: i64::try_from(m.group).unwrap_or(i64::MAX),
            too_long,
        });
    }
}

/// Appends `s` as a `text` varlena (4-byte header), as `cstring_to_text`
/// makes it. Ids come from Postgres values, so they fit.
pub(super) fn text(s: &str, out: &mut Vec<u8>) {
    let size = u32::try_from(s.len() + 4).unwrap_or(u32::MAX);
    out.extend_from_slice(&super::output::varlena_header(size));
    out.extend_from_slice(s.as_bytes());
}

/// The rows of one window, as the backend returns them.
#[derive(Default)]
pub struct Rows {
    block: Block,
    next: usize,
    /// The helper writing the blocks still to come.
    helper: Option<Helper>,
}

impl Rows {
    /// The rows of `matches`, in their order. With more than a block of
    /// them, a helper thread started through `watch` writes them.
    pub fn new(matches: Vec<Keyed<Id>>, watch: &mut dyn Watch) -> Rows {
        let mut job = Some(matches);
        let helper = match job.as_ref().map(Vec::len) {
            Some(n) if n > BLOCK => Helper::start(&mut job, watch),
            _ => None,
        };
        Rows {
            // Without a helper, all of them here.
            block: Writer::default().block(job.into_iter().flatten()),
            next: 0,
            helper,
        }
    }

    /// The next row as datums in the current memory context, or None after
    /// the last one.
    pub fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(row) = self.block.rows.get(self.next) {
                self.next += 1;
                return Some(output(row, &self.block.bytes));
            }
            match self.helper.as_mut()?.next() {
                Some(block) => {
                    self.block = block;
                    self.next = 0;
                }
                None => {
                    self.helper = None;
                    return None;
                }
            }
        }
    }
}

/// A thread writing blocks of rows, and the blocks it has sent.
struct Helper {
    coming: Option<Receiver<Block>>,
    thread: Option<JoinHandle<()>>,
}

impl Helper {
    /// Takes the matches out of `job` into a helper thread, if `watch`
    /// starts one.
    fn start(job: &mut Option<Vec<Keyed<Id>>>, watch: &mut dyn Watch) -> Option<Helper> {
        let (send, coming) = sync_channel(WAITING);
        let mut thread = None;
        watch.spawning(&mut || {
            let Some(matches) = job.take() else { return };
            let send = send.clone();
            thread = Some(std::thread::spawn(move || {
                let mut writer = Writer::default();
                let mut matches = matches.into_iter();
                while matches.len() > 0 {
                    let block = writer.block(matches.by_ref().take(BLOCK));
                    if send.send(block).is_err() {
                        return; // the call ended early (an error, a cancel)
                    }
                }
            }));
        });
        thread.map(|thread| Helper {
            coming: Some(coming),
            thread: Some(thread),
        })
    }

    /// The next block, or None when the helper has sent them all. Raises
    /// an error if it failed before that: no row is silently lost.
    fn next(&mut self) -> Option<Block> {
        if let Ok(block) = self.coming.as_ref()?.recv() {
            return Some(block);
        }
        self.coming = None;
        if let Some(Err(panic)) = self.thread.take().map(JoinHandle::join) {
            // On this thread, where pgrx turns it into an ERROR (XX000).
            std::panic::resume_unwind(panic);
        }
        None
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the channel first stops a helper still writing.
        self.coming = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn output(row: &Row, bytes: &[u8]) -> Output {
    let value = |k: usize| &bytes[row.bounds[k]..row.bounds[k + 1]];
    if row.too_long {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "the reasons of a match are longer than jsonb allows ({} bytes)",
                jsonb::MAX_LENGTH
            ),
            "An invoice reference of that length is no reference: shorten it.",
        );
    }
    (
        Text::copied(value(0)),
        Text::copied(value(1)),
        Numeric::copied(value(2)),
        Numeric::copied(value(3)),
        Text::copied(value(4)),
        row.group,
        Jsonb::copied(value(5)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_its_bytes_after_a_header_of_its_size() {
        let mut out = vec![9];
        text("ab✓", &mut out);
        assert_eq!(out[0], 9);
        assert_eq!(
            u32::from_ne_bytes(out[1..5].try_into().unwrap()) >> 2,
            4 + 5
        );
        assert_eq!(&out[5..], "ab✓".as_bytes());
    }
}
