//! vhsmd: the vhsm daemon entry point.
#![forbid(unsafe_code)]
fn main() {}
