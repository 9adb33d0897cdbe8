//! The key-store registry: keystores.toml parsed and validated, routed by path prefix, and
//! swapped atomically on reload (an invalid file keeps the running configuration).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use secrecy::{SecretBox, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::policy::{AuthzRequest, Decision, Policy, Rule, RuleConfig};
use crate::sigv4::{
    self, AuthError, Authenticated, SignedRequest, SigningKeyCache, SigningSecret, VerifyParams,
};

/// The fixed API path that follows a key store's prefix.
pub const API_PATH: &str = "/kms/xks/v1";
/// KMS limit on `XksProxyUriPath` (prefix + `/kms/xks/v1`).
const MAX_URI_PATH_LEN: usize = 128;
/// Credentials per key store: at least one, two during a rotation, a little slack.
const MAX_CREDENTIALS: usize = 4;
/// Largest secret file accepted (a valid secret is at most 64 characters plus a newline).
const MAX_SECRET_FILE_LEN: u64 = 1024;

use crate::config_error;
pub use crate::config_error::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    keystore: Vec<RawKeyStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyStore {
    name: String,
    path_prefix: String,
    keys: Vec<String>,
    rate_limit_per_sec: u32,
    burst: u32,
    #[serde(default)]
    credential: Vec<RawCredential>,
    #[serde(default)]
    rule: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    access_key_id: String,
    secret_file: PathBuf,
}

/// One SigV4 credential of a key store. `Debug` shows the access key id only.
#[derive(Debug, Clone)]
struct Credential {
    access_key_id: String,
    secret: SigningSecret,
}

/// Which externalKeyIds a key store may use.
#[derive(Debug, Clone)]
enum KeyAllowList {
    Any,
    Only(HashSet<String>),
}

/// One logical key store (one KMS external key store): its URI prefix, credentials, key
/// allow-list, secondary-authorization rules and rate limit.
#[derive(Debug, Clone)]
pub struct KeyStore {
    /// Unique name (`[A-Za-z0-9._-]{1,64}`), used in logs, metrics and the rate limiter.
    pub name: String,
    /// `""` or `/seg[/seg…]`; the API lives at `path_prefix + "/kms/xks/v1"`.
    pub path_prefix: String,
    keys: KeyAllowList,
    credentials: Vec<Credential>,
    policy: Policy,
    rate_limit_per_sec: u32,
    burst: u32,
    /// Signing keys derived from `credentials`. A reload builds new stores, hence a new,
    /// empty cache (and new secret identities); the old one is wiped when dropped.
    signing_keys: Arc<SigningKeyCache>,
}

impl KeyStore {
    /// True when `key_id` is on this store's allow-list (or the list is `["*"]`).
    pub fn allows_key(&self, key_id: &str) -> bool {
        match &self.keys {
            KeyAllowList::Any => true,
            KeyAllowList::Only(ids) => ids.contains(key_id),
        }
    }

    /// The secret of the credential with this access key id, if it belongs to this store.
    pub fn secret_for(&self, access_key_id: &str) -> Option<SecretString> {
        self.credentials
            .iter()
            .find(|c| c.access_key_id == access_key_id)
            .map(|c| c.secret.secret().clone())
    }

    /// Verifies `req`'s SigV4 signature against this store's credentials, reusing the signing
    /// keys this store derived before (see [`sigv4::verify_cached`]).
    pub fn verify(
        &self,
        req: &SignedRequest<'_>,
        params: &VerifyParams<'_>,
    ) -> Result<Authenticated, AuthError> {
        let secret_for = |akid: &str| {
            self.credentials
                .iter()
                .find(|c| c.access_key_id == akid)
                .map(|c| &c.secret)
        };
        sigv4::verify_cached(req, params, &secret_for, &self.signing_keys)
    }

    /// The signing keys this store has cached.
    pub fn signing_keys(&self) -> &SigningKeyCache {
        &self.signing_keys
    }

    /// Access key ids of this store's credentials, in file order.
    pub fn access_key_ids(&self) -> impl Iterator<Item = &str> {
        self.credentials.iter().map(|c| c.access_key_id.as_str())
    }

    /// Secondary authorization of a (non-health) request.
    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Decision {
        self.policy.evaluate(req)
    }

    /// The store's rules.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// `(tokens per second, burst)` for the rate limiter.
    pub fn rate(&self) -> (u32, u32) {
        (self.rate_limit_per_sec, self.burst)
    }

