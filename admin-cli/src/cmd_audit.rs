//! `audit export`, `audit verify` (offline) and `audit tail`: the signed, chained audit log.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vhsm_audit::{
    parse_log, public_key_fingerprint, verify_chain, verify_suffix, AuditRecord, Verified,
};
use vhsm_proto::v1::{ExportAuditRequest, GetAuditPublicKeyRequest, StatusRequest};

use crate::cli::{AuditCommand, AuditExportArgs, AuditTailArgs, AuditVerifyArgs};
use crate::errors::{CliError, CliResult, ExitKind};
use crate::files::{self, PUBLIC_FILE};
use crate::output::{self, OutputFormat};
use crate::Ctx;

/// Path of the public key written next to an exported log: `FILE.pub`.
pub fn pub_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Parses `--expect-head SEQ:HASH`.
pub fn parse_expect_head(s: &str) -> CliResult<(u64, String)> {
    let bad = || {
        CliError::usage(format!(
            "invalid --expect-head {s:?}: use SEQ:HASH (hex SHA-256)"
        ))
    };
    let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    if seq == 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

/// Reads a hex Ed25519 public key file (whitespace ignored).
pub fn read_public_key(path: &Path) -> CliResult<[u8; 32]> {
    let text = files::read_file(path)?;
    let hex_text: String = String::from_utf8_lossy(&text)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut key = [0u8; 32];
    hex::decode_to_slice(&hex_text, &mut key).map_err(|_| {
        CliError::usage(format!(
            "{} is not a hex Ed25519 public key (64 hex characters)",
            path.display()
        ))
    })?;
    Ok(key)
}

/// Result of an offline verification, as printed.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    ok: bool,
    records: u64,
    signed: u64,
    head_seq: u64,
    head_hash: String,
    unsigned_tail: u64,
    approvals: u64,
    public_key_fingerprint: String,
}

/// Verifies `log_text` offline; an integrity failure is exit 8 naming the first bad record.
/// With `first_seq = Some(n)` the log is a suffix that must start at seq `n`; the link of its
/// first record to `n - 1` is taken as given. Otherwise the log must start at seq 1.
pub fn verify_text(
    log_text: &str,
    public_key: &[u8; 32],
    expect_head: Option<(u64, &str)>,
    first_seq: Option<u64>,
) -> CliResult<Verified> {
    let fail = |what: String| {
        CliError::new(
            ExitKind::Integrity,
            format!("audit verification FAILED: {what}"),
        )
    };
    let records = parse_log(log_text).map_err(|e| fail(e.to_string()))?;
    let result = match (first_seq, records.first()) {
        (Some(n), Some(first)) if n > 1 => {
            if first.seq != n {
                return Err(fail(format!(
                    "the log starts at seq {}, not at --first-seq {n}",
                    first.seq
                )));
            }
            verify_suffix(&records, public_key, n, &first.prev_hash, expect_head)
        }
        _ => verify_chain(&records, public_key, expect_head),
    };
    result.map_err(|e| fail(e.to_string()))
}

fn verify(args: &AuditVerifyArgs, format: OutputFormat) -> CliResult<()> {
    let key = read_public_key(&args.public_key)?;
    let expect = args
        .expect_head
        .as_deref()
        .map(parse_expect_head)
        .transpose()?;
    let bytes = files::read_file(&args.log)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::new(
            ExitKind::Integrity,
            format!(
                "audit verification FAILED: {} is not UTF-8 text",
                args.log.display()
            ),
        )
    })?;
    let v = verify_text(
        &text,
        &key,
        expect.as_ref().map(|(s, h)| (*s, h.as_str())),
        args.first_seq,
    )?;
    let report = VerifyReport {
        ok: true,
        records: v.records,
        signed: v.signed,
        head_seq: v.head_seq,
        head_hash: v.head_hash.clone(),
        unsigned_tail: v.unsigned_tail,
        approvals: v.approvals,
        public_key_fingerprint: public_key_fingerprint(&key),
    };
    output::emit(format, &report, || {
        let mut s = format!(
            "OK: {} records, {} signed, head {} {}\n",
            v.records, v.signed, v.head_seq, v.head_hash
        );
        if v.approvals > 0 {
            s.push_str(&format!("{} approver signature(s) checked\n", v.approvals));
        }
        if v.unsigned_tail > 0 {
            s.push_str(&format!(
                "note: the last {} record(s) are chained but not yet signed (written while sealed)\n",
                v.unsigned_tail
            ));
        }
        s.push_str(&format!(
            "public key fingerprint {} (compare with the one recorded at init)\n",
            report.public_key_fingerprint
        ));
        s
    })
}

