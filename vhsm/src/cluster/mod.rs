//! The replicated store: every vhsmd is a member of one Raft group (openraft), a single node
//! being a one-member group. Only sealed records and deterministic commands go through the log.

pub mod config;
pub mod lease;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peer_service;
pub mod replicated;
pub mod snapshot_file;
pub mod state_machine;
pub mod types;