    /// The full API base path, `path_prefix + "/kms/xks/v1"`.
    pub fn uri_path(&self) -> String {
        format!("{}{API_PATH}", self.path_prefix)
    }
}

/// All key stores of one keystores.toml, validated.
#[derive(Debug, Clone)]
pub struct KeyStores {
    stores: Vec<KeyStore>,
}

impl KeyStores {
    /// Reads and validates `path`; relative `secret_file`s are resolved against its directory.
    pub fn load(path: &Path) -> Result<KeyStores, ConfigError> {
        let text = config_error::read(path)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        KeyStores::parse_named(&text, base, &path.display().to_string())
    }

    /// Validates keystores.toml text; relative `secret_file`s are resolved against `base_dir`.
    pub fn parse(toml_text: &str, base_dir: &Path) -> Result<KeyStores, ConfigError> {
        KeyStores::parse_named(toml_text, base_dir, "keystores.toml")
    }

    /// [`KeyStores::parse`], naming `file` in a TOML error.
    fn parse_named(toml_text: &str, base_dir: &Path, file: &str) -> Result<KeyStores, ConfigError> {
        let raw: RawFile = config_error::parse_toml(toml_text, file)?;
        if raw.keystore.is_empty() {
            return Err(ConfigError::invalid(
                "keystore",
                "at least one [[keystore]] is required",
            ));
        }
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut access_keys: HashMap<String, String> = HashMap::new();
        let mut stores = Vec::with_capacity(raw.keystore.len());
        for (i, raw_store) in raw.keystore.into_iter().enumerate() {
            let at = format!("keystore[{i}]");
            let store = build_store(&at, raw_store, base_dir)?;
            if !names.insert(store.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    "duplicate key store name",
                ));
            }
            if !prefixes.insert(store.path_prefix.clone()) {
                return Err(ConfigError::invalid(
                    format!("{at}.path_prefix"),
                    "duplicate path prefix",
                ));
            }
            for (j, akid) in store.access_key_ids().enumerate() {
                if let Some(other) = access_keys.insert(akid.to_owned(), at.clone()) {
                    return Err(ConfigError::invalid(
                        format!("{at}.credential[{j}].access_key_id"),
                        format!("access key id already used by {other}"),
                    ));
                }
            }
            stores.push(store);
        }
        Ok(KeyStores { stores })
    }

    /// The key store whose prefix is followed by `/kms/xks/v1` in `path` (longest prefix wins),
    /// and the remainder of the path (which starts with `/kms/xks/v1`). `None` when no prefix
    /// leads to the API path: answer InvalidUriPathException.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&KeyStore, &'p str)> {
        self.stores
            .iter()
            .filter_map(|s| {
                let rest = path.strip_prefix(s.path_prefix.as_str())?;
                let tail = rest.strip_prefix(API_PATH)?;
                (tail.is_empty() || tail.starts_with('/')).then_some((s, rest))
            })
            .max_by_key(|(s, _)| s.path_prefix.len())
    }

    /// The key store with this name.
    pub fn get(&self, name: &str) -> Option<&KeyStore> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// All key stores, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &KeyStore> {
        self.stores.iter()
    }

    /// Number of key stores (at least one once loaded).
    pub fn len(&self) -> usize {
        self.stores.len()
    }

    /// Always false for a loaded configuration; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }
}

