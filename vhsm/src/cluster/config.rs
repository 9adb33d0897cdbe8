//! `[cluster]`: how this node takes part in the replicated store (absent: a one-member
//! cluster of this node alone, formed on first start).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[cluster]` settings, each with a safe default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How the other nodes reach this node's listener, `https://host:port`; default
    /// `https://<listen.addr>`. The host must be a name in this node's server certificate.
    #[serde(default)]
    pub advertise: Option<String>,
    /// On first start, form a new one-member cluster (`true`), or wait to be added with
    /// `vhsm-admin cluster add-node` (`false`).
    #[serde(default = "default_true")]
    pub bootstrap: bool,
    /// A witness stores and applies the encrypted log and votes (it may lead), but never
    /// unseals and never serves crypto. Do not list it behind xks-front.
    #[serde(default)]
    pub witness: bool,
    /// Client certificate (peer role) this node presents to the other nodes.
    #[serde(default)]
    pub peer_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(default)]
    pub peer_key: Option<PathBuf>,
    /// CA the other nodes' server certificates must chain to; default `tls.client_ca`.
    #[serde(default)]
    pub peer_ca: Option<PathBuf>,
    /// Read lease T (ms): a node serves crypto only within T of a read index confirmed by a
    /// quorum that it has applied; it renews every T/3.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Leader heartbeat interval (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Election timeout range (ms).
    #[serde(default = "default_election_min_ms")]
    pub election_timeout_min_ms: u64,
    /// Upper end of the election timeout range (ms).
    #[serde(default = "default_election_max_ms")]
    pub election_timeout_max_ms: u64,
    /// How long a write may wait to be committed on a majority (ms) before it fails with
    /// NO_QUORUM (its outcome is then unknown; retry with the same request id).
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// How long `key disable` (and other permission removals) wait for every member to apply
    /// the change before answering with the members that had not (ms).
    #[serde(default = "default_kill_switch_wait_ms")]
    pub kill_switch_wait_ms: u64,
    /// A snapshot is taken (and the log below it purged) every this many entries.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every_entries: u64,
    /// Timeout of one snapshot chunk transfer (ms); well above openraft's 200 ms default, so
    /// a store with 100,000 keys installs.
    #[serde(default = "default_install_snapshot_timeout_ms")]
    pub install_snapshot_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            advertise: None,
            bootstrap: true,
            witness: false,
            peer_cert: None,
            peer_key: None,
            peer_ca: None,
            lease_ms: default_lease_ms(),
            heartbeat_ms: default_heartbeat_ms(),
            election_timeout_min_ms: default_election_min_ms(),
            election_timeout_max_ms: default_election_max_ms(),
            write_timeout_ms: default_write_timeout_ms(),
            kill_switch_wait_ms: default_kill_switch_wait_ms(),
            snapshot_every_entries: default_snapshot_every(),
            install_snapshot_timeout_ms: default_install_snapshot_timeout_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_lease_ms() -> u64 {
    2000
}
fn default_heartbeat_ms() -> u64 {
    100
}
// A new leader must be elected (and a read index confirmed) well within the 2 s lease, so
// that the survivors of a leader loss keep serving without a gap.
fn default_election_min_ms() -> u64 {
    300
}
fn default_election_max_ms() -> u64 {
    600
}
fn default_write_timeout_ms() -> u64 {
    5000
}
fn default_kill_switch_wait_ms() -> u64 {
    1000
}
fn default_snapshot_every() -> u64 {
    5000
}
fn default_install_snapshot_timeout_ms() -> u64 {
    60_000
}

impl ClusterConfig {
    /// Checks ranges and that the peer certificate and key come together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.advertise {
            if !(a.starts_with("https://") && a.len() > "https://".len()) {
                return Err(ConfigError::invalid(
                    "cluster.advertise",
                    "must be an https://host:port URL",
                ));
            }
        }
        if self.peer_cert.is_some() != self.peer_key.is_some() {
            return Err(ConfigError::invalid(
                "cluster.peer_cert",
                "peer_cert and peer_key must be set together",
            ));
        }
        if !(300..=60_000).contains(&self.lease_ms) {
            return Err(ConfigError::invalid(
                "cluster.lease_ms",
                "must be 300 to 60000",
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 3 > self.election_timeout_min_ms {
            return Err(ConfigError::invalid(
                "cluster.heartbeat_ms",
                "must be at least 1 and at most a third of election_timeout_min_ms",
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(ConfigError::invalid(
                "cluster.election_timeout_max_ms",
                "must be above election_timeout_min_ms",
            ));
        }
        if !(100..=600_000).contains(&self.write_timeout_ms) {
            return Err(ConfigError::invalid(
                "cluster.write_timeout_ms",
                "must be 100 to 600000",
            ));
        }
        if self.kill_switch_wait_ms > 60_000 {
            return Err(ConfigError::invalid(
                "cluster.kill_switch_wait_ms",
                "must be at most 60000",
            ));
        }
        if !(100..=10_000_000).contains(&self.snapshot_every_entries) {
            return Err(ConfigError::invalid(
                "cluster.snapshot_every_entries",
                "must be 100 to 10000000",
            ));
        }
        if self.install_snapshot_timeout_ms < 1000 {
            return Err(ConfigError::invalid(
                "cluster.install_snapshot_timeout_ms",
                "must be at least 1000",
            ));
        }
        Ok(())
    }

    /// openraft's configuration from these settings.
    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: "vhsm".to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            // Entries kept below a snapshot for slightly lagging followers.
            max_in_snapshot_log_to_keep: (self.snapshot_every_entries / 5).clamp(10, 1000),
            // 1 MiB chunks: raw bytes in our transport.
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_build_a_raft_config() {
        let c = ClusterConfig::default();
        c.validate().unwrap();
        let r = c.raft_config().unwrap();
        assert_eq!(r.install_snapshot_timeout, 60_000);
    }

    #[test]
    fn bad_values_name_their_field() {
        type Change = fn(&mut ClusterConfig);
        let cases: [(Change, &str); 5] = [
            (|c| c.lease_ms = 10, "cluster.lease_ms"),
            (
                |c| c.advertise = Some("http://x:1".into()),
                "cluster.advertise",
            ),
            (|c| c.peer_cert = Some("/x".into()), "cluster.peer_cert"),
            (|c| c.heartbeat_ms = 400, "cluster.heartbeat_ms"),
            (
                |c| c.election_timeout_max_ms = 100,
                "cluster.election_timeout_max_ms",
            ),
        ];
        for (change, field) in cases {
            let mut c = ClusterConfig::default();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }
}
