//! The vhsm core: sealed, encrypted key store with ceremonies built in (no I/O).
#![forbid(unsafe_code)]