/// Validates one `[[keystore]]` table.
fn build_store(at: &str, raw: RawKeyStore, base_dir: &Path) -> Result<KeyStore, ConfigError> {
    if !valid_name(&raw.name) {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            "must be 1-64 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    validate_prefix(&raw.path_prefix)
        .map_err(|p| ConfigError::invalid(format!("{at}.path_prefix"), p))?;

    if raw.keys.is_empty() {
        return Err(ConfigError::invalid(
            format!("{at}.keys"),
            "must list at least one externalKeyId, or \"*\" for any",
        ));
    }
    let mut any = false;
    let mut allow = HashSet::new();
    for (j, k) in raw.keys.iter().enumerate() {
        if k == "*" {
            any = true;
        } else if valid_external_key_id(k) {
            allow.insert(k.clone());
        } else {
            return Err(ConfigError::invalid(
                format!("{at}.keys[{j}]"),
                "must be \"*\" or 1-128 characters of A-Z a-z 0-9 - . _",
            ));
        }
    }
    let keys = if any {
        KeyAllowList::Any
    } else {
        KeyAllowList::Only(allow)
    };

    if raw.rate_limit_per_sec == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.rate_limit_per_sec"),
            "must be greater than 0",
        ));
    }
    if raw.burst == 0 {
        return Err(ConfigError::invalid(
            format!("{at}.burst"),
            "must be at least 1",
        ));
    }

    if raw.credential.is_empty() || raw.credential.len() > MAX_CREDENTIALS {
        return Err(ConfigError::invalid(
            format!("{at}.credential"),
            "must have 1 to 4 [[keystore.credential]] entries",
        ));
    }
    let mut credentials = Vec::with_capacity(raw.credential.len());
    for (j, c) in raw.credential.into_iter().enumerate() {
        let cat = format!("{at}.credential[{j}]");
        if !valid_access_key_id(&c.access_key_id) {
            return Err(ConfigError::invalid(
                format!("{cat}.access_key_id"),
                "must be 20-30 characters of A-Z2-7",
            ));
        }
        let path = if c.secret_file.is_absolute() {
            c.secret_file
        } else {
            base_dir.join(c.secret_file)
        };
        let secret = read_secret_file(&path)
            .map_err(|p| ConfigError::invalid(format!("{cat}.secret_file"), p))?;
        credentials.push(Credential {
            access_key_id: c.access_key_id,
            secret: SigningSecret::new(secret),
        });
    }

    let mut rule_names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rule.len());
    for (j, r) in raw.rule.into_iter().enumerate() {
        let rule = Rule::from_config(r)
            .map_err(|e| ConfigError::invalid(format!("{at}.rule[{j}].{}", e.field), e.problem))?;
        if !rule_names.insert(rule.name().to_owned()) {
            return Err(ConfigError::invalid(
                format!("{at}.rule[{j}].name"),
                "duplicate rule name in this key store",
            ));
        }
        rules.push(rule);
    }

    Ok(KeyStore {
        name: raw.name,
        path_prefix: raw.path_prefix,
        keys,
        credentials,
        policy: Policy::new(rules),
        rate_limit_per_sec: raw.rate_limit_per_sec,
        burst: raw.burst,
        signing_keys: Arc::new(SigningKeyCache::new()),
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `""`, or `^(/[A-Za-z0-9/_-]+)$` without a trailing slash, short enough for KMS.
fn validate_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Ok(());
    }
    let shape_ok = prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.ends_with('/')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if !shape_ok {
        return Err("must be \"\" or start with / and use only A-Z a-z 0-9 / _ - (no trailing /)");
    }
    if prefix.len() + API_PATH.len() > MAX_URI_PATH_LEN {
        return Err("path_prefix + \"/kms/xks/v1\" must be at most 128 characters");
    }
    Ok(())
}

/// externalKeyId per the KMS API: 1-128 of `[A-Za-z0-9._-]`.
fn valid_external_key_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Access key id per the KMS API: 20-30 of `[A-Z2-7]`.
fn valid_access_key_id(id: &str) -> bool {
    (20..=30).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// Reads a SigV4 secret: one line of 43-64 characters of `[A-Za-z0-9/+=]`, trailing newline
/// trimmed. Warns when the file is readable or writable by group or others.
fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_SECRET_FILE_LEN {
        return Err(format!("{shown} is too large to be a secret"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %shown,
                mode = format_args!("{mode:o}"),
                "secret file is accessible to group or others; chmod 600 it"
            );
        }
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?);
    let mut content: &[u8] = &bytes;
    if let Some(rest) = content.strip_suffix(b"\n") {
        content = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let valid = (43..=64).contains(&content.len())
        && content
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'+' | b'='));
    if !valid {
        return Err(format!(
            "{shown} must contain 43-64 characters of A-Z a-z 0-9 / + = (one line)"
        ));
    }
    // All bytes are ASCII, so this cannot fail; the error arm keeps it typed.
    let text = std::str::from_utf8(content).map_err(|_| format!("{shown} is not ASCII"))?;
    Ok(SecretBox::new(Box::<str>::from(text)))
}

/// The live key-store configuration, replaced atomically by [`Registry::reload`].
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    current: RwLock<Arc<KeyStores>>,
}

impl Registry {
    /// Loads `path`; fails if it is invalid.
    pub fn new(path: PathBuf) -> Result<Registry, ConfigError> {
        let stores = KeyStores::load(&path)?;
        Ok(Registry::from_parts(path, stores))
    }

