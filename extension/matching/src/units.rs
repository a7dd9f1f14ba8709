//! Amounts as integers that compare as the decimals do, so that the inner
//! loops compare machine words instead of decimals at different scales
//! (a `Decimal` comparison costs ten times as much).
//!
//! When every open amount is a whole number of some unit (cents, or
//! 10^-scale for the largest scale among them) small enough for 64 bits,
//! an amount's key is that number. Otherwise it is the amount's rank among
//! the distinct open amounts: still exact, only the bounds cost a search.

use rust_decimal::Decimal;

/// Integers no larger than this in magnitude are used as units, so that
/// sums of a few of them never overflow.
const LIMIT: i128 = 1 << 58;

pub(crate) enum AmountKeys {
    /// Amounts times 10^scale.
    Units { scale: u32 },
    /// The distinct open amounts, ascending: a key is a position in it.
    Ranks(Vec<Decimal>),
}

/// `mantissa * 10^shift`, if it stays within 128 bits.
fn rescaled(mantissa: i128, shift: u32) -> Option<i128> {
    mantissa.checked_mul(10_i128.checked_pow(shift)?)
}

impl AmountKeys {
    /// Keys for the given open amounts.
    pub fn new(opens: impl Iterator<Item = Decimal> + Clone) -> Self {
        let scale = opens.clone().map(|d| d.scale()).max().unwrap_or(0);
        let fits = |d: Decimal| {
            rescaled(d.mantissa(), scale - d.scale()).is_some_and(|u| u.abs() <= LIMIT)
        };
        if opens.clone().all(fits) {
            return AmountKeys::Units { scale };
        }
        let mut distinct: Vec<Decimal> = opens.collect();
        distinct.sort_unstable();
        distinct.dedup();
        AmountKeys::Ranks(distinct)
    }

    /// The key of one of the open amounts given to `new`.
    pub fn key(&self, open: Decimal) -> i64 {
        match self {
            AmountKeys::Units { scale } => {
                let units = rescaled(open.mantissa(), scale - open.scale());
                units.map_or(0, |u| u as i64) // always some, and within LIMIT
            }
            AmountKeys::Ranks(distinct) => distinct.partition_point(|d| *d < open) as i64,
        }
    }

    /// `d` in units, if the keys are units and `d` is a whole number of
    /// them within `LIMIT`: then sums and differences of a few such
    /// amounts are exact, and compare as the decimals would.
    pub fn units(&self, d: Decimal) -> Option<i64> {
        match self {
            AmountKeys::Units { scale } => {
                let units = rescaled(d.mantissa(), scale.checked_sub(d.scale())?)?;
                (units.abs() <= LIMIT).then_some(units as i64)
            }
            AmountKeys::Ranks(_) => None,
        }
    }

    /// The largest number of units not above `d`, if the keys are units.
    pub fn floor(&self, d: Decimal) -> Option<i64> {
        match self {
            AmountKeys::Units { scale } => Some(floor_units(d, *scale)),
            AmountKeys::Ranks(_) => None,
        }
    }

    /// The smallest key of an amount `>= lo`: an open amount is at least
    /// `lo` exactly when its key is at least this.
    pub fn at_least(&self, lo: Decimal) -> i64 {
        match self {
            AmountKeys::Units { scale } => -floor_units(-lo, *scale),
            AmountKeys::Ranks(distinct) => distinct.partition_point(|d| *d < lo) as i64,
        }
    }

    /// The largest key of an amount `<= hi`: an open amount is at most `hi`
    /// exactly when its key is at most this.
    pub fn at_most(&self, hi: Decimal) -> i64 {
        match self {
            AmountKeys::Units { scale } => floor_units(hi, *scale),
            AmountKeys::Ranks(distinct) => distinct.partition_point(|d| *d <= hi) as i64 - 1,
        }
    }
}

/// The largest whole number of units (10^-scale) not above `d`, clamped
/// to twice `LIMIT` either way: beyond every key, and negatable.
fn floor_units(d: Decimal, scale: u32) -> i64 {
    let (m, s) = (d.mantissa(), d.scale());
    let units = if s <= scale {
        rescaled(m, scale - s).unwrap_or(if m < 0 { i128::MIN } else { i128::MAX })
    } else {
        // 10^(s - scale) <= 10^28 fits in 128 bits.
        m.div_euclid(10_i128.pow(s - scale))
    };
    units.clamp(-2 * LIMIT, 2 * LIMIT) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Every bound against every amount, for both kinds of keys.
    #[test]
    fn keys_compare_as_the_amounts_do() {
        let opens = ["0.01", "1", "1.5", "2.25", "2.250", "100", "99.999"].map(d);
        let bounds = [
            "-5",
            "0",
            "0.005",
            "0.01",
            "0.011",
            "1",
            "1.4999999999999",
            "1.5",
            "2.25",
            "99.9995",
            "100",
            "100.0001",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "0.0000000000000000000000000001",
        ]
        .map(d);
        let huge = d("79228162514264337593543950335");
        let ranked: Vec<Decimal> = opens.iter().copied().chain([huge]).collect();
        for (opens, units) in [(&opens[..], true), (&ranked[..], false)] {
            let keys = AmountKeys::new(opens.iter().copied());
            assert_eq!(matches!(keys, AmountKeys::Units { .. }), units);
            for &open in opens {
                for &b in &bounds {
                    assert_eq!(
                        open >= b,
                        keys.key(open) >= keys.at_least(b),
                        "{open} >= {b}"
                    );
                    assert_eq!(
                        open <= b,
                        keys.key(open) <= keys.at_most(b),
                        "{open} <= {b}"
                    );
                }
            }
        }
    }
}
