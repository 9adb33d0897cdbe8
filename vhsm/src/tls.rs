//! Loads the server identity and client CA from PEM files into a mutual-TLS-only tonic config.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

use crate::config::TlsConfig;

/// A TLS file that is missing or does not hold what it should.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TlsError {
    /// Config field naming the file, e.g. `tls.key`.
    pub field: &'static str,
    /// What is wrong (never the file contents).
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError {
        field,
        reason: reason.into(),
    }
}

/// TLS handshake timeout: a client that does not finish the handshake in time is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Builds the server TLS config: server identity plus a required client certificate that must
/// chain to `client_ca` (rustls verifies chain and validity period during the handshake).
pub fn server_tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, TlsError> {
    let cert = read("tls.cert", &tls.cert)?;
    let count = count_certs("tls.cert", &cert)?;
    if count == 0 {
        return Err(err("tls.cert", "no PEM certificate in file"));
    }
    let key = read("tls.key", &tls.key)?;
    check_key(&key)?;
    warn_if_key_readable_by_others(&tls.key);
    let ca = read("tls.client_ca", &tls.client_ca)?;
    if count_certs("tls.client_ca", &ca)? == 0 {
        return Err(err("tls.client_ca", "no PEM certificate in file"));
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(&*cert, &*key))
        .client_ca_root(Certificate::from_pem(&*ca))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT))
}

fn read(field: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(field, "file not found")
        } else {
            err(field, format!("cannot read: {}", e.kind()))
        }
    })
}

fn count_certs(field: &'static str, pem: &[u8]) -> Result<usize, TlsError> {
    let mut rd = pem;
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut rd) {
        c.map_err(|_| err(field, "malformed PEM certificate"))?;
        n += 1;
    }
    Ok(n)
}

fn check_key(pem: &[u8]) -> Result<(), TlsError> {
    let mut rd = pem;
    match rustls_pemfile::private_key(&mut rd) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(err("tls.key", "no PEM private key in file")),
        Err(_) => Err(err("tls.key", "malformed PEM private key")),
    }
}

fn warn_if_key_readable_by_others(path: &Path) {
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "tls.key is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write_pki(dir: &Path) -> TlsConfig {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["vhsmd".to_owned()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        std::fs::write(dir.join("s.crt"), c.pem()).unwrap();
        std::fs::write(dir.join("s.key"), k.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), c.pem()).unwrap();
        TlsConfig {
            cert: dir.join("s.crt"),
            key: dir.join("s.key"),
            client_ca: dir.join("ca.crt"),
        }
    }

    #[test]
    fn valid_files_load() {
        let d = tempfile::tempdir().unwrap();
        let t = write_pki(d.path());
        server_tls_config(&t).unwrap();
    }

    #[test]
    fn missing_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let mut t = write_pki(d.path());
        t.client_ca = d.path().join("nope.crt");
        let e = server_tls_config(&t).unwrap_err();
        assert_eq!(e.to_string(), "tls.client_ca: file not found");
    }

    #[test]
    fn key_in_cert_slot_and_cert_in_key_slot_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let t = write_pki(d.path());
        let swapped = TlsConfig {
            cert: t.key.clone(),
            key: t.cert.clone(),
            client_ca: t.client_ca.clone(),
        };
        let e = server_tls_config(&swapped).unwrap_err();
        assert_eq!(e.field, "tls.cert");
        let bad_key = TlsConfig {
            key: t.cert.clone(),
            ..t.clone()
        };
        let e = server_tls_config(&bad_key).unwrap_err();
        assert_eq!(e.to_string(), "tls.key: no PEM private key in file");
        let bad_ca = TlsConfig {
            client_ca: t.key.clone(),
            ..t
        };
        assert_eq!(
            server_tls_config(&bad_ca).unwrap_err().field,
            "tls.client_ca"
        );
    }

    #[test]
    fn garbage_key_does_not_echo_contents() {
        let d = tempfile::tempdir().unwrap();
        let mut t = write_pki(d.path());
        let p = d.path().join("g.key");
        std::fs::write(
            &p,
            "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        t.key = p;
        let e = server_tls_config(&t).unwrap_err();
        assert_eq!(e.field, "tls.key");
        assert!(!e.to_string().contains("SECRETSTUFF"));
    }
}
