//! `pki init`: creates the appliance's private CA and every certificate (offline, rcgen, P-256).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::cli::PkiInitArgs;
use crate::errors::{CliError, CliResult};
use crate::files::{self, PRIVATE_FILE, PUBLIC_FILE};
use crate::output::{self, OutputFormat};

/// What `pki init` creates.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    /// Target directory.
    pub dir: PathBuf,
    /// Extra SANs of the vhsmd server certificate.
    pub vhsmd_san: Vec<String>,
    /// Extra SANs of the xks-front server certificate.
    pub xks_san: Vec<String>,
    /// Leaf validity (days).
    pub days: u32,
    /// CA validity (days).
    pub ca_days: u32,
    /// Replace an existing PKI.
    pub force: bool,
}

impl PkiSpec {
    /// Defaults for `dir`: no extra names, 365-day leaves, 5-year CA, no overwrite.
    pub fn new(dir: &Path) -> Self {
        PkiSpec {
            dir: dir.to_path_buf(),
            vhsmd_san: Vec::new(),
            xks_san: Vec::new(),
            days: 365,
            ca_days: 1825,
            force: false,
        }
    }
}

/// The role a leaf certificate plays in TLS.
#[derive(Debug, Clone, Copy)]
enum Role {
    Server,
    Client,
}

/// One leaf: file stem, CN, SANs, role.
struct Leaf {
    stem: &'static str,
    cn: &'static str,
    sans: Vec<String>,
    role: Role,
}

/// Every file `pki init` writes (stems; each has .crt and .key).
pub const STEMS: [&str; 8] = [
    "ca",
    "vhsmd",
    "xks-front",
    "crypto",
    "admin",
    "auditor",
    "kms-client",
    "peer",
];

fn leaves(spec: &PkiSpec) -> Vec<Leaf> {
    let with = |base: &[&str], extra: &[String]| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        for e in extra {
            if !v.contains(e) {
                v.push(e.clone());
            }
        }
        v
    };
    vec![
        Leaf {
            stem: "vhsmd",
            cn: "vhsmd",
            sans: with(&["vhsmd", "localhost", "127.0.0.1"], &spec.vhsmd_san),
            role: Role::Server,
        },
        Leaf {
            stem: "xks-front",
            cn: "xks.localhost",
            sans: with(&["xks.localhost", "localhost", "127.0.0.1"], &spec.xks_san),
            role: Role::Server,
        },
        Leaf {
            stem: "crypto",
            cn: "xks-front",
            sans: vec!["xks-front".into()],
            role: Role::Client,
        },
        Leaf {
            stem: "admin",
            cn: "admin",
            sans: vec!["admin".into()],
            role: Role::Client,
        },
        Leaf {
            stem: "auditor",
            cn: "auditor",
            sans: vec!["auditor".into()],
            role: Role::Client,
        },
        Leaf {
            stem: "peer",
            cn: "vhsm-peer",
            sans: vec!["vhsm-peer".into()],
            role: Role::Client,
        },
        Leaf {
            stem: "kms-client",
            cn: "cks.kms.us-east-1.amazonaws.com",
            sans: vec!["cks.kms.us-east-1.amazonaws.com".into()],
            role: Role::Client,
        },
    ]
}

fn pki_err(what: &str, e: &rcgen::Error) -> CliError {
    CliError::usage(format!("cannot create {what}: {e}"))
}

fn random_serial() -> CliResult<SerialNumber> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| CliError::usage(format!("operating system randomness failed: {e}")))?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    Ok(SerialNumber::from_slice(&b))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(DnType::OrganizationName, "vhsm appliance");
    d
}

