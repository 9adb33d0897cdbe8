//! xks-front library: the XKS Proxy API v1 router, SigV4, policy, throttling, health, vhsm client.
#![forbid(unsafe_code)]

pub mod accept;
pub mod api;
pub mod body;
pub mod cdiv;
pub mod config;
pub mod config_error;
pub mod conn;
pub mod conn_rate;
pub mod drain;
pub mod errors;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod key_manager;
pub mod keystores;
pub mod limits;
pub mod metered;
pub mod metrics;
pub mod peers;
pub mod policy;
pub mod preauth;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod sigv4;
pub mod tls;
pub mod vhsm_client;
