//! vhsmd library: adapts the vhsm core to sled storage and a gRPC server over mutual TLS.
#![forbid(unsafe_code)]
