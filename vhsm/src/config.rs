//! The vhsmd TOML config: parsing (unknown fields rejected) and validation naming the bad field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A config file that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown field, wrong type).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A field has an invalid value; the message starts with the field's dotted name.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted name of the field, e.g. `tls.cert`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The whole daemon configuration (see `deploy/vhsmd.example.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node name reported in Health/Status, `[A-Za-z0-9._-]{1,64}`.
    pub node_id: String,
    /// Directory holding the store (`data_dir/store`); created 0o700.
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listen: ListenConfig,
    /// Server certificate and the CA that client certificates must chain to.
    pub tls: TlsConfig,
    /// Certificate names (CN or DNS SAN) granted each role.
    #[serde(default)]
    pub roles: RolesConfig,
    /// Unseal settings.
    #[serde(default)]
    pub seal: SealConfig,
    /// Key lifecycle settings.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Audit log settings.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Async runtime sizing.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Development-only switches; never set in production.
    #[serde(default)]
    pub dev: DevConfig,
    /// Optional local Unix-socket listener (peer uid -> role); absent = TCP/mTLS only.
    #[serde(default)]
    pub unix: Option<UnixConfig>,
    /// gRPC server limits (streams, concurrency, request time); the defaults are safe.
    #[serde(default)]
    pub grpc_limits: crate::grpc_limits::GrpcLimits,
    /// The replicated store (absent: a one-member cluster of this node).
    #[serde(default)]
    pub cluster: crate::cluster::config::ClusterConfig,
    /// Optional Prometheus endpoint (plain HTTP; keep it on loopback or a management network).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Quorum-approval proposal limits (docs/runbook-approvals.md).
    #[serde(default)]
    pub approvals: ApprovalsConfig,
}

/// `[approvals]`: how long proposals live and how many may wait at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Lifetime of a proposal that does not ask for one (seconds). Default 86400 (24 h).
    #[serde(default = "default_approval_ttl_secs")]
    pub ttl_secs: u64,
    /// Longest lifetime a proposal may ask for (seconds). Default 604800 (7 days), at most
    /// 30 days.
    #[serde(default = "default_approval_max_ttl_secs")]
    pub max_ttl_secs: u64,
    /// Proposals pending at once (a bound on what one admin certificate can make approvers
    /// review). Default 32, 1..=256.
    #[serde(default = "default_approval_max_pending")]
    pub max_pending: usize,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            ttl_secs: default_approval_ttl_secs(),
            max_ttl_secs: default_approval_max_ttl_secs(),
            max_pending: default_approval_max_pending(),
        }
    }
}

fn default_approval_ttl_secs() -> u64 {
    86_400
}

fn default_approval_max_ttl_secs() -> u64 {
    7 * 86_400
}

fn default_approval_max_pending() -> usize {
    32
}

/// Longest `[approvals] max_ttl_secs` (30 days).
pub const MAX_APPROVAL_TTL_SECS: u64 = 30 * 86_400;
/// Largest `[approvals] max_pending`.
pub const MAX_APPROVAL_PENDING: usize = 256;

impl ApprovalsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_APPROVAL_TTL_SECS).contains(&self.max_ttl_secs) {
            return Err(ConfigError::invalid(
                "approvals.max_ttl_secs",
                "must be 1..=2592000 (30 days)",
            ));
        }
        if !(1..=self.max_ttl_secs).contains(&self.ttl_secs) {
            return Err(ConfigError::invalid(
                "approvals.ttl_secs",
                "must be 1..=approvals.max_ttl_secs",
            ));
        }
        if !(1..=MAX_APPROVAL_PENDING).contains(&self.max_pending) {
            return Err(ConfigError::invalid(
                "approvals.max_pending",
                "must be 1..=256",
            ));
        }
        Ok(())
    }
}

/// `[metrics]`: where vhsmd serves `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:port`, e.g. `127.0.0.1:9465`.
    pub addr: String,
}

