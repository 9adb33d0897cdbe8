//! Crash-point harness: `kill -9` vhsmd at random moments while vhsm-admin changes the store,
//! then restart, unseal and check every acknowledged change against a model.
//!
//! [`driver::run`] plans one operation at a time ([`ops`]), arms a [`killer::Killer`] at a
//! random delay within the operation's expected duration (so kills land before, during and
//! after the commit), restarts and unseals the node, resolves a cut-off operation to "fully
//! applied" or "not at all" ([`model`]) and runs the [`checks`]. The seed is printed and
//! settable (`VHSM_CRASH_SEED`), so a failure replays.

pub mod checks;
pub mod driver;
pub mod killer;
pub mod model;
pub mod ops;
pub mod report;
pub mod rng;
