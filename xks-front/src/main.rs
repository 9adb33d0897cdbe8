//! xks-front: the XKS proxy entry point.
#![forbid(unsafe_code)]
fn main() {}
