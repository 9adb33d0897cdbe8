//! Harness for the end-to-end tests: locates the built binaries, runs them on loopback, talks to them.
//!
//! The binaries are the real ones built by `cargo build --workspace --bins` (the README's test
//! command does that first). Every process gets its own temporary directory, listens on a
//! free loopback port and is killed when its handle drops.
#![forbid(unsafe_code)]

pub mod admin;
pub mod crash;
pub mod grpc;
pub mod memscan;
pub mod peer_proxy;
pub mod procs;
pub mod xks;

pub use admin::Admin;
pub use procs::{
    bin_path, cpu_time_us, free_port, Appliance, ApplianceOptions, VhsmdProc, XksFrontProc,
};
pub use xks::{XksClient, XksResponse};
