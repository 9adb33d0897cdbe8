//! `rekey`: stage the new configuration, write the new share files, prove them, commit.
//!
//! One run does all four steps: RekeyStage (the old passphrase/shares stay in force), write
//! and fsync the share files, read back M of them and send them with their custodians'
//! passphrases (or the new passphrase) in RekeyCommit. If anything fails before the commit the
//! OLD configuration still works and the staging expires; `rekey --commit ID --share FILE...`
//! (or `--commit ID --new-passphrase`) finishes a staging whose run was interrupted after the
//! files were written, and `rekey --abort ID` discards it.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Serialize;
use tonic::transport::Channel;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::{
    init_request, InitRequest, RekeyAbortRequest, RekeyCommitRequest, RekeyCommitResponse,
    RekeyRequest, RekeyStageResponse, ShareSubmission,
};
use zeroize::Zeroizing;

use crate::cli::RekeyArgs;
use crate::cmd_ceremony::{write_share_files, NewConfig, ShareJson};
use crate::errors::{CliError, CliResult};
use crate::files;
use crate::output::{self, OutputFormat};
use crate::secrets_input::{to_wire, PassphraseReader};
use crate::Ctx;

/// `rekey -o json` (the fields of the former one-shot output, plus the staging and commit).
#[derive(Serialize)]
struct RekeyJson {
    store_id: String,
    audit_key_fingerprint: String,
    shares: Vec<ShareJson>,
    staging_id: String,
    committed: bool,
    epoch: u32,
    unseal_mode: String,
    threshold: u32,
    share_count: u32,
}

/// Runs `rekey` (or `rekey --commit` / `rekey --abort`).
pub async fn rekey(ctx: &Ctx, args: &RekeyArgs) -> CliResult<()> {
    if let Some(id) = &args.abort {
        return abort(ctx, id).await;
    }
    if let Some(id) = &args.commit {
        return commit_only(ctx, args, id).await;
    }
    stage_write_prove_commit(ctx, args).await
}

/// The new passphrase(s) a request carries, kept to prove possession at commit.
fn new_material(req: &InitRequest) -> Vec<SecretString> {
    match &req.mode {
        Some(init_request::Mode::Passphrase(p)) => {
            vec![SecretString::from(p.passphrase.clone())]
        }
        Some(init_request::Mode::Shares(s)) => s
            .custodian_passphrases
            .iter()
            .map(|p| SecretString::from(p.clone()))
            .collect(),
        None => Vec::new(),
    }
}

fn not_committed(e: CliError, staged: &RekeyStageResponse) -> CliError {
    let expires = output::time_ms(staged.expires_at_ms);
    let hint = match e.hint() {
        Some(h) => format!("{h}; "),
        None => String::new(),
    };
    e.with_hint(format!(
        "{hint}the rekey was NOT committed: the OLD passphrase / shares still work. Staging {} \
         expires at {expires}; to finish it run `vhsm-admin rekey --commit {} --share FILE...` \
         (or `--new-passphrase`) with the new material, or run `vhsm-admin rekey` again",
        staged.staging_id, staged.staging_id
    ))
}

