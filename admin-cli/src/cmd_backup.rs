//! `backup create`, `backup restore` and `clone`: encrypted store copies between nodes.

use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::{CreateBackupRequest, RestoreBackupRequest, SealState};

use crate::cli::{BackupCommand, CloneArgs, TargetUnsealArgs};
use crate::cmd_ceremony::{fetch_status, seal_state_name, unseal_walkthrough};
use crate::connect::Target;
use crate::errors::{CliError, CliResult, ExitKind};
use crate::files::{self, PRIVATE_FILE};
use crate::output;
use crate::secrets_input::PassphraseReader;
use crate::Ctx;

/// Hex SHA-256.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Takes a backup and checks it against the server's digest.
async fn take_backup(client: &mut AdminClient<Channel>) -> CliResult<(Vec<u8>, String)> {
    let r = client
        .create_backup(CreateBackupRequest {})
        .await
        .map_err(|s| CliError::from_status("backup create", &s))?
        .into_inner();
    let digest = sha256_hex(&r.backup);
    if !r.sha256.is_empty() && !r.sha256.eq_ignore_ascii_case(&digest) {
        return Err(CliError::new(
            ExitKind::Integrity,
            "the backup received does not match the SHA-256 vhsmd reported",
        ));
    }
    Ok((r.backup, digest))
}

/// Stages `backup` on the target and, unless told not to, walks through unseal there.
async fn restore_onto(
    ctx: &Ctx,
    target: &Target,
    backup: Vec<u8>,
    unseal: &TargetUnsealArgs,
) -> CliResult<()> {
    let mut c = target.admin().await?;
    let st = fetch_status(&mut c).await?;
    if st.seal_state != SealState::Uninitialized as i32 {
        return Err(CliError::new(
            ExitKind::InvalidState,
            format!(
                "the target {} is not empty ({}, store {}): restore needs an uninitialized node",
                target.endpoint,
                seal_state_name(st.seal_state),
                st.store_id
            ),
        ));
    }
    let r = c
        .restore_backup(RestoreBackupRequest { backup })
        .await
        .map_err(|s| CliError::from_status("backup restore", &s))?
        .into_inner();
    eprintln!(
        "backup staged on {}: store {}, unseal mode {}, threshold {}",
        target.endpoint, r.store_id, r.unseal_mode, r.threshold
    );
    let staged_only = unseal.no_unseal || (r.unseal_mode == "shares" && unseal.share.is_empty());
    if staged_only {
        let j = serde_json::json!({
            "store_id": r.store_id, "unseal_mode": r.unseal_mode, "threshold": r.threshold,
            "seal_state": "uninitialized", "restore_pending": true,
        });
        return output::emit(ctx.format, &j, || {
            format!(
                "RESTORE PENDING: {} custodian(s) now run `vhsm-admin unseal --share FILE --endpoint {}` with the SOURCE store's shares\n",
                r.threshold, target.endpoint
            )
        });
    }
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let last = unseal_walkthrough(&mut c, &r.unseal_mode, &unseal.share, &mut input).await?;
    let j = serde_json::json!({
        "store_id": r.store_id, "unseal_mode": r.unseal_mode, "threshold": r.threshold,
        "seal_state": seal_state_name(last.seal_state), "progress": last.progress,
    });
    output::emit(ctx.format, &j, || {
        if last.seal_state == SealState::Unsealed as i32 {
            format!(
                "RESTORED and UNSEALED: store {} on {}\n",
                r.store_id, target.endpoint
            )
        } else {
            format!(
                "RESTORE PENDING: progress {} of {}; more custodians run `vhsm-admin unseal --share FILE --endpoint {}`\n",
                last.progress, last.threshold, target.endpoint
            )
        }
    })
}

/// Runs `backup create` / `backup restore`.
pub async fn run(ctx: &Ctx, cmd: &BackupCommand) -> CliResult<()> {
    match cmd {
        BackupCommand::Create(a) => {
            let mut c = ctx.target.admin().await?;
            let (backup, digest) = take_backup(&mut c).await?;
            files::write_file(&a.out, &backup, PRIVATE_FILE, true)?;
            let j = serde_json::json!({
                "file": a.out.display().to_string(), "bytes": backup.len(), "sha256": digest,
            });
            output::emit(ctx.format, &j, || {
                format!(
                    "backup written to {} (0600, {} bytes)\nsha256 {}\n",
                    a.out.display(),
                    backup.len(),
                    digest
                )
            })
        }
        BackupCommand::Restore(a) => {
            let backup = files::read_file(&a.input)?;
            if backup.is_empty() {
                return Err(CliError::new(
                    ExitKind::Integrity,
                    format!("{} is empty", a.input.display()),
                ));
            }
            eprintln!(
                "backup {} sha256 {}",
                a.input.display(),
                sha256_hex(&backup)
            );
            restore_onto(ctx, &ctx.target, backup, &a.unseal).await
        }
    }
}

/// Runs `clone`.
pub async fn clone(ctx: &Ctx, a: &CloneArgs) -> CliResult<()> {
    let target =
        ctx.target
            .retarget(&a.to, a.to_pki_dir.as_deref(), a.to_server_name.as_deref())?;
    if target.endpoint == ctx.target.endpoint {
        return Err(CliError::usage(
            "--to must name another node than --endpoint",
        ));
    }
    // Check the target is reachable and empty before taking the backup.
    {
        let mut t = target.admin().await?;
        let st = fetch_status(&mut t).await?;
        if st.seal_state != SealState::Uninitialized as i32 {
            return Err(CliError::new(
                ExitKind::InvalidState,
                format!(
                    "the target {} is not empty: clone needs an uninitialized node",
                    target.endpoint
                ),
            ));
        }
    }
    let mut src = ctx.target.admin().await?;
    let (backup, digest) = take_backup(&mut src).await?;
    eprintln!(
        "backup of {} taken ({} bytes, sha256 {digest})",
        ctx.target.endpoint,
        backup.len()
    );
    restore_onto(ctx, &target, backup, &a.unseal).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
