//! `xks credentials new`: generates XKS proxy SigV4 credentials and the KMS proxy config JSON.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::cli::XksCredentialsNewArgs;
use crate::errors::{CliError, CliResult};
use crate::files::{self, PRIVATE_FILE};

/// RFC 4648 base32 alphabet: the access key id alphabet KMS accepts.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Access key id length (KMS accepts 20-30).
pub const ACCESS_KEY_ID_LEN: usize = 24;
/// Random bytes in the secret (base64: 44 characters).
const SECRET_BYTES: usize = 32;
/// Longest URI path KMS accepts.
const MAX_URI_PATH: usize = 128;
/// Required suffix of the proxy URI path.
const URI_SUFFIX: &str = "/kms/xks/v1";

/// A new credential pair. The secret is zeroized on drop and not `Debug`-printable.
pub struct Credentials {
    /// Access key id (public).
    pub access_key_id: String,
    /// Secret access key.
    pub secret: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

fn random(buf: &mut [u8]) -> CliResult<()> {
    getrandom::fill(buf)
        .map_err(|e| CliError::usage(format!("operating system randomness failed: {e}")))
}

/// Generates an access key id (24 chars of A-Z2-7, unbiased) and a base64 secret (32 bytes).
pub fn generate() -> CliResult<Credentials> {
    let mut id_bytes = [0u8; ACCESS_KEY_ID_LEN];
    random(&mut id_bytes)?;
    // 256 is a multiple of 32, so `b % 32` is uniform.
    let access_key_id: String = id_bytes
        .iter()
        .map(|b| char::from(BASE32[usize::from(b % 32)]))
        .collect();
    let mut raw = Zeroizing::new([0u8; SECRET_BYTES]);
    random(raw.as_mut())?;
    let secret = SecretString::from(base64::engine::general_purpose::STANDARD.encode(raw.as_ref()));
    Ok(Credentials {
        access_key_id,
        secret,
    })
}

/// Validates the XKS proxy URI path: `[A-Za-z0-9/_-]`, at most 128 chars, ends with /kms/xks/v1.
pub fn validate_uri_path(p: &str) -> CliResult<()> {
    let bad = |why: &str| CliError::usage(format!("invalid --uri-path {p:?}: {why}"));
    if !p.starts_with('/') {
        return Err(bad("must start with /"));
    }
    if p.len() > MAX_URI_PATH {
        return Err(bad("longer than 128 characters"));
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-')
    {
        return Err(bad("only A-Z a-z 0-9 / _ - are allowed"));
    }
    if !p.ends_with(URI_SUFFIX) {
        return Err(bad("must end with /kms/xks/v1"));
    }
    if p.contains("//") {
        return Err(bad("empty path segment"));
    }
    Ok(())
}

/// The proxy configuration file shape the KMS console accepts.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProxyConfig<'a> {
    xks_proxy_uri_path: &'a str,
    xks_proxy_authentication_credential: AuthCredential<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AuthCredential<'a> {
    access_key_id: &'a str,
    raw_secret_access_key: &'a str,
}

/// The proxy configuration JSON (CONTAINS THE SECRET, by design: the operator's one copy).
pub fn proxy_config_json(uri_path: &str, c: &Credentials) -> CliResult<Zeroizing<String>> {
    let cfg = ProxyConfig {
        xks_proxy_uri_path: uri_path,
        xks_proxy_authentication_credential: AuthCredential {
            access_key_id: &c.access_key_id,
            raw_secret_access_key: c.secret.expose_secret(),
        },
    };
    serde_json::to_string_pretty(&cfg)
        .map(Zeroizing::new)
        .map_err(|e| CliError::usage(format!("cannot format JSON: {e}")))
}

/// The secret file's content, `SECRET\n`, built in one zeroizing buffer of the final size (a
/// `push` onto a full buffer would reallocate and leave an unzeroized copy of the secret).
fn secret_file_line(secret: &SecretString) -> Zeroizing<String> {
    let s = secret.expose_secret();
    let mut line = Zeroizing::new(String::with_capacity(s.len() + 1));
    line.push_str(s);
    line.push('\n');
    line
}

/// Runs `xks credentials new`.
pub fn run(args: &XksCredentialsNewArgs) -> CliResult<()> {
    validate_uri_path(&args.uri_path)?;
    if let Some(out) = &args.secret_out {
        if !args.force {
            files::refuse_existing(out, "pass --force to replace it (the old secret stops working once removed from keystores.toml)")?;
        }
    }
    let creds = generate()?;
    if let Some(out) = &args.secret_out {
        let line = secret_file_line(&creds.secret);
        files::write_file(out, line.as_bytes(), PRIVATE_FILE, args.force)?;
        eprintln!(
            "secret written to {} (0600): set it as secret_file, with access_key_id = \"{}\", in xks-front's keystores.toml",
            out.display(),
            creds.access_key_id
        );
    }
    eprintln!(
        "The JSON below is the proxy configuration file for the AWS KMS console. It CONTAINS THE SECRET: upload it, then delete every copy."
    );
    let json = proxy_config_json(&args.uri_path, &creds)?;
    println!("{}", json.as_str());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn is_access_key_id(s: &str) -> bool {
        (20..=30).contains(&s.len()) && s.bytes().all(|b| BASE32.contains(&b))
    }

    fn is_secret(s: &str) -> bool {
        (43..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+' || b == b'=')
    }

    #[test]
    fn credentials_have_the_kms_formats() {
        let c = generate().unwrap();
        assert_eq!(c.access_key_id.len(), ACCESS_KEY_ID_LEN);
        assert!(is_access_key_id(&c.access_key_id), "{}", c.access_key_id);
        let s = c.secret.expose_secret();
        assert_eq!(s.len(), 44);
        assert!(is_secret(s));
        let raw = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn credentials_are_fresh_each_time() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret.expose_secret(), b.secret.expose_secret());
    }

    #[test]
    fn secret_file_line_is_built_without_a_reallocation() {
        let c = generate().unwrap();
        let line = secret_file_line(&c.secret);
        assert_eq!(line.as_str(), format!("{}\n", c.secret.expose_secret()));
        // Allocated once at its final size: no grown (and unzeroized) earlier buffer.
        assert_eq!(line.capacity(), line.len());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let c = generate().unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(c.secret.expose_secret()));
        assert!(d.contains(&c.access_key_id));
    }

