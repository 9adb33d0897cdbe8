//! Opens the mutual-TLS gRPC channel to vhsmd from the connection flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vhsm_proto::v1::admin_client::AdminClient;

use crate::cli::ConnectArgs;
use crate::errors::{error_chain, CliError, CliResult};

/// Largest response accepted (backups and audit pages can be large).
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Resolved TLS material for one vhsmd node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://host:port`.
    pub endpoint: String,
    /// CA certificate file.
    pub ca: PathBuf,
    /// Client certificate file.
    pub cert: PathBuf,
    /// Client key file.
    pub key: PathBuf,
    /// Expected server certificate name.
    pub server_name: String,
    /// Connect timeout.
    pub timeout: Duration,
}

impl Target {
    /// Resolves the flags: explicit --ca/--cert/--key win over --pki-dir's ca.crt/admin.crt/admin.key.
    pub fn from_args(args: &ConnectArgs) -> CliResult<Target> {
        let from_dir = |name: &str| args.pki_dir.as_ref().map(|d| d.join(name));
        let pick = |explicit: &Option<PathBuf>, file: &str, flag: &str| {
            explicit.clone().or_else(|| from_dir(file)).ok_or_else(|| {
                CliError::usage(format!(
                    "no {flag} given: use --pki-dir DIR (or VHSM_PKI_DIR) or --{flag} FILE"
                ))
            })
        };
        if !args.endpoint.starts_with("https://") {
            return Err(CliError::usage(format!(
                "--endpoint {} must start with https:// (vhsmd only speaks mutual TLS)",
                args.endpoint
            )));
        }
        Ok(Target {
            endpoint: args.endpoint.clone(),
            ca: pick(&args.ca, "ca.crt", "ca")?,
            cert: pick(&args.cert, "admin.crt", "cert")?,
            key: pick(&args.key, "admin.key", "key")?,
            server_name: args.server_name.clone(),
            timeout: Duration::from_secs(args.connect_timeout.max(1)),
        })
    }

    /// The same TLS material for another endpoint (clone), optionally from another PKI dir.
    pub fn retarget(
        &self,
        endpoint: &str,
        pki_dir: Option<&Path>,
        server_name: Option<&str>,
    ) -> CliResult<Target> {
        if !endpoint.starts_with("https://") {
            return Err(CliError::usage(format!(
                "--to {endpoint} must start with https://"
            )));
        }
        let mut t = self.clone();
        t.endpoint = endpoint.to_string();
        if let Some(d) = pki_dir {
            t.ca = d.join("ca.crt");
            t.cert = d.join("admin.crt");
            t.key = d.join("admin.key");
        }
        if let Some(n) = server_name {
            t.server_name = n.to_string();
        }
        Ok(t)
    }

    /// Connects now (so "unreachable" is reported before any passphrase is asked).
    pub async fn connect(&self) -> CliResult<Channel> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| CliError::io("read TLS file", p, &e));
        let ca = Certificate::from_pem(read(&self.ca)?);
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca)
            .identity(identity)
            .domain_name(self.server_name.clone());
        let unreachable =
            |e: &dyn std::error::Error| CliError::unreachable(&self.endpoint, &error_chain(e));
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| CliError::usage(format!("invalid --endpoint {}: {e}", self.endpoint)))?
            .connect_timeout(self.timeout)
            .tls_config(tls)
            .map_err(|e| unreachable(&e))?;
        endpoint.connect().await.map_err(|e| unreachable(&e))
    }

    /// An Admin client on a fresh connection.
    pub async fn admin(&self) -> CliResult<AdminClient<Channel>> {
        Ok(AdminClient::new(self.connect().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(pki: Option<&str>) -> ConnectArgs {
        ConnectArgs {
            endpoint: "https://127.0.0.1:7443".into(),
            pki_dir: pki.map(PathBuf::from),
            ca: None,
            cert: None,
            key: None,
            server_name: "vhsmd".into(),
            connect_timeout: 5,
        }
    }

    #[test]
    fn pki_dir_gives_admin_files() {
        let t = Target::from_args(&args(Some("/p"))).unwrap();
        assert_eq!(t.ca, PathBuf::from("/p/ca.crt"));
        assert_eq!(t.cert, PathBuf::from("/p/admin.crt"));
        assert_eq!(t.key, PathBuf::from("/p/admin.key"));
    }

    #[test]
    fn explicit_files_override_pki_dir() {
        let mut a = args(Some("/p"));
        a.cert = Some("/q/auditor.crt".into());
        a.key = Some("/q/auditor.key".into());
        let t = Target::from_args(&a).unwrap();
        assert_eq!(t.ca, PathBuf::from("/p/ca.crt"));
        assert_eq!(t.cert, PathBuf::from("/q/auditor.crt"));
    }

    #[test]
    fn missing_tls_material_is_a_usage_error() {
        let e = Target::from_args(&args(None)).unwrap_err();
        assert_eq!(e.kind().code(), 1);
        assert!(e.to_string().contains("--pki-dir"));
    }

    #[test]
    fn plain_http_endpoint_is_refused() {
        let mut a = args(Some("/p"));
        a.endpoint = "http://127.0.0.1:7443".into();
        assert!(Target::from_args(&a).is_err());
    }

    #[test]
    fn retarget_switches_pki_dir_and_name() {
        let t = Target::from_args(&args(Some("/p"))).unwrap();
        let u = t
            .retarget("https://h:2", Some(Path::new("/r")), Some("n2"))
            .unwrap();
        assert_eq!(u.endpoint, "https://h:2");
        assert_eq!(u.cert, PathBuf::from("/r/admin.crt"));
        assert_eq!(u.server_name, "n2");
        assert!(t.retarget("h:2", None, None).is_err());
    }

    #[tokio::test]
    async fn closed_port_is_unreachable_exit_2() {
        // Real PKI so the failure is the TCP connect, not file reading.
        let d = tempfile::tempdir().unwrap();
        crate::cmd_pki::create_pki(&crate::cmd_pki::PkiSpec::new(d.path())).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut a = args(Some(d.path().to_str().unwrap()));
        a.endpoint = format!("https://127.0.0.1:{port}");
        let e = Target::from_args(&a).unwrap().connect().await.unwrap_err();
        assert_eq!(e.kind().code(), 2);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach vhsmd at https://127.0.0.1:{port}: ")),
            "{msg}"
        );
        assert!(msg.ends_with("is it running? check --endpoint"), "{msg}");
    }

    #[tokio::test]
    async fn missing_cert_file_names_the_file() {
        let a = args(Some("/nonexistent-pki"));
        let e = Target::from_args(&a).unwrap().connect().await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent-pki/ca.crt"), "{e}");
    }
}
