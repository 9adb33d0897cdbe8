//! Starts vhsmd on a bound listener: store, core, mTLS gRPC services (plus the optional local
//! Unix-socket listener), reaper, graceful stop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::Server;
use vhsm_core::{KdfParams, Options, OsRandom, Reason, SealState, StorageError, SystemClock, Vhsm};
use vhsm_proto::logwriter::DroppedLines;
use vhsm_proto::v1::admin_server::AdminServer;
use vhsm_proto::v1::crypto_server::CryptoServer;
use vhsm_proto::v1::peer_server::PeerServer;

use crate::admin_service::AdminService;
use crate::cluster::network::{GrpcTransport, PeerTls, MAX_PEER_MESSAGE};
use crate::cluster::node::{run_reload, ClusterNode};
use crate::cluster::peer_service::PeerService;
use crate::cluster::replicated::ReplicatedStorage;
use crate::cluster::state_machine::Notice;
use crate::config::Config;
use crate::crypto_service::CryptoService;
use crate::dispatch::ClusterLink;
use crate::dispatch::Dispatcher;
use crate::grpc_limits::Limited;
use crate::roles::RoleMap;
use crate::storage::{create_private_dir, SledStorage};
use crate::tls::{server_tls_config, TlsError};

/// Largest Crypto request accepted (plaintext is at most 64 KiB).
pub const MAX_CRYPTO_MESSAGE: usize = 1024 * 1024;
/// Largest Admin request accepted (backups).
pub const MAX_ADMIN_MESSAGE: usize = 64 * 1024 * 1024;
/// Actor recorded in the audit log for the daemon's own actions (shutdown seal).
pub const DAEMON_ACTOR: &str = "vhsmd";

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS files missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened (e.g. another process holds it).
    #[error("cannot open store {path}: {source}")]
    Store {
        /// Store directory.
        path: String,
        /// Backend error.
        source: StorageError,
    },
    /// The core refused to open the store.
    #[error("cannot open the vhsm core: {0}")]
    Core(vhsm_core::Error),
    /// A storage write failed: the core sealed itself and the daemon stopped (fail-stop).
    #[error("fail-stop after a storage failure (restart to recover from what is on disk): {0}")]
    StorageFailed(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Socket error.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The `[unix]` socket could not be created.
    #[error("unix.path: {0}")]
    UnixSocket(String),
    /// The cluster layer could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::node::ClusterError),
    /// A `[cluster]` peer TLS file could not be read.
    #[error("{field}: {detail}")]
    PeerTls {
        /// The config key.
        field: &'static str,
        /// What failed.
        detail: String,
    },
}

/// Reads the `[cluster]` peer certificate, key and CA (`None` without a peer certificate:
/// a lone node never calls peers).
fn load_peer_tls(config: &Config) -> Result<Option<PeerTls>, ServeError> {
    let (Some(cert), Some(key)) = (&config.cluster.peer_cert, &config.cluster.peer_key) else {
        return Ok(None);
    };
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| ServeError::PeerTls {
            field,
            detail: format!("cannot read {}: {}", path.display(), e.kind()),
        })
    };
    let ca = config
        .cluster
        .peer_ca
        .as_ref()
        .unwrap_or(&config.tls.client_ca);
    Ok(Some(PeerTls {
        ca_pem: read("cluster.peer_ca", ca)?,
        cert_pem: read("cluster.peer_cert", cert)?,
        key_pem: zeroize::Zeroizing::new(read("cluster.peer_key", key)?),
    }))
}