    /// A registry over an already validated configuration (reload re-reads `path`).
    pub fn from_parts(path: PathBuf, stores: KeyStores) -> Registry {
        Registry {
            path,
            current: RwLock::new(Arc::new(stores)),
        }
    }

    /// The configuration in force; cheap (an `Arc` clone under a read lock).
    pub fn current(&self) -> Arc<KeyStores> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file. A valid file replaces the configuration atomically; an invalid one
    /// leaves the running configuration in place, is logged, and its error returned.
    pub fn reload(&self) -> Result<(), ConfigError> {
        match KeyStores::load(&self.path) {
            Ok(stores) => {
                let count = stores.len();
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(stores);
                tracing::info!(file = %self.path.display(), key_stores = count, "keystores reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    file = %self.path.display(),
                    error = %e,
                    "keystores reload failed; keeping the previous configuration"
                );
                Err(e)
            }
        }
    }

    /// The keystores.toml path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    const AKID1: &str = "AKIAI2SFODNN7EXAMPLEAB";
    const AKID2: &str = "AKIAI2SFODNN7EXAMPLECD";
    const SECRET1: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
    const SECRET2: &str = "0000EXAMPLEFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9+vE=";

    fn dir_with_secrets() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "s1", &format!("{SECRET1}\n"));
        write_secret(dir.path(), "s2", SECRET2);
        dir
    }

    fn write_secret(dir: &Path, name: &str, content: &str) {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn two_stores() -> String {
        format!(
            r#"
[[keystore]]
name = "default"
path_prefix = "/example"
keys = ["demo-key", "other.key_1"]
rate_limit_per_sec = 2000
burst = 4000

[[keystore.credential]]
access_key_id = "{AKID1}"
secret_file = "s1"

[[keystore.credential]]
access_key_id = "{AKID2}"
secret_file = "s2"

[[keystore.rule]]
name = "allow-prod-account"
effect = "allow"
keys = ["*"]
operations = ["Encrypt", "Decrypt", "GenerateDataKey*", "CreateKey"]
principal_arns = ["arn:aws:iam::111122223333:*"]

[[keystore]]
name = "root"
path_prefix = ""
keys = ["*"]
rate_limit_per_sec = 5
burst = 1

[[keystore.credential]]
access_key_id = "BBBBBBBBBBBBBBBBBBBBBBBB"
secret_file = "s1"
"#
        )
    }

    fn parse(text: &str, dir: &Path) -> Result<KeyStores, ConfigError> {
        KeyStores::parse(text, dir)
    }

    fn field_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn parses_the_contract_example() {
        let dir = dir_with_secrets();
        let ks = parse(&two_stores(), dir.path()).unwrap();
        assert_eq!(ks.len(), 2);
        assert!(!ks.is_empty());
        let d = ks.get("default").unwrap();
        assert_eq!(d.path_prefix, "/example");
        assert_eq!(d.uri_path(), "/example/kms/xks/v1");
        assert_eq!(d.rate(), (2000, 4000));
        assert!(d.allows_key("demo-key"));
        assert!(d.allows_key("other.key_1"));
        assert!(!d.allows_key("demo-key2"));
        assert!(!d.allows_key("*"));
        assert_eq!(d.secret_for(AKID1).unwrap().expose_secret(), SECRET1);
        assert_eq!(d.secret_for(AKID2).unwrap().expose_secret(), SECRET2);
        assert!(d.secret_for("BBBBBBBBBBBBBBBBBBBBBBBB").is_none());
        assert_eq!(d.access_key_ids().collect::<Vec<_>>(), vec![AKID1, AKID2]);
        assert_eq!(d.policy().len(), 1);
        let root = ks.get("root").unwrap();
        assert!(root.allows_key("anything-at-all"));
        assert!(root.policy().is_empty());
        assert_eq!(ks.iter().count(), 2);
    }

    #[test]
    fn authorize_uses_the_store_rules() {
        let dir = dir_with_secrets();
        let ks = parse(&two_stores(), dir.path()).unwrap();
        let d = ks.get("default").unwrap();
        let mut req = AuthzRequest {
            key_id: "demo-key",
            kms_operation: "GenerateDataKeyPair",
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/App"),
            ..AuthzRequest::default()
        };
        assert_eq!(
            d.authorize(&req),
            Decision::Allow {
                rule: Some("allow-prod-account".into())
            }
        );
        req.kms_operation = "ReEncrypt";
        assert_eq!(d.authorize(&req), Decision::Deny { rule: None });
        // No rules in "root": allow.
        assert_eq!(
            ks.get("root").unwrap().authorize(&req),
            Decision::Allow { rule: None }
        );
    }

    #[test]
    fn routing_picks_longest_prefix_leading_to_the_api() {
        let dir = dir_with_secrets();
        let text = two_stores()
            + r#"
[[keystore]]
name = "nested"
path_prefix = "/example/tenant-2"
keys = ["*"]
rate_limit_per_sec = 1
burst = 1
[[keystore.credential]]
access_key_id = "CCCCCCCCCCCCCCCCCCCC"
secret_file = "s2"

[[keystore]]
name = "weird"
path_prefix = "/kms/xks/v1"
keys = ["*"]
rate_limit_per_sec = 1
burst = 1
[[keystore.credential]]
access_key_id = "DDDDDDDDDDDDDDDDDDDD"
secret_file = "s2"
"#;
        let ks = parse(&text, dir.path()).unwrap();
        let r = |p: &'static str| ks.route(p).map(|(s, rest)| (s.name.as_str(), rest));
        assert_eq!(
            r("/example/kms/xks/v1/keys/demo-key/encrypt"),
            Some(("default", "/kms/xks/v1/keys/demo-key/encrypt"))
        );
        assert_eq!(
            r("/example/tenant-2/kms/xks/v1/health"),
            Some(("nested", "/kms/xks/v1/health"))
        );
        assert_eq!(
            r("/kms/xks/v1/health"),
            Some(("root", "/kms/xks/v1/health"))
        );
        assert_eq!(r("/kms/xks/v1"), Some(("root", "/kms/xks/v1")));
        assert_eq!(
            r("/kms/xks/v1/kms/xks/v1/health"),
            Some(("weird", "/kms/xks/v1/health"))
        );
        // Prefix must end at a segment boundary followed by the API path.
        assert_eq!(r("/examplex/kms/xks/v1/health"), None);
        assert_eq!(r("/example/kms/xks/v2/health"), None);
        assert_eq!(r("/example/kms/xks/v10/health"), None);
        assert_eq!(r("/other/kms/xks/v1/health"), None);
        assert_eq!(r("/"), None);
        assert_eq!(r(""), None);
    }

    #[test]
    fn route_without_root_store() {
        let dir = dir_with_secrets();
        let text = two_stores();
        let only_default = &text[..text.find("[[keystore]]\nname = \"root\"").unwrap()];
        let ks = parse(only_default, dir.path()).unwrap();
        assert_eq!(ks.len(), 1);
        assert!(ks.route("/kms/xks/v1/health").is_none());
        assert!(ks.route("/example/kms/xks/v1/health").is_some());
    }

    #[test]
    fn validation_errors_name_the_field() {
        let dir = dir_with_secrets();
        let base = two_stores();
        let cases: Vec<(String, &str)> = vec![
            (
                base.replace("name = \"root\"", "name = \"default\""),
                "keystore[1].name",
            ),
            (
                base.replace("name = \"root\"", "name = \"has space\""),
                "keystore[1].name",
            ),
            (
                base.replace("name = \"root\"", "name = \"\""),
                "keystore[1].name",
            ),
            (
                base.replace("path_prefix = \"\"", "path_prefix = \"/example\""),
                "keystore[1].path_prefix",
            ),
            (
                base.replace("\"/example\"", "\"/example/\""),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("\"/example\"", "\"example\""),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("\"/example\"", "\"/\""),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("\"/example\"", "\"/ex.ample\""),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("\"/example\"", "\"/ex?x=1\""),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("\"/example\"", &format!("\"/{}\"", "a".repeat(117))),
                "keystore[0].path_prefix",
            ),
            (
                base.replace("keys = [\"demo-key\", \"other.key_1\"]", "keys = []"),
                "keystore[0].keys",
            ),
            (
                base.replace("\"other.key_1\"", "\"bad/key\""),
                "keystore[0].keys[1]",
            ),
            (
                base.replace("\"other.key_1\"", "\"\""),
                "keystore[0].keys[1]",
            ),
            (
                base.replace("\"other.key_1\"", &format!("\"{}\"", "k".repeat(129))),
                "keystore[0].keys[1]",
            ),
            (
                base.replace("rate_limit_per_sec = 2000", "rate_limit_per_sec = 0"),
                "keystore[0].rate_limit_per_sec",
            ),
            (
                base.replace("burst = 4000", "burst = 0"),
                "keystore[0].burst",
            ),
            (
                base.replace(AKID2, "AKIAI2SFODNN7EXAMPLE01"),
                "keystore[0].credential[1].access_key_id",
            ),
            (
                base.replace(AKID2, "AKIAI2SFODNN7EXAMPL"),
                "keystore[0].credential[1].access_key_id",
            ),
            (
                base.replace(AKID2, &"A".repeat(31)),
                "keystore[0].credential[1].access_key_id",
            ),
            (
                base.replace(AKID2, "akiai2sfodnn7exampleab"),
                "keystore[0].credential[1].access_key_id",
            ),
            (
                base.replace(AKID2, AKID1),
                "keystore[0].credential[1].access_key_id",
            ),
            (
                base.replace("BBBBBBBBBBBBBBBBBBBBBBBB", AKID2),
                "keystore[1].credential[0].access_key_id",
            ),
            (
                base.replace("secret_file = \"s2\"", "secret_file = \"missing\""),
                "keystore[0].credential[1].secret_file",
            ),
            (
                base.replace("secret_file = \"s2\"", "secret_file = \".\""),
                "keystore[0].credential[1].secret_file",
            ),
            (
                base.replace("effect = \"allow\"", "effect = \"Allow\""),
                "keystore[0].rule[0].effect",
            ),
            (
                base.replace("operations = [", "operations = [\"\", "),
                "keystore[0].rule[0].operations[0]",
            ),
            (
                base.replace(
                    "principal_arns = [\"arn:aws:iam::111122223333:*\"]",
                    "principal_arns = []",
                ),
                "keystore[0].rule[0].principal_arns",
            ),
        ];
        for (text, field) in cases {
            let err = parse(&text, dir.path()).unwrap_err();
            assert_eq!(field_of(err), field, "{text}");
        }
    }

    #[test]
    fn credential_count_limits() {
        let dir = dir_with_secrets();
        let base = two_stores();
        // No credential at all for "root".
        let none = base.replace(
            "[[keystore.credential]]\naccess_key_id = \"BBBBBBBBBBBBBBBBBBBBBBBB\"\nsecret_file = \"s1\"\n",
            "",
        );
        assert_eq!(
            field_of(parse(&none, dir.path()).unwrap_err()),
            "keystore[1].credential"
        );
        // Five credentials.
        let mut five = base.clone();
        for akid in [
            "EEEEEEEEEEEEEEEEEEEE",
            "FFFFFFFFFFFFFFFFFFFF",
            "GGGGGGGGGGGGGGGGGGGG",
            "HHHHHHHHHHHHHHHHHHHH",
        ] {
            five.push_str(&format!(
                "\n[[keystore.credential]]\naccess_key_id = \"{akid}\"\nsecret_file = \"s2\"\n"
            ));
        }
        assert_eq!(
            field_of(parse(&five, dir.path()).unwrap_err()),
            "keystore[1].credential"
        );
        // Four is fine.
        let four = five.replace("\n[[keystore.credential]]\naccess_key_id = \"HHHHHHHHHHHHHHHHHHHH\"\nsecret_file = \"s2\"\n", "");
        assert_eq!(
            parse(&four, dir.path())
                .unwrap()
                .get("root")
                .unwrap()
                .access_key_ids()
                .count(),
            4
        );
    }

    #[test]
    fn duplicate_rule_names_rejected() {
        let dir = dir_with_secrets();
        let text = two_stores().replace(
            "[[keystore]]\nname = \"root\"",
            "[[keystore.rule]]\nname = \"allow-prod-account\"\neffect = \"deny\"\n\n[[keystore]]\nname = \"root\"",
        );
        assert_eq!(
            field_of(parse(&text, dir.path()).unwrap_err()),
            "keystore[0].rule[1].name"
        );
    }

    #[test]
    fn prefix_length_limit_is_exact() {
        assert!(validate_prefix(&format!("/{}", "a".repeat(116))).is_ok()); // 117 + 11 = 128
        assert!(validate_prefix(&format!("/{}", "a".repeat(117))).is_err());
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("/a/b-c/d_e").is_ok());
    }

    #[test]
    fn schema_errors() {
        let dir = dir_with_secrets();
        let unknown =
            two_stores().replace("burst = 1\n", "burst = 1\nsecret = \"do-not-echo-me\"\n");
        match parse(&unknown, dir.path()).unwrap_err() {
            ConfigError::Toml { line, message, .. } => {
                assert!(line > 20, "{line}");
                assert!(message.contains("secret"), "{message}");
                assert!(!message.contains("do-not-echo-me"), "{message}");
            }
            other => panic!("{other}"),
        }
        let missing = two_stores().replace("burst = 4000\n", "");
        assert!(matches!(
            parse(&missing, dir.path()),
            Err(ConfigError::Toml { .. })
        ));
        let negative = two_stores().replace("burst = 4000", "burst = -1");
        assert!(matches!(
            parse(&negative, dir.path()),
            Err(ConfigError::Toml { .. })
        ));
        assert!(matches!(
            parse("not toml [", dir.path()),
            Err(ConfigError::Toml { .. })
        ));
        assert_eq!(field_of(parse("", dir.path()).unwrap_err()), "keystore");
    }

    #[test]
    fn secret_file_contents_are_validated_without_echo() {
        let dir = dir_with_secrets();
        let cases = [
            ("short", "A".repeat(42)),
            ("long", "A".repeat(65)),
            ("badchar", format!("{}-", "A".repeat(43))),
            ("twolines", format!("{SECRET1}\n{SECRET1}\n")),
            ("space", format!("{SECRET1} \n")),
            ("empty", String::new()),
        ];
        for (name, content) in &cases {
            write_secret(dir.path(), name, content);
            let text =
                two_stores().replace("secret_file = \"s2\"", &format!("secret_file = \"{name}\""));
            let err = parse(&text, dir.path()).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.starts_with("invalid config field `keystore[0].credential[1].secret_file`"),
                "{shown}"
            );
            if !content.is_empty() {
                assert!(!shown.contains(content.trim()), "secret echoed: {shown}");
            }
        }
        // CRLF and exact bounds are accepted.
        write_secret(dir.path(), "crlf", &format!("{SECRET1}\r\n"));
        write_secret(dir.path(), "max", &"z".repeat(64));
        for name in ["crlf", "max"] {
            let text =
                two_stores().replace("secret_file = \"s2\"", &format!("secret_file = \"{name}\""));
            parse(&text, dir.path()).unwrap();
        }
        // Oversized file.
        write_secret(dir.path(), "huge", &"A".repeat(2000));
        let text = two_stores().replace("secret_file = \"s2\"", "secret_file = \"huge\"");
        assert_eq!(
            field_of(parse(&text, dir.path()).unwrap_err()),
            "keystore[0].credential[1].secret_file"
        );
    }

    #[test]
    fn absolute_secret_paths_and_broad_modes_load() {
        let dir = dir_with_secrets();
        let other = tempfile::tempdir().unwrap();
        let abs = dir.path().join("s2");
        std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = two_stores().replace(
            "secret_file = \"s2\"",
            &format!("secret_file = \"{}\"", abs.display()),
        );
        // Base dir elsewhere: relative "s1" fails, absolute s2 would work.
        assert_eq!(
            field_of(parse(&text, other.path()).unwrap_err()),
            "keystore[0].credential[0].secret_file"
        );
        // A broad mode only warns.
        parse(&text, dir.path()).unwrap();
    }

    #[test]
    fn deploy_example_is_valid() {
        let example = include_str!("../../deploy/keystores.example.toml");
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), "default-1", SECRET1);
        write_secret(dir.path(), "default-2", SECRET2);
        let text = example.replace(
            "/etc/xks-front/secrets/",
            &format!("{}/", dir.path().display()),
        );
        let ks = parse(&text, Path::new("/nonexistent")).unwrap();
        let (store, rest) = ks
            .route("/example/kms/xks/v1/keys/demo-key/encrypt")
            .unwrap();
        assert_eq!(rest, "/kms/xks/v1/keys/demo-key/encrypt");
        assert_eq!(store.access_key_ids().count(), 2);
        assert_eq!(store.policy().len(), 3);
        let batch = AuthzRequest {
            key_id: "demo-key",
            kms_operation: "Decrypt",
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/batch-7"),
            aws_source_vpce: Some("vpce-0123456789abcdef0"),
            ..AuthzRequest::default()
        };
        assert_eq!(
            store.authorize(&batch),
            Decision::Deny {
                rule: Some("deny-batch-decrypt-via-shared-vpce".into())
            }
        );
        let direct = AuthzRequest {
            aws_source_vpce: None,
            ..batch
        };
        assert!(store.authorize(&direct).is_allow());
        let service = AuthzRequest {
            kms_operation: "Encrypt",
            aws_principal_arn: Some("AWS Internal"),
            ..direct
        };
        assert!(store.authorize(&service).is_allow());
        let stranger = AuthzRequest {
            aws_principal_arn: Some("arn:aws:iam::999999999999:root"),
            ..direct
        };
        assert_eq!(store.authorize(&stranger), Decision::Deny { rule: None });
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let dir = dir_with_secrets();
        let ks = parse(&two_stores(), dir.path()).unwrap();
        let shown = format!("{ks:?}");
        assert!(shown.contains(AKID1));
        assert!(
            !shown.contains(SECRET1) && !shown.contains(SECRET2),
            "{shown}"
        );
        let reg = Registry::from_parts(dir.path().join("keystores.toml"), ks);
        let shown = format!("{reg:?}");
        assert!(!shown.contains(SECRET1) && !shown.contains(SECRET2));
    }

    #[test]
    fn registry_reload_swaps_only_valid_files() {
        let dir = dir_with_secrets();
        let file = dir.path().join("keystores.toml");
        std::fs::write(&file, two_stores()).unwrap();
        let reg = Registry::new(file.clone()).unwrap();
        assert_eq!(reg.path(), file.as_path());
        let before = reg.current();
        assert_eq!(before.len(), 2);

        // Rotation step: drop the old credential, change the limits.
        let rotated = two_stores()
            .replace(&format!("[[keystore.credential]]\naccess_key_id = \"{AKID1}\"\nsecret_file = \"s1\"\n\n"), "")
            .replace("burst = 4000", "burst = 10");
        std::fs::write(&file, &rotated).unwrap();
        reg.reload().unwrap();
        let after = reg.current();
        let d = after.get("default").unwrap();
        assert!(d.secret_for(AKID1).is_none());
        assert!(d.secret_for(AKID2).is_some());
        assert_eq!(d.rate(), (2000, 10));
        // A snapshot taken before the reload is unchanged.
        assert!(before.get("default").unwrap().secret_for(AKID1).is_some());

        // Invalid file: error, previous configuration kept.
        std::fs::write(&file, rotated.replace("burst = 10", "burst = 0")).unwrap();
        let err = reg.reload().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid config field `keystore[0].burst`"),
            "{err}"
        );
        assert_eq!(reg.current().get("default").unwrap().rate(), (2000, 10));

        // Missing file: error, previous configuration kept.
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(reg.reload(), Err(ConfigError::Read { .. })));
        assert_eq!(reg.current().len(), 2);

        // A registry cannot start from an invalid file.
        assert!(Registry::new(dir.path().join("nope.toml")).is_err());
    }

    use crate::fuzz::Rng;

    /// TOML-significant bytes plus hostile ones.
    const ALPHABET: &[u8] = b"[]{}=.,\"'#\\ \t\n0123456789-+_:/*aeksz\x00\x7f\xc3\xa9\xff";

    fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
        crate::fuzz::mutate(valid, ALPHABET, rng, 200)
    }

    #[test]
    fn mutated_keystores_toml_is_config_error_or_consistent() {
        let dir = dir_with_secrets();
        let valid = two_stores();
        let mut rng = Rng(0x7e57_0001);
        let (mut ok, mut toml_err, mut invalid) = (0, 0, 0);
        for case in 0..2500 {
            let bytes = if case % 10 == 0 {
                let n = rng.below(400);
                (0..n)
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect()
            } else {
                mutate(valid.as_bytes(), &mut rng)
            };
            let text = String::from_utf8_lossy(&bytes);
            match parse(&text, dir.path()) {
                Ok(ks) => {
                    ok += 1;
                    assert!(!ks.is_empty());
                    for s in ks.iter() {
                        // Every accepted store is reachable at its own URI path.
                        let path = format!("{}/health", s.uri_path());
                        assert_eq!(ks.route(&path).unwrap().0.name, s.name);
                        assert!(s.access_key_ids().all(valid_access_key_id));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.contains(SECRET1) && !msg.contains(SECRET2), "{msg}");
                    match e {
                        ConfigError::Toml { line, .. } => {
                            toml_err += 1;
                            assert!(line <= text.lines().count() + 1, "line {line}");
                        }
                        ConfigError::Invalid { field, .. } => {
                            invalid += 1;
                            assert!(!field.is_empty());
                        }
                        ConfigError::Read { .. } => panic!("parse never reads the TOML file"),
                    }
                }
            }
        }
        assert!(
            ok > 0 && toml_err > 0 && invalid > 0,
            "{ok} {toml_err} {invalid}"
        );
    }
}
