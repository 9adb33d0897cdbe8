//! The xks-front main config file (TOML): parsing and validation with errors naming the bad field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::limits::LimitsConfig;

/// Most vhsm nodes (the spec allows 1..=10 `ekmFleetDetails` entries).
pub const MAX_NODES: usize = 10;

use crate::config_error;
pub use crate::config_error::ConfigError;

/// The whole main config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Key stores, credentials, rules and rates (reloaded on SIGHUP).
    pub keystores_file: PathBuf,
    /// `xksProxyFleetSize` reported in GetHealthStatus.
    #[serde(default = "default_fleet_size")]
    pub fleet_size: u32,
    /// AWS region in the SigV4 credential scope.
    pub region: String,
    /// HTTPS listener.
    pub listen: ListenConfig,
    /// Server certificate; optional only with `listen.plain_http = true`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// The vhsm HA group.
    pub vhsm: VhsmConfig,
    /// Load limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Socket address to bind.
    pub addr: SocketAddr,
    /// Serve plain HTTP (local testing only).
    #[serde(default)]
    pub plain_http: bool,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// mTLS: the only CA whose client certificates are accepted.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// mTLS: the only accepted client certificate subject CNs.
    #[serde(default)]
    pub client_subjects: Vec<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Plain-HTTP listener for GET /metrics.
    pub addr: SocketAddr,
}

/// `[vhsm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhsmConfig {
    /// CA that signed the vhsmd server certificates.
    pub ca: PathBuf,
    /// Our client certificate (role `crypto`).
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// Budget for all vhsm calls of one XKS request, in ms (10..=240).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Dedicated key used by the deep health check.
    pub health_key_id: String,
    /// Deep health check period in seconds (1..=60).
    #[serde(default = "default_health_cache_secs")]
    pub health_cache_secs: u64,
    /// The nodes (1..=10).
    pub nodes: Vec<NodeConfig>,
}

/// `[[vhsm.nodes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node id reported in `ekmFleetDetails`.
    pub id: String,
    /// `https://host:port` (mTLS), or `unix:/absolute/path` for a co-located vhsmd's `[unix]`
    /// socket (no TLS: vhsmd authenticates our uid through the kernel).
    pub endpoint: String,
    /// TLS name expected in the node's certificate (required for `https://`, ignored for
    /// `unix:`).
    #[serde(default)]
    pub server_name: String,
}

/// Longest Unix socket path (`sockaddr_un.sun_path` is 108 bytes with the NUL).
pub const MAX_UNIX_PATH_LEN: usize = 107;

impl NodeConfig {
    /// The socket path of a `unix:/absolute/path` endpoint, `None` for `https://`.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.endpoint
            .strip_prefix("unix:")
            .map(std::path::Path::new)
    }
}

