//! `key ...`: key lifecycle (create, import, list, show, rotate, enable, disable, deletion).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use vhsm_proto::v1::{
    CreateKeyRequest, ImportKeyRequest, KeyIdRequest, KeyInfo, KeyState, KeyUsage, ListKeysRequest,
    NewImportKeyRequest, ScheduleKeyDeletionRequest, SetMinDecryptionVersionRequest,
};
use zeroize::Zeroizing;

use crate::cli::KeyCommand;
use crate::errors::{CliError, CliResult};
use crate::files::{self, PRIVATE_FILE};
use crate::output::{self, OutputFormat};
use crate::retry;
use crate::Ctx;
use vhsm_proto::v1::Reason;

/// Parses `encrypt,decrypt,...` into proto usages (deduplicated, order kept).
pub fn parse_usage(items: &[String]) -> CliResult<Vec<i32>> {
    let mut out = Vec::new();
    for raw in items {
        let u = match raw.trim().to_ascii_lowercase().as_str() {
            "encrypt" => KeyUsage::Encrypt,
            "decrypt" => KeyUsage::Decrypt,
            "wrap" => KeyUsage::Wrap,
            "unwrap" => KeyUsage::Unwrap,
            other => {
                return Err(CliError::usage(format!(
                    "invalid --usage {other:?}: use encrypt, decrypt, wrap, unwrap"
                )))
            }
        } as i32;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    if out.is_empty() {
        return Err(CliError::usage("--usage needs at least one operation"));
    }
    Ok(out)
}

/// Parses `k=v` labels.
pub fn parse_labels(items: &[String]) -> CliResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("invalid --label {item:?}: use k=v")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!(
                "invalid --label {item:?}: empty key"
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(CliError::usage(format!("--label {k} given twice")));
        }
    }
    Ok(out)
}

/// Validates a key id as vhsmd does: `[A-Za-z0-9._-]{1,128}`.
pub fn validate_key_id(id: &str) -> CliResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid key id {id:?}: use 1-128 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn usage_name(u: i32) -> &'static str {
    match KeyUsage::try_from(u) {
        Ok(KeyUsage::Encrypt) => "encrypt",
        Ok(KeyUsage::Decrypt) => "decrypt",
        Ok(KeyUsage::Wrap) => "wrap",
        Ok(KeyUsage::Unwrap) => "unwrap",
        _ => "unknown",
    }
}

fn state_name(s: i32) -> &'static str {
    match KeyState::try_from(s) {
        Ok(KeyState::Enabled) => "ENABLED",
        Ok(KeyState::Disabled) => "DISABLED",
        Ok(KeyState::PendingDeletion) => "PENDING_DELETION",
        Ok(KeyState::Destroyed) => "DESTROYED",
        _ => "UNKNOWN",
    }
}

/// A key as printed (JSON field names are part of the scripting surface).
#[derive(Debug, Serialize, PartialEq)]
pub struct KeyJson {
    key_id: String,
    key_spec: String,
    state: &'static str,
    usage: Vec<&'static str>,
    current_version: u32,
    min_decryption_version: u32,
    origin: String,
    labels: BTreeMap<String, String>,
    created_at_ms: u64,
    created_at: String,
    deletion_due_at_ms: u64,
    deletion_due_at: String,
    created_by_audit_seq: u64,
    /// AES-GCM encryptions reserved under the current version (all nodes) and the limit.
    encryptions_reserved: u64,
    encryption_limit: u64,
}

impl From<&KeyInfo> for KeyJson {
    fn from(k: &KeyInfo) -> Self {
        KeyJson {
            key_id: k.key_id.clone(),
            key_spec: k.key_spec.clone(),
            state: state_name(k.state),
            usage: k.usage.iter().map(|u| usage_name(*u)).collect(),
            current_version: k.current_version,
            min_decryption_version: k.min_decryption_version,
            origin: k.origin.clone(),
            labels: k.labels.clone().into_iter().collect(),
            created_at_ms: k.created_at_ms,
            created_at: output::time_ms(k.created_at_ms),
            deletion_due_at_ms: k.deletion_due_at_ms,
            deletion_due_at: output::time_ms(k.deletion_due_at_ms),
            created_by_audit_seq: k.created_by_audit_seq,
            encryptions_reserved: k.encryptions_reserved,
            encryption_limit: k.encryption_limit,
        }
    }
}

