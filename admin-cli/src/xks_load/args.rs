//! The clap arguments of `xks load` and their checks (which options each operation needs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::errors::{CliError, CliResult};

/// The XKS operation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// GetHealthStatus (`POST …/kms/xks/v1/health`).
    Health,
    /// GetKeyMetadata (`POST …/keys/KEY/metadata`).
    Metadata,
    /// Encrypt; the CDIV of every answer is recomputed.
    Encrypt,
    /// Decrypt of one ciphertext made at start-up; every plaintext is compared.
    Decrypt,
    /// Encrypt and Decrypt in turn on each connection; each Decrypt opens the connection's last
    /// ciphertext and must return the plaintext.
    Mixed,
}

impl Op {
    /// The name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Health => "health",
            Op::Metadata => "metadata",
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
            Op::Mixed => "mixed",
        }
    }

    /// Whether the operation names a key.
    pub fn needs_key(self) -> bool {
        !matches!(self, Op::Health)
    }
}

/// Load-test an XKS endpoint (ours or any other) the way KMS calls it; every answer verified.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Load-test an XKS proxy endpoint the way AWS KMS calls it (operator).\n\n\
Works against any XKS proxy, not only this appliance's xks-front. Every request is signed with \
SigV4 (AWS's own signer, service kms-xks-proxy) with the key store's credential (--proxy-config, \
the JSON printed by `xks credentials new`, or --access-key-id with --secret-file) and sent over \
keep-alive HTTP/1.1 TLS connections trusting --tls-ca, presenting --client-cert if given.\n\n\
Closed loop (default): each of --connections sends its next request when the previous answer \
arrived. Open loop (--rate R): R requests/s in total on a fixed schedule; latency counts from the \
scheduled send, so a server that falls behind shows as growing latency, not as a lower rate.\n\n\
Every answer is verified: an Encrypt's CDIV is recomputed (SHA-256 over AAD, \
ciphertextMetadata, IV, ciphertext and tag), field lengths are checked, a Decrypt must return \
the plaintext, metadata and health answers must have their required fields.\n\n\
A progress line is drawn on stderr when it is a terminal; at the end a summary goes to stderr \
(counts by HTTP status and errorName, throughput, p50/p90/p99/p99.9/max latency) and one JSON \
line to stdout. Exit 0 only if every request was answered 200 and verified; 8 if an answer \
failed verification, 2 if the endpoint cannot be reached, 1 otherwise.\n\n\
Against the quick start: `set -a; . .dev/appliance.env; set +a; vhsm-admin xks load --op \
encrypt` (XKS_URL, XKS_URI_PREFIX, XKS_ACCESS_KEY_ID, XKS_SECRET_ACCESS_KEY_FILE, XKS_CA_FILE \
and XKS_KEY_ID fill the flags)."
)]
pub struct XksLoadArgs {
    /// The XKS endpoint, `https://HOST[:PORT]`, optionally with the URI path
    /// (`https://HOST:PORT/PREFIX/kms/xks/v1`).
    #[arg(long, env = "XKS_URL", value_name = "URL")]
    pub url: String,

    /// The URI path prefix in front of /kms/xks/v1 (e.g. /example); default: the path of --url,
    /// else the XksProxyUriPath of --proxy-config, else none.
    #[arg(long, env = "XKS_URI_PREFIX", value_name = "PREFIX")]
    pub uri_prefix: Option<String>,

    /// The KMS proxy configuration JSON printed by `xks credentials new` (access key id, secret and
    /// URI path). Alternative to --access-key-id and --secret-file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["access_key_id", "secret_file"])]
    pub proxy_config: Option<PathBuf>,

