//! The HTTPS server TLS setup: the spec's four AES-256/ChaCha20 suites, ALPN h2+http/1.1, optional mTLS by CA and subject CN.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::TlsConfig;

/// Why the TLS setup failed (names the file, never key bytes).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {field} {path}: {source}")]
    Read {
        /// Config field.
        field: &'static str,
        /// Path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// No usable PEM item in the file.
    #[error("{field} {path}: {what}")]
    Pem {
        /// Config field.
        field: &'static str,
        /// Path.
        path: String,
        /// What was missing.
        what: &'static str,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("tls.client_ca: {0}")]
    Verifier(String),
}

/// The ring provider restricted to the spec's suites: TLS 1.3 AES-256-GCM and
/// ChaCha20-Poly1305, TLS 1.2 ECDHE-RSA/ECDSA AES-256-GCM. Nothing else.
pub fn provider() -> CryptoProvider {
    let mut p = ring::default_provider();
    p.cipher_suites = vec![
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    p
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate in a PEM file.
pub fn load_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            field,
            path: path.display().to_string(),
            what: "no certificate found",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = zeroize::Zeroizing::new(read(field, path)?);
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(k)) => Ok(k),
        _ => Err(TlsError::Pem {
            field,
            path: path.display().to_string(),
            what: "no private key found",
        }),
    }
}

/// The server config for `[tls]`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("tls.cert", &tls.cert)?;
    let key = load_key("tls.key", &tls.key)?;
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs("tls.client_ca", ca_path)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            }
            let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(KmsClientVerifier {
                webpki,
                subjects: tls.client_subjects.clone(),
            }))
        }
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The mTLS client check inside the handshake: the certificate chain to `tls.client_ca`
/// (webpki: validity dates, signatures, key usage), then the subject CN against
/// `tls.client_subjects` (empty: any CN). Every rejection reaches the client as a
/// `handshake_failure` alert, as the XKS spec's conformance client expects for an expired or a
/// self-signed certificate (rustls would otherwise send `certificate_unknown`, `unknown_ca`, …);
/// the precise reason stays in the server's error (logged at DEBUG by the accept loop).
#[derive(Debug)]
struct KmsClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    subjects: Vec<String>,
}

/// A verifier error that rustls reports to the peer as `handshake_failure` (any error other than
/// `InvalidCertificate` / `PeerMisbehaved` is).
fn rejected(why: &dyn std::fmt::Display) -> rustls::Error {
    rustls::Error::General(format!("client certificate rejected: {why}"))
}

impl ClientCertVerifier for KmsClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| rejected(&e))?;
        if !self.subjects.is_empty() && !subject_allowed(end_entity.as_ref(), &self.subjects) {
            return Err(rejected(&"subject CN not in tls.client_subjects"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, cert, dss)
            .map_err(|e| rejected(&e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, cert, dss)
            .map_err(|e| rejected(&e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// True when the leaf certificate's subject has a CN in `allowed`.
fn subject_allowed(leaf: &[u8], allowed: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    let found = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| allowed.iter().any(|a| a == cn));
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert_with_cn(cn: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        rcgen::CertifiedKey {
            cert,
            signing_key: key,
        }
    }

    #[test]
    fn only_the_four_spec_suites() {
        let names: Vec<String> = provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
    }

    #[test]
    fn subject_cn_check() {
        let ck = cert_with_cn("cks.kms.us-east-1.amazonaws.com");
        let der = ck.cert.der().to_vec();
        assert!(subject_allowed(
            &der,
            &["cks.kms.us-east-1.amazonaws.com".into()]
        ));
        assert!(!subject_allowed(
            &der,
            &["cks.kms.eu-west-1.amazonaws.com".into()]
        ));
        assert!(!subject_allowed(b"garbage", &["x".into()]));
    }

    #[test]
    fn server_config_loads_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let ck = cert_with_cn("xks.localhost");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let mut tls = TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
            client_subjects: vec![],
        };
        let cfg = server_config(&tls).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        tls.client_ca = Some(cert.clone());
        assert!(server_config(&tls).is_ok());
        tls.key = cert.clone();
        let e = server_config(&tls).unwrap_err().to_string();
        assert!(e.contains("tls.key") && e.contains("no private key"), "{e}");
        tls.key = dir.path().join("missing");
        assert!(server_config(&tls)
            .unwrap_err()
            .to_string()
            .contains("cannot read tls.key"));
    }

    /// A CA (self-signed, CA:TRUE) and its issuer handle.
    fn test_ca(
        name: &str,
    ) -> (
        CertificateDer<'static>,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        (cert, rcgen::Issuer::new(params, key))
    }

    fn client_leaf(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        expired: bool,
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn kms_verifier(ca: &CertificateDer<'static>, subjects: &[&str]) -> KmsClientVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let webpki =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()))
                .build()
                .unwrap();
        KmsClientVerifier {
            webpki,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// rustls turns a `General` verifier error into a `handshake_failure` alert.
    fn is_handshake_failure(r: Result<ClientCertVerified, rustls::Error>) -> bool {
        matches!(r, Err(rustls::Error::General(m)) if m.starts_with("client certificate rejected"))
    }

    #[test]
    fn client_verifier_accepts_only_the_ca_and_the_subjects() {
        const KMS: &str = "cks.kms.us-east-1.amazonaws.com";
        let (ca_cert, ca) = test_ca("kms client CA");
        let (_, foreign) = test_ca("foreign CA");
        let v = kms_verifier(&ca_cert, &[KMS]);
        let now = UnixTime::now();
        assert!(v.offer_client_auth() && v.client_auth_mandatory());
        assert!(!v.root_hint_subjects().is_empty());
        assert!(!v.supported_verify_schemes().is_empty());

        assert!(v
            .verify_client_cert(&client_leaf(&ca, KMS, false), &[], now)
            .is_ok());
        let cases = [
            (
                "another CN",
                client_leaf(&ca, "someone-else.example.com", false),
            ),
            ("expired", client_leaf(&ca, KMS, true)),
            ("foreign CA", client_leaf(&foreign, KMS, false)),
            ("self-signed", cert_with_cn(KMS).cert.der().clone()),
            (
                "garbage",
                CertificateDer::from(b"not a certificate".to_vec()),
            ),
        ];
        for (what, cert) in cases {
            assert!(
                is_handshake_failure(v.verify_client_cert(&cert, &[], now)),
                "{what}"
            );
        }
        // No subject list: any CN from the CA.
        let any_cn = kms_verifier(&ca_cert, &[]);
        let other = client_leaf(&ca, "someone-else.example.com", false);
        assert!(any_cn.verify_client_cert(&other, &[], now).is_ok());
    }
}