fn default_fleet_size() -> u32 {
    1
}
fn default_deadline_ms() -> u64 {
    150
}
fn default_health_cache_secs() -> u64 {
    30
}

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = config_error::read(path)?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` only names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = config_error::parse_toml(text, &path.display().to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; the first bad field is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fleet_size == 0 {
            return Err(ConfigError::invalid("fleet_size", "must be at least 1"));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::invalid(
                "region",
                "must look like an AWS region, e.g. us-east-1",
            ));
        }
        match (&self.tls, self.listen.plain_http) {
            (None, false) => {
                return Err(ConfigError::invalid(
                    "tls",
                    "required unless listen.plain_http = true",
                ));
            }
            (Some(tls), _) => {
                if tls.client_ca.is_none() && !tls.client_subjects.is_empty() {
                    return Err(ConfigError::invalid(
                        "tls.client_subjects",
                        "needs tls.client_ca",
                    ));
                }
                if tls.client_ca.is_some() && tls.client_subjects.is_empty() {
                    return Err(ConfigError::invalid(
                        "tls.client_subjects",
                        "must list at least one subject CN when tls.client_ca is set",
                    ));
                }
                if tls.client_subjects.iter().any(|s| s.is_empty()) {
                    return Err(ConfigError::invalid("tls.client_subjects", "empty subject"));
                }
            }
            (None, true) => {}
        }
        let v = &self.vhsm;
        if !(10..=240).contains(&v.deadline_ms) {
            return Err(ConfigError::invalid(
                "vhsm.deadline_ms",
                "must be within 10..=240",
            ));
        }
        if !(1..=60).contains(&v.health_cache_secs) {
            return Err(ConfigError::invalid(
                "vhsm.health_cache_secs",
                "must be within 1..=60",
            ));
        }
        if !valid_id(&v.health_key_id, 128) {
            return Err(ConfigError::invalid(
                "vhsm.health_key_id",
                "must match [A-Za-z0-9._-]{1,128}",
            ));
        }
        if v.nodes.is_empty() || v.nodes.len() > MAX_NODES {
            return Err(ConfigError::invalid(
                "vhsm.nodes",
                "must list 1 to 10 nodes",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in v.nodes.iter().enumerate() {
            if !valid_id(&n.id, 64) {
                return Err(ConfigError::invalid(
                    format!("vhsm.nodes[{i}].id"),
                    "must match [A-Za-z0-9._-]{1,64}",
                ));
            }
            if !seen.insert(n.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("vhsm.nodes[{i}].id"),
                    "duplicate node id",
                ));
            }
            if let Some(path) = n.unix_path() {
                if !path.is_absolute()
                    || path.file_name().is_none()
                    || path.as_os_str().len() > MAX_UNIX_PATH_LEN
                {
                    return Err(ConfigError::invalid(
                        format!("vhsm.nodes[{i}].endpoint"),
                        "must be an https:// URI or unix:/absolute/path (at most 107 bytes)",
                    ));
                }
                continue;
            }
            if !n.endpoint.starts_with("https://") || n.endpoint.parse::<http::Uri>().is_err() {
                return Err(ConfigError::invalid(
                    format!("vhsm.nodes[{i}].endpoint"),
                    "must be an https:// URI or unix:/absolute/path",
                ));
            }
            if n.server_name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("vhsm.nodes[{i}].server_name"),
                    "must not be empty",
                ));
            }
        }
        self.limits.validate()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
keystores_file = "/etc/xks-front/keystores.toml"
fleet_size = 1
region = "us-east-1"
[listen]
addr = "0.0.0.0:443"
plain_http = false
[tls]
cert = "/etc/xks-front/pki/xks-front.crt"
key = "/etc/xks-front/pki/xks-front.key"
[metrics]
addr = "127.0.0.1:9464"
[vhsm]
ca = "/etc/xks-front/pki/ca.crt"
client_cert = "/etc/xks-front/pki/crypto.crt"
client_key = "/etc/xks-front/pki/crypto.key"
deadline_ms = 150
health_key_id = "xks-health"
health_cache_secs = 30
[[vhsm.nodes]]
id = "vhsm-1"
endpoint = "https://127.0.0.1:7443"
server_name = "vhsmd"
[limits]
max_concurrency = 1024
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn err_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn contract_example_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.vhsm.nodes.len(), 1);
        assert_eq!(c.vhsm.deadline_ms, 150);
        assert_eq!(c.limits.max_concurrency, 1024);
        assert!(c.limits.effective_worker_threads() >= 1);
        assert!(c.tls.unwrap().client_ca.is_none());
    }

    #[test]
    fn worker_threads_are_bounded() {
        let c = parse(&GOOD.replace(
            "max_concurrency = 1024",
            "max_concurrency = 1024\nworker_threads = 2",
        ))
        .unwrap();
        assert_eq!(c.limits.effective_worker_threads(), 2);
        let err = parse(&GOOD.replace(
            "max_concurrency = 1024",
            "max_concurrency = 1024\nworker_threads = 999",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("limits.worker_threads"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let e = err_of(&GOOD.replace("fleet_size = 1", "fleet_size = 1\nbogus = 2"));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("deadline_ms = 150", "deadline_ms = 5", "vhsm.deadline_ms"),
            ("deadline_ms = 150", "deadline_ms = 241", "vhsm.deadline_ms"),
            (
                "health_cache_secs = 30",
                "health_cache_secs = 61",
                "vhsm.health_cache_secs",
            ),
            ("fleet_size = 1", "fleet_size = 0", "fleet_size"),
            ("region = \"us-east-1\"", "region = \"US EAST\"", "region"),
            (
                "max_concurrency = 1024",
                "max_concurrency = 0",
                "limits.max_concurrency",
            ),
            (
                "\"https://127.0.0.1:7443\"",
                "\"http://127.0.0.1:7443\"",
                "vhsm.nodes[0].endpoint",
            ),
            ("id = \"vhsm-1\"", "id = \"bad id\"", "vhsm.nodes[0].id"),
            (
                "health_key_id = \"xks-health\"",
                "health_key_id = \"\"",
                "vhsm.health_key_id",
            ),
        ];
        for (from, to, field) in cases {
            let e = err_of(&GOOD.replace(from, to));
            assert!(e.contains(field), "{to}: {e}");
        }
    }

    #[test]
    fn unix_node_endpoints() {
        let unix = GOOD.replace(
            "endpoint = \"https://127.0.0.1:7443\"\nserver_name = \"vhsmd\"",
            "endpoint = \"unix:/run/vhsm/vhsmd.sock\"",
        );
        let c = parse(&unix).unwrap();
        assert_eq!(
            c.vhsm.nodes[0].unix_path(),
            Some(Path::new("/run/vhsm/vhsmd.sock"))
        );
        assert_eq!(parse(GOOD).unwrap().vhsm.nodes[0].unix_path(), None);
        let long = format!("unix:/{}", "a".repeat(120));
        for bad in ["unix:run/vhsmd.sock", "unix:", "unix:/", long.as_str()] {
            let e = err_of(&unix.replace("unix:/run/vhsm/vhsmd.sock", bad));
            assert!(e.contains("vhsm.nodes[0].endpoint"), "{bad}: {e}");
        }
        // An https node still needs its TLS name.
        let no_name = GOOD.replace("server_name = \"vhsmd\"", "");
        assert!(err_of(&no_name).contains("vhsm.nodes[0].server_name"));
    }

    #[test]
    fn node_count_is_bounded_and_ids_unique() {
        let node =
            "\n[[vhsm.nodes]]\nid = \"vhsm-1\"\nendpoint = \"https://h:1\"\nserver_name = \"v\"\n";
        let e = err_of(&format!("{GOOD}{node}"));
        assert!(e.contains("duplicate"), "{e}");
        let mut many = GOOD.to_string();
        for i in 2..=11 {
            many.push_str(&node.replace("vhsm-1", &format!("n{i}")));
        }
        assert!(err_of(&many).contains("vhsm.nodes"));
    }

    #[test]
    fn tls_rules() {
        let no_tls = GOOD.replace(
            "[tls]\ncert = \"/etc/xks-front/pki/xks-front.crt\"\nkey = \"/etc/xks-front/pki/xks-front.key\"\n",
            "",
        );
        assert!(err_of(&no_tls).contains("`tls`"));
        assert!(parse(&no_tls.replace("plain_http = false", "plain_http = true")).is_ok());
        let subjects_only = GOOD.replace(
            "key = \"/etc/xks-front/pki/xks-front.key\"",
            "key = \"k\"\nclient_subjects = [\"cks.kms.us-east-1.amazonaws.com\"]",
        );
        assert!(err_of(&subjects_only).contains("tls.client_subjects"));
        let ca_only = GOOD.replace(
            "key = \"/etc/xks-front/pki/xks-front.key\"",
            "key = \"k\"\nclient_ca = \"ca.pem\"",
        );
        assert!(err_of(&ca_only).contains("tls.client_subjects"));
    }

    #[test]
    fn deploy_example_parses() {
        let text = include_str!("../../deploy/xks-front.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.vhsm.deadline_ms, 150);
        assert_eq!(c.vhsm.nodes[0].server_name, "vhsmd");
        assert!(!c.listen.plain_http);
    }

    #[test]
    fn missing_file_is_reported() {
        let e = Config::load(Path::new("/nonexistent/xks.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/xks.toml"));
    }
}
