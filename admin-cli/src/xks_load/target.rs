//! Where and as whom `xks load` connects: the endpoint's address, Host and URI path prefix, the
//! SigV4 credential, and the rustls client configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::errors::{CliError, CliResult, ExitKind};

/// The XKS API path every URI path ends with.
pub const API_SUFFIX: &str = "/kms/xks/v1";

/// The endpoint as parsed from `--url` (no I/O yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal (no brackets), for TLS and resolution.
    pub host: String,
    /// TCP port (443 when the URL has none).
    pub port: u16,
    /// The `Host` header value, `host[:port]` exactly as in the URL (SigV4 signs it).
    pub authority: String,
    /// The prefix in front of /kms/xks/v1 from the URL's path, if it has one.
    pub url_prefix: Option<String>,
}

/// Parses `https://HOST[:PORT][/PREFIX/kms/xks/v1]`.
pub fn parse_url(url: &str) -> CliResult<Endpoint> {
    let bad = |why: &str| CliError::usage(format!("invalid --url {url:?}: {why}"));
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https:// (XKS is HTTPS only)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("needs a host (and no user info)"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        match after {
            "" => (h.to_string(), None),
            p => (
                h.to_string(),
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?,
        None => 443,
    };
    let path = path.trim_end_matches('/');
    let url_prefix = if path.is_empty() {
        None
    } else {
        Some(
            path.strip_suffix(API_SUFFIX)
                .ok_or_else(|| bad("a path must end with /kms/xks/v1"))?
                .to_string(),
        )
    };
    Ok(Endpoint {
        host,
        port,
        authority: authority.to_string(),
        url_prefix,
    })
}

/// Checks a URI path prefix: empty, or `/seg[/seg...]` of `[A-Za-z0-9_-]`.
pub fn check_prefix(p: &str) -> CliResult<()> {
    if p.is_empty() {
        return Ok(());
    }
    let ok = p.starts_with('/')
        && !p.ends_with('/')
        && !p.contains("//")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid URI path prefix {p:?}: /SEGMENT[/SEGMENT...] of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Picks the one prefix the sources agree on; a disagreement is a usage error.
pub fn pick_prefix(sources: &[(&str, Option<String>)]) -> CliResult<String> {
    let mut chosen: Option<(&str, String)> = None;
    for (name, value) in sources {
        let Some(v) = value else { continue };
        let v = v.trim_end_matches('/').to_string();
        match &chosen {
            Some((first, c)) if *c != v => {
                return Err(CliError::usage(format!(
                    "the URI path prefix from {first} ({c:?}) differs from {name} ({v:?})"
                )))
            }
            Some(_) => {}
            None => chosen = Some((name, v)),
        }
    }
    let p = chosen.map(|(_, v)| v).unwrap_or_default();
    check_prefix(&p)?;
    Ok(p)
}

/// A SigV4 credential. The secret is zeroized on drop and never printed.
pub struct Credential {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret: SecretString,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// The proxy configuration JSON written by `xks credentials new`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyConfigFile {
    xks_proxy_uri_path: String,
    xks_proxy_authentication_credential: AuthCredentialFile,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthCredentialFile {
    access_key_id: String,
    raw_secret_access_key: SecretString,
}

/// Reads the proxy configuration JSON: (credential, prefix in front of /kms/xks/v1).
pub fn read_proxy_config(path: &Path) -> CliResult<(Credential, String)> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::io("read", path, &e))?);
    // serde_json's error names a line and column, never the content.
    let cfg: ProxyConfigFile = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{} is not a KMS proxy configuration (XksProxyUriPath, XksProxyAuthenticationCredential): {e}",
            path.display()
        ))
    })?;
    let prefix = cfg
        .xks_proxy_uri_path
        .strip_suffix(API_SUFFIX)
        .ok_or_else(|| {
            CliError::usage(format!(
                "XksProxyUriPath in {} does not end with /kms/xks/v1",
                path.display()
            ))
        })?
        .to_string();
    let cred = cfg.xks_proxy_authentication_credential;
    Ok((
        Credential {
            access_key_id: cred.access_key_id,
            secret: cred.raw_secret_access_key,
        },
        prefix,
    ))
}

/// Reads a secret file (its first line, surrounding white space removed).
pub fn read_secret_file(access_key_id: &str, path: &Path) -> CliResult<Credential> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| CliError::io("read", path, &e))?);
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(CliError::usage(format!(
            "{} holds no secret access key",
            path.display()
        )));
    }
    Ok(Credential {
        access_key_id: access_key_id.to_string(),
        secret: SecretString::from(secret),
    })
}

