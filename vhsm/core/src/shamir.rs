//! Shamir secret sharing over GF(2^8) for M-of-N custodian unseal.