    /// SigV4 access key id of the key store.
    #[arg(
        long,
        env = "XKS_ACCESS_KEY_ID",
        value_name = "ID",
        requires = "secret_file"
    )]
    pub access_key_id: Option<String>,

    /// File holding the secret access key (one line, as written by `xks credentials new
    /// --secret-out`).
    #[arg(
        long,
        env = "XKS_SECRET_ACCESS_KEY_FILE",
        value_name = "FILE",
        requires = "access_key_id"
    )]
    pub secret_file: Option<PathBuf>,

    /// AWS region in the SigV4 credential scope (the key store's region).
    #[arg(long, default_value = "us-east-1", value_name = "REGION")]
    pub region: String,

    /// PEM CA certificate(s) to trust for the endpoint's server certificate.
    #[arg(
        long,
        env = "XKS_CA_FILE",
        value_name = "FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub tls_ca: PathBuf,

    /// PEM client certificate chain to present (for an endpoint that requires mutual TLS).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Dial this address instead of resolving the URL's host (like curl --resolve); the Host
    /// header, the signature and TLS still use the URL's host.
    #[arg(long, value_name = "IP:PORT")]
    pub connect_to: Option<SocketAddr>,

    /// Operation to send.
    #[arg(long, value_enum, default_value_t = Op::Encrypt)]
    pub op: Op,

    /// External key id (needed by every operation but health).
    #[arg(long, env = "XKS_KEY_ID", value_name = "ID")]
    pub key_id: Option<String>,

    /// Plaintext bytes per Encrypt (random, the same for the whole run).
    #[arg(long, default_value_t = 32, value_name = "BYTES")]
    pub payload_bytes: usize,

    /// Additional authenticated data bytes per Encrypt / Decrypt (0 = none sent).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub aad_bytes: usize,

    /// Keep-alive HTTPS connections (closed loop: each sends its next request when the answer
    /// to the previous one arrived).
    #[arg(long, short = 'c', default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Open loop: send this many requests per second in total, on a fixed schedule spread over
    /// the connections; latency counts from the scheduled send, so queueing is not hidden.
    #[arg(long, value_name = "REQ_PER_SEC")]
    pub rate: Option<f64>,

    /// Measured seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,

    /// Seconds of load before the measurement starts (not counted).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub warmup: f64,

    /// A request without an answer after this long counts as a timeout and its connection is
    /// replaced.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,

    /// Also report the CPU time this process used per request (repeatable; e.g. xks-front's and
    /// vhsmd's pids when they run on this host). Linux /proc only.
    #[arg(long = "cpu-pid", value_name = "PID")]
    pub cpu_pids: Vec<u32>,
}

/// Longest plaintext KMS sends (the spec's minimum a proxy must accept is 4,300 bytes).
const MAX_PAYLOAD: usize = 64 * 1024;
/// Longest AAD the §6.2 AAD encoding can carry.
const MAX_AAD: usize = 65_535;

impl XksLoadArgs {
    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> CliResult<()> {
        if self.op.needs_key() && self.key_id.as_deref().is_none_or(str::is_empty) {
            return Err(CliError::usage(format!(
                "--op {} needs --key-id (or XKS_KEY_ID)",
                self.op.as_str()
            )));
        }
        if self.proxy_config.is_none() && self.access_key_id.is_none() {
            return Err(CliError::usage(
                "no credential: give --proxy-config FILE, or --access-key-id ID with --secret-file FILE",
            ));
        }
        if self.payload_bytes == 0 || self.payload_bytes > MAX_PAYLOAD {
            return Err(CliError::usage(format!(
                "--payload-bytes must be 1 to {MAX_PAYLOAD}"
            )));
        }
        if self.aad_bytes > MAX_AAD {
            return Err(CliError::usage(format!(
                "--aad-bytes must be at most {MAX_AAD}"
            )));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return Err(CliError::usage(
                "--duration must be more than 0 and at most 86400 s",
            ));
        }
        if !(self.warmup.is_finite() && (0.0..=3_600.0).contains(&self.warmup)) {
            return Err(CliError::usage("--warmup must be 0 to 3600 s"));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
                return Err(CliError::usage("--rate must be more than 0 requests/s"));
            }
        }
        if self.timeout_ms == 0 {
            return Err(CliError::usage("--timeout-ms must be at least 1"));
        }
        Ok(())
    }
}
