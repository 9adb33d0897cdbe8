//! Shamir secret sharing over GF(2^8) for M-of-N custodian unseal.
//!
//! Field arithmetic uses the AES polynomial x^8 + x^4 + x^3 + x + 1 (0x11b) and is table-free
//! and branch-free on secret data (no lookup tables indexed by share bytes).

use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::CryptoError;

/// The largest number of shares [`split`] produces.
pub const MAX_SHARES: u8 = 16;

/// One share: the evaluation point `x` (1..=255, public) and the polynomial values `y`
/// (secret; one byte per secret byte). `Debug` shows `x` only.
#[derive(Clone)]
pub struct Share {
    /// Evaluation point; never 0 (that is where the secret lives).
    pub x: u8,
    /// The share bytes, zeroized on drop.
    pub y: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .field("y", &"[REDACTED]")
            .finish()
    }
}

/// Why a split or combine was refused. Variants carry no share or secret bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ShamirError {
    /// Not `1 <= threshold <= count <= 16`.
    #[error("invalid threshold or share count")]
    InvalidThreshold,
    /// No shares were given to combine.
    #[error("too few shares")]
    TooFewShares,
    /// Two shares have the same evaluation point.
    #[error("duplicate share")]
    DuplicateShare,
    /// Shares (or the secret) have differing or zero lengths.
    #[error("shares have inconsistent lengths")]
    InconsistentLength,
    /// A share has the evaluation point 0.
    #[error("share has x = 0")]
    ZeroX,
    /// The random source failed while drawing polynomial coefficients.
    #[error("randomness unavailable")]
    Random,
}

/// Splits `secret` into `count` shares (x = 1..=count), any `threshold` of which rebuild it.
/// Requires `1 <= threshold <= count <= 16` and a non-empty secret. `fill_random` supplies the
/// random polynomial coefficients (use a CSPRNG).
pub fn split(
    secret: &[u8],
    threshold: u8,
    count: u8,
    fill_random: &mut dyn FnMut(&mut [u8]) -> Result<(), CryptoError>,
) -> Result<Vec<Share>, ShamirError> {
    if threshold == 0 || threshold > count || count > MAX_SHARES {
        return Err(ShamirError::InvalidThreshold);
    }
    if secret.is_empty() {
        return Err(ShamirError::InconsistentLength);
    }
    let degree = usize::from(threshold - 1);
    // coeffs[i * degree + k] is the coefficient of x^(k+1) for secret byte i.
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * degree]);
    if degree > 0 {
        fill_random(&mut coeffs).map_err(|_| ShamirError::Random)?;
    }
    let shares = (1..=count)
        .map(|x| {
            let y = secret
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let poly = &coeffs[i * degree..(i + 1) * degree];
                    // Horner: ((a_d x + a_{d-1}) x + ... + a_1) x + s
                    let acc = poly.iter().rev().fold(0u8, |acc, &a| gf_mul(acc, x) ^ a);
                    gf_mul(acc, x) ^ s
                })
                .collect::<Vec<u8>>();
            Share {
                x,
                y: Zeroizing::new(y),
            }
        })
        .collect();
    Ok(shares)
}

/// Rebuilds the secret by Lagrange interpolation at x = 0. With fewer shares than the split's
/// threshold the result is an unrelated value (this cannot be detected here: callers check a
/// MAC or tag over the rebuilt secret).
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::TooFewShares)?;
    let len = first.y.len();
    if len == 0 {
        return Err(ShamirError::InconsistentLength);
    }
    for (i, share) in shares.iter().enumerate() {
        if share.x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if share.y.len() != len {
            return Err(ShamirError::InconsistentLength);
        }
        if shares[..i].iter().any(|other| other.x == share.x) {
            return Err(ShamirError::DuplicateShare);
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (j, share_j) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{m != j} x_m / (x_m - x_j); subtraction is XOR in GF(2^8).
        let mut num = 1u8;
        let mut den = 1u8;
        for (m, share_m) in shares.iter().enumerate() {
            if m != j {
                num = gf_mul(num, share_m.x);
                den = gf_mul(den, share_m.x ^ share_j.x);
            }
        }
        let basis = gf_mul(num, gf_inv(den));
        for (out, &y) in secret.iter_mut().zip(share_j.y.iter()) {
            *out ^= gf_mul(y, basis);
        }
    }
    Ok(secret)
}