/// `[unix]`: a local Unix-socket listener serving the same services; the kernel authenticates
/// the peer (SO_PEERCRED) and its uid selects the role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixConfig {
    /// Absolute socket path; created 0o660 (the parent directory must exist); a stale socket
    /// file is removed at start.
    pub path: PathBuf,
    /// Peer uids granted the `crypto` role.
    #[serde(default)]
    pub crypto_uids: Vec<u32>,
    /// Peer uids granted the `admin` role.
    #[serde(default)]
    pub admin_uids: Vec<u32>,
    /// Peer uids granted the `auditor` role.
    #[serde(default)]
    pub auditor_uids: Vec<u32>,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Async worker threads; 0 = half the CPUs (at least 1), since vhsmd shares the
    /// appliance with xks-front. Cross-thread wake-ups cost more than they give on small hosts.
    #[serde(default)]
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// The number of worker threads to start.
    pub fn effective_worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        (cpus / 2).max(1)
    }
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `host:port` to bind, e.g. `127.0.0.1:7443`.
    pub addr: String,
}

/// `[tls]`: mutual TLS only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM server certificate chain.
    pub cert: PathBuf,
    /// PEM server private key.
    pub key: PathBuf,
    /// PEM CA certificate(s) client certificates must chain to.
    pub client_ca: PathBuf,
}

/// `[roles]`: certificate CN or DNS SAN → role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Names granted the `crypto` role (xks-front).
    #[serde(default)]
    pub crypto: Vec<String>,
    /// Names granted the `admin` role.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Names granted the `auditor` role.
    #[serde(default)]
    pub auditor: Vec<String>,
    /// Names granted the `peer` role (the other nodes of the cluster; Raft traffic only).
    #[serde(default)]
    pub peer: Vec<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// What an unseal does when the audit log does not continue its sealed anchor (records
    /// cut, rewritten or forged while sealed): `refuse` (default) or `alarm` (unseal and record
    /// a signed `audit.anchor_mismatch`; for recovery after an investigation).
    #[serde(default)]
    pub on_anchor_mismatch: OnAnchorMismatch,
}

/// `[audit] on_anchor_mismatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAnchorMismatch {
    /// Refuse to unseal.
    #[default]
    Refuse,
    /// Unseal and record the mismatch.
    Alarm,
}

impl OnAnchorMismatch {
    /// The core's policy.
    pub fn policy(self) -> vhsm_core::AnchorMismatch {
        match self {
            OnAnchorMismatch::Refuse => vhsm_core::AnchorMismatch::Refuse,
            OnAnchorMismatch::Alarm => vhsm_core::AnchorMismatch::Alarm,
        }
    }
}

/// `[seal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// A partial quorum unseal is discarded after this many seconds without a new share.
    #[serde(default = "default_partial_unseal_timeout_secs")]
    pub partial_unseal_timeout_secs: u64,
    /// A staged rekey must be committed within this many seconds, else it is discarded.
    #[serde(default = "default_rekey_staging_ttl_secs")]
    pub rekey_staging_ttl_secs: u64,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            partial_unseal_timeout_secs: default_partial_unseal_timeout_secs(),
            rekey_staging_ttl_secs: default_rekey_staging_ttl_secs(),
        }
    }
}

fn default_partial_unseal_timeout_secs() -> u64 {
    600
}

fn default_rekey_staging_ttl_secs() -> u64 {
    900
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Smallest waiting period a ScheduleKeyDeletion may ask for (days).
    #[serde(default = "default_min_deletion_waiting_days")]
    pub min_deletion_waiting_days: u32,
    /// How often keys whose deletion is due are destroyed (seconds).
    #[serde(default = "default_deletion_check_secs")]
    pub deletion_check_secs: u64,
    /// AES-GCM encryptions allowed per key version, all nodes together (at most 2^32, the
    /// NIST SP 800-38D bound for random IVs).
    #[serde(default = "default_gcm_invocation_limit")]
    pub gcm_invocation_limit: u64,
    /// Encryptions a node reserves at a time through the cluster (one replicated write each).
    #[serde(default = "default_gcm_reservation_block")]
    pub gcm_reservation_block: u64,
    /// From this share of the limit on (percent), every reservation logs a warning.
    #[serde(default = "default_gcm_warn_percent")]
    pub gcm_warn_percent: u8,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            min_deletion_waiting_days: default_min_deletion_waiting_days(),
            deletion_check_secs: default_deletion_check_secs(),
            gcm_invocation_limit: default_gcm_invocation_limit(),
            gcm_reservation_block: default_gcm_reservation_block(),
            gcm_warn_percent: default_gcm_warn_percent(),
        }
    }
}

