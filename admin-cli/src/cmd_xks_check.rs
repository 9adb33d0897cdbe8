//! `xks check`: a one-shot probe of an XKS proxy from where KMS calls it — TLS, every
//! operation, every error a caller can provoke, latency against KMS's 250 ms — as a pass/fail
//! table and an exit code. Works against any XKS proxy, not only xks-front.

mod api_checks;
mod http;
mod report;
mod target;
mod tls_scan;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::errors::{CliError, CliResult, ExitKind};
use crate::output::{to_json, OutputFormat};
use report::{Check, Report, Verdict};
use target::{Credential, Endpoint};

/// `xks check` arguments. Defaults come from the variables of `.dev/appliance.env`.
#[derive(Debug, Args)]
pub struct XksCheckArgs {
    /// The proxy as KMS knows it: https://HOST[:PORT][/PREFIX]/kms/xks/v1 (endpoint + URI
    /// path). Without /kms/xks/v1, --uri-prefix and /kms/xks/v1 are appended.
    #[arg(long, env = "XKS_URL", value_name = "URL")]
    pub url: String,

    /// Path prefix inserted before /kms/xks/v1 when --url does not end with it (e.g. /example).
    #[arg(
        long,
        env = "XKS_URI_PREFIX",
        default_value = "",
        value_name = "PREFIX"
    )]
    pub uri_prefix: String,

    /// SigV4 access key id of the key store's credential.
    #[arg(long, env = "XKS_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: String,

    /// File holding the secret access key (as written by `xks credentials new --secret-out`).
    /// Without it the secret is read from the environment variable XKS_SECRET_ACCESS_KEY; it is
    /// never accepted on the command line.
    #[arg(long, env = "XKS_SECRET_ACCESS_KEY_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// SigV4 region: the KMS key store's region.
    #[arg(long, env = "XKS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// CA certificates to trust for the proxy's server certificate (PEM).
    #[arg(
        long,
        env = "XKS_CA_FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt",
        value_name = "FILE"
    )]
    pub ca_file: PathBuf,

    /// Client certificate for mutual TLS (PEM); also checks that strangers are refused.
    #[arg(long, requires = "client_key", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,

    /// Private key of --client-cert (PEM).
    #[arg(long, requires = "client_cert", value_name = "FILE")]
    pub client_key: Option<PathBuf>,

    /// External key id to use (an AES-256 key allowed for ENCRYPT and DECRYPT).
    #[arg(long, env = "XKS_KEY_ID", value_name = "ID")]
    pub key_id: String,

    /// Connect to this address instead of resolving the URL's host (like curl --resolve); TLS
    /// and SigV4 still use the host of --url.
    #[arg(long, value_name = "IP:PORT")]
    pub connect_to: Option<SocketAddr>,

    /// Latency budget per call in milliseconds (KMS: 250).
    #[arg(long, default_value_t = 250, value_name = "MS")]
    pub budget_ms: u64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    url: String,
    address: String,
    passed: usize,
    warnings: usize,
    failed: usize,
    budget_ms: u64,
    checks: &'a [Check],
}

/// Runs the probe, prints the table (or JSON), and fails (exit 4) when any check failed.
pub async fn run(args: &XksCheckArgs, format: OutputFormat) -> CliResult<()> {
    let ep = Endpoint::parse(&args.url, &args.uri_prefix, args.connect_to).await?;
    let credential = Credential {
        access_key_id: args.access_key_id.clone(),
        secret: target::load_secret(args.secret_file.as_deref())?,
    };
    let roots = target::load_roots(&args.ca_file)?;
    let client_key = match (&args.client_cert, &args.client_key) {
        (Some(c), Some(k)) => Some(target::load_client_key(c, k)?),
        _ => None,
    };
    let mut report = Report::new(Duration::from_millis(args.budget_ms));
    let inputs = tls_scan::TlsInputs {
        roots: roots.clone(),
        client_key: client_key.clone(),
    };
    if tls_scan::run(&ep, &inputs, &mut report).await {
        let tls = target::client_config(
            &roots,
            None,
            rustls::DEFAULT_VERSIONS,
            target::ClientCert::new(client_key),
        )
        .map_err(CliError::usage)?;
        let session = http::Session::new(ep.clone(), tls);
        let mut probe = api_checks::Probe::new(session, &credential, &args.region, &args.key_id);
        probe.run(&mut report).await;
    }
    let url = format!("https://{}{}", ep.authority, ep.base_path);
    match format {
        OutputFormat::Table => {
            println!("XKS proxy {url} at {}\n", ep.addr);
            print!("{}", report.render());
        }
        OutputFormat::Json => println!(
            "{}",
            to_json(&JsonReport {
                url: url.clone(),
                address: ep.addr.to_string(),
                passed: report.count(Verdict::Pass),
                warnings: report.count(Verdict::Warn),
                failed: report.count(Verdict::Fail),
                budget_ms: args.budget_ms,
                checks: &report.checks,
            })?
        ),
    }
    match report.count(Verdict::Fail) {
        0 => Ok(()),
        n => Err(CliError::new(
            ExitKind::Rejected,
            format!("{n} of {} checks failed against {url}", report.checks.len()),
        )),
    }
}
