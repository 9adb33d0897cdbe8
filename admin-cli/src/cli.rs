//! The command-line surface of vhsm-admin (clap derive types); each help text teaches the ceremony.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// vhsm-admin: key ceremonies and operations for the vhsm appliance.
#[derive(Debug, Parser)]
#[command(
    name = "vhsm-admin",
    version,
    about = "Key ceremonies and operations for the vhsm appliance",
    long_about = "Key ceremonies and operations for the vhsm appliance.\n\n\
Custodians and operators use this tool to create the PKI, initialize and unseal the appliance, \
manage keys, back up and clone nodes, export and verify the audit log, and create the XKS proxy \
credentials for AWS KMS.\n\n\
Every command that talks to vhsmd uses mutual TLS with the operator's client certificate \
(--pki-dir DIR uses DIR/ca.crt, DIR/admin.crt, DIR/admin.key).\n\n\
Passphrases are typed on the terminal without echo, or read one per line from --passphrase-fd N. \
They are never accepted on the command line or from the environment.\n\n\
Exit codes: 0 ok, 1 usage or other error, 2 vhsmd unreachable, 3 sealed or uninitialized, \
4 rejected (wrong passphrase or share, rate limited), 5 permission denied, 6 not found, \
7 invalid state, 8 integrity failure."
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnectArgs,

    /// Read passphrases from this file descriptor, one per line (0 = stdin), instead of the terminal.
    ///
    /// For scripts and tests. New passphrases are read once (no confirmation line). The order of
    /// the lines is the order in which the command would prompt (see docs/admin-cli.md).
    #[arg(long, global = true, value_name = "N")]
    pub passphrase_fd: Option<u32>,

    /// Output format: a readable table, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach vhsmd.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// vhsmd gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "VHSM_ENDPOINT",
        default_value = "https://127.0.0.1:7443"
    )]
    pub endpoint: String,

    /// PKI directory: uses DIR/ca.crt, DIR/admin.crt and DIR/admin.key (see `pki init`).
    #[arg(long, global = true, env = "VHSM_PKI_DIR", value_name = "DIR")]
    pub pki_dir: Option<PathBuf>,

    /// CA certificate that signed vhsmd's server certificate (overrides --pki-dir).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Client certificate (overrides --pki-dir's admin.crt; e.g. auditor.crt for audit commands).
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Client private key (overrides --pki-dir's admin.key).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Name expected in vhsmd's server certificate.
    #[arg(long, global = true, default_value = "vhsmd", value_name = "NAME")]
    pub server_name: String,

    /// Connect timeout in seconds.
    #[arg(long, global = true, default_value_t = 5, value_name = "SECS")]
    pub connect_timeout: u64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the appliance PKI (CA, server and client certificates). Offline.
    #[command(subcommand)]
    Pki(PkiCommand),

    /// Show the appliance state: initialized, sealed, unseal progress, keys, audit head.
    #[command(long_about = "Show the appliance state.\n\n\
Anyone with a valid client certificate (admin, auditor, crypto) may run it. Shows whether the \
store is initialized and sealed, the unseal progress (k of M shares), the unseal mode, the key \
count, the node id, version and store id, the audit head, and whether a restored backup waits \
for unseal.")]
    Status,

    /// Initialize an empty appliance: passphrase mode or M-of-N custodian shares.
    #[command(
        long_about = "Initialize an empty appliance (the key ceremony).\n\n\
Run once per store by the operator with the custodians present. The appliance generates its root \
key and leaves the store sealed.\n\n\
Passphrase mode (--passphrase): one passphrase (at least 12 characters, typed twice) unseals the \
appliance.\n\n\
Quorum mode (--shares N --threshold M --share-dir DIR): each custodian in turn types their own \
passphrase (twice, no echo); the appliance splits the unseal secret into N shares, each encrypted \
under its custodian's passphrase, and the tool writes DIR/share-<k>-of-<N>.vhsmshare (mode 0600). \
Each custodian takes their share file and writes its printed fingerprint on paper. Any M \
custodians can later unseal.\n\n\
The audit key fingerprint printed at the end is recorded on paper by the auditors: it identifies \
the key that signs the audit log.\n\n\
An already initialized store is refused (exit 7); use `rekey` to change the passphrase or the \
custodians.",
        group(ArgGroup::new("mode").required(true).args(["passphrase", "shares"]))
    )]
    Init(InitArgs),

    /// Unseal with the passphrase, or with one custodian share and its passphrase.
    #[command(long_about = "Unseal the appliance.\n\n\