/// Fetches records `from..` page by page until the head; returns the JSON lines.
async fn fetch_from(
    ctx: &Ctx,
    from_seq: u64,
    max: Option<u64>,
) -> CliResult<Vec<(AuditRecord, String)>> {
    let mut c = ctx.target.admin().await?;
    let mut next = from_seq.max(1);
    let mut out: Vec<(AuditRecord, String)> = Vec::new();
    loop {
        let limit = max.map_or(0, |m| {
            u32::try_from(m.saturating_sub(out.len() as u64)).unwrap_or(u32::MAX)
        });
        let r = c
            .export_audit(ExportAuditRequest {
                from_seq: next,
                limit,
            })
            .await
            .map_err(|s| CliError::from_status("audit export", &s))?
            .into_inner();
        if r.records.is_empty() {
            break;
        }
        for line in r.records {
            let rec = AuditRecord::from_json_line(&line).map_err(|_| {
                CliError::new(
                    ExitKind::Integrity,
                    format!(
                        "vhsmd returned a malformed audit record after seq {}",
                        next.saturating_sub(1)
                    ),
                )
            })?;
            if rec.seq < next {
                return Err(CliError::new(
                    ExitKind::Integrity,
                    format!(
                        "vhsmd returned seq {} when seq {next} or later was asked",
                        rec.seq
                    ),
                ));
            }
            next = rec.seq.saturating_add(1);
            out.push((rec, line));
        }
        if next > r.head_seq || max.is_some_and(|m| out.len() as u64 >= m) {
            break;
        }
    }
    Ok(out)
}

async fn export(ctx: &Ctx, args: &AuditExportArgs) -> CliResult<()> {
    let records = fetch_from(ctx, args.from_seq, None).await?;
    let mut c = ctx.target.admin().await?;
    let pk = c
        .get_audit_public_key(GetAuditPublicKeyRequest {})
        .await
        .map_err(|s| CliError::from_status("audit public key", &s))?
        .into_inner();
    let key: [u8; 32] = pk.public_key.as_slice().try_into().map_err(|_| {
        CliError::new(
            ExitKind::Integrity,
            "vhsmd returned an audit public key that is not 32 bytes",
        )
    })?;
    let mut text = String::new();
    for (_, line) in &records {
        text.push_str(line);
        text.push('\n');
    }
    files::write_file(&args.out, text.as_bytes(), PUBLIC_FILE, true)?;
    let pub_file = pub_path(&args.out);
    files::write_file(
        &pub_file,
        format!("{}\n", hex::encode(key)).as_bytes(),
        PUBLIC_FILE,
        true,
    )?;
    let fingerprint = public_key_fingerprint(&key);
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) => (f.0.seq, l.0.seq),
        _ => (0, 0),
    };
    let j = serde_json::json!({
        "file": args.out.display().to_string(),
        "public_key_file": pub_file.display().to_string(),
        "records": records.len(),
        "first_seq": first,
        "last_seq": last,
        "public_key_fingerprint": fingerprint,
    });
    output::emit(ctx.format, &j, || {
        format!(
            "exported {} records (seq {first}..{last}) to {}\npublic key written to {}\n\
public key fingerprint {fingerprint} (compare with the one recorded at init)\n\
verify offline: vhsm-admin audit verify --log {} --public-key {}\n",
            records.len(),
            args.out.display(),
            pub_file.display(),
            args.out.display(),
            pub_file.display()
        )
    })
}

