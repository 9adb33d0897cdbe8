//! vhsmd: the vhsm daemon entry point (arguments, config, logging, hardening, signals).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use vhsm::config::Config;
use vhsm::{hardening, logging, server};

/// The vhsm daemon: a software HSM served over gRPC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "vhsmd", version)]
struct Args {
    /// TOML config file (see deploy/vhsmd.example.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the config (and the TLS files it names), print "config ok" and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    // First, before any file can be created: everything we write is private.
    hardening::set_private_umask();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhsmd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if args.check_config {
        server::preflight(&config)?;
        println!("config ok");
        return Ok(());
    }
    let log_guard = logging::init(&config.log).map_err(anyhow::Error::msg)?;
    for warning in hardening::harden().warnings {
        tracing::warn!("hardening: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.runtime.effective_worker_threads())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = config.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen.addr: cannot bind {addr}"))?;
        let shutdown = shutdown_signal()?;
        server::serve(&config, listener, log_guard.drop_counter(), shutdown).await?;
        tracing::info!("vhsmd stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
