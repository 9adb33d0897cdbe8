//! Ceremonies: `status`, `init`, `unseal`, `seal` (and the unseal walk-through reused by restore/clone).
//! `rekey` lives in `cmd_rekey.rs`; it shares [`NewConfig`] and the share-file writer.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tonic::transport::Channel;
use vhsm_proto::v1::admin_client::AdminClient;
use vhsm_proto::v1::{
    init_request, EncryptedShare, InitRequest, InitResponse, PassphraseMode, ResetUnsealRequest,
    SealRequest, SealState, SharesMode, StatusRequest, StatusResponse, UnsealRequest,
    UnsealResponse,
};

use crate::cli::{InitArgs, SealArgs, UnsealArgs};
use crate::errors::{CliError, CliResult, ExitKind};
use crate::files::{self, PRIVATE_FILE};
use crate::output::{self, OutputFormat};
use crate::secrets_input::{to_wire, PassphraseReader};
use crate::Ctx;

/// Human name of a seal state.
pub fn seal_state_name(s: i32) -> &'static str {
    match SealState::try_from(s) {
        Ok(SealState::Uninitialized) => "uninitialized",
        Ok(SealState::Sealed) => "sealed",
        Ok(SealState::Unsealed) => "unsealed",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    node_id: &'a str,
    initialized: bool,
    sealed: bool,
    seal_state: &'static str,
    unseal_mode: &'a str,
    threshold: u32,
    share_count: u32,
    unseal_progress: u32,
    key_count: u64,
    version: &'a str,
    store_id: &'a str,
    audit_head_seq: u64,
    audit_head_hash: &'a str,
    restore_pending: bool,
    rekey_staging_id: &'a str,
    rekey_staging_expires_at_ms: u64,
}

/// Fetches the status.
pub async fn fetch_status(client: &mut AdminClient<Channel>) -> CliResult<StatusResponse> {
    client
        .status(StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| CliError::from_status("status", &s))
}

/// Renders a status as key/value text.
pub fn render_status(s: &StatusResponse) -> String {
    let state = seal_state_name(s.seal_state);
    let initialized = s.seal_state != SealState::Uninitialized as i32;
    let mode = if s.unseal_mode.is_empty() {
        "-".to_string()
    } else {
        s.unseal_mode.clone()
    };
    let progress = if s.unseal_mode == "shares" {
        format!(
            "{} of {} (of {} shares issued)",
            s.unseal_progress, s.threshold, s.share_count
        )
    } else {
        "-".into()
    };
    output::render_kv(&[
        ("node", s.node_id.clone()),
        ("version", s.version.clone()),
        ("initialized", yes_no(initialized)),
        ("seal state", state.to_string()),
        ("unseal mode", mode),
        ("unseal progress", progress),
        ("keys", s.key_count.to_string()),
        ("store id", or_dash(&s.store_id)),
        (
            "audit head",
            if s.audit_head_hash.is_empty() {
                "-".into()
            } else {
                format!("{} {}", s.audit_head_seq, s.audit_head_hash)
            },
        ),
        ("restore pending", yes_no(s.restore_pending)),
        (
            "rekey staged",
            if s.rekey_staging_id.is_empty() {
                "-".into()
            } else {
                format!(
                    "{} (expires {})",
                    s.rekey_staging_id,
                    output::time_ms(s.rekey_staging_expires_at_ms)
                )
            },
        ),
    ])
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Runs `status`.
pub async fn status(ctx: &Ctx) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    let s = fetch_status(&mut c).await?;
    let json = StatusJson {
        node_id: &s.node_id,
        initialized: s.seal_state != SealState::Uninitialized as i32,
        sealed: s.seal_state != SealState::Unsealed as i32,
        seal_state: seal_state_name(s.seal_state),
        unseal_mode: &s.unseal_mode,
        threshold: s.threshold,
        share_count: s.share_count,
        unseal_progress: s.unseal_progress,
        key_count: s.key_count,
        version: &s.version,
        store_id: &s.store_id,
        audit_head_seq: s.audit_head_seq,
        audit_head_hash: &s.audit_head_hash,
        restore_pending: s.restore_pending,
        rekey_staging_id: &s.rekey_staging_id,
        rekey_staging_expires_at_ms: s.rekey_staging_expires_at_ms,
    };
    output::emit(ctx.format, &json, || render_status(&s))
}

