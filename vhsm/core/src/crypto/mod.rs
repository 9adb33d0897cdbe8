//! Thin, misuse-resistant wrappers over the RustCrypto primitives the vhsm uses.