/// "N of LIMIT (P %)" for the current version's AES-GCM use; "-" when not reported.
fn encryptions_text(reserved: u64, limit: u64) -> String {
    if limit == 0 {
        return "-".into();
    }
    let percent = reserved as f64 * 100.0 / limit as f64;
    format!("{reserved} of {limit} reserved ({percent:.2} %)")
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Renders one key as key/value text.
pub fn render_key(k: &KeyJson) -> String {
    output::render_kv(&[
        ("key id", k.key_id.clone()),
        ("spec", k.key_spec.clone()),
        ("state", k.state.to_string()),
        ("usage", k.usage.join(",")),
        ("current version", k.current_version.to_string()),
        (
            "min decryption version",
            k.min_decryption_version.to_string(),
        ),
        ("origin", k.origin.clone()),
        ("labels", labels_text(&k.labels)),
        ("created", k.created_at.clone()),
        ("created by audit seq", k.created_by_audit_seq.to_string()),
        ("deletion due", k.deletion_due_at.clone()),
        (
            "encryptions (current version)",
            encryptions_text(k.encryptions_reserved, k.encryption_limit),
        ),
    ])
}

/// Renders a key list as a table.
pub fn render_keys(keys: &[KeyJson]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.key_id.clone(),
                k.state.to_string(),
                k.current_version.to_string(),
                k.min_decryption_version.to_string(),
                k.usage.join(","),
                k.origin.clone(),
                k.created_at.clone(),
                k.deletion_due_at.clone(),
            ]
        })
        .collect();
    output::render_table(
        &[
            "KEY ID",
            "STATE",
            "VERSION",
            "MIN DEC",
            "USAGE",
            "ORIGIN",
            "CREATED",
            "DELETION DUE",
        ],
        &rows,
    )
}

fn emit_key(
    format: OutputFormat,
    resp: Result<tonic::Response<vhsm_proto::v1::KeyResponse>, tonic::Status>,
    action: &str,
) -> CliResult<()> {
    let resp = resp.map_err(|s| CliError::from_status(action, &s))?;
    let lagging = retry::lagging_members(&resp);
    if !lagging.is_empty() {
        eprintln!(
            "warning: {action}: not applied by {}; their read lease has run out, so they refuse crypto until they catch up",
            lagging.join(", ")
        );
    }
    let key = resp
        .into_inner()
        .key
        .ok_or_else(|| CliError::usage(format!("{action}: vhsmd returned no key")))?;
    let j = KeyJson::from(&key);
    output::emit(format, &j, || render_key(&j))
}