/// Core options from the config (`[dev] insecure_fast_kdf` selects test KDF parameters).
pub fn core_options(config: &Config) -> Options {
    let base = Options {
        partial_unseal_timeout_ms: config.seal.partial_unseal_timeout_secs.saturating_mul(1000),
        rekey_staging_ttl_ms: config.seal.rekey_staging_ttl_secs.saturating_mul(1000),
        min_deletion_waiting_days: config.keys.min_deletion_waiting_days,
        gcm: config.keys.gcm_limits(),
        // The dispatcher reserves ahead (encrypts run on async workers).
        gcm_reserve_inline: false,
        audit_anchor_mismatch: config.audit.on_anchor_mismatch.policy(),
        approval_ttl_ms: config.approvals.ttl_secs.saturating_mul(1000),
        approval_max_ttl_ms: config.approvals.max_ttl_secs.saturating_mul(1000),
        approval_max_pending: config.approvals.max_pending,
        ..Options::default()
    };
    if config.dev.insecure_fast_kdf {
        Options {
            kdf: KdfParams::INSECURE_FAST_FOR_TESTS,
            allow_weak_kdf: true,
            ..base
        }
    } else {
        base
    }
}

/// Checks everything `serve` would load before it binds: TLS files parse.
pub fn preflight(config: &Config) -> Result<(), ServeError> {
    server_tls_config(&config.tls)?;
    Ok(())
}

/// An opened daemon: TLS loaded, store open (and locked), Raft started, core ready; not yet
/// serving.
#[derive(Debug)]
pub struct Daemon {
    config: Config,
    tls: tonic::transport::ServerTlsConfig,
    storage: Arc<SledStorage>,
    vhsm: Arc<Vhsm>,
    cluster: ClusterLink,
    notices: tokio::sync::mpsc::UnboundedReceiver<Notice>,
    /// The bound `[unix]` socket and its path, if configured.
    unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    /// The log writer's dropped-lines counter, for `vhsm_log_dropped_lines_total`.
    log_drops: DroppedLines,
}

impl Daemon {
    /// Loads TLS, creates `data_dir` (0o700), opens the store, starts this node's Raft member
    /// (forming a one-member cluster on first start unless `[cluster] bootstrap = false`),
    /// opens the core on the replicated store, binds the `[unix]` socket if configured.
    ///
    /// `config` must be validated ([`Config::load`] does it).
    pub async fn open(config: &Config) -> Result<Daemon, ServeError> {
        let tls = server_tls_config(&config.tls)?;
        let store_err = |source| ServeError::Store {
            path: config.store_dir().display().to_string(),
            source,
        };
        create_private_dir(&config.data_dir).map_err(store_err)?;
        let storage = Arc::new(open_store(&config.store_dir()).await.map_err(store_err)?);
        if config.dev.insecure_fast_kdf {
            tracing::warn!(
                "[dev] insecure_fast_kdf = true: passphrases are protected by test-only \
                 Argon2id parameters; NEVER use this configuration in production"
            );
        }
        let transport = Arc::new(GrpcTransport::new(load_peer_tls(config)?.as_ref()));
        let (node, notices) = ClusterNode::start(
            storage.db(),
            &config.snapshot_dir(),
            &config.cluster,
            config.advertise(),
            transport,
        )
        .await?;
        let replicated = Arc::new(ReplicatedStorage::new(
            Arc::clone(&storage),
            Arc::clone(&node),
            tokio::runtime::Handle::current(),
        ));
        let opened = Vhsm::open(
            Arc::clone(&replicated) as Arc<dyn vhsm_core::Storage>,
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            core_options(config),
        )
        .map_err(ServeError::Core)
        .and_then(|vhsm| {
            // Bound last, once nothing else can fail, so a refused start leaves no socket.
            let unix = match &config.unix {
                Some(u) => Some((bind_unix_socket(&u.path)?, u.path.clone())),
                None => None,
            };
            Ok((vhsm, unix))
        });
        let (vhsm, unix) = match opened {
            Ok(v) => v,
            Err(e) => {
                // Release the store: Raft holds it until it stops.
                node.shutdown().await;
                drop(replicated);
                drop(node);
                return Err(e);
            }
        };
        Ok(Daemon {
            config: config.clone(),
            tls,
            storage,
            vhsm: Arc::new(vhsm),
            cluster: ClusterLink {
                node,
                storage: replicated,
            },
            notices,
            unix,
            log_drops: DroppedLines::default(),
        })
    }