/// The new unseal configuration requested on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewConfig {
    /// One passphrase.
    Passphrase,
    /// N custodians, M needed, share files written to the directory.
    Shares {
        /// N.
        count: u32,
        /// M.
        threshold: u32,
        /// Where the share files go.
        dir: PathBuf,
    },
}

impl NewConfig {
    /// From `--passphrase` / `--shares N --threshold M --share-dir DIR`.
    pub fn from_flags(
        passphrase: bool,
        shares: Option<u32>,
        threshold: Option<u32>,
        dir: Option<&Path>,
    ) -> CliResult<NewConfig> {
        match (passphrase, shares, threshold, dir) {
            (true, None, None, None) => Ok(NewConfig::Passphrase),
            (false, Some(n), Some(m), Some(d)) => {
                if !(1..=16).contains(&n) {
                    return Err(CliError::usage("--shares must be between 1 and 16"));
                }
                if m < 1 || m > n {
                    return Err(CliError::usage(format!(
                        "--threshold must be between 1 and --shares ({n})"
                    )));
                }
                Ok(NewConfig::Shares {
                    count: n,
                    threshold: m,
                    dir: d.to_path_buf(),
                })
            }
            _ => Err(CliError::usage(
                "give either a passphrase mode or --shares N --threshold M --share-dir DIR",
            )),
        }
    }

    /// Share file path for custodian `k` of this configuration.
    pub fn share_path(dir: &Path, k: u32, n: u32) -> PathBuf {
        dir.join(format!("share-{k}-of-{n}.vhsmshare"))
    }

    /// Checks the share files can be written BEFORE the ceremony (so no share is ever lost).
    pub fn preflight(&self) -> CliResult<()> {
        if let NewConfig::Shares { count, dir, .. } = self {
            files::ensure_dir(dir)?;
            for k in 1..=*count {
                files::refuse_existing(
                    &Self::share_path(dir, k, *count),
                    "move the old share files away first, or choose another --share-dir",
                )?;
            }
            // Prove the directory is writable without leaving anything behind.
            let probe = dir.join(".vhsm-admin-write-test");
            files::write_file(&probe, b"", PRIVATE_FILE, true)?;
            let _ = std::fs::remove_file(&probe);
        }
        Ok(())
    }

    /// Asks the new passphrase(s) and builds the request.
    pub fn collect(&self, input: &mut PassphraseReader) -> CliResult<InitRequest> {
        let mode = match self {
            NewConfig::Passphrase => {
                let p = input.new_passphrase("the appliance")?;
                init_request::Mode::Passphrase(PassphraseMode {
                    passphrase: to_wire(&p),
                })
            }
            NewConfig::Shares {
                count, threshold, ..
            } => {
                let mut custodian_passphrases = Vec::with_capacity(*count as usize);
                for k in 1..=*count {
                    if input.is_terminal() {
                        eprintln!("Custodian {k} of {count}: take the keyboard and type your own passphrase.");
                    }
                    let p = input.new_custodian_passphrase(&format!("custodian {k} of {count}"))?;
                    custodian_passphrases.push(to_wire(&p));
                }
                init_request::Mode::Shares(SharesMode {
                    threshold: *threshold,
                    custodian_passphrases,
                })
            }
        };
        Ok(InitRequest { mode: Some(mode) })
    }
}

/// One share file written, as printed in `-o json`.
#[derive(Debug, Serialize)]
pub struct ShareJson {
    index: u32,
    file: String,
    fingerprint: String,
}

impl ShareJson {
    /// The custodian index, the file written and the share's fingerprint.
    pub fn parts(&self) -> (u32, &str, &str) {
        (self.index, &self.file, &self.fingerprint)
    }
}