/// Runs a `key` subcommand.
pub async fn run(ctx: &Ctx, cmd: &KeyCommand) -> CliResult<()> {
    // Validate everything local before connecting.
    match cmd {
        KeyCommand::Create(a) => {
            validate_key_id(&a.id)?;
            parse_usage(&a.usage)?;
            parse_labels(&a.label)?;
        }
        KeyCommand::Import(a) => {
            validate_key_id(&a.id)?;
            parse_usage(&a.usage)?;
            parse_labels(&a.label)?;
        }
        KeyCommand::Show(a)
        | KeyCommand::Rotate(a)
        | KeyCommand::Enable(a)
        | KeyCommand::Disable(a)
        | KeyCommand::CancelDeletion(a) => validate_key_id(&a.id)?,
        KeyCommand::ScheduleDeletion(a) => validate_key_id(&a.id)?,
        KeyCommand::MinDecryptionVersion(a) => validate_key_id(&a.id)?,
        KeyCommand::Provenance(a) => validate_key_id(&a.id)?,
        // Offline: no connection (lib.rs routes it before any TLS material is loaded).
        KeyCommand::VerifyProvenance(a) => {
            return crate::cmd_provenance::verify(a, ctx.format);
        }
        KeyCommand::ImportKey(_) | KeyCommand::List => {}
    }
    let mut c = ctx.target.admin().await?;
    let f = ctx.format;
    let id_req = |id: &str| KeyIdRequest {
        key_id: id.to_string(),
    };
    // A change: one request id for all attempts; a retry whose first attempt took effect
    // shows the key as it now is.
    macro_rules! write {
        ($method:ident, $msg:expr, $id:expr, $action:expr) => {{
            let client = c.clone();
            let (answer, retried) = retry::send($msg, move |req| {
                let mut client = client.clone();
                async move { client.$method(req).await }
            })
            .await;
            let answer = match answer {
                Err(s) if retried && vhsm_proto::reason_of(&s) == Reason::AlreadyApplied => {
                    c.describe_key(id_req($id)).await
                }
                other => other,
            };
            emit_key(f, answer, $action)
        }};
    }
    match cmd {
        KeyCommand::Create(a) => {
            let req = CreateKeyRequest {
                key_id: a.id.clone(),
                usage: parse_usage(&a.usage)?,
                labels: parse_labels(&a.label)?,
            };
            write!(create_key, req, &a.id, "key create")
        }
        KeyCommand::ImportKey(a) => {
            let r = c
                .new_import_key(NewImportKeyRequest {})
                .await
                .map_err(|s| CliError::from_status("key import-key", &s))?
                .into_inner();
            let mut r = r;
            // The message zeroizes its own copy when dropped; take the Vec out intact.
            let key = Zeroizing::new(std::mem::take(&mut r.import_key));
            if key.len() != 32 {
                return Err(CliError::usage(format!(
                    "vhsmd returned a {}-byte import key, expected 32",
                    key.len()
                )));
            }
            files::write_file(&a.out, &key, PRIVATE_FILE, true)?;
            // What `key provenance` of the imported key will name (a hash, not the key).
            let fingerprint = vhsm_audit::provenance::fingerprint_text(
                &vhsm_audit::provenance::import_key_fingerprint(&key),
            );
            let j = serde_json::json!({
                "import_key_id": r.import_key_id,
                "import_key_fingerprint": fingerprint,
                "file": a.out.display().to_string(),
                "expires_at_ms": r.expires_at_ms,
                "expires_at": output::time_ms(r.expires_at_ms),
            });
            output::emit(f, &j, || {
                format!(
                    "import key id: {}\nfingerprint:   {}\nwritten to:    {} (0600, raw 32 bytes)\nexpires:       {}\n\
SINGLE USE: wrap one key with it (AES-KWP, RFC 5649), run `vhsm-admin key import ID --import-key-id {} --wrapped FILE`, then delete {}.\n",
                    r.import_key_id,
                    fingerprint,
                    a.out.display(),
                    output::time_ms(r.expires_at_ms),
                    r.import_key_id,
                    a.out.display()
                )
            })
        }
        KeyCommand::Import(a) => {
            let wrapped = files::read_file(&a.wrapped)?;
            let req = ImportKeyRequest {
                key_id: a.id.clone(),
                usage: parse_usage(&a.usage)?,
                labels: parse_labels(&a.label)?,
                import_key_id: a.import_key_id.clone(),
                wrapped_key: wrapped,
            };
            write!(import_key, req, &a.id, "key import")
        }
        KeyCommand::List => {
            let keys = c
                .list_keys(ListKeysRequest {})
                .await
                .map_err(|s| CliError::from_status("key list", &s))?
                .into_inner()
                .keys;
            let list: Vec<KeyJson> = keys.iter().map(KeyJson::from).collect();
            output::emit(f, &list, || render_keys(&list))
        }
        KeyCommand::Show(a) => emit_key(f, c.describe_key(id_req(&a.id)).await, "key show"),
        KeyCommand::Rotate(a) => write!(rotate_key, id_req(&a.id), &a.id, "key rotate"),
        KeyCommand::Enable(a) => write!(enable_key, id_req(&a.id), &a.id, "key enable"),
        KeyCommand::Disable(a) => write!(disable_key, id_req(&a.id), &a.id, "key disable"),
        KeyCommand::CancelDeletion(a) => write!(
            cancel_key_deletion,
            id_req(&a.id),
            &a.id, "key cancel-deletion"
        ),
        KeyCommand::ScheduleDeletion(a) => write!(
            schedule_key_deletion,
            ScheduleKeyDeletionRequest {
                key_id: a.id.clone(),
                waiting_days: a.days,
            },
            &a.id, "key schedule-deletion"
        ),
        KeyCommand::MinDecryptionVersion(a) => write!(
            set_min_decryption_version,
            SetMinDecryptionVersionRequest {
                key_id: a.id.clone(),
                min_decryption_version: a.version,
            },
            &a.id, "key min-decryption-version"
        ),
        KeyCommand::Provenance(a) => crate::cmd_provenance::fetch(&mut c, f, a).await,
        KeyCommand::VerifyProvenance(a) => crate::cmd_provenance::verify(a, f),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn usage_parsing() {
        assert_eq!(
            parse_usage(&s(&["encrypt", "Decrypt", "encrypt"])).unwrap(),
            vec![KeyUsage::Encrypt as i32, KeyUsage::Decrypt as i32]
        );
        assert_eq!(
            parse_usage(&s(&["wrap", "unwrap"])).unwrap(),
            vec![KeyUsage::Wrap as i32, KeyUsage::Unwrap as i32]
        );
        assert!(parse_usage(&s(&["sign"])).is_err());
        assert!(parse_usage(&[]).is_err());
    }

    #[test]
    fn label_parsing() {
        let l = parse_labels(&s(&["env=prod", "team=a=b", "empty="])).unwrap();
        assert_eq!(l["env"], "prod");
        assert_eq!(l["team"], "a=b");
        assert_eq!(l["empty"], "");
        assert!(parse_labels(&s(&["novalue"])).is_err());
        assert!(parse_labels(&s(&["=v"])).is_err());
        assert!(parse_labels(&s(&["a=1", "a=2"])).is_err());
    }

    #[test]
    fn key_id_validation() {
        validate_key_id("demo-key.v1_2").unwrap();
        validate_key_id(&"a".repeat(128)).unwrap();
        assert!(validate_key_id("").is_err());
        assert!(validate_key_id(&"a".repeat(129)).is_err());
        assert!(validate_key_id("a/b").is_err());
        assert!(validate_key_id("a b").is_err());
    }

    #[test]
    fn key_json_names_states_and_usages() {
        let k = KeyInfo {
            key_id: "k1".into(),
            key_spec: "AES_256".into(),
            usage: vec![KeyUsage::Encrypt as i32, KeyUsage::Unwrap as i32],
            state: KeyState::PendingDeletion as i32,
            current_version: 3,
            min_decryption_version: 2,
            labels: [("a".to_string(), "b".to_string())].into_iter().collect(),
            created_at_ms: 1_700_000_000_000,
            deletion_due_at_ms: 1_700_086_400_000,
            origin: "imported".into(),
            created_by_audit_seq: 12,
            encryptions_reserved: 1 << 31,
            encryption_limit: 1 << 32,
        };
        let j = KeyJson::from(&k);
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["state"], "PENDING_DELETION");
        assert_eq!(v["usage"], serde_json::json!(["encrypt", "unwrap"]));
        assert_eq!(v["labels"]["a"], "b");
        assert_eq!(v["created_at"], "2023-11-14T22:13:20.000Z");
        let t = render_key(&j);
        assert!(t.contains("PENDING_DELETION") && t.contains("a=b"), "{t}");
        assert!(
            t.contains("2147483648 of 4294967296 reserved (50.00 %)"),
            "{t}"
        );
        assert_eq!(v["encryptions_reserved"], 2_147_483_648u64);
        assert_eq!(encryptions_text(0, 0), "-");
        let table = render_keys(&[j]);
        assert!(table.starts_with("KEY ID"), "{table}");
        assert!(table.contains("k1"), "{table}");
    }
}
