//! The vhsm audit record format and its offline verifier.
#![forbid(unsafe_code)]