impl KeysConfig {
    /// The core's GCM limits from these settings.
    pub fn gcm_limits(&self) -> vhsm_core::GcmLimits {
        vhsm_core::GcmLimits {
            limit: self.gcm_invocation_limit,
            block: self.gcm_reservation_block,
            warn_percent: self.gcm_warn_percent,
        }
    }
}

fn default_gcm_invocation_limit() -> u64 {
    vhsm_core::GcmLimits::default().limit
}

fn default_gcm_reservation_block() -> u64 {
    vhsm_core::GcmLimits::default().block
}

fn default_gcm_warn_percent() -> u8 {
    vhsm_core::GcmLimits::default().warn_percent
}

fn default_min_deletion_waiting_days() -> u32 {
    7
}

fn default_deletion_check_secs() -> u64 {
    60
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// `[dev]`: never in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Reduced Argon2id parameters (tests and the dev quick start).
    #[serde(default)]
    pub insecure_fast_kdf: bool,
    /// Allows `keys.min_deletion_waiting_days = 0`.
    #[serde(default)]
    pub allow_short_deletion: bool,
}

/// Longest `[keys] deletion_check_secs` (one day).
pub const MAX_DELETION_CHECK_SECS: u64 = 86_400;

/// The log levels `[log] level` accepts.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl Config {
    /// Reads, parses and validates a config file (the files it names must exist).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.message().to_owned()))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_node_id(&self.node_id) {
            return Err(ConfigError::invalid(
                "node_id",
                "must match [A-Za-z0-9._-]{1,64}",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        self.listen_addr()?;
        self.grpc_limits
            .validate()
            .map_err(|(field, reason)| ConfigError::invalid(field, reason))?;
        if self.runtime.worker_threads > 256 {
            return Err(ConfigError::invalid(
                "runtime.worker_threads",
                "must be 0 (auto) to 256",
            ));
        }
        check_file("tls.cert", &self.tls.cert)?;
        check_file("tls.key", &self.tls.key)?;
        check_file("tls.client_ca", &self.tls.client_ca)?;
        self.validate_roles()?;
        if let Some(unix) = &self.unix {
            unix.validate()?;
        }
        self.cluster.validate()?;
        if let Some(m) = &self.metrics {
            m.addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid("metrics.addr", "must be an IP:port socket address")
            })?;
        }
        if let Some(p) = &self.cluster.peer_cert {
            check_file("cluster.peer_cert", p)?;
        }
        if let Some(p) = &self.cluster.peer_key {
            check_file("cluster.peer_key", p)?;
        }
        if let Some(p) = &self.cluster.peer_ca {
            check_file("cluster.peer_ca", p)?;
        }
        if self.seal.partial_unseal_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "seal.partial_unseal_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.seal.rekey_staging_ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "seal.rekey_staging_ttl_secs",
                "must be at least 1",
            ));
        }
        if self.keys.min_deletion_waiting_days == 0
            && !(self.dev.allow_short_deletion || self.dev.insecure_fast_kdf)
        {
            return Err(ConfigError::invalid(
                "keys.min_deletion_waiting_days",
                "must be at least 1 (0 needs [dev] allow_short_deletion = true)",
            ));
        }
        self.approvals.validate()?;
        if self.keys.min_deletion_waiting_days > 365 {
            return Err(ConfigError::invalid(
                "keys.min_deletion_waiting_days",
                "must be at most 365",
            ));
        }
        // An unbounded period would overflow the reaper's next deadline (`Instant + period`
        // panics) and silently stop key destruction.
        if !(1..=MAX_DELETION_CHECK_SECS).contains(&self.keys.deletion_check_secs) {
            return Err(ConfigError::invalid(
                "keys.deletion_check_secs",
                "must be 1 to 86400 (one day)",
            ));
        }
        if let Err(why) = self.keys.gcm_limits().validate() {
            return Err(ConfigError::invalid("keys.gcm_invocation_limit", why));
        }
        if !LOG_LEVELS.contains(&self.log.level.as_str()) {
            return Err(ConfigError::invalid(
                "log.level",
                "must be one of error, warn, info, debug, trace",
            ));
        }
        Ok(())
    }

    /// How the other nodes reach this one: `[cluster] advertise`, or `https://<listen.addr>`.
    pub fn advertise(&self) -> String {
        self.cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.listen.addr))
    }

    /// The listen address as a socket address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .addr
            .parse()
            .map_err(|_| ConfigError::invalid("listen.addr", "must be an IP:port socket address"))
    }

    /// Where the sled store lives.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// Where the current Raft snapshot lives (one file, beside the store).
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("raft-snapshot")
    }

    fn validate_roles(&self) -> Result<(), ConfigError> {
        let lists: [(&'static str, &Vec<String>); 4] = [
            ("roles.crypto", &self.roles.crypto),
            ("roles.admin", &self.roles.admin),
            ("roles.auditor", &self.roles.auditor),
            ("roles.peer", &self.roles.peer),
        ];
        let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
        for (field, names) in lists {
            for name in names {
                if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                    return Err(ConfigError::invalid(
                        field,
                        "names must be 1-255 printable characters",
                    ));
                }
                if let Some(other) = seen.insert(name.as_str(), field) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("name {name:?} is already listed in {other}"),
                    ));
                }
            }
        }
        if self.roles.admin.is_empty() {
            return Err(ConfigError::invalid(
                "roles.admin",
                "at least one name is needed (no one could initialize or unseal)",
            ));
        }
        Ok(())
    }
}