    /// Reports `log_drops` as `vhsm_log_dropped_lines_total` (default: a counter of no log
    /// writer, always 0).
    #[must_use]
    pub fn with_log_drops(mut self, log_drops: DroppedLines) -> Daemon {
        self.log_drops = log_drops;
        self
    }

    /// The core.
    pub fn vhsm(&self) -> &Arc<Vhsm> {
        &self.vhsm
    }

    /// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish,
    /// seals the core (zeroizing every key in memory) and flushes the store.
    pub async fn run<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send,
    {
        let Daemon {
            config,
            tls,
            storage,
            vhsm,
            cluster,
            notices,
            unix,
            log_drops,
        } = self;
        let node = Arc::clone(&cluster.node);
        let reload = tokio::spawn(run_reload(Arc::clone(&node), Arc::clone(&vhsm), notices));
        let lease = tokio::spawn(Arc::clone(&node).run_lease());
        let unix_listener = match unix {
            Some((listener, path)) => Some((tokio::net::UnixListener::from_std(listener)?, path)),
            None => None,
        };
        let dispatcher = Arc::new(
            Dispatcher::new(
                Arc::clone(&vhsm),
                match &config.unix {
                    Some(u) => RoleMap::from_config(&config.roles).with_unix(u),
                    None => RoleMap::from_config(&config.roles),
                },
                config.node_id.clone(),
            )
            .with_cluster(cluster),
        );
        let sweep = tokio::spawn(Arc::clone(dispatcher.reserver()).run_sweep());
        let reaper = tokio::spawn(crate::reaper::run(
            Arc::clone(&vhsm),
            Duration::from_secs(config.keys.deletion_check_secs),
        ));

        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let limits = &config.grpc_limits;
        let (crypto, admin) = services(limits, &dispatcher);
        let metrics = match &config.metrics {
            Some(m) => {
                let listener = TcpListener::bind(&m.addr).await?;
                tracing::info!("vhsmd metrics on http://{}/metrics", m.addr);
                let sources = crate::metrics::Sources {
                    node: Arc::clone(&node),
                    vhsm: Arc::clone(&vhsm),
                    reservations: Arc::clone(dispatcher.reserver().stats()),
                    crypto_limits: Arc::clone(crypto.counters()),
                    admin_limits: Arc::clone(admin.counters()),
                    log_drops: log_drops.clone(),
                };
                Some(tokio::spawn(crate::metrics::serve(
                    listener,
                    sources,
                    std::future::pending(),
                )))
            }
            None => None,
        };
        // Node-to-node Raft traffic: TCP only (peers authenticate with certificates).
        let tcp_router = add_services(
            limits.apply(Server::builder()).tls_config(tls)?,
            &crypto,
            &admin,
        )
        .add_service(
            PeerServer::new(PeerService::new(Arc::clone(&dispatcher), Arc::clone(&node)))
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        );
        let unix = unix_listener.map(|(listener, path)| {
            let router = add_services(limits.apply(Server::builder()), &crypto, &admin);
            (listener, router, path)
        });
        drop(dispatcher);
        tracing::info!(node_id = %config.node_id, "vhsmd listening on {addr}");

        // One stop signal for both listeners: the caller's shutdown, or either server failing.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let signal_tx = Arc::clone(&stop_tx);
        let failing = (Arc::clone(&vhsm), Arc::clone(&node));
        let signal = async move {
            tokio::select! {
                () = shutdown => {}
                () = signal_tx.closed() => {}
                why = storage_failed(&failing.0, &failing.1) => {
                    tracing::error!(
                        error = %why,
                        "fail-stop: a storage write failed; the store sealed itself and vhsmd \
                         exits so it restarts from what is on disk"
                    );
                }
            }
            signal_tx.send_replace(true);
        };
        let tcp_tx = Arc::clone(&stop_tx);
        let tcp_rx = stop_rx.clone();
        let tcp = async move {
            let r = tcp_router
                .serve_with_incoming_shutdown(incoming, stopped(tcp_rx))
                .await;
            tcp_tx.send_replace(true);
            r
        };
        let uds_tx = Arc::clone(&stop_tx);
        drop(stop_tx);
        let uds = async move {
            let Some((listener, router, path)) = unix else {
                return Ok(());
            };
            tracing::info!("vhsmd listening on unix:{}", path.display());
            let r = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped(stop_rx))
                .await;
            uds_tx.send_replace(true);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(error = %e, "removing the unix socket at shutdown failed");
            }
            r
        };
        let ((), tcp_served, uds_served) = tokio::join!(signal, tcp, uds);
        let served = tcp_served.and(uds_served);
        tracing::info!("vhsmd stopping: sealing and flushing the store");

        reaper.abort();
        let _ = reaper.await;
        sweep.abort();
        let _ = sweep.await;
        // Sealing writes its audit record through the cluster: off the async workers.
        let sealing = Arc::clone(&vhsm);
        let _ = tokio::task::spawn_blocking(move || seal_for_shutdown(&sealing)).await;
        let fatal = node.fatal().map(|f| format!("replicated store: {f}"));
        node.shutdown().await;
        lease.abort();
        reload.abort();
        if let Some(m) = metrics {
            m.abort();
            let _ = m.await;
        }
        let _ = lease.await;
        let _ = reload.await;
        drop(node);
        if let Err(e) = storage.flush() {
            tracing::error!(error = %e, "flushing the store at shutdown failed");
        }
        if let Some(why) = vhsm.storage_failure().or(fatal) {
            return Err(ServeError::StorageFailed(why));
        }
        served?;
        Ok(())
    }
}

