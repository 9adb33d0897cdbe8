//! vhsm-admin library: ceremonies, key operations and PKI for the vhsm appliance.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cmd_approval;
pub mod cmd_audit;
pub mod cmd_backup;
pub mod cmd_ceremony;
pub mod cmd_cluster;
pub mod cmd_key;
pub mod cmd_pki;
pub mod cmd_provenance;
pub mod cmd_rekey;
pub mod cmd_xks;
pub mod cmd_xks_check;
pub mod connect;
pub mod errors;
pub mod files;
pub mod output;
pub mod retry;
pub mod secrets_input;
pub mod wipe_reader;
pub mod xks_load;

use cli::{AuditCommand, Cli, Command, KeyCommand, PkiCommand, XksCommand, XksCredentialsCommand};
use connect::Target;
use errors::CliResult;
use output::OutputFormat;

/// What every online command needs: where vhsmd is, how to print, where passphrases come from.
#[derive(Debug)]
pub struct Ctx {
    /// The node addressed by --endpoint.
    pub target: Target,
    /// --output.
    pub format: OutputFormat,
    /// --passphrase-fd.
    pub passphrase_fd: Option<u32>,
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> CliResult<()> {
    // Offline commands first: they need no TLS material.
    match &cli.command {
        Command::Pki(PkiCommand::Init(a)) => return cmd_pki::run(a, cli.output),
        Command::Xks(XksCommand::Credentials(XksCredentialsCommand::New(a))) => {
            return cmd_xks::run(a)
        }
        Command::Xks(XksCommand::Check(a)) => return cmd_xks_check::run(a, cli.output).await,
        Command::Xks(XksCommand::Load(a)) => return xks_load::run(a).await,
        Command::Audit(cmd @ AuditCommand::Verify(_)) => {
            return cmd_audit::run(None, cmd, cli.output).await
        }
        Command::Approval(cmd_approval::ApprovalCommand::Approver(
            cmd_approval::ApproverCommand::New(a),
        )) => return cmd_approval::approver_new(a, cli.passphrase_fd),
        Command::Key(KeyCommand::VerifyProvenance(a)) => {
            return cmd_provenance::verify(a, cli.output)
        }
        _ => {}
    }
    let ctx = Ctx {
        target: Target::from_args(&cli.conn)?,
        format: cli.output,
        passphrase_fd: cli.passphrase_fd,
    };
    match &cli.command {
        Command::Status => cmd_ceremony::status(&ctx).await,
        Command::Init(a) => cmd_ceremony::init(&ctx, a).await,
        Command::Unseal(a) => cmd_ceremony::unseal(&ctx, a).await,
        Command::Seal(a) => cmd_ceremony::seal(&ctx, a).await,
        Command::Rekey(a) => cmd_rekey::rekey(&ctx, a).await,
        Command::Key(k) => cmd_key::run(&ctx, k).await,
        Command::Backup(b) => cmd_backup::run(&ctx, b).await,
        Command::Clone(a) => cmd_backup::clone(&ctx, a).await,
        Command::Audit(cmd) => cmd_audit::run(Some(&ctx), cmd, ctx.format).await,
        Command::Cluster(cmd) => cmd_cluster::run(&ctx, cmd).await,
        Command::Approval(cmd) => cmd_approval::run(&ctx, cmd).await,
        Command::Pki(_) | Command::Xks(_) => Ok(()),
    }
}
