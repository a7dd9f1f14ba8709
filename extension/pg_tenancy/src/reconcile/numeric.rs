//! PostgreSQL's `numeric`, read from its stored form into an exact
//! `Decimal` without going through text: what reading amounts costs most.
//!
//! The stored form (`src/backend/utils/adt/numeric.c`): a 16-bit header,
//! short (sign, display scale and weight packed in it) or long (sign and
//! display scale, then a 16-bit weight), followed by base-10000 digits, the
//! first of weight `weight`. The value is the sum of digit × 10000^(weight
//! − position), shown with `dscale` decimals.

use rust_decimal::Decimal;

const SIGN_MASK: u16 = 0xC000;
const NEG: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const SHORT_SIGN: u16 = 0x2000;
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_SIGN: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;
const DSCALE_MASK: u16 = 0x3FFF;

/// The exact value of a stored numeric (its bytes after the varlena
/// header), or None when it is NaN or infinite, or when a `Decimal` cannot
/// hold it exactly (more than 28 decimals that are not zeros, or a
/// mantissa beyond 96 bits).
pub fn decode(bytes: &[u8]) -> Option<Decimal> {
    let word = |k: usize| -> Option<u16> {
        let b = bytes.get(2 * k..2 * k + 2)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    };
    let header = word(0)?;
    let (negative, dscale, weight, first) = if header & SHORT != 0 && header & SIGN_MASK != SPECIAL
    {
        let weight = i32::from(header & SHORT_WEIGHT_MASK);
        let weight = if header & SHORT_WEIGHT_SIGN != 0 {
            weight - 64
        } else {
            weight
        };
        let dscale = u32::from((header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT);
        (header & SHORT_SIGN != 0, dscale, weight, 1)
    } else if header & SIGN_MASK == SPECIAL {
        return None; // NaN, Infinity, -Infinity
    } else {
        let weight = i32::from(word(1)? as i16);
        (
            header & SIGN_MASK == NEG,
            u32::from(header & DSCALE_MASK),
            weight,
            2,
        )
    };
    let digits = (first..bytes.len() / 2).map(word);
    // The value times 10^dscale, an integer: each digit weighs
    // 10^(4 * (weight - position) + dscale).
    let mut mantissa: i128 = 0;
    let mut position = 0;
    for digit in digits {
        let digit = i128::from(digit?);
        let exponent = 4 * (weight - position) + dscale as i32;
        let value = if exponent >= 0 {
            digit.checked_mul(10_i128.checked_pow(exponent as u32)?)?
        } else {
            let divisor = 10_i128.checked_pow(exponent.unsigned_abs())?;
            if digit % divisor != 0 {
                return None; // beyond the display scale: never stored
            }
            digit / divisor
        };
        mantissa = mantissa.checked_add(value)?;
        position += 1;
    }
    let (mut mantissa, mut scale) = (mantissa, dscale);
    while scale > 28 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    if scale > 28 || mantissa >= 1_i128 << 96 {
        return None;
    }
    let d = Decimal::from_i128_with_scale(if negative { -mantissa } else { mantissa }, scale);
    Some(d)
}

/// Appends `d` in numeric's stored form, its 4-byte varlena header first,
/// byte for byte as `numeric_in` stores `d`'s text: the short header (a
/// decimal's scale and weight always fit it), base-10000 digits without
/// leading or trailing zero digits, and zero as positive with no digits.
pub fn encode(d: Decimal, out: &mut Vec<u8>) {
    let dscale = d.scale();
    // The value times 10^(dscale + pad), so that the decimal point falls
    // between two base-10000 digits: below 2^96 * 1000, it fits.
    let pad = (4 - dscale % 4) % 4;
    let mut m = d.mantissa().unsigned_abs() * 10_u128.pow(pad);
    let fraction_digits = ((dscale + pad) / 4) as i32;
    // Least significant first; at most 8 digits below 2^106.
    let mut digits = [0_u16; 8];
    let mut n = 0;
    while m > 0 {
        digits[n] = (m % 10_000) as u16;
        m /= 10_000;
        n += 1;
    }
    let low = digits[..n].iter().take_while(|&&g| g == 0).count();
    let (negative, weight) = if low == n {
        (false, 0) // zero
    } else {
        (d.is_sign_negative(), n as i32 - 1 - fraction_digits)
    };
    let kept = &digits[low..n];
    let header = SHORT
        | if negative { SHORT_SIGN } else { 0 }
        | ((dscale as u16) << SHORT_DSCALE_SHIFT)
        | if weight < 0 { SHORT_WEIGHT_SIGN } else { 0 }
        | (weight as u16 & SHORT_WEIGHT_MASK);
    let size = 4 + 2 + 2 * kept.len();
    out.extend_from_slice(&super::output::varlena_header(size as u32));
    out.extend_from_slice(&header.to_ne_bytes());
    for g in kept.iter().rev() {
        out.extend_from_slice(&g.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn encoded_amounts_decode_to_themselves() {
        for s in [
            "0",
            "0.00",
            "-0.00",
            "1",
            "-5",
            "12.50",
            "-0.01",
            "0.0001",
            "100000",
            "10000.0000",
            "99999999999999999.99",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "0.0000000000000000000000000001",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let mut bytes = Vec::new();
            encode(d, &mut bytes);
            let size = u32::from_ne_bytes(bytes[..4].try_into().unwrap()) >> 2;
            assert_eq!(size as usize, bytes.len(), "{s}");
            let back = decode(&bytes[4..]).unwrap();
            assert_eq!(back, d, "{s}");
            assert_eq!(back.scale(), d.scale(), "{s}");
        }
    }
}
