//! vhsm-admin: the operator CLI entry point (argument parsing, runtime, exit codes).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vhsm_admin::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help / --version print to stdout and succeed; usage errors exit 1 (not clap's 2,
            // which means "unreachable" here).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e:#}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(vhsm_admin::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::from(e.kind().code())
        }
    }
}