Passphrase mode: `unseal` asks for the passphrase.\n\n\
Quorum mode: each custodian runs `unseal --share FILE` with their share file and types their own \
passphrase; the tool shows `progress k of M` until the threshold is reached and then `UNSEALED`. \
--share may be given several times to submit several shares in one run (each passphrase is asked \
in turn). A partial unseal expires after the appliance's timeout; `unseal --reset` discards the \
shares submitted so far.\n\n\
Wrong passphrases or shares exit 4 and are rate limited; the hint says when to retry.")]
    Unseal(UnsealArgs),

    /// Seal the appliance now: every key in memory is wiped. The kill switch.
    #[command(long_about = "Seal the appliance now.\n\n\
The appliance-wide kill switch, run by an operator: every key in memory is zeroized at once and \
all crypto requests fail until custodians unseal again. The action is audited. Asks for \
confirmation unless --yes.")]
    Seal(SealArgs),

    /// Change the passphrase or the custodian set / threshold (staged, proven, then committed).
    #[command(
        long_about = "Rekey: change the unseal passphrase, or the custodians and threshold.\n\n\
Authorization: the old passphrase (--old-passphrase asks for it) or a quorum of old shares \
(--old-share FILE, repeated; each custodian types their passphrase in turn).\n\n\
New configuration as for init: --new-passphrase (asked twice) or --shares N --threshold M \
--share-dir DIR (each new custodian types a new passphrase). Stored keys are not re-encrypted; \
only the root key is rewrapped.\n\n\
Two phases, one command: the appliance STAGES the new configuration (the old passphrase / shares \
keep working), the tool writes and fsyncs the new share files, reads back M of them and COMMITS \
with them and their custodians' passphrases (or with the new passphrase). Only then do the old \
shares and the old passphrase stop working. If the run fails before the commit, the old \
configuration still works and the staging expires (default 15 minutes).\n\n\
Interrupted after the files were written? Finish with `rekey --commit STAGING_ID --share FILE` \
(repeat for at least M new share files; each custodian types their passphrase) or \
`rekey --commit STAGING_ID --new-passphrase`. `rekey --abort STAGING_ID` discards a staging. \
The staging id is printed when staging and shown by `status`.",
        group(ArgGroup::new("auth").required(true).args(["old_passphrase", "old_share", "commit", "abort"])),
        group(ArgGroup::new("new").required(true).args(["new_passphrase", "shares", "share", "abort"]))
    )]
    Rekey(RekeyArgs),

    /// Key lifecycle: create, import, list, show, rotate, enable, disable, delete.
    #[command(subcommand)]
    Key(KeyCommand),

    /// Encrypted backup and restore of the whole store.
    #[command(subcommand)]
    Backup(BackupCommand),

    /// Copy this node's store to an EMPTY node (backup + restore + unseal in one step).
    #[command(long_about = "Clone this node onto another, empty, node.\n\n\
Run by an operator: takes an encrypted backup of the source node (--endpoint), stages it on the \
uninitialized target (--to), then walks the custodians (or the passphrase holder) through unseal \
of the target, exactly like `unseal`. Key material never leaves the appliances in plaintext. \
--to-pki-dir selects the client certificate for the target when it differs.")]
    Clone(CloneArgs),

    /// Export and verify the signed, chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// AWS KMS external key store (XKS) proxy configuration.
    #[command(subcommand)]
    Xks(XksCommand),

    /// The replicated HA group: status, add and remove nodes.
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Quorum approval: approver keys, the policy, proposals, review, approve and reject.
    #[command(
        subcommand,
        long_about = "Quorum approval of dangerous operations (docs/runbook-approvals.md).\n\n\
Once a policy guards a class of operation (key deletion, disable, raising the minimum decryption \
version, membership changes, the policy itself), one admin certificate is no longer enough: an \
operator proposes the operation, M named approvers review it and approve it with their own \
Ed25519 keys, and the M-th approval executes it once. Every step is in the audit chain."
    )]
    Approval(crate::cmd_approval::ApprovalCommand),
}