async fn stage_write_prove_commit(ctx: &Ctx, args: &RekeyArgs) -> CliResult<()> {
    let cfg = NewConfig::from_flags(
        args.new_passphrase,
        args.shares,
        args.threshold,
        args.share_dir.as_deref(),
    )?;
    let has_old_shares = !args.old_share.is_empty();
    if args.old_passphrase == has_old_shares {
        return Err(CliError::usage(
            "authorize with either --old-passphrase or --old-share FILE (repeated)",
        ));
    }
    cfg.preflight()?;
    let mut old = Vec::with_capacity(args.old_share.len());
    for path in &args.old_share {
        old.push((path, Zeroizing::new(files::read_file(path)?)));
    }
    let mut c = ctx.target.admin().await?;
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let mut req = RekeyRequest::default();
    if args.old_passphrase {
        req.old_passphrase = to_wire(&input.existing("Current (old) passphrase: ")?);
    }
    for (path, share) in old {
        let p = input.existing(&format!(
            "Passphrase of the custodian of old share {}: ",
            path.display()
        ))?;
        req.old_shares.push(ShareSubmission {
            share: share.to_vec(),
            passphrase: to_wire(&p),
        });
    }
    let new_config = cfg.collect(&mut input)?;
    let kept = new_material(&new_config);
    req.new_config = Some(new_config);

    let staged = c
        .rekey_stage(req)
        .await
        .map_err(|s| CliError::from_status("rekey", &s))?
        .into_inner();
    eprintln!(
        "staged rekey {} (expires {}); the current passphrase / shares still work until the commit",
        staged.staging_id,
        output::time_ms(staged.expires_at_ms)
    );
    let mut commit = RekeyCommitRequest {
        staging_id: staged.staging_id.clone(),
        new_passphrase: String::new(),
        shares: Vec::new(),
    };
    let mut shares = Vec::new();
    match &cfg {
        NewConfig::Passphrase => {
            let p = kept
                .first()
                .ok_or_else(|| CliError::usage("no new passphrase was read"))?;
            eprintln!("proving possession of the new passphrase");
            commit.new_passphrase = to_wire(p);
        }
        NewConfig::Shares { count, dir, .. } => {
            if staged.shares.len() != *count as usize || kept.len() != *count as usize {
                return Err(not_committed(
                    CliError::usage(format!(
                        "vhsmd returned {} shares, expected {count}",
                        staged.shares.len()
                    )),
                    &staged,
                ));
            }
            eprintln!("writing {count} share files to {}", dir.display());
            shares =
                write_share_files(&cfg, &staged.shares).map_err(|e| not_committed(e, &staged))?;
            files::sync_dir(dir).map_err(|e| not_committed(e, &staged))?;
            let need = staged.threshold as usize;
            eprintln!("proving possession of {need} of them (read back from disk)");
            commit.shares = read_back(dir, *count, &staged, &kept, need)
                .map_err(|e| not_committed(e, &staged))?;
        }
    }
    let done = c
        .rekey_commit(commit)
        .await
        .map_err(|s| not_committed(CliError::from_status("rekey commit", &s), &staged))?
        .into_inner();
    eprintln!("committed: the new configuration is in force");
    let json = RekeyJson {
        store_id: staged.store_id.clone(),
        audit_key_fingerprint: staged.audit_key_fingerprint.clone(),
        shares,
        staging_id: staged.staging_id.clone(),
        committed: true,
        epoch: done.epoch,
        unseal_mode: done.unseal_mode.clone(),
        threshold: done.threshold,
        share_count: done.share_count,
    };
    emit_done(ctx.format, &json)
}

/// Reads back the first `need` share files that match what vhsmd returned, with the
/// passphrases of their custodians.
fn read_back(
    dir: &Path,
    count: u32,
    staged: &RekeyStageResponse,
    kept: &[SecretString],
    need: usize,
) -> CliResult<Vec<ShareSubmission>> {
    let mut out = Vec::with_capacity(need);
    for (s, pass) in staged.shares.iter().zip(kept) {
        if out.len() == need {
            break;
        }
        let path = NewConfig::share_path(dir, s.index, count);
        let bytes = Zeroizing::new(files::read_file(&path)?);
        if *bytes != s.share {
            return Err(CliError::usage(format!(
                "share file {} does not read back as written",
                path.display()
            )));
        }
        out.push(ShareSubmission {
            share: bytes.to_vec(),
            passphrase: to_wire(pass),
        });
    }
    if out.len() < need {
        return Err(CliError::usage(format!(
            "only {} share files could be read back, {need} are needed",
            out.len()
        )));
    }
    Ok(out)
}

fn render(j: &RekeyJson) -> String {
    let mut s = format!("REKEYED: store {}\n", j.store_id);
    for sh in &j.shares {
        let (index, file, fingerprint) = sh.parts();
        s.push_str(&format!(
            "custodian {index}: share file {file} (0600), fingerprint {fingerprint}  <- write it on paper\n"
        ));
    }
    if !j.audit_key_fingerprint.is_empty() {
        s.push_str(&format!(
            "audit key fingerprint: {}  <- auditors write it on paper\n",
            j.audit_key_fingerprint
        ));
    }
    s.push_str(&format!(
        "unseal mode {} ({} of {}), epoch {}\n",
        j.unseal_mode, j.threshold, j.share_count, j.epoch
    ));
    s
}

async fn send_commit(
    c: &mut AdminClient<Channel>,
    req: RekeyCommitRequest,
) -> CliResult<RekeyCommitResponse> {
    let id = req.staging_id.clone();
    c.rekey_commit(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| {
            CliError::from_status("rekey commit", &s).with_hint(format!(
                "staging {id} was NOT committed: the OLD passphrase / shares still work"
            ))
        })
}

