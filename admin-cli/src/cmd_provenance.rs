//! `key provenance` (fetch a signed statement of a key version's origin) and
//! `key verify-provenance` (check one offline with the exported audit public key).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use tonic::transport::Channel;
use vhsm_audit::provenance::Origin;
use vhsm_audit::{
    public_key_fingerprint, verify_provenance, ProvenanceStatement, SignedProvenance,
};
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::KeyProvenanceRequest;

use crate::cmd_audit::read_public_key;
use crate::errors::{CliError, CliResult, ExitKind};
use crate::files::{self, PUBLIC_FILE};
use crate::output::{self, OutputFormat};

/// `key provenance` arguments.
#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// Key id.
    pub id: String,
    /// Key version (default: the current one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub version: Option<u32>,
    /// Also write the signed statement (JSON) to FILE (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `key verify-provenance` arguments.
#[derive(Debug, Args)]
pub struct VerifyProvenanceArgs {
    /// The statement file written by `key provenance --out` (or its `-o json` output).
    #[arg(long, value_name = "FILE")]
    pub statement: PathBuf,
    /// The audit public key file (`<log>.pub` written by `audit export`: 64 hex characters).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
}

/// Text for an absent import fact: not applicable to generated versions, not recorded for
/// versions imported before the appliance kept it.
fn import_text(origin: Origin, value: Option<&String>) -> String {
    match (origin, value) {
        (_, Some(v)) => v.clone(),
        (Origin::Generated, None) => "-".into(),
        (Origin::Imported, None) => "unknown".into(),
    }
}

fn optional_text(value: Option<u64>, show: impl FnOnce(u64) -> String) -> String {
    value.map_or_else(|| "unknown".into(), show)
}

/// Renders a statement's fields as key/value text.
pub fn render_statement(s: &ProvenanceStatement) -> String {
    output::render_kv(&[
        ("key id", s.key_id.clone()),
        ("version", s.version.to_string()),
        ("store id", s.store_id.clone()),
        ("spec", s.key_spec.clone()),
        ("origin", s.origin.as_str().to_string()),
        (
            "import key id",
            import_text(s.origin, s.import_key_id.as_ref()),
        ),
        (
            "import key fingerprint",
            import_text(s.origin, s.import_key_fingerprint.as_ref()),
        ),
        (
            "created",
            optional_text(s.created_at_ms, |ms| {
                format!("{} ({ms} ms)", output::time_ms(ms))
            }),
        ),
        (
            "created by audit seq",
            optional_text(s.created_by_audit_seq, |n| n.to_string()),
        ),
        ("usage", s.usage.join(",")),
        ("key check value", s.kcv.clone()),
        (
            "issued",
            format!(
                "{} ({} ms)",
                output::time_ms(s.issued_at_ms),
                s.issued_at_ms
            ),
        ),
        ("audit head seq at issue", s.audit_head_seq.to_string()),
        ("signed by audit key", s.audit_key_fingerprint.clone()),
    ])
}

/// Fetches, prints and optionally saves the statement of one key version.
pub async fn fetch(
    client: &mut AdminClient<Channel>,
    format: OutputFormat,
    args: &ProvenanceArgs,
) -> CliResult<()> {
    let json = client
        .key_provenance(KeyProvenanceRequest {
            key_id: args.id.clone(),
            version: args.version.unwrap_or(0),
        })
        .await
        .map_err(|s| CliError::from_status("key provenance", &s))?
        .into_inner()
        .statement_json;
    let signed = SignedProvenance::from_json(&json).map_err(|_| {
        CliError::new(
            ExitKind::Integrity,
            "key provenance: vhsmd returned a malformed statement",
        )
    })?;
    if let Some(out) = &args.out {
        files::write_file(out, format!("{json}\n").as_bytes(), PUBLIC_FILE, true)?;
    }
    match format {
        // The statement itself, so `-o json > FILE` is a statement file too.
        OutputFormat::Json => println!("{json}"),
        OutputFormat::Table => {
            print!("{}", render_statement(&signed.statement));
            println!("signature: {}", signed.signature);
            match &args.out {
                Some(out) => println!(
                    "written to: {} (check it with `vhsm-admin key verify-provenance`)",
                    out.display()
                ),
                None => println!("(not verified here: save it with --out and run `vhsm-admin key verify-provenance`)"),
            }
        }
    }
    Ok(())
}

/// What `key verify-provenance` prints.
#[derive(Debug, Serialize)]
struct VerifiedJson<'a> {
    verified: bool,
    public_key_fingerprint: String,
    statement: &'a ProvenanceStatement,
}

/// Verifies a statement file offline; exit 8 (integrity) if it does not verify.
pub fn verify(args: &VerifyProvenanceArgs, format: OutputFormat) -> CliResult<()> {
    let key = read_public_key(&args.public_key)?;
    let text = files::read_file(&args.statement)?;
    let text = String::from_utf8(text).map_err(|_| {
        CliError::new(
            ExitKind::Integrity,
            format!(
                "{}: not a provenance statement (not UTF-8)",
                args.statement.display()
            ),
        )
    })?;
    let statement =
        verify_provenance(&text, &key).map_err(|e| {
            CliError::new(
            ExitKind::Integrity,
            format!("{}: provenance statement REFUSED: {e}", args.statement.display()),
        )
        .with_hint(
            "the statement was edited, or signed by another appliance's audit key; compare the \
             public key's fingerprint with the one recorded at the init ceremony",
        )
        })?;
    let report = VerifiedJson {
        verified: true,
        public_key_fingerprint: public_key_fingerprint(&key),
        statement: &statement,
    };
    output::emit(format, &report, || {
        format!(
            "provenance statement OK: signed by the audit key {}\n{}",
            report.public_key_fingerprint,
            render_statement(&statement)
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn statement(origin: Origin) -> ProvenanceStatement {
        ProvenanceStatement {
            store_id: "ab".repeat(16),
            key_id: "k1".into(),
            version: 1,
            key_spec: "AES_256".into(),
            origin,
            import_key_id: None,
            import_key_fingerprint: None,
            created_at_ms: None,
            created_by_audit_seq: Some(4),
            usage: vec!["encrypt".into()],
            kcv: "0".repeat(32),
            issued_at_ms: 1_700_000_000_000,
            audit_head_seq: 9,
            audit_key_fingerprint: "fp".into(),
        }
    }

    #[test]
    fn absent_facts_are_dash_or_unknown() {
        let generated = render_statement(&statement(Origin::Generated));
        assert!(generated.contains("import key id"));
        let line = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .map(|l| {
                    l[key.len()..]
                        .trim()
                        .trim_start_matches(':')
                        .trim()
                        .to_string()
                })
                .unwrap()
        };
        assert_eq!(line(&generated, "import key id"), "-");
        assert_eq!(line(&generated, "created by audit seq"), "4");
        assert_eq!(line(&generated, "created "), "unknown");
        let imported = render_statement(&statement(Origin::Imported));
        assert_eq!(line(&imported, "import key id"), "unknown");
        assert_eq!(line(&imported, "import key fingerprint"), "unknown");
    }
}