/// `cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit/applied index, and whether this node serves crypto.
    #[command(
        long_about = "Show the replicated group as the node at --endpoint sees it.\n\nAny role may run it, and it answers without a quorum, so it is the first thing to run in an \
outage: the leader (none during an election or a quorum loss), each member and its role, the \
replication progress (on the leader), and whether this node holds a read lease and may serve \
crypto (and why not)."
    )]
    Status,
    /// Add a node that was started empty with `[cluster] bootstrap = false`.
    #[command(
        long_about = "Add a node to the group.\n\nStart the new node first, empty, with `[cluster] bootstrap = false` (it waits). Then run this \
against any member with the new node's peer address. The node joins as a learner, receives the \
store (the log, or a snapshot), and is promoted to voter once it caught up. It is sealed: \
unseal it with `vhsm-admin --endpoint NEW unseal` (the same passphrase or custodian shares as \
the rest of the group). Add one node at a time."
    )]
    AddNode(AddNodeArgs),
    /// Remove a member by its raft id (see `cluster status`).
    #[command(
        long_about = "Remove a member from the group.\n\nRun against any member. The node stops being replicated to and stops serving within the lease. \
A removed node never rejoins under its old id: wipe its data_dir and add it again."
    )]
    RemoveNode(RemoveNodeArgs),
}

/// `cluster add-node` arguments.
#[derive(Debug, Args)]
pub struct AddNodeArgs {
    /// The new node's peer address, as the other nodes reach it (https://host:port).
    #[arg(long, value_name = "URL")]
    pub address: String,
    /// Keep it a non-voting learner.
    #[arg(long)]
    pub learner: bool,
}

/// `cluster remove-node` arguments.
#[derive(Debug, Args)]
pub struct RemoveNodeArgs {
    /// Raft id of the member to remove.
    #[arg(long, value_name = "ID")]
    pub raft_id: u64,
}

/// `pki ...`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the CA and every certificate the appliance needs in DIR. Offline.
    #[command(
        long_about = "Create the appliance PKI in DIR. Works offline, no vhsmd needed.\n\n\
Run once by the operator who installs the appliance. Creates an ECDSA P-256 private CA \
(ca.crt/ca.key, 5 years), the vhsmd server certificate (vhsmd.crt, SAN vhsmd, localhost, \
127.0.0.1), the xks-front HTTPS certificate (xks-front.crt, SAN xks.localhost, localhost, \
127.0.0.1), client certificates for xks-front (crypto.crt, CN xks-front), operators (admin.crt, \
CN admin) and auditors (auditor.crt, CN auditor), the client certificate the vhsmd nodes of a \
cluster present to each other (peer.crt, CN vhsm-peer: role `peer`), and a test KMS client \
certificate (kms-client.crt, CN cks.kms.us-east-1.amazonaws.com). Leaf certificates last --days (default \
365). Private keys are written 0600 in a 0700 directory; keep ca.key offline.\n\n\
Refuses to overwrite an existing PKI without --force."
    )]
    Init(PkiInitArgs),
}

/// `pki init` arguments.
#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// Directory to create the PKI in (created 0700).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Extra DNS name or IP address for the vhsmd server certificate (repeatable).
    #[arg(long = "vhsmd-san", value_name = "NAME")]
    pub vhsmd_san: Vec<String>,
    /// Extra DNS name or IP address for the xks-front server certificate (repeatable).
    #[arg(long = "xks-san", value_name = "NAME")]
    pub xks_san: Vec<String>,
    /// Validity of the leaf certificates in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Validity of the CA certificate in days.
    #[arg(long, default_value_t = 1825, value_parser = clap::value_parser!(u32).range(1..=7300))]
    pub ca_days: u32,
    /// Overwrite an existing PKI in DIR (every certificate and key is replaced).
    #[arg(long)]
    pub force: bool,
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Passphrase mode: one passphrase unseals.
    #[arg(long)]
    pub passphrase: bool,
    /// Quorum mode: number of custodians / shares N (1-16).
    #[arg(long, value_name = "N", requires_all = ["threshold", "share_dir"],
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub shares: Option<u32>,
    /// Quorum mode: shares needed to unseal M (1..=N).
    #[arg(long, value_name = "M", requires = "shares", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub threshold: Option<u32>,
    /// Quorum mode: directory for the share files.
    #[arg(long, value_name = "DIR", requires = "shares")]
    pub share_dir: Option<PathBuf>,
}

