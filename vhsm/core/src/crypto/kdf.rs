//! Argon2id passphrase-to-key derivation and its cost parameters.

use super::{CryptoError, SecretKey, KEY_LEN};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest salt `argon2id` accepts, in bytes.
pub const MIN_SALT_LEN: usize = 16;

/// Argon2id cost parameters (stored beside each salt so a store can be re-derived later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// Production parameters: 64 MiB, 3 passes, 4 lanes (RFC 9106 second recommended option).
    pub const RECOMMENDED: KdfParams = KdfParams {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 4,
    };
    /// The cheapest parameters Argon2 accepts (8 KiB, 1 pass, 1 lane). Tests only: a store
    /// created with these is refused unless weak KDF parameters are explicitly allowed.
    pub const INSECURE_FAST_FOR_TESTS: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    /// Upper bounds on stored KDF costs, so a tampered header or share cannot make the daemon
    /// allocate or spin without limit: 1 GiB, 16 passes, 16 lanes.
    pub const MAX: KdfParams = KdfParams {
        m_cost_kib: 1 << 20,
        t_cost: 16,
        p_cost: 16,
    };

    /// True if this is a usable Argon2id parameter set within [`KdfParams::MAX`] (checked on
    /// every stored header and share before any derivation).
    pub fn is_within_limits(&self) -> bool {
        (1..=Self::MAX.t_cost).contains(&self.t_cost)
            && (1..=Self::MAX.p_cost).contains(&self.p_cost)
            && self.m_cost_kib >= 8 * self.p_cost
            && self.m_cost_kib <= Self::MAX.m_cost_kib
    }

    /// True when every cost is at least the [`KdfParams::RECOMMENDED`] one.
    pub fn is_at_least_recommended(&self) -> bool {
        let rec = Self::RECOMMENDED;
        self.m_cost_kib >= rec.m_cost_kib && self.t_cost >= rec.t_cost && self.p_cost >= rec.p_cost
    }
}

/// Derives a 32-byte key from `passphrase` and `salt` (at least 16 bytes) with Argon2id v1.3.
pub fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<SecretKey, CryptoError> {
    if salt.len() < MIN_SALT_LEN {
        return Err(CryptoError::InvalidLength("salt"));
    }
    let params = Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|_| CryptoError::Kdf)?;
    let mut key = SecretKey::zeroed();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.expose_mut())
        .map_err(|_| CryptoError::Kdf)?;
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_the_named_sets_and_refuse_every_cost_out_of_range() {
        for p in [
            KdfParams::RECOMMENDED,
            KdfParams::INSECURE_FAST_FOR_TESTS,
            KdfParams::MAX,
        ] {
            assert!(p.is_within_limits(), "{p:?}");
        }
        let m = KdfParams::MAX;
        for bad in [
            KdfParams { t_cost: 0, ..m },
            KdfParams { t_cost: 17, ..m },
            KdfParams { p_cost: 0, ..m },
            KdfParams { p_cost: 17, ..m },
            KdfParams {
                m_cost_kib: (1 << 20) + 1,
                ..m
            },
            // Argon2 needs at least 8 KiB per lane.
            KdfParams {
                m_cost_kib: 8 * 16 - 1,
                ..m
            },
        ] {
            assert!(!bad.is_within_limits(), "{bad:?}");
        }
    }

    #[test]
    fn named_parameter_sets_are_accepted_by_argon2() {
        for p in [KdfParams::RECOMMENDED, KdfParams::INSECURE_FAST_FOR_TESTS] {
            assert!(
                Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(KEY_LEN)).is_ok(),
                "{p:?}"
            );
        }
    }

    #[test]
    fn insecure_parameters_are_the_argon2_minimum() {
        let p = KdfParams::INSECURE_FAST_FOR_TESTS;
        assert_eq!(p.m_cost_kib, Params::MIN_M_COST);
        assert!(Params::new(p.m_cost_kib - 1, p.t_cost, p.p_cost, None).is_err());
    }

    #[test]
    fn salt_shorter_than_16_bytes_is_refused() {
        let p = KdfParams::INSECURE_FAST_FOR_TESTS;
        assert_eq!(
            argon2id(b"pw", &[0; 15], &p).unwrap_err(),
            CryptoError::InvalidLength("salt")
        );
        assert!(argon2id(b"pw", &[0; 16], &p).is_ok());
    }

    #[test]
    fn invalid_costs_are_a_kdf_error() {
        let p = KdfParams {
            m_cost_kib: 8,
            t_cost: 0,
            p_cost: 1,
        };
        assert_eq!(argon2id(b"pw", &[0; 16], &p).unwrap_err(), CryptoError::Kdf);
    }
}