/// The rustls client configuration: trust `ca`, present `client` (mTLS) if given, HTTP/1.1.
pub fn tls_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> CliResult<Arc<rustls::ClientConfig>> {
    let tls_err = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        CliError::usage(format!("{what} {}: {e}", p.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| tls_err("cannot read CA file", ca, &e))?;
    for c in certs {
        let c = c.map_err(|e| tls_err("bad PEM in CA file", ca, &e))?;
        // Bundles hold certificates rustls may not parse (old versions); skip those.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(CliError::usage(format!(
            "no CA certificate in {} (give the CA that signed the endpoint's certificate with --tls-ca)",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::usage(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_err("cannot read client certificate", cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err("bad PEM in client certificate", cert, &e))?;
            // The pem error names the file section, never key bytes.
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err("cannot read client key", key, &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| CliError::usage(format!("client certificate and key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server name for `host`.
pub fn server_name(host: &str) -> CliResult<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|_| CliError::usage(format!("{host:?} is not a valid TLS server name")))
}

/// The address to dial: `--connect-to`, else the host resolved; a `*.localhost` name that does
/// not resolve is loopback (RFC 6761).
pub async fn resolve(ep: &Endpoint, connect_to: Option<SocketAddr>) -> CliResult<SocketAddr> {
    if let Some(a) = connect_to {
        return Ok(a);
    }
    match tokio::net::lookup_host((ep.host.as_str(), ep.port)).await {
        Ok(mut addrs) => {
            if let Some(a) = addrs.next() {
                return Ok(a);
            }
        }
        Err(_) if is_localhost(&ep.host) => {}
        Err(e) => {
            return Err(CliError::new(
                ExitKind::Unreachable,
                format!("cannot resolve {}: {e}", ep.host),
            )
            .with_hint("check --url, or dial an address with --connect-to IP:PORT"))
        }
    }
    if is_localhost(&ep.host) {
        return Ok(SocketAddr::from(([127, 0, 0, 1], ep.port)));
    }
    Err(CliError::new(
        ExitKind::Unreachable,
        format!("{} resolves to no address", ep.host),
    ))
}

fn is_localhost(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn urls_parse_into_host_port_authority_and_prefix() {
        let e = parse_url("https://xks.localhost:8443").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("xks.localhost", 8443, "xks.localhost:8443")
        );
        assert_eq!(e.url_prefix, None);
        let e = parse_url("https://xks.example.com/example/kms/xks/v1/").unwrap();
        assert_eq!((e.port, e.authority.as_str()), (443, "xks.example.com"));
        assert_eq!(e.url_prefix.as_deref(), Some("/example"));
        let e = parse_url("https://[::1]:9/kms/xks/v1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(e.url_prefix.as_deref(), Some(""));
        for bad in [
            "http://h:1",
            "https://",
            "https://h:x",
            "https://h:1/other",
            "https://u@h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_sources_must_agree() {
        let p = pick_prefix(&[("--uri-prefix", None), ("--url", Some("/example".into()))]);
        assert_eq!(p.unwrap(), "/example");
        assert_eq!(pick_prefix(&[("a", None)]).unwrap(), "");
        assert!(pick_prefix(&[("a", Some("/x".into())), ("b", Some("/y".into()))]).is_err());
        assert!(pick_prefix(&[("a", Some("/x".into())), ("b", Some("/x/".into()))]).is_ok());
        assert!(pick_prefix(&[("a", Some("no-slash".into()))]).is_err());
        assert!(pick_prefix(&[("a", Some("/a b".into()))]).is_err());
    }

    #[test]
    fn the_proxy_config_of_credentials_new_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let creds = crate::cmd_xks::generate().unwrap();
        let json = crate::cmd_xks::proxy_config_json("/example/kms/xks/v1", &creds).unwrap();
        let f = dir.path().join("cfg.json");
        std::fs::write(&f, json.as_bytes()).unwrap();
        let (c, prefix) = read_proxy_config(&f).unwrap();
        assert_eq!(prefix, "/example");
        assert_eq!(c.access_key_id, creds.access_key_id);
        assert_eq!(c.secret.expose_secret(), creds.secret.expose_secret());
        assert!(!format!("{c:?}").contains(creds.secret.expose_secret()));
    }

    #[test]
    fn a_secret_file_is_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "c2VjcmV0\n").unwrap();
        let c = read_secret_file("AKID", &f).unwrap();
        assert_eq!(c.secret.expose_secret(), "c2VjcmV0");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_secret_file("AKID", &f).is_err());
    }

    #[tokio::test]
    async fn localhost_names_fall_back_to_loopback() {
        let e = parse_url("https://xks.localhost:8443").unwrap();
        let a = resolve(&e, None).await.unwrap();
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 8443);
        let forced: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(resolve(&e, Some(forced)).await.unwrap(), forced);
    }
}