/// Creates the PKI; returns the paths written. Validates SANs before writing anything.
pub fn create_pki(spec: &PkiSpec) -> CliResult<Vec<PathBuf>> {
    let all_leaves = leaves(spec);
    // Validate every name first (rcgen parses IPs, otherwise requires an IA5 DNS name).
    for leaf in &all_leaves {
        for san in &leaf.sans {
            if san.is_empty() || san.contains(char::is_whitespace) {
                return Err(CliError::usage(format!(
                    "invalid certificate name {san:?} for {}",
                    leaf.stem
                )));
            }
        }
        CertificateParams::new(leaf.sans.clone()).map_err(|e| {
            CliError::usage(format!("invalid certificate name for {}: {e}", leaf.stem))
        })?;
    }
    if !spec.force {
        for stem in STEMS {
            for ext in ["crt", "key"] {
                files::refuse_existing(
                    &spec.dir.join(format!("{stem}.{ext}")),
                    "pass --force to replace the whole PKI",
                )?;
            }
        }
    }
    files::ensure_private_dir(&spec.dir)?;

    let now = OffsetDateTime::now_utc();
    let not_before = now - Duration::hours(1);

    let ca_key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| pki_err("CA key", &e))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("vhsm appliance CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = now + Duration::days(i64::from(spec.ca_days));
    ca_params.serial_number = Some(random_serial()?);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| pki_err("CA certificate", &e))?;

    let mut written = Vec::new();
    let mut write_pair = |stem: &str, cert_pem: &str, key_pem: &str| -> CliResult<()> {
        let crt = spec.dir.join(format!("{stem}.crt"));
        let key = spec.dir.join(format!("{stem}.key"));
        files::write_file(&key, key_pem.as_bytes(), PRIVATE_FILE, spec.force)?;
        files::write_file(&crt, cert_pem.as_bytes(), PUBLIC_FILE, spec.force)?;
        written.push(crt);
        written.push(key);
        Ok(())
    };
    let ca_key_pem = zeroize::Zeroizing::new(ca_key.serialize_pem());
    write_pair("ca", &ca_cert.pem(), &ca_key_pem)?;

    let issuer = Issuer::new(ca_params, ca_key);
    for leaf in all_leaves {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| pki_err(leaf.stem, &e))?;
        let mut p =
            CertificateParams::new(leaf.sans.clone()).map_err(|e| pki_err(leaf.stem, &e))?;
        p.distinguished_name = dn(leaf.cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.not_before = not_before;
        p.not_after = now + Duration::days(i64::from(spec.days));
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match leaf.role {
            Role::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| pki_err(leaf.stem, &e))?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        write_pair(leaf.stem, &cert.pem(), &key_pem)?;
    }
    Ok(written)
}

