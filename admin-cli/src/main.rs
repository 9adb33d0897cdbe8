//! vhsm-admin: the operator CLI entry point.
#![forbid(unsafe_code)]
fn main() {}