/// `unseal` arguments.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// A custodian share file (repeatable); its custodian's passphrase is asked for each.
    #[arg(long, value_name = "FILE", conflicts_with = "reset")]
    pub share: Vec<PathBuf>,
    /// Discard the shares submitted so far in a partial unseal.
    #[arg(long)]
    pub reset: bool,
}

/// `seal` arguments.
#[derive(Debug, Args)]
pub struct SealArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `rekey` arguments.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Authorize with the old passphrase (it is asked for; never given here).
    #[arg(long)]
    pub old_passphrase: bool,
    /// Authorize with an old share file (repeat for a quorum); each custodian's passphrase is asked.
    #[arg(long, value_name = "FILE")]
    pub old_share: Vec<PathBuf>,
    /// New configuration: passphrase mode (the new passphrase is asked twice).
    #[arg(long)]
    pub new_passphrase: bool,
    /// New configuration: number of custodians N (1-16).
    #[arg(long, value_name = "N", requires_all = ["threshold", "share_dir"],
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub shares: Option<u32>,
    /// New configuration: shares needed M (1..=N).
    #[arg(long, value_name = "M", requires = "shares", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub threshold: Option<u32>,
    /// New configuration: directory for the new share files.
    #[arg(long, value_name = "DIR", requires = "shares")]
    pub share_dir: Option<PathBuf>,
    /// Finish an interrupted rekey: commit the staging STAGING_ID with the new share files
    /// (--share, repeated) or the new passphrase (--new-passphrase).
    #[arg(long, value_name = "STAGING_ID", conflicts_with = "shares")]
    pub commit: Option<String>,
    /// With --commit: a NEW share file (repeat for at least M); each custodian's passphrase is asked.
    #[arg(long, value_name = "FILE", requires = "commit", conflicts_with_all = ["old_passphrase", "old_share"])]
    pub share: Vec<PathBuf>,
    /// Discard the staged rekey STAGING_ID; the current configuration is unchanged.
    #[arg(long, value_name = "STAGING_ID")]
    pub abort: Option<String>,
}

/// `key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new AES-256 key inside the appliance.
    #[command(
        long_about = "Generate a new AES-256 key inside the appliance (operator).\n\n\
ID is [A-Za-z0-9._-]{1,128} and becomes the XKS externalKeyId. --usage restricts what the key may \
do (default encrypt,decrypt); --label k=v attaches metadata. The key material never leaves the \
appliance."
    )]
    Create(KeyCreateArgs),
    /// Get a fresh single-use import (transport) key to wrap key material for `key import`.
    #[command(long_about = "Get a fresh import (transport) key (operator).\n\n\
Writes the raw 32-byte AES-256 import key to --out (mode 0600) and prints its id and expiry. It is \
SINGLE USE: wrap exactly one key with it (AES key wrap with padding, RFC 5649), run `key import`, \
then delete the file. See docs/admin-cli.md for the openssl command.")]
    ImportKey(ImportKeyArgs),
    /// Import AES-256 material wrapped (RFC 5649) under an import key.
    #[command(long_about = "Import existing AES-256 key material (operator).\n\n\
The material is wrapped with AES-KWP (RFC 5649) under the import key from `key import-key` and \
passed as --wrapped FILE with --import-key-id. The import key is consumed.")]
    Import(KeyImportArgs),
    /// List the keys.
    List,
    /// Show one key.
    Show(KeyIdArgs),
    /// Add a new key version; older versions still decrypt.
    Rotate(KeyIdArgs),
    /// Enable a disabled key.
    Enable(KeyIdArgs),
    /// Disable a key: every crypto call with it fails until enabled again.
    Disable(KeyIdArgs),
    /// Schedule a key's destruction after a waiting period (cancellable until then).
    #[command(long_about = "Schedule a key's destruction (operator).\n\n\
The key becomes unusable at once and is destroyed for good after --days (the appliance enforces \
its configured minimum). Until then `key cancel-deletion` restores it (disabled).")]
    ScheduleDeletion(ScheduleDeletionArgs),
    /// Cancel a scheduled deletion.
    CancelDeletion(KeyIdArgs),
    /// Refuse ciphertexts under key versions below N (after a rotation and re-encryption).
    MinDecryptionVersion(MinVersionArgs),
    /// Print a key version's provenance statement, signed with the appliance's audit key.
    #[command(
        long_about = "Print where a key version came from (operator or auditor).\n\n\
The statement names the store, key id and version, origin (generated inside, or imported with the \
import key's id and fingerprint), creation time and the audit seq of its creation, usage and a key \
check value (an HMAC commitment to the material, never the key), signed with the audit key. \
--out FILE saves it; check it offline with `key verify-provenance`."
    )]
    Provenance(crate::cmd_provenance::ProvenanceArgs),
    /// Check a provenance statement offline against the exported audit public key.
    #[command(
        long_about = "Check a provenance statement offline (no connection).\n\n\
--public-key is the audit public key file written by `audit export` (`<log>.pub`). Exit 8 if the \
statement was edited or signed by another key."
    )]
    VerifyProvenance(crate::cmd_provenance::VerifyProvenanceArgs),
}