/// `rekey --commit ID (--share FILE... | --new-passphrase)`: finishes an interrupted rekey.
async fn commit_only(ctx: &Ctx, args: &RekeyArgs, id: &str) -> CliResult<()> {
    if args.new_passphrase != args.share.is_empty() {
        return Err(CliError::usage(
            "with --commit give either --share FILE (repeated, the NEW share files) or --new-passphrase",
        ));
    }
    let mut files_in: Vec<(&PathBuf, Zeroizing<Vec<u8>>)> = Vec::new();
    for path in &args.share {
        files_in.push((path, Zeroizing::new(files::read_file(path)?)));
    }
    let mut c = ctx.target.admin().await?;
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let mut req = RekeyCommitRequest {
        staging_id: id.to_string(),
        new_passphrase: String::new(),
        shares: Vec::new(),
    };
    if args.new_passphrase {
        req.new_passphrase = to_wire(&input.existing("The NEW passphrase (staged): ")?);
    }
    for (path, share) in files_in {
        let p = input.existing(&format!(
            "Passphrase of the custodian of new share {}: ",
            path.display()
        ))?;
        req.shares.push(ShareSubmission {
            share: share.to_vec(),
            passphrase: to_wire(&p),
        });
    }
    let done = send_commit(&mut c, req).await?;
    let json = RekeyJson {
        store_id: done.store_id.clone(),
        audit_key_fingerprint: String::new(),
        shares: Vec::new(),
        staging_id: id.to_string(),
        committed: true,
        epoch: done.epoch,
        unseal_mode: done.unseal_mode.clone(),
        threshold: done.threshold,
        share_count: done.share_count,
    };
    emit_done(ctx.format, &json)
}

fn emit_done(format: OutputFormat, json: &RekeyJson) -> CliResult<()> {
    output::emit(format, json, || render(json))?;
    eprintln!("The old passphrase / old shares no longer work; destroy the old share files.");
    Ok(())
}

/// `rekey --abort ID`.
async fn abort(ctx: &Ctx, id: &str) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    c.rekey_abort(RekeyAbortRequest {
        staging_id: id.to_string(),
    })
    .await
    .map_err(|s| CliError::from_status("rekey abort", &s))?;
    let j = serde_json::json!({"staging_id": id, "aborted": true});
    output::emit(ctx.format, &j, || {
        format!("ABORTED: staged rekey {id}; the current passphrase / shares are unchanged\n")
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use vhsm_proto::v1::{EncryptedShare, PassphraseMode, SharesMode};

    #[test]
    fn new_material_keeps_every_new_passphrase() {
        let r = InitRequest {
            mode: Some(init_request::Mode::Shares(SharesMode {
                threshold: 2,
                custodian_passphrases: vec!["a passphrase 1".into(), "a passphrase 2".into()],
            })),
        };
        let kept = new_material(&r);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].expose_secret(), "a passphrase 2");
        let r = InitRequest {
            mode: Some(init_request::Mode::Passphrase(PassphraseMode {
                passphrase: "the one".into(),
            })),
        };
        assert_eq!(new_material(&r)[0].expose_secret(), "the one");
    }

    #[test]
    fn read_back_needs_the_threshold_and_identical_files() {
        let d = tempfile::tempdir().unwrap();
        let staged = RekeyStageResponse {
            staging_id: "id".into(),
            threshold: 2,
            shares: (1..=3)
                .map(|i| EncryptedShare {
                    index: i,
                    share: format!("share {i}").into_bytes(),
                    fingerprint: String::new(),
                })
                .collect(),
            ..Default::default()
        };
        let kept: Vec<SecretString> = (1..=3)
            .map(|i| SecretString::from(format!("p{i}")))
            .collect();
        // Nothing on disk yet.
        assert!(read_back(d.path(), 3, &staged, &kept, 2).is_err());
        for s in &staged.shares {
            std::fs::write(NewConfig::share_path(d.path(), s.index, 3), &s.share).unwrap();
        }
        let got = read_back(d.path(), 3, &staged, &kept, 2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].share.as_slice(), got[1].passphrase.as_str()),
            (&b"share 2"[..], "p2")
        );
        std::fs::write(NewConfig::share_path(d.path(), 1, 3), b"changed").unwrap();
        let e = read_back(d.path(), 3, &staged, &kept, 2).unwrap_err();
        assert!(e.to_string().contains("does not read back"), "{e}");
    }

    #[test]
    fn failure_hint_says_the_old_configuration_still_works() {
        let staged = RekeyStageResponse {
            staging_id: "5eed".into(),
            expires_at_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let e = not_committed(CliError::usage("boom"), &staged);
        let h = e.hint().unwrap();
        assert!(h.contains("OLD passphrase / shares still work"), "{h}");
        assert!(h.contains("rekey --commit 5eed"), "{h}");
        assert!(h.contains("2023-11-14T22:13:20.000Z"), "{h}");
    }
}