/// Runs `pki init`.
pub fn run(args: &PkiInitArgs, format: OutputFormat) -> CliResult<()> {
    let spec = PkiSpec {
        dir: args.dir.clone(),
        vhsmd_san: args.vhsmd_san.clone(),
        xks_san: args.xks_san.clone(),
        days: args.days,
        ca_days: args.ca_days,
        force: args.force,
    };
    let written = create_pki(&spec)?;
    let paths: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    let json = serde_json::json!({ "dir": args.dir.display().to_string(), "files": paths });
    output::emit(format, &json, || {
        let mut s = format!(
            "PKI created in {} (directory 0700, keys 0600):\n",
            args.dir.display()
        );
        for p in &paths {
            s.push_str(&format!("  {p}\n"));
        }
        s.push_str("Keep ca.key offline; give each party only its own certificate and key.\n");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::parse_x509_pem;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    struct Parsed {
        der: Vec<u8>,
    }

    fn load(dir: &Path, stem: &str) -> Parsed {
        let pem = std::fs::read(dir.join(format!("{stem}.crt"))).unwrap();
        let (_, p) = parse_x509_pem(&pem).unwrap();
        Parsed { der: p.contents }
    }

    fn cn_of(c: &x509_parser::certificate::X509Certificate<'_>) -> String {
        c.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn sans_of(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
        let Some(ext) = c.subject_alternative_name().unwrap() else {
            return vec![];
        };
        ext.value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(n) => n.to_string(),
                GeneralName::IPAddress(b) => {
                    let a: [u8; 4] = (*b).try_into().unwrap();
                    std::net::Ipv4Addr::from(a).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn creates_the_documented_layout_with_a_verifying_chain() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pki");
        let mut spec = PkiSpec::new(&dir);
        spec.vhsmd_san = vec!["vhsm-2.internal".into(), "10.0.0.5".into()];
        spec.xks_san = vec!["xks.example.com".into()];
        let written = create_pki(&spec).unwrap();
        assert_eq!(written.len(), 16);
        assert_eq!(mode_of(&dir), 0o700);
        for stem in STEMS {
            assert_eq!(mode_of(&dir.join(format!("{stem}.key"))), 0o600, "{stem}");
            assert_eq!(mode_of(&dir.join(format!("{stem}.crt"))), 0o644, "{stem}");
        }

        let ca_p = load(&dir, "ca");
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_p.der).unwrap();
        assert_eq!(cn_of(&ca), "vhsm appliance CA");
        assert!(ca.is_ca());
        ca.verify_signature(None).unwrap();
        let ca_life = ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
        assert!(
            ca_life > 1824 * 86400 && ca_life < 1827 * 86400,
            "{ca_life}"
        );

        let expect: [(&str, &str, &[&str]); 7] = [
            (
                "vhsmd",
                "vhsmd",
                &[
                    "vhsmd",
                    "localhost",
                    "127.0.0.1",
                    "vhsm-2.internal",
                    "10.0.0.5",
                ],
            ),
            (
                "xks-front",
                "xks.localhost",
                &["xks.localhost", "localhost", "127.0.0.1", "xks.example.com"],
            ),
            ("crypto", "xks-front", &["xks-front"]),
            ("admin", "admin", &["admin"]),
            ("auditor", "auditor", &["auditor"]),
            ("peer", "vhsm-peer", &["vhsm-peer"]),
            (
                "kms-client",
                "cks.kms.us-east-1.amazonaws.com",
                &["cks.kms.us-east-1.amazonaws.com"],
            ),
        ];
        for (stem, cn, sans) in expect {
            let p = load(&dir, stem);
            let (_, c) = x509_parser::parse_x509_certificate(&p.der).unwrap();
            assert_eq!(cn_of(&c), cn, "{stem}");
            assert_eq!(sans_of(&c), sans.to_vec(), "{stem}");
            assert_eq!(c.issuer(), ca.subject(), "{stem}");
            assert!(!c.is_ca());
            c.verify_signature(Some(ca.public_key())).unwrap();
            let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
            assert!(life > 364 * 86400 && life < 367 * 86400, "{stem} {life}");
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            if stem == "vhsmd" || stem == "xks-front" {
                assert!(eku.server_auth && !eku.client_auth, "{stem}");
            } else {
                assert!(eku.client_auth && !eku.server_auth, "{stem}");
            }
        }
    }

    #[test]
    fn leaf_signed_by_another_ca_does_not_verify() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        create_pki(&PkiSpec::new(d1.path())).unwrap();
        create_pki(&PkiSpec::new(d2.path())).unwrap();
        let ca2 = load(d2.path(), "ca");
        let (_, ca2) = x509_parser::parse_x509_certificate(&ca2.der).unwrap();
        let leaf = load(d1.path(), "admin");
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
        assert!(leaf.verify_signature(Some(ca2.public_key())).is_err());
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let d = tempfile::tempdir().unwrap();
        create_pki(&PkiSpec::new(d.path())).unwrap();
        let before = std::fs::read(d.path().join("ca.crt")).unwrap();
        let e = create_pki(&PkiSpec::new(d.path())).unwrap_err();
        assert_eq!(e.kind().code(), 7);
        assert!(e.to_string().contains("ca.crt already exists"), "{e}");
        assert_eq!(std::fs::read(d.path().join("ca.crt")).unwrap(), before);
        let mut forced = PkiSpec::new(d.path());
        forced.force = true;
        create_pki(&forced).unwrap();
        assert_ne!(std::fs::read(d.path().join("ca.crt")).unwrap(), before);
    }

    #[test]
    fn refuses_a_single_leftover_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("auditor.key"), b"x").unwrap();
        assert!(create_pki(&PkiSpec::new(d.path())).is_err());
    }

    #[test]
    fn invalid_san_is_rejected_before_writing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pki");
        let mut spec = PkiSpec::new(&dir);
        spec.vhsmd_san = vec!["bad name".into()];
        let e = create_pki(&spec).unwrap_err();
        assert_eq!(e.kind().code(), 1);
        assert!(!dir.exists());
    }

    #[test]
    fn custom_validity_is_applied() {
        let d = tempfile::tempdir().unwrap();
        let mut spec = PkiSpec::new(d.path());
        spec.days = 30;
        create_pki(&spec).unwrap();
        let p = load(d.path(), "vhsmd");
        let (_, c) = x509_parser::parse_x509_certificate(&p.der).unwrap();
        let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert!(life > 29 * 86400 && life < 32 * 86400, "{life}");
    }
}