/// A key id argument.
#[derive(Debug, Args)]
pub struct KeyIdArgs {
    /// Key id.
    pub id: String,
}

/// `key create` arguments.
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// Key id ([A-Za-z0-9._-]{1,128}).
    pub id: String,
    /// Allowed operations, comma separated: encrypt, decrypt, wrap, unwrap.
    #[arg(long, value_delimiter = ',', default_value = "encrypt,decrypt")]
    pub usage: Vec<String>,
    /// A label k=v (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
}

/// `key import-key` arguments.
#[derive(Debug, Args)]
pub struct ImportKeyArgs {
    /// Where to write the raw 32-byte import key (mode 0600; replaced if it exists).
    #[arg(long, default_value = "import.key", value_name = "FILE")]
    pub out: PathBuf,
}

/// `key import` arguments.
#[derive(Debug, Args)]
pub struct KeyImportArgs {
    /// Key id ([A-Za-z0-9._-]{1,128}).
    pub id: String,
    /// Id printed by `key import-key`.
    #[arg(long, value_name = "KID")]
    pub import_key_id: String,
    /// File with the AES-KWP wrapped key material (40 bytes for an AES-256 key).
    #[arg(long, value_name = "FILE")]
    pub wrapped: PathBuf,
    /// Allowed operations, comma separated: encrypt, decrypt, wrap, unwrap.
    #[arg(long, value_delimiter = ',', default_value = "encrypt,decrypt")]
    pub usage: Vec<String>,
    /// A label k=v (repeatable).
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
}

/// `key schedule-deletion` arguments.
#[derive(Debug, Args)]
pub struct ScheduleDeletionArgs {
    /// Key id.
    pub id: String,
    /// Waiting period in days.
    #[arg(long)]
    pub days: u32,
}

/// `key min-decryption-version` arguments.
#[derive(Debug, Args)]
pub struct MinVersionArgs {
    /// Key id.
    pub id: String,
    /// Lowest key version still accepted for decryption.
    pub version: u32,
}

/// `backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write an encrypted backup of the whole store to FILE.
    #[command(
        long_about = "Write an encrypted backup of the whole store (operator).\n\n\
The appliance must be unsealed. The backup is encrypted under the store's root key: it is useless \
without the passphrase or a quorum of custodian shares. Written 0600 (replaced if it exists); \
the SHA-256 printed should be recorded with the backup."
    )]
    Create(BackupCreateArgs),
    /// Stage a backup on an EMPTY node, then unseal it with the source's passphrase / shares.
    #[command(
        long_about = "Restore a backup onto an EMPTY (uninitialized) node (operator).\n\n\
--endpoint names the target node. The backup is staged, then the passphrase holder or the \
custodians unseal it exactly as with `unseal` (--share FILE, repeated). The backup's integrity is \
checked with the recovered root key before anything is written. With no --share in quorum mode, \
or with --no-unseal, the restore stays staged until custodians run `unseal --share FILE`."
    )]
    Restore(BackupRestoreArgs),
}

