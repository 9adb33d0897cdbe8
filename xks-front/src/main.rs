//! xks-front: the XKS proxy entry point (args, hardening, logging, listeners, SIGHUP reload, shutdown).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use nix::sys::resource::{setrlimit, Resource};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use vhsm_proto::logwriter::LogWriter;
use xks_front::config::Config;
use xks_front::health::{run_checker, HealthCache};
use xks_front::keystores::Registry;
use xks_front::metrics::Metrics;
use xks_front::router::{router, AppState, Settings};
use xks_front::server::{serve_with, TlsSetup};
use xks_front::vhsm_client::{grpc_nodes, HaGroup, NODE_BACKOFF};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// AWS KMS XKS Proxy API v1 front for vhsmd.
#[derive(Debug, Parser)]
#[command(name = "xks-front", version)]
struct Args {
    /// Main config file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Validate the config (and the files it names), then exit.
    #[arg(long)]
    check_config: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// File descriptors kept for everything but client connections (vhsm links, logs, metrics).
const RESERVED_FDS: u64 = 256;

/// Raises the soft open-files limit to the hard one and warns when it cannot hold
/// `limits.max_connections` (accept would then fail with EMFILE before the cap is reached).
fn raise_nofile(max_connections: usize) {
    let Ok((soft, hard)) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut limit = soft;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        limit = hard;
    }
    let wanted = (max_connections as u64).saturating_add(RESERVED_FDS);
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "RLIMIT_NOFILE is below limits.max_connections + {RESERVED_FDS}; raise LimitNOFILE or \
             lower limits.max_connections"
        );
    }
}

fn harden() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "prctl(PR_SET_DUMPABLE, 0) failed");
    }
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %e, "setrlimit(RLIMIT_CORE, 0) failed");
    }
}

/// Installs the logger. Lines are written to stdout by a background thread, one `write(2)` per
/// batch (`vhsm_proto::logwriter`): the request path pays a queue append, never I/O. A line
/// that finds the queue full is dropped and counted (`xks_log_dropped_lines_total`). Keep the
/// guard until exit: dropping it writes what is queued.
fn init_logging(format: LogFormat) -> anyhow::Result<LogWriter> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let guard = LogWriter::builder()
        .thread_name("xks-front-log")
        .spawn(std::io::stdout())?;
    let handle = guard.handle();
    let writer = move || handle.clone();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_guard = init_logging(args.log_format)?;
    harden();
    let cfg = Config::load(&args.config)?;
    raise_nofile(cfg.limits.max_connections);
    let registry = Registry::new(cfg.keystores_file.clone())
        .with_context(|| format!("keystores_file {}", cfg.keystores_file.display()))?;
    let tls = match &cfg.tls {
        Some(t) if !cfg.listen.plain_http => Some(xks_front::tls::server_config(t)?),
        _ => None,
    };
    if args.check_config {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async { grpc_nodes(&cfg.vhsm) })?;
        println!("config ok");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.limits.effective_worker_threads())
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::with_log_drops(log_guard.drop_counter()));
    rt.block_on(run(cfg, registry, tls, metrics))
}

async fn run(
    cfg: Config,
    registry: Registry,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let group = Arc::new(HaGroup::new(grpc_nodes(&cfg.vhsm)?, NODE_BACKOFF));
    let health = Arc::new(HealthCache::new(group.node_ids()));
    let deadline = Duration::from_millis(cfg.vhsm.deadline_ms);
    tokio::spawn(run_checker(
        group.clone(),
        health.clone(),
        Some(metrics.clone()),
        Arc::from(cfg.vhsm.health_key_id.as_str()),
        deadline,
        Duration::from_secs(cfg.vhsm.health_cache_secs),
        stop_rx.clone(),
    ));
    let registry = Arc::new(registry);
    let state = AppState::new(
        Settings {
            region: cfg.region.clone(),
            fleet_size: cfg.fleet_size,
            deadline,
            max_concurrency: cfg.limits.max_concurrency,
            limits: cfg.limits.request(),
        },
        registry.clone(),
        group,
        health,
        metrics.clone(),
    );
    if let Some(m) = &cfg.metrics {
        let mut rx = stop_rx.clone();
        let addr = m.addr;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = xks_front::metrics::serve(addr, metrics, stop).await {
                tracing::error!(%addr, error = %e, "metrics listener failed");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen.addr)
        .await
        .with_context(|| format!("listen.addr {}", cfg.listen.addr))?;
    let addr = listener.local_addr()?;
    let tls_setup = match tls {
        Some(server_config) => Some(TlsSetup {
            acceptor: tokio_rustls::TlsAcceptor::from(server_config),
        }),
        None => {
            tracing::warn!(
                "!!! listen.plain_http = true: serving the XKS API WITHOUT TLS. Local testing only; \
                 never expose this listener !!!"
            );
            None
        }
    };
    tracing::info!("xks-front listening on {addr}");
    let server = tokio::spawn(serve_with(
        listener,
        router(state),
        tls_setup,
        cfg.limits.conn(),
        metrics,
        stop_rx,
    ));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            // The registry logs the outcome (file, count or error) itself.
            _ = hup.recv() => { let _ = registry.reload(); }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}