/// How long opening waits for a store that a stopping daemon in this process (its Raft tasks
/// winding down) still holds, before reporting it locked.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// Opens the sled store, waiting up to [`STORE_RELEASE_WAIT`] while it is locked.
async fn open_store(path: &Path) -> Result<SledStorage, StorageError> {
    let deadline = std::time::Instant::now() + STORE_RELEASE_WAIT;
    loop {
        match SledStorage::open(path) {
            Err(StorageError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Both services over one dispatcher, with their message size limits, each behind its own
/// in-flight budget and time limit (`[grpc_limits]`); built once, shared by both listeners.
fn services(
    limits: &crate::grpc_limits::GrpcLimits,
    dispatcher: &Arc<Dispatcher>,
) -> (
    Limited<CryptoServer<CryptoService>>,
    Limited<AdminServer<AdminService>>,
) {
    let crypto = CryptoServer::new(CryptoService::new(Arc::clone(dispatcher)))
        .max_decoding_message_size(MAX_CRYPTO_MESSAGE);
    let admin = AdminServer::new(AdminService::new(Arc::clone(dispatcher)))
        .max_decoding_message_size(MAX_ADMIN_MESSAGE)
        .max_encoding_message_size(MAX_ADMIN_MESSAGE);
    (limits.crypto(crypto), limits.admin(admin))
}

fn add_services(
    mut server: Server,
    crypto: &Limited<CryptoServer<CryptoService>>,
    admin: &Limited<AdminServer<AdminService>>,
) -> Router {
    server
        .add_service(crypto.clone())
        .add_service(admin.clone())
}

/// Binds the `[unix]` socket: a stale socket file is replaced, a live one (another daemon
/// answering) or a non-socket file is refused; the socket is made 0o660.
fn bind_unix_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::UnixSocket(format!(
                    "{} is in use by another process",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| {
                ServeError::UnixSocket(format!("cannot remove stale {}: {e}", path.display()))
            })?;
        }
        Ok(_) => {
            return Err(ServeError::UnixSocket(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServeError::UnixSocket(format!(
                "cannot inspect {}: {e}",
                path.display()
            )));
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| ServeError::UnixSocket(format!("cannot bind {}: {e}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServeError::UnixSocket(format!("cannot configure {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(|e| {
        ServeError::UnixSocket(format!("cannot set mode of {}: {e}", path.display()))
    })?;
    Ok(listener)
}

/// Opens the daemon ([`Daemon::open`]) and serves on `listener` until `shutdown` resolves
/// ([`Daemon::run`]); `log_drops` is the log writer's dropped-lines counter. When it returns,
/// the store is sealed, flushed and closed.
pub async fn serve<F>(
    config: &Config,
    listener: TcpListener,
    log_drops: DroppedLines,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    Daemon::open(config)
        .await?
        .with_log_drops(log_drops)
        .run(listener, shutdown)
        .await
}

/// How often the daemon checks whether the core stopped on a storage failure.
const FAIL_STOP_POLL: Duration = Duration::from_millis(200);

/// Resolves once the core stopped on a failed storage write, or the Raft core stopped on a
/// failed log or state-machine write (fail-stop), with why.
async fn storage_failed(vhsm: &Vhsm, node: &ClusterNode) -> String {
    let mut tick = tokio::time::interval(FAIL_STOP_POLL);
    loop {
        tick.tick().await;
        if let Some(why) = vhsm.storage_failure() {
            return why;
        }
        if let Some(why) = node.fatal() {
            return format!("replicated store: {why}");
        }
    }
}

fn seal_for_shutdown(vhsm: &Vhsm) {
    if vhsm.status().seal_state != SealState::Unsealed {
        return;
    }
    match vhsm.seal(DAEMON_ACTOR) {
        Ok(()) => tracing::info!("sealed at shutdown"),
        Err(e) if matches!(e.reason(), Reason::Sealed | Reason::Uninitialized) => {}
        Err(e) => tracing::error!(error = %e, "sealing at shutdown failed"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(dev: bool) -> Config {
        let mut c = Config::parse(
            r#"
node_id = "n"
data_dir = "/tmp/x"
[listen]
addr = "127.0.0.1:1"
[tls]
cert = "/c"
key = "/k"
client_ca = "/ca"
[roles]
admin = ["admin"]
[seal]
partial_unseal_timeout_secs = 30
[keys]
min_deletion_waiting_days = 3
[approvals]
ttl_secs = 3600
"#,
        )
        .unwrap();
        c.dev.insecure_fast_kdf = dev;
        c
    }

    #[test]
    fn production_options_use_recommended_kdf() {
        let o = core_options(&config(false));
        assert_eq!(o.kdf, KdfParams::RECOMMENDED);
        assert!(!o.allow_weak_kdf);
        assert_eq!(o.partial_unseal_timeout_ms, 30_000);
        assert_eq!(o.rekey_staging_ttl_ms, 900_000);
        assert_eq!(o.min_deletion_waiting_days, 3);
        assert_eq!(o.approval_ttl_ms, 3_600_000);
        assert_eq!(o.approval_max_ttl_ms, 7 * 86_400_000);
        assert_eq!(o.approval_max_pending, 32);
        assert_eq!(o.audit_anchor_mismatch, vhsm_core::AnchorMismatch::Refuse);
        o.validate().unwrap();
    }

    #[test]
    fn dev_options_use_fast_kdf() {
        let o = core_options(&config(true));
        assert_eq!(o.kdf, KdfParams::INSECURE_FAST_FOR_TESTS);
        assert!(o.allow_weak_kdf);
        o.validate().unwrap();
    }

    #[test]
    fn preflight_reports_missing_tls_file() {
        let e = preflight(&config(false)).unwrap_err();
        assert_eq!(e.to_string(), "tls.cert: file not found");
    }
}
