//! vhsmd library: adapts the vhsm core to sled storage and a gRPC server over mutual TLS.
#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod hardening;
pub mod logging;
pub mod roles;
pub mod tls;