/// `backup create` arguments.
#[derive(Debug, Args)]
pub struct BackupCreateArgs {
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Unseal material for a node after restore or clone.
#[derive(Debug, Args)]
pub struct TargetUnsealArgs {
    /// A custodian share file of the SOURCE store (repeatable); its passphrase is asked for each.
    #[arg(long, value_name = "FILE")]
    pub share: Vec<PathBuf>,
    /// Only stage the backup; unseal later with `vhsm-admin unseal`.
    #[arg(long, conflicts_with = "share")]
    pub no_unseal: bool,
}

/// `backup restore` arguments.
#[derive(Debug, Args)]
pub struct BackupRestoreArgs {
    /// Backup file from `backup create`.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    #[command(flatten)]
    pub unseal: TargetUnsealArgs,
}

/// `clone` arguments.
#[derive(Debug, Args)]
pub struct CloneArgs {
    /// Endpoint of the EMPTY target node.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: String,
    /// PKI directory for the target (ca.crt, admin.crt, admin.key); default: the source's.
    #[arg(long, value_name = "DIR")]
    pub to_pki_dir: Option<PathBuf>,
    /// Name expected in the target's server certificate; default: --server-name.
    #[arg(long, value_name = "NAME")]
    pub to_server_name: Option<String>,
    #[command(flatten)]
    pub unseal: TargetUnsealArgs,
}

/// `audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the audit log as JSON lines, with the public key in FILE.pub.
    #[command(
        long_about = "Export the audit log (auditor or admin certificate).\n\n\
Pages through the appliance's records from --from on and writes them as JSON lines to FILE, and \
the appliance's Ed25519 audit public key (hex) to FILE.pub. Compare the printed fingerprint with \
the one recorded on paper at init, then check the log offline with `audit verify`."
    )]
    Export(AuditExportArgs),
    /// Verify an exported log OFFLINE: hash chain and signatures. No vhsmd needed.
    #[command(
        long_about = "Verify an exported audit log offline (auditor). No vhsmd needed.\n\n\
Checks every record's hash chain link and the Ed25519 signatures with the public key, and \
optionally that the log reaches the head SEQ:HASH you recorded earlier (e.g. from `status`). \
Prints `OK: N records, M signed, head SEQ HASH`, or the first bad record and exits 8."
    )]
    Verify(AuditVerifyArgs),
    /// Print the newest audit records.
    Tail(AuditTailArgs),
}

/// `audit export` arguments.
#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Output file (JSON lines); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// First sequence number to export.
    #[arg(long = "from", default_value_t = 1, value_name = "SEQ")]
    pub from_seq: u64,
}

/// `audit verify` arguments.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Exported log (JSON lines).
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// File with the hex Ed25519 public key (FILE.pub from `audit export`).
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
    /// Fail unless the log contains the record SEQ with hash HASH (hex).
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
    /// The log is a suffix exported with `--from SEQ`: it must start at SEQ, and the link of its
    /// first record to SEQ-1 is trusted, not verified. Without it the log must start at seq 1.
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    pub first_seq: Option<u64>,
}

/// `audit tail` arguments.
#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// Number of records.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: u32,
}

/// `xks ...`
#[derive(Debug, Subcommand)]
pub enum XksCommand {
    /// XKS proxy SigV4 credentials.
    #[command(subcommand)]
    Credentials(XksCredentialsCommand),

    /// Probe any XKS proxy as KMS calls it: TLS, every operation and error case, latency.
    #[command(
        long_about = "Probe an XKS proxy from where KMS would call it (any XKS proxy, not \
only this appliance's xks-front).\n\n\
Checks TLS (versions and cipher suites accepted, certificate chain and expiry, mutual TLS \
refusing strangers when --client-cert is given), the four operations as KMS sends them \
(responses verified: key spec, IV and tag sizes, the CDIV recomputed, decrypt round trip, KMS's \
largest payloads), every error a caller can provoke (bad signature, unknown access key, clock \
skew, unknown key, wrong path, missing field, oversized body, GET) and the latency of each call \
against KMS's 250 ms budget. Prints a PASS/WARN/FAIL table (--output json for scripts).\n\n\
The secret access key is read from --secret-file or XKS_SECRET_ACCESS_KEY, never from the \
command line. Exit codes: 0 every check passed (warnings allowed), 4 at least one failed (an \
unreachable endpoint included), 2 the host name does not resolve, 1 usage."
    )]
    Check(crate::cmd_xks_check::XksCheckArgs),
    // Help texts (about, long_about): on `XksLoadArgs`, beside its handler.
    Load(Box<crate::xks_load::XksLoadArgs>),
}

/// `xks credentials ...`
#[derive(Debug, Subcommand)]
pub enum XksCredentialsCommand {
    /// Create a new access key id and secret for the KMS external key store. Offline.
    #[command(long_about = "Create XKS proxy credentials (operator). Offline.\n\n\
Generates an access key id (24 characters of A-Z2-7) and a secret access key (base64 of 32 random \
bytes). The secret is written to --secret-out (mode 0600) for xks-front's keystores.toml \
`secret_file`, and the proxy configuration JSON that the AWS KMS console accepts is printed \
(XksProxyUriPath and XksProxyAuthenticationCredential).\n\n\
The printed JSON intentionally CONTAINS THE SECRET: this is the one place the operator receives \
it. Upload it to KMS, then delete any copy. --uri-path must end with /kms/xks/v1, be at most 128 \
characters of [A-Za-z0-9/_-].")]
    New(XksCredentialsNewArgs),
}