/// Writes the share files of `shares` (quorum mode; nothing in passphrase mode), each 0o600
/// and fsync'd. Keeps writing the others when one fails, then returns the first error.
pub fn write_share_files(cfg: &NewConfig, shares: &[EncryptedShare]) -> CliResult<Vec<ShareJson>> {
    let mut written = Vec::new();
    let NewConfig::Shares { count, dir, .. } = cfg else {
        return Ok(written);
    };
    if shares.len() != *count as usize {
        return Err(CliError::usage(format!(
            "vhsmd returned {} shares, expected {count}",
            shares.len()
        )));
    }
    let mut first_err = None;
    for s in shares {
        let path = NewConfig::share_path(dir, s.index, *count);
        if let Err(e) = files::write_file(&path, &s.share, PRIVATE_FILE, false) {
            first_err.get_or_insert(e);
            continue;
        }
        written.push(ShareJson {
            index: s.index,
            file: path.display().to_string(),
            fingerprint: s.fingerprint.clone(),
        });
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

#[derive(Serialize)]
struct InitJson {
    store_id: String,
    audit_key_fingerprint: String,
    shares: Vec<ShareJson>,
}

/// Writes the share files of an init/rekey response and prints what custodians must record.
fn deliver(
    cfg: &NewConfig,
    resp: &InitResponse,
    format: OutputFormat,
    what: &str,
) -> CliResult<()> {
    let shares = write_share_files(cfg, &resp.shares).map_err(|e| {
        e.with_hint(
            "the store is initialized but a share file could not be written: run `rekey` with the shares that were written",
        )
    })?;
    if let NewConfig::Shares { dir, .. } = cfg {
        files::sync_dir(dir)?;
    }
    let json = InitJson {
        store_id: resp.store_id.clone(),
        audit_key_fingerprint: resp.audit_key_fingerprint.clone(),
        shares,
    };
    output::emit(format, &json, || {
        let mut s = format!("{what}: store {}\n", resp.store_id);
        for sh in &json.shares {
            s.push_str(&format!(
                "custodian {}: share file {} (0600), fingerprint {}  <- write it on paper\n",
                sh.index, sh.file, sh.fingerprint
            ));
        }
        if !resp.audit_key_fingerprint.is_empty() {
            s.push_str(&format!(
                "audit key fingerprint: {}  <- auditors write it on paper\n",
                resp.audit_key_fingerprint
            ));
        }
        if what == "INITIALIZED" {
            s.push_str("The appliance is SEALED: unseal it with `vhsm-admin unseal`.\n");
        }
        s
    })
}

/// Runs `init`.
pub async fn init(ctx: &Ctx, args: &InitArgs) -> CliResult<()> {
    let cfg = NewConfig::from_flags(
        args.passphrase,
        args.shares,
        args.threshold,
        args.share_dir.as_deref(),
    )?;
    cfg.preflight()?;
    let mut c = ctx.target.admin().await?;
    // Refuse early, before custodians type anything.
    let st = fetch_status(&mut c).await?;
    if st.seal_state != SealState::Uninitialized as i32 {
        return Err(CliError::new(
            ExitKind::InvalidState,
            format!(
                "the appliance at {} is already initialized (store {})",
                ctx.target.endpoint, st.store_id
            ),
        )
        .with_hint("to change the passphrase or the custodians use `vhsm-admin rekey`"));
    }
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let req = cfg.collect(&mut input)?;
    let resp = c
        .init(req)
        .await
        .map_err(|s| CliError::from_status("init", &s))?
        .into_inner();
    deliver(&cfg, &resp, ctx.format, "INITIALIZED")
}

#[derive(Serialize)]
struct ProgressJson {
    seal_state: &'static str,
    progress: u32,
    threshold: u32,
}

fn progress_line(r: &UnsealResponse) -> String {
    if r.seal_state == SealState::Unsealed as i32 {
        "UNSEALED".to_string()
    } else {
        format!("progress {} of {}", r.progress, r.threshold)
    }
}

/// Submits unseal material to `client`: the passphrase (no shares) or each share with its
/// custodian's passphrase. Prints progress per step; returns the last response.
pub async fn unseal_walkthrough(
    client: &mut AdminClient<Channel>,
    mode: &str,
    shares: &[PathBuf],
    input: &mut PassphraseReader,
) -> CliResult<UnsealResponse> {
    if shares.is_empty() {
        if mode == "shares" {
            return Err(CliError::usage(
                "this store unseals with custodian shares: each custodian runs `vhsm-admin unseal --share FILE`",
            ));
        }
        let p = input.existing("Unseal passphrase: ")?;
        let r = client
            .unseal(UnsealRequest {
                passphrase: to_wire(&p),
                share: Vec::new(),
            })
            .await
            .map_err(|s| CliError::from_status("unseal", &s))?
            .into_inner();
        eprintln!("{}", progress_line(&r));
        return Ok(r);
    }
    if mode == "passphrase" {
        return Err(CliError::usage(
            "this store unseals with a passphrase, not shares: run `vhsm-admin unseal` without --share",
        ));
    }
    // Read every share file first so a typo in a path fails before anyone types a passphrase.
    let mut loaded = Vec::with_capacity(shares.len());
    for path in shares {
        loaded.push((path, zeroize::Zeroizing::new(files::read_file(path)?)));
    }
    let mut last = None;
    for (path, share) in loaded {
        let p = input.existing(&format!(
            "Passphrase of the custodian of {}: ",
            path.display()
        ))?;
        let r = client
            .unseal(UnsealRequest {
                passphrase: to_wire(&p),
                share: share.to_vec(),
            })
            .await
            .map_err(|s| CliError::from_status(&format!("unseal with {}", path.display()), &s))?
            .into_inner();
        eprintln!("{}: {}", path.display(), progress_line(&r));
        let done = r.seal_state == SealState::Unsealed as i32;
        last = Some(r);
        if done {
            break;
        }
    }
    last.ok_or_else(|| CliError::usage("no share given"))
}

fn emit_progress(format: OutputFormat, r: &UnsealResponse) -> CliResult<()> {
    let j = ProgressJson {
        seal_state: seal_state_name(r.seal_state),
        progress: r.progress,
        threshold: r.threshold,
    };
    output::emit(format, &j, || format!("{}\n", progress_line(r)))
}

/// Runs `unseal` / `unseal --reset`.
pub async fn unseal(ctx: &Ctx, args: &UnsealArgs) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    if args.reset {
        let r = c
            .reset_unseal(ResetUnsealRequest {})
            .await
            .map_err(|s| CliError::from_status("unseal --reset", &s))?
            .into_inner();
        return emit_progress(ctx.format, &r);
    }
    let st = fetch_status(&mut c).await?;
    if st.seal_state == SealState::Unsealed as i32 {
        return Err(CliError::new(
            ExitKind::InvalidState,
            "the appliance is already unsealed",
        ));
    }
    if st.seal_state == SealState::Uninitialized as i32 && !st.restore_pending {
        return Err(
            CliError::new(ExitKind::Sealed, "the appliance is not initialized")
                .with_hint("run `vhsm-admin init` or `vhsm-admin backup restore` first"),
        );
    }
    let mut input = PassphraseReader::open(ctx.passphrase_fd)?;
    let r = unseal_walkthrough(&mut c, &st.unseal_mode, &args.share, &mut input).await?;
    emit_progress(ctx.format, &r)
}

/// Asks "type seal to confirm" on the terminal.
fn confirm_seal(endpoint: &str) -> CliResult<()> {
    output::confirm_typed(
        "seal",
        &format!(
            "Seal {endpoint}? Every key in memory is wiped and all crypto requests fail until custodians unseal. Type 'seal' to confirm: "
        ),
        "seal",
        "not confirmed; the appliance was NOT sealed",
    )
}

/// Runs `seal`.
pub async fn seal(ctx: &Ctx, args: &SealArgs) -> CliResult<()> {
    let mut c = ctx.target.admin().await?;
    if !args.yes {
        confirm_seal(&ctx.target.endpoint)?;
    }
    c.seal(SealRequest {})
        .await
        .map_err(|s| CliError::from_status("seal", &s))?;
    let j = serde_json::json!({"seal_state": "sealed"});
    output::emit(ctx.format, &j, || "SEALED\n".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::io::Cursor;

    fn reader(text: &str) -> PassphraseReader {
        PassphraseReader::from_reader(Box::new(Cursor::new(text.as_bytes().to_vec())))
    }

    #[test]
    fn new_config_validation() {
        assert_eq!(
            NewConfig::from_flags(true, None, None, None).unwrap(),
            NewConfig::Passphrase
        );
        let d = Path::new("d");
        assert!(NewConfig::from_flags(false, Some(3), Some(2), Some(d)).is_ok());
        assert!(NewConfig::from_flags(false, Some(3), Some(4), Some(d)).is_err());
        assert!(NewConfig::from_flags(false, Some(3), Some(0), Some(d)).is_err());
        assert!(NewConfig::from_flags(false, Some(17), Some(2), Some(d)).is_err());
        assert!(NewConfig::from_flags(false, None, None, None).is_err());
        assert!(NewConfig::from_flags(true, Some(3), Some(2), Some(d)).is_err());
    }

    #[test]
    fn share_file_names_follow_the_contract() {
        assert_eq!(
            NewConfig::share_path(Path::new("/s"), 2, 5),
            PathBuf::from("/s/share-2-of-5.vhsmshare")
        );
    }

    #[test]
    fn collect_reads_one_passphrase_per_custodian_in_order() {
        let cfg = NewConfig::Shares {
            count: 3,
            threshold: 2,
            dir: "d".into(),
        };
        let mut r = reader("custodian one pass\ncustodian two pass\ncustodian three pass\n");
        let req = cfg.collect(&mut r).unwrap();
        match req.mode.unwrap() {
            init_request::Mode::Shares(s) => {
                assert_eq!(s.threshold, 2);
                assert_eq!(
                    s.custodian_passphrases,
                    [
                        "custodian one pass",
                        "custodian two pass",
                        "custodian three pass"
                    ]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // too few lines
        let mut r = reader("custodian one pass\n");
        assert!(cfg.collect(&mut r).is_err());
        // a short one
        let mut r = reader("custodian one pass\nshort\ncustodian three pass\n");
        assert!(cfg.collect(&mut r).is_err());
    }

    #[test]
    fn collect_passphrase_mode() {
        let mut r = reader("a long enough passphrase\na long enough passphrase\nstill here\n");
        let req = NewConfig::Passphrase.collect(&mut r).unwrap();
        match req.mode.unwrap() {
            init_request::Mode::Passphrase(p) => {
                assert_eq!(p.passphrase, "a long enough passphrase");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(r.existing("x").unwrap().expose_secret(), "still here");
    }

    #[test]
    fn preflight_refuses_existing_share_files_and_creates_dir() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("shares");
        let cfg = NewConfig::Shares {
            count: 2,
            threshold: 2,
            dir: dir.clone(),
        };
        cfg.preflight().unwrap();
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::write(dir.join("share-2-of-2.vhsmshare"), b"x").unwrap();
        let e = cfg.preflight().unwrap_err();
        assert_eq!(e.kind().code(), 7);
    }

    #[test]
    fn deliver_writes_share_files_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cfg = NewConfig::Shares {
            count: 2,
            threshold: 1,
            dir: d.path().to_path_buf(),
        };
        let resp = InitResponse {
            store_id: "ab".into(),
            shares: vec![
                vhsm_proto::v1::EncryptedShare {
                    index: 1,
                    share: b"share-one".to_vec(),
                    fingerprint: "f1".into(),
                },
                vhsm_proto::v1::EncryptedShare {
                    index: 2,
                    share: b"share-two".to_vec(),
                    fingerprint: "f2".into(),
                },
            ],
            audit_key_fingerprint: "af".into(),
        };
        deliver(&cfg, &resp, OutputFormat::Json, "INITIALIZED").unwrap();
        let p = d.path().join("share-2-of-2.vhsmshare");
        assert_eq!(std::fs::read(&p).unwrap(), b"share-two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // a wrong share count is refused
        let short = InitResponse {
            shares: resp.shares[..1].to_vec(),
            ..resp.clone()
        };
        let d2 = tempfile::tempdir().unwrap();
        let cfg2 = NewConfig::Shares {
            count: 2,
            threshold: 1,
            dir: d2.path().to_path_buf(),
        };
        assert!(deliver(&cfg2, &short, OutputFormat::Json, "x").is_err());
    }

    #[test]
    fn status_rendering() {
        let s = StatusResponse {
            node_id: "vhsm-1".into(),
            seal_state: SealState::Sealed as i32,
            unseal_mode: "shares".into(),
            threshold: 2,
            share_count: 3,
            unseal_progress: 1,
            key_count: 4,
            version: "0.1.0".into(),
            store_id: "abcd".into(),
            audit_head_seq: 7,
            audit_head_hash: "ff".into(),
            restore_pending: false,
            rekey_staging_id: "5eed".into(),
            rekey_staging_expires_at_ms: 1_700_000_000_000,
        };
        let t = render_status(&s);
        assert!(t.contains("sealed"), "{t}");
        assert!(t.contains("5eed (expires 2023-11-14T22:13:20.000Z)"), "{t}");
        assert!(t.contains("1 of 2"), "{t}");
        assert!(t.contains("7 ff"), "{t}");
        assert_eq!(seal_state_name(99), "unknown");
    }
}