/// Multiplication in GF(2^8) modulo 0x11b, in constant time (fixed 8 rounds, masks only).
fn gf_mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut product = 0u8;
    for _ in 0..8 {
        // mask = 0xff when the low bit of b is set, else 0x00.
        product ^= a & (b & 1).wrapping_neg();
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse in GF(2^8) as a^254 (fixed square-and-multiply chain); 0 maps to 0.
fn gf_inv(a: u8) -> u8 {
    // 254 = 0b1111_1110: a^2 * a^4 * ... * a^128.
    let mut result = 1u8;
    let mut power = gf_mul(a, a);
    for _ in 0..7 {
        result = gf_mul(result, power);
        power = gf_mul(power, power);
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Deterministic, test-only byte stream (xorshift) so failures reproduce.
    fn test_rng(seed: u64) -> impl FnMut(&mut [u8]) -> Result<(), CryptoError> {
        let mut state = seed | 1;
        move |buf: &mut [u8]| {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = (state >> 24) as u8;
            }
            Ok(())
        }
    }

    fn secret32() -> Vec<u8> {
        (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect()
    }

    /// Reference multiplication: schoolbook carry-less product then reduction by 0x11b.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let mut wide: u16 = 0;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                wide ^= u16::from(a) << i;
            }
        }
        for bit in (8..16).rev() {
            if wide >> bit & 1 == 1 {
                wide ^= 0x11b << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn gf_mul_matches_reference_for_all_pairs() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(gf_mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn gf_mul_known_values() {
        // FIPS 197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
    }

    #[test]
    fn gf_mul_is_commutative_and_distributive() {
        for a in 0..=255u8 {
            for b in (0..=255u8).step_by(7) {
                assert_eq!(gf_mul(a, b), gf_mul(b, a));
                for c in (0..=255u8).step_by(31) {
                    assert_eq!(gf_mul(a, b ^ c), gf_mul(a, b) ^ gf_mul(a, c));
                }
            }
        }
    }

    #[test]
    fn every_nonzero_element_has_an_inverse() {
        for a in 1..=255u8 {
            let inv = gf_inv(a);
            assert_eq!(gf_mul(a, inv), 1, "inverse of {a}");
        }
        assert_eq!(gf_inv(0), 0);
        // FIPS 197 §4.2.1 example: {53} and {ca} are inverses.
        assert_eq!(gf_inv(0x53), 0xca);
    }

    #[test]
    fn every_threshold_subset_of_3_of_5_rebuilds() {
        let secret = secret32();
        let shares = split(&secret, 3, 5, &mut test_rng(1)).unwrap();
        assert_eq!(shares.len(), 5);
        assert_eq!(
            shares.iter().map(|s| s.x).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        let mut subsets = 0;
        for mask in 0u32..32 {
            if mask.count_ones() < 3 {
                continue;
            }
            let subset: Vec<Share> = shares
                .iter()
                .enumerate()
                .filter(|(i, _)| mask >> i & 1 == 1)
                .map(|(_, s)| s.clone())
                .collect();
            assert_eq!(
                combine(&subset).unwrap().as_slice(),
                secret.as_slice(),
                "mask {mask:05b}"
            );
            subsets += 1;
        }
        assert_eq!(subsets, 16); // C(5,3)+C(5,4)+C(5,5)
    }

    #[test]
    fn order_of_shares_does_not_matter() {
        let secret = secret32();
        let shares = split(&secret, 3, 5, &mut test_rng(2)).unwrap();
        let picked = vec![shares[4].clone(), shares[0].clone(), shares[2].clone()];
        assert_eq!(combine(&picked).unwrap().as_slice(), secret.as_slice());
    }

    #[test]
    fn too_few_shares_give_a_different_value() {
        let secret = secret32();
        let shares = split(&secret, 3, 5, &mut test_rng(3)).unwrap();
        for i in 0..5 {
            for j in (i + 1)..5 {
                let pair = vec![shares[i].clone(), shares[j].clone()];
                assert_ne!(combine(&pair).unwrap().as_slice(), secret.as_slice());
            }
        }
    }

    #[test]
    fn shares_do_not_contain_the_secret_for_threshold_above_one() {
        let secret = secret32();
        let shares = split(&secret, 2, 3, &mut test_rng(4)).unwrap();
        for share in &shares {
            assert_ne!(share.y.as_slice(), secret.as_slice());
        }
    }

    #[test]
    fn threshold_one_shares_are_the_secret() {
        let secret = secret32();
        let mut rng_called = false;
        let mut rng = |_: &mut [u8]| -> Result<(), CryptoError> {
            rng_called = true;
            Ok(())
        };
        let shares = split(&secret, 1, 3, &mut rng).unwrap();
        assert!(!rng_called, "degree-0 polynomial needs no randomness");
        for share in &shares {
            assert_eq!(
                combine(std::slice::from_ref(share)).unwrap().as_slice(),
                secret.as_slice()
            );
        }
    }

    #[test]
    fn sixteen_of_sixteen_rebuilds_and_fifteen_do_not() {
        let secret = secret32();
        let shares = split(&secret, 16, 16, &mut test_rng(5)).unwrap();
        assert_eq!(combine(&shares).unwrap().as_slice(), secret.as_slice());
        assert_ne!(
            combine(&shares[..15]).unwrap().as_slice(),
            secret.as_slice()
        );
    }

    #[test]
    fn invalid_thresholds_are_refused() {
        let secret = secret32();
        for (t, n) in [(0u8, 3u8), (4, 3), (1, 17), (17, 17), (0, 0)] {
            assert_eq!(
                split(&secret, t, n, &mut test_rng(6)).unwrap_err(),
                ShamirError::InvalidThreshold,
                "{t}-of-{n}"
            );
        }
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(
            split(&[], 2, 3, &mut test_rng(7)).unwrap_err(),
            ShamirError::InconsistentLength
        );
    }

    #[test]
    fn random_failure_is_reported() {
        let mut failing = |_: &mut [u8]| -> Result<(), CryptoError> { Err(CryptoError::Random) };
        assert_eq!(
            split(&secret32(), 2, 3, &mut failing).unwrap_err(),
            ShamirError::Random
        );
    }

    #[test]
    fn combine_refuses_no_shares() {
        assert_eq!(combine(&[]).unwrap_err(), ShamirError::TooFewShares);
    }

    #[test]
    fn combine_refuses_duplicates() {
        let shares = split(&secret32(), 2, 3, &mut test_rng(8)).unwrap();
        let dup = vec![shares[1].clone(), shares[0].clone(), shares[1].clone()];
        assert_eq!(combine(&dup).unwrap_err(), ShamirError::DuplicateShare);
    }

    #[test]
    fn combine_refuses_zero_x() {
        let mut shares = split(&secret32(), 2, 3, &mut test_rng(9)).unwrap();
        shares[1].x = 0;
        assert_eq!(combine(&shares).unwrap_err(), ShamirError::ZeroX);
    }

    #[test]
    fn combine_refuses_inconsistent_lengths() {
        let mut shares = split(&secret32(), 2, 3, &mut test_rng(10)).unwrap();
        shares[2].y.pop();
        assert_eq!(
            combine(&shares).unwrap_err(),
            ShamirError::InconsistentLength
        );
        let empty = vec![Share {
            x: 1,
            y: Zeroizing::new(Vec::new()),
        }];
        assert_eq!(
            combine(&empty).unwrap_err(),
            ShamirError::InconsistentLength
        );
    }

    #[test]
    fn a_corrupted_share_changes_the_result() {
        let secret = secret32();
        let mut shares = split(&secret, 2, 2, &mut test_rng(11)).unwrap();
        shares[0].y[0] ^= 1;
        let rebuilt = combine(&shares).unwrap();
        assert_ne!(rebuilt[0], secret[0]);
        assert_eq!(&rebuilt[1..], &secret[1..]);
    }

    #[test]
    fn debug_redacts_share_bytes() {
        let share = Share {
            x: 3,
            y: Zeroizing::new(vec![0xde, 0xad]),
        };
        let shown = format!("{share:?}");
        assert!(shown.contains("x: 3"));
        assert!(!shown.contains("222") && !shown.contains("de"), "{shown}");
    }
}
