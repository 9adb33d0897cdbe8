//! The vhsm core: sealed, encrypted key store with ceremonies built in (no I/O).
//!
//! Storage, randomness and time reach the core through the traits in [`storage`] and
//! [`env`]; nothing here opens a file or a socket.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod selftest;
pub mod shamir;