impl UnixConfig {
    /// Checks the socket path and that no uid is listed twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.is_absolute() {
            return Err(ConfigError::invalid(
                "unix.path",
                "must be an absolute path",
            ));
        }
        if self.path.file_name().is_none() {
            return Err(ConfigError::invalid("unix.path", "must name a socket file"));
        }
        // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
        if self.path.as_os_str().len() > 107 {
            return Err(ConfigError::invalid(
                "unix.path",
                "must be at most 107 bytes long",
            ));
        }
        match self.path.parent().map(std::fs::metadata) {
            Some(Ok(m)) if m.is_dir() => {}
            _ => {
                return Err(ConfigError::invalid(
                    "unix.path",
                    "parent directory does not exist",
                ))
            }
        }
        let lists: [(&'static str, &Vec<u32>); 3] = [
            ("unix.crypto_uids", &self.crypto_uids),
            ("unix.admin_uids", &self.admin_uids),
            ("unix.auditor_uids", &self.auditor_uids),
        ];
        let mut seen: BTreeMap<u32, &'static str> = BTreeMap::new();
        for (field, uids) in lists {
            for uid in uids {
                if let Some(other) = seen.insert(*uid, field) {
                    return Err(ConfigError::invalid(
                        field,
                        format!("uid {uid} is already listed in {other}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(crate) fn check_file(field: &'static str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(field, "not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::invalid(field, "file not found"))
        }
        Err(e) => Err(ConfigError::invalid(field, format!("cannot read: {e}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn with_files() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["s.crt", "s.key", "ca.crt"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let d = dir.path().display();
        let text = format!(
            r#"
node_id = "vhsm-1"
data_dir = "{d}/data"
[listen]
addr = "127.0.0.1:7443"
[tls]
cert = "{d}/s.crt"
key = "{d}/s.key"
client_ca = "{d}/ca.crt"
[roles]
crypto = ["xks-front"]
admin = ["admin"]
auditor = ["auditor"]
"#
        );
        (dir, text)
    }

    fn field_of(err: ConfigError) -> &'static str {
        match err {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let (_d, text) = with_files();
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.keys.min_deletion_waiting_days, 7);
        assert_eq!(c.seal.partial_unseal_timeout_secs, 600);
        assert_eq!(c.seal.rekey_staging_ttl_secs, 900);
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(!c.dev.insecure_fast_kdf);
        assert!(c.store_dir().ends_with("data/store"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let (_d, text) = with_files();
        let err = Config::parse(&format!("{text}\n[log]\nfromat = \"json\"\n")).unwrap_err();
        assert!(err.to_string().contains("fromat"), "{err}");
        let err = Config::parse(&format!("bogus = 1\n{text}")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
    }

    #[test]
    fn runtime_worker_threads_default_and_bounds() {
        let (_d, text) = with_files();
        let c = Config::parse(&text).unwrap();
        assert!(c.runtime.effective_worker_threads() >= 1);
        let c = Config::parse(&format!("{text}\n[runtime]\nworker_threads = 3\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.runtime.effective_worker_threads(), 3);
        let c = Config::parse(&format!("{text}\n[runtime]\nworker_threads = 1000\n")).unwrap();
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "runtime.worker_threads"
        );
    }

    #[test]
    fn bad_node_id_is_named() {
        let (_d, text) = with_files();
        let text = text.replace("vhsm-1", "vhsm 1");
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(err.to_string(), "node_id: must match [A-Za-z0-9._-]{1,64}");
        let long = "a".repeat(65);
        let (_d2, text2) = with_files();
        let c = Config::parse(&text2.replace("vhsm-1", &long)).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "node_id");
    }

    #[test]
    fn bad_listen_addr_is_named() {
        let (_d, text) = with_files();
        let c = Config::parse(&text.replace("127.0.0.1:7443", "localhost")).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "listen.addr");
    }

    #[test]
    fn missing_tls_files_are_named() {
        let (d, text) = with_files();
        std::fs::remove_file(d.path().join("s.crt")).unwrap();
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(err.to_string(), "tls.cert: file not found");
        std::fs::write(d.path().join("s.crt"), "x").unwrap();
        std::fs::remove_file(d.path().join("ca.crt")).unwrap();
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(err.to_string(), "tls.client_ca: file not found");
        std::fs::remove_file(d.path().join("s.key")).unwrap();
        std::fs::create_dir(d.path().join("s.key")).unwrap();
        let err = Config::parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(err.to_string(), "tls.key: not a regular file");
    }

    #[test]
    fn duplicate_role_name_is_refused() {
        let (_d, text) = with_files();
        let c = Config::parse(&text.replace(r#"auditor = ["auditor"]"#, r#"auditor = ["admin"]"#))
            .unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().starts_with("roles.auditor: name \"admin\""),
            "{err}"
        );
    }

    #[test]
    fn empty_admin_role_is_refused() {
        let (_d, text) = with_files();
        let c = Config::parse(&text.replace(r#"admin = ["admin"]"#, "admin = []")).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "roles.admin");
        let c = Config::parse(&text.replace(r#"admin = ["admin"]"#, r#"admin = [""]"#)).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "roles.admin");
    }

    #[test]
    fn approval_limits_are_bounded() {
        let (_d, text) = with_files();
        for (section, field) in [
            ("ttl_secs = 0", "approvals.ttl_secs"),
            ("ttl_secs = 700000", "approvals.ttl_secs"),
            ("max_ttl_secs = 0", "approvals.max_ttl_secs"),
            ("max_ttl_secs = 2592001", "approvals.max_ttl_secs"),
            ("max_pending = 0", "approvals.max_pending"),
            ("max_pending = 257", "approvals.max_pending"),
        ] {
            let c = Config::parse(&format!("{text}\n[approvals]\n{section}\n")).unwrap();
            assert_eq!(field_of(c.validate().unwrap_err()), field, "{section}");
        }
        let c = Config::parse(&format!("{text}\n[approvals]\nttl_secs = 60\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.approvals.max_pending, 32);
    }

    #[test]
    fn zero_deletion_days_needs_dev_switch() {
        let (_d, text) = with_files();
        let base = format!("{text}\n[keys]\nmin_deletion_waiting_days = 0\n");
        let c = Config::parse(&base).unwrap();
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "keys.min_deletion_waiting_days"
        );
        let c = Config::parse(&format!("{base}[dev]\nallow_short_deletion = true\n")).unwrap();
        c.validate().unwrap();
        let c = Config::parse(&format!(
            "{text}\n[keys]\nmin_deletion_waiting_days = 400\n"
        ))
        .unwrap();
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "keys.min_deletion_waiting_days"
        );
        for bad in ["0", "86401", "9223372036854775807"] {
            let c =
                Config::parse(&format!("{text}\n[keys]\ndeletion_check_secs = {bad}\n")).unwrap();
            assert_eq!(
                field_of(c.validate().unwrap_err()),
                "keys.deletion_check_secs",
                "{bad}"
            );
        }
        let c = Config::parse(&format!("{text}\n[keys]\ndeletion_check_secs = 86400\n")).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn bad_log_level_and_format_are_refused() {
        let (_d, text) = with_files();
        let c = Config::parse(&format!("{text}\n[log]\nlevel = \"loud\"\n")).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "log.level");
        let err = Config::parse(&format!("{text}\n[log]\nformat = \"xml\"\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
        let c = Config::parse(&format!("{text}\n[log]\nformat = \"json\"\n")).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn audit_anchor_mismatch_policy_parses_and_defaults_to_refuse() {
        let (_d, text) = with_files();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.audit.on_anchor_mismatch, OnAnchorMismatch::Refuse);
        let c = Config::parse(&format!(
            "{text}\n[audit]\non_anchor_mismatch = \"alarm\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.audit.on_anchor_mismatch.policy(),
            vhsm_core::AnchorMismatch::Alarm
        );
        let err = Config::parse(&format!(
            "{text}\n[audit]\non_anchor_mismatch = \"ignore\"\n"
        ))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
    }

    #[test]
    fn zero_partial_unseal_timeout_is_refused() {
        let (_d, text) = with_files();
        let c = Config::parse(&format!(
            "{text}\n[seal]\npartial_unseal_timeout_secs = 0\n"
        ))
        .unwrap();
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "seal.partial_unseal_timeout_secs"
        );
    }

    #[test]
    fn zero_rekey_staging_ttl_is_refused() {
        let (_d, text) = with_files();
        let c = Config::parse(&format!("{text}\n[seal]\nrekey_staging_ttl_secs = 0\n")).unwrap();
        assert_eq!(
            field_of(c.validate().unwrap_err()),
            "seal.rekey_staging_ttl_secs"
        );
    }

    #[test]
    fn example_config_parses_with_every_option() {
        let c = Config::parse(include_str!("../../deploy/vhsmd.example.toml")).unwrap();
        assert_eq!(c.node_id, "vhsm-1");
        assert_eq!(c.listen.addr, "127.0.0.1:7443");
        assert_eq!(c.roles.crypto, ["xks-front"]);
        assert_eq!(c.keys.deletion_check_secs, 60);
        assert!(!c.dev.insecure_fast_kdf && !c.dev.allow_short_deletion);
        // Only the PKI files are missing on a build machine.
        let err = c.validate().unwrap_err();
        assert!(err.to_string().starts_with("tls."), "{err}");
    }

    #[test]
    fn unix_section_is_optional_and_validated() {
        let (d, text) = with_files();
        assert!(Config::parse(&text).unwrap().unix.is_none());
        let sock = d.path().join("vhsmd.sock");
        let ok = format!(
            "{text}\n[unix]\npath = \"{}\"\ncrypto_uids = [998]\nadmin_uids = [0]\n",
            sock.display()
        );
        let c = Config::parse(&ok).unwrap();
        c.validate().unwrap();
        let u = c.unix.as_ref().unwrap();
        assert_eq!(u.crypto_uids, [998]);
        assert_eq!(u.admin_uids, [0]);
        assert!(u.auditor_uids.is_empty());

        let c = Config::parse(&format!("{text}\n[unix]\npath = \"run/vhsmd.sock\"\n")).unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(err.to_string(), "unix.path: must be an absolute path");
        let c = Config::parse(&format!(
            "{text}\n[unix]\npath = \"/nonexistent-dir/vhsmd.sock\"\n"
        ))
        .unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "unix.path");
        let long = format!("/{}", "a".repeat(120));
        let c = Config::parse(&format!("{text}\n[unix]\npath = \"{long}\"\n")).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "unix.path");
        let c = Config::parse(&format!("{text}\n[unix]\npath = \"/\"\n")).unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "unix.path");
    }

    #[test]
    fn unix_duplicate_uid_across_roles_is_refused() {
        let (d, text) = with_files();
        let sock = d.path().join("vhsmd.sock");
        let c = Config::parse(&format!(
            "{text}\n[unix]\npath = \"{}\"\ncrypto_uids = [998]\nauditor_uids = [5, 998]\n",
            sock.display()
        ))
        .unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix.auditor_uids: uid 998 is already listed in unix.crypto_uids"
        );
        let c = Config::parse(&format!(
            "{text}\n[unix]\npath = \"{}\"\nadmin_uids = [0, 0]\n",
            sock.display()
        ))
        .unwrap();
        assert_eq!(field_of(c.validate().unwrap_err()), "unix.admin_uids");
        let err = Config::parse(&format!(
            "{text}\n[unix]\npath = \"{}\"\nmode = 438\n",
            sock.display()
        ))
        .unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
        let err = Config::parse(&format!(
            "{text}\n[unix]\npath = \"{}\"\ncrypto_uids = [-1]\n",
            sock.display()
        ))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)));
    }

    #[test]
    fn load_reports_unreadable_file() {
        let err = Config::load(Path::new("/nonexistent/vhsmd.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let (d, text) = with_files();
        let p = d.path().join("vhsmd.toml");
        std::fs::write(&p, text).unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.node_id, "vhsm-1");
    }
}
