//! The subset sum of the split search: which few of a payer's open
//! invoices add up to a payment.

use rust_decimal::Decimal;

/// Most subsets that fit one payment looked at before the search stops (it
/// is ambiguous by then anyway).
pub(crate) const SPLIT_FITS: usize = 64;
/// Most partial subsets tried for one payment, so that many invoices of
/// similar amounts and a high `max_invoices_per_payment` cannot make the
/// search explode; it reports what it found by then.
const SPLIT_STEPS: usize = 50_000;

/// Subsets of 2..=max_k positive amounts that sum to `target` within `tol`:
/// a depth-first search over the amounts in ascending order, so a branch
/// ends at the first amount that overshoots, the last amount of a subset is
/// found by binary search, and a branch is cut when even the largest amounts
/// cannot make up what is missing. Which subsets it finds when a limit
/// stops it depends on the order it tries them in and on how it counts
/// steps: both are part of the result.
pub(crate) struct SubsetSum<T> {
    /// The amounts, ascending (then by position), and their positions.
    amounts: Vec<T>,
    positions: Vec<usize>,
    /// `largest[r]`: the sum of the `r` largest amounts.
    largest: Vec<T>,
    /// `target - tol` and `target + tol`, where a subset's sum must fall.
    low: T,
    high: T,
    max_k: usize,
    /// Calls of `visit`.
    steps: usize,
    /// The amounts chosen so far, by index: `chosen[..depth]`.
    chosen: Vec<usize>,
    found: Vec<Vec<usize>>,
}

impl SubsetSum<Decimal> {
    /// Up to SPLIT_FITS subsets that fit, each as ascending positions in
    /// `amounts`. On integers when that gives the same answers.
    pub fn run(
        amounts: &[Decimal],
        target: Decimal,
        tol: Decimal,
        max_k: usize,
    ) -> Vec<Vec<usize>> {
        let mut values = amounts.to_vec();
        values.extend([target, tol]);
        let n = amounts.len();
        match as_integers(&values) {
            Some((ints, total)) if total < 1 << 62 => {
                // Each fits in 64 bits, as its magnitude is at most `total`.
                let ints: Vec<i64> = ints.into_iter().map(|v| v as i64).collect();
                SubsetSum::search(&ints[..n], ints[n], ints[n + 1], max_k)
            }
            Some((ints, _)) => SubsetSum::search(&ints[..n], ints[n], ints[n + 1], max_k),
            None => SubsetSum::search(amounts, target, tol, max_k),
        }
    }
}

/// The values as integers at their largest scale, and the sum of their
/// magnitudes, if that stays within Decimal's 96-bit mantissa. Then no sum
/// or difference the search forms is rounded, so Decimal arithmetic on them
/// is exact, and integer arithmetic (several times faster) gives the very
/// same answers; in 64 bits when the magnitudes add up to less than 2^62.
fn as_integers(values: &[Decimal]) -> Option<(Vec<i128>, i128)> {
    let scale = values.iter().map(Decimal::scale).max()?;
    let ints = values
        .iter()
        .map(|v| {
            v.mantissa()
                .checked_mul(10_i128.checked_pow(scale - v.scale())?)
        })
        .collect::<Option<Vec<i128>>>()?;
    let total = ints
        .iter()
        .try_fold(0_i128, |sum, v| sum.checked_add(v.checked_abs()?))?;
    (total < 1 << 96).then_some((ints, total))
}

impl<T> SubsetSum<T>
where
    T: Copy + Ord + Default + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
{
    pub fn search(amounts: &[T], target: T, tol: T, max_k: usize) -> Vec<Vec<usize>> {
        let zero = T::default();
        let mut sorted: Vec<(T, usize)> =
            amounts.iter().enumerate().map(|(k, a)| (*a, k)).collect();
        sorted.sort_unstable();
        let mut largest = vec![zero];
        for (a, _) in sorted.iter().rev().take(max_k) {
            largest.push(largest[largest.len() - 1] + *a);
        }
        let mut search = SubsetSum {
            amounts: sorted.iter().map(|e| e.0).collect(),
            positions: sorted.iter().map(|e| e.1).collect(),
            largest,
            low: target - tol,
            high: target + tol,
            max_k,
            steps: 0,
            chosen: vec![0; max_k],
            found: Vec::new(),
        };
        if max_k >= 2 && amounts.len() >= 2 {
            search.visit(0, 0, zero);
        }
        for f in &mut search.found {
            f.sort_unstable();
        }
        search.found
    }

    fn done(&self) -> bool {
        self.found.len() >= SPLIT_FITS || self.steps >= SPLIT_STEPS
    }

    /// One step: extends `chosen[..depth]` (whose amounts add up to `sum`)
    /// with amounts from index `from` on. Inlined into `extend`, so that
    /// the most frequent steps, those choosing the last amount, are no
    /// calls.
    #[inline(always)]
    fn visit(&mut self, depth: usize, from: usize, sum: T) {
        self.steps += 1;
        let n = self.amounts.len();
        // As `target - tol - sum`, the order the decimals are rounded in.
        let (lo, hi) = (self.low - sum, self.high - sum);
        let left = self.max_k - depth;
        // min(left, n - from) <= min(max_k, n), the last index of `largest`.
        if self.largest[left.min(n - from)] < lo {
            return;
        }
        if left == 1 {
            // The last amount: any in [lo, hi].
            let start = from + self.amounts[from..].partition_point(|a| *a < lo);
            for k in start..n {
                if self.amounts[k] > hi || self.found.len() >= SPLIT_FITS {
                    break;
                }
                self.record(depth, k);
            }
            return;
        }
        self.extend(depth, from, sum, lo, hi);
    }

    fn extend(&mut self, depth: usize, from: usize, sum: T, lo: T, hi: T) {
        let n = self.amounts.len();
        for k in from..n {
            let a = self.amounts[k];
            if a > hi || self.done() {
                return;
            }
            if depth >= 1 && a >= lo {
                self.record(depth, k);
            }
            if k + 1 < n {
                self.chosen[depth] = k;
                self.visit(depth + 1, k + 1, sum + a);
            }
        }
    }

    fn record(&mut self, depth: usize, last: usize) {
        let chosen = self.chosen[..depth].iter().chain([&last]);
        self.found
            .push(chosen.map(|&k| self.positions[k]).collect());
    }
}
