//! `[cluster]`: how this node takes part in the replicated store (absent: a one-member
//! cluster of this node alone, formed on first start).

use std::path::PathBuf;
use std::time::Duration;

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
    /// the change (ms). Default and minimum: the lease bound ([`ClusterConfig::lease_bound`]),
    /// after which a member that has not applied it has certainly stopped serving, so a
    /// returned kill switch holds on every member.
    #[serde(default)]
    pub kill_switch_wait_ms: Option<u64>,
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
            kill_switch_wait_ms: None,
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
        if let Some(wait) = self.kill_switch_wait_ms {
            let bound = self.lease_bound().as_millis();
            if u128::from(wait) < bound || wait > 120_000 {
                return Err(ConfigError::invalid(
                    "cluster.kill_switch_wait_ms",
                    format!(
                        "must be {bound} to 120000: below the lease bound (lease_ms + 1/8 + \
                         50 ms) a lagging member could still serve after a kill switch \
                         returned; remove the key to use the bound"
                    ),
                ));
            }
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

    /// Time after a change is committed by which every member has either applied it or let
    /// its read lease run out: a lease renewed from a read index taken before the commit ends
    /// within `lease_ms` of it; 1/8 of the lease plus 50 ms cover monotonic clocks running at
    /// different rates and scheduling delay. Needs the same `lease_ms` on every member (the
    /// leader refuses a read index to a member whose lease differs).
    pub fn lease_bound(&self) -> Duration {
        let lease = Duration::from_millis(self.lease_ms);
        lease + lease / 8 + Duration::from_millis(50)
    }

    /// How long a kill switch waits for every member (at least [`ClusterConfig::lease_bound`]).
    pub fn kill_switch_wait(&self) -> Duration {
        self.kill_switch_wait_ms
            .map_or_else(|| self.lease_bound(), Duration::from_millis)
            // Validation already refuses a lower value; the bound holds even without it.
            .max(self.lease_bound())
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
    fn the_kill_switch_waits_at_least_the_lease_bound() {
        let mut c = ClusterConfig::default();
        assert_eq!(c.lease_bound(), Duration::from_millis(2300));
        assert_eq!(c.kill_switch_wait(), Duration::from_millis(2300));
        c.kill_switch_wait_ms = Some(5000);
        c.validate().unwrap();
        assert_eq!(c.kill_switch_wait(), Duration::from_millis(5000));
        c.lease_ms = 8000;
        // A lease raised without raising the wait: refused at start.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be 9050 to 120000"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        type Change = fn(&mut ClusterConfig);
        let cases: [(Change, &str); 7] = [
            (
                |c| c.kill_switch_wait_ms = Some(1000),
                "cluster.kill_switch_wait_ms",
            ),
            (
                |c| c.kill_switch_wait_ms = Some(200_000),
                "cluster.kill_switch_wait_ms",
            ),
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