fn render_records(records: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.seq.to_string(),
                output::time_ms(r.time_ms),
                r.event.clone(),
                r.actor.clone(),
                r.details
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if r.signature.is_some() { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    output::render_table(
        &["SEQ", "TIME", "EVENT", "ACTOR", "DETAILS", "SIGNED"],
        &rows,
    )
}

async fn tail(ctx: &Ctx, args: &AuditTailArgs) -> CliResult<()> {
    let n = u64::from(args.lines.max(1));
    let head = {
        let mut c = ctx.target.admin().await?;
        c.status(StatusRequest {})
            .await
            .map_err(|s| CliError::from_status("status", &s))?
            .into_inner()
            .audit_head_seq
    };
    let from = head.saturating_sub(n - 1).max(1);
    let records: Vec<AuditRecord> = fetch_from(ctx, from, Some(n))
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    output::emit(ctx.format, &records, || render_records(&records))
}

/// Runs an `audit` subcommand (`verify` needs no vhsmd).
pub async fn run(ctx: Option<&Ctx>, cmd: &AuditCommand, format: OutputFormat) -> CliResult<()> {
    match (cmd, ctx) {
        (AuditCommand::Verify(a), _) => verify(a, format),
        (AuditCommand::Export(a), Some(ctx)) => export(ctx, a).await,
        (AuditCommand::Tail(a), Some(ctx)) => tail(ctx, a).await,
        (_, None) => Err(CliError::usage(
            "this audit command needs a connection to vhsmd",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use std::collections::BTreeMap;
    use vhsm_audit::GENESIS_PREV_HASH;

    /// A signed chain of `n` records.
    fn chain(n: u64, key: &SigningKey) -> Vec<AuditRecord> {
        let mut prev = GENESIS_PREV_HASH.to_string();
        let mut out = Vec::new();
        for seq in 1..=n {
            let mut d = BTreeMap::new();
            d.insert("key_id".to_string(), format!("k{seq}"));
            let event = if seq == 2 {
                "key.disable"
            } else {
                "key.create"
            };
            let mut r = AuditRecord::new(
                seq,
                prev.clone(),
                1_700_000_000_000 + seq,
                event,
                "admin",
                d,
            );
            r.sign(key);
            prev = r.hash_hex();
            out.push(r);
        }
        out
    }

    fn text(records: &[AuditRecord]) -> String {
        records.iter().map(|r| r.to_json_line() + "\n").collect()
    }

    fn vt(t: &str, k: &[u8; 32], head: Option<(u64, &str)>) -> CliResult<Verified> {
        verify_text(t, k, head, None)
    }

    #[test]
    fn suffix_needs_first_seq_and_must_start_there() {
        let k = key();
        let recs = chain(4, &k);
        let pk = k.verifying_key().to_bytes();
        let suffix = text(&recs[2..]);
        // without --first-seq a log that does not start at 1 fails (a deleted first record)
        assert_eq!(vt(&suffix, &pk, None).unwrap_err().kind().code(), 8);
        let v = verify_text(&suffix, &pk, None, Some(3)).unwrap();
        assert_eq!((v.records, v.head_seq), (2, 4));
        let e = verify_text(&suffix, &pk, None, Some(2)).unwrap_err();
        assert!(e.to_string().contains("starts at seq 3"), "{e}");
        // an edit inside the suffix is still found
        let edited = text(&recs[1..]).replace("key.disable", "key.enable");
        assert_eq!(
            verify_text(&edited, &pk, None, Some(2))
                .unwrap_err()
                .kind()
                .code(),
            8
        );
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn good_log_verifies() {
        let k = key();
        let recs = chain(4, &k);
        let v = vt(&text(&recs), &k.verifying_key().to_bytes(), None).unwrap();
        assert_eq!((v.records, v.signed, v.head_seq), (4, 4, 4));
        assert_eq!(v.head_hash, recs[3].hash_hex());
        let head = recs[3].hash_hex();
        vt(
            &text(&recs),
            &k.verifying_key().to_bytes(),
            Some((4, &head)),
        )
        .unwrap();
    }

    #[test]
    fn edited_record_fails_with_exit_8() {
        let k = key();
        let t = text(&chain(3, &k)).replace("key.disable", "key.enable");
        let e = vt(&t, &k.verifying_key().to_bytes(), None).unwrap_err();
        assert_eq!(e.kind().code(), 8);
        assert!(e.to_string().contains("seq 2"), "{e}");
    }

    #[test]
    fn deleted_record_fails() {
        let k = key();
        let mut recs = chain(3, &k);
        recs.remove(1);
        let e = vt(&text(&recs), &k.verifying_key().to_bytes(), None).unwrap_err();
        assert_eq!(e.kind().code(), 8);
    }

    #[test]
    fn truncation_is_found_with_expected_head() {
        let k = key();
        let recs = chain(3, &k);
        let head = recs[2].hash_hex();
        let e = vt(
            &text(&recs[..2]),
            &k.verifying_key().to_bytes(),
            Some((3, &head)),
        )
        .unwrap_err();
        assert_eq!(e.kind().code(), 8);
    }

    #[test]
    fn wrong_key_and_garbage_fail() {
        let recs = chain(2, &key());
        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        assert_eq!(vt(&text(&recs), &other, None).unwrap_err().kind().code(), 8);
        let k = key().verifying_key().to_bytes();
        assert_eq!(vt("not json\n", &k, None).unwrap_err().kind().code(), 8);
        assert_eq!(vt("", &k, None).unwrap_err().kind().code(), 8);
    }

    #[test]
    fn expect_head_parsing() {
        let h = "A".repeat(64);
        assert_eq!(
            parse_expect_head(&format!("12:{h}")).unwrap(),
            (12, "a".repeat(64))
        );
        assert!(parse_expect_head("12").is_err());
        assert!(parse_expect_head(&format!("x:{h}")).is_err());
        assert!(parse_expect_head(&format!("0:{h}")).is_err());
        assert!(parse_expect_head("3:abcd").is_err());
    }

    #[test]
    fn public_key_file_parsing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pub");
        let k = key().verifying_key().to_bytes();
        std::fs::write(&p, format!("{}\n", hex::encode(k))).unwrap();
        assert_eq!(read_public_key(&p).unwrap(), k);
        std::fs::write(&p, "zz").unwrap();
        assert_eq!(read_public_key(&p).unwrap_err().kind().code(), 1);
        std::fs::write(&p, hex::encode([1u8; 31])).unwrap();
        assert!(read_public_key(&p).is_err());
    }

    #[test]
    fn pub_path_appends_suffix() {
        assert_eq!(
            pub_path(Path::new("/a/audit.jsonl")),
            PathBuf::from("/a/audit.jsonl.pub")
        );
    }

    #[test]
    fn records_render_as_a_table() {
        let t = render_records(&chain(2, &key()));
        assert!(t.starts_with("SEQ"), "{t}");
        assert!(t.contains("key.disable") && t.contains("key_id=k2"), "{t}");
    }
}