    #[test]
    fn config_json_has_the_console_shape() {
        let c = generate().unwrap();
        let j = proxy_config_json("/example/kms/xks/v1", &c).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2);
        assert_eq!(v["XksProxyUriPath"], "/example/kms/xks/v1");
        let cred = v["XksProxyAuthenticationCredential"].as_object().unwrap();
        assert_eq!(cred.len(), 2);
        assert_eq!(cred["AccessKeyId"], c.access_key_id.as_str());
        assert_eq!(cred["RawSecretAccessKey"], c.secret.expose_secret());
    }

    #[test]
    fn uri_path_validation() {
        for ok in ["/kms/xks/v1", "/example/kms/xks/v1", "/a-b_c/9/kms/xks/v1"] {
            validate_uri_path(ok).unwrap();
        }
        let long = format!("/{}{}", "a".repeat(120), URI_SUFFIX);
        for bad in [
            "/example/kms/xks/v2",
            "example/kms/xks/v1",
            "/ex ample/kms/xks/v1",
            "/ex.ample/kms/xks/v1",
            "/ex//kms/xks/v1",
            "/kms/xks/v1/",
            "",
            long.as_str(),
        ] {
            let e = validate_uri_path(bad).unwrap_err();
            assert_eq!(e.kind().code(), 1, "{bad}");
        }
    }
}