/// `xks credentials new` arguments.
#[derive(Debug, Args)]
pub struct XksCredentialsNewArgs {
    /// The proxy URI path, e.g. /example/kms/xks/v1.
    #[arg(long, value_name = "PATH")]
    pub uri_path: String,
    /// Write the secret access key to this file (mode 0600) for xks-front.
    #[arg(long, value_name = "FILE")]
    pub secret_out: Option<PathBuf>,
    /// Replace an existing --secret-out file.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn init_needs_exactly_one_mode() {
        assert!(Cli::try_parse_from(["vhsm-admin", "init"]).is_err());
        assert!(Cli::try_parse_from(["vhsm-admin", "init", "--passphrase"]).is_ok());
        assert!(Cli::try_parse_from([
            "vhsm-admin",
            "init",
            "--passphrase",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-dir",
            "d"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["vhsm-admin", "init", "--shares", "3"]).is_err());
        assert!(Cli::try_parse_from([
            "vhsm-admin",
            "init",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-dir",
            "d"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "vhsm-admin",
            "init",
            "--shares",
            "17",
            "--threshold",
            "2",
            "--share-dir",
            "d"
        ])
        .is_err());
    }

    #[test]
    fn rekey_needs_auth_and_new_config() {
        assert!(Cli::try_parse_from(["vhsm-admin", "rekey", "--new-passphrase"]).is_err());
        assert!(Cli::try_parse_from(["vhsm-admin", "rekey", "--old-passphrase"]).is_err());
        assert!(Cli::try_parse_from([
            "vhsm-admin",
            "rekey",
            "--old-share",
            "a",
            "--old-share",
            "b",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--share-dir",
            "d"
        ])
        .is_ok());
    }

    #[test]
    fn rekey_commit_and_abort_forms() {
        let ok = |args: &[&str]| {
            let mut v = vec!["vhsm-admin", "rekey"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).is_ok()
        };
        assert!(ok(&["--commit", "ab", "--share", "a", "--share", "b"]));
        assert!(ok(&["--commit", "ab", "--new-passphrase"]));
        assert!(ok(&["--abort", "ab"]));
        assert!(!ok(&["--commit", "ab"]));
        assert!(!ok(&[
            "--commit",
            "ab",
            "--old-passphrase",
            "--new-passphrase"
        ]));
        assert!(!ok(&[
            "--commit",
            "ab",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-dir",
            "d"
        ]));
        assert!(!ok(&["--old-passphrase", "--share", "a"]));
        assert!(!ok(&["--abort", "ab", "--new-passphrase"]));
        assert!(!ok(&["--abort", "ab", "--old-passphrase"]));
        assert!(!ok(&["--abort", "ab", "--commit", "ab"]));
    }

    #[test]
    fn global_connection_flags_after_subcommand() {
        let c = Cli::try_parse_from([
            "vhsm-admin",
            "status",
            "--endpoint",
            "https://h:1",
            "--pki-dir",
            "p",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(c.conn.endpoint, "https://h:1");
        assert_eq!(c.output, OutputFormat::Json);
        assert!(matches!(c.command, Command::Status));
    }

    #[test]
    fn usage_list_is_comma_separated() {
        let c = Cli::try_parse_from([
            "vhsm-admin",
            "key",
            "create",
            "k1",
            "--usage",
            "wrap,unwrap",
            "--label",
            "a=b",
        ])
        .unwrap();
        match c.command {
            Command::Key(KeyCommand::Create(a)) => {
                assert_eq!(a.usage, ["wrap", "unwrap"]);
                assert_eq!(a.label, ["a=b"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn no_passphrase_option_takes_a_value() {
        // Secrets are never accepted on the command line.
        assert!(
            Cli::try_parse_from(["vhsm-admin", "init", "--passphrase", "hunter2hunter2"]).is_err()
        );
        assert!(Cli::try_parse_from(["vhsm-admin", "unseal", "--passphrase", "x"]).is_err());
    }
}
