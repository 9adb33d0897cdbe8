//! vhsmd library: adapts the vhsm core to sled storage and a gRPC server over mutual TLS.
//!
//! Request path: [`server::serve`] accepts mTLS connections → the generated tonic services
//! ([`crypto_service`], [`admin_service`]) → [`dispatch::Dispatcher::call`] (caller identity
//! from the certificate, role check against [`access`], blocking pool for ceremonies, error
//! mapping through [`error_map`], one log line) → the core (`vhsm_core::Vhsm`) →
//! [`cluster::replicated::ReplicatedStorage`] (Raft log, then [`storage::SledStorage`]).
#![forbid(unsafe_code)]

pub mod access;
pub mod admin_service;
pub mod approval_rpc;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod crypto_service;
pub mod denials;
pub mod dispatch;
pub mod error_map;
pub mod grpc_limits;
pub mod hardening;
pub mod logging;
pub mod metrics;
pub mod reaper;
pub mod reserve;
pub mod roles;
pub mod server;
pub mod storage;
pub mod tls;
pub mod wipe;
