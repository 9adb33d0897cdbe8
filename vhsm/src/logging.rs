//! Structured logging set-up (`tracing`, text or JSON) and the one per-request log line.

use tracing_subscriber::EnvFilter;
use vhsm_proto::logwriter::LogWriter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber. Fails if one is already installed or the level is
/// invalid (the config validation has already checked it).
///
/// Lines are formatted on the calling thread and written to stdout by a background thread, one
/// `write(2)` per batch (`vhsm_proto::logwriter`), so a busy hot path costs a queue append per
/// line instead of a `write(2)`. A line that finds the queue full is dropped and counted
/// (`vhsm_log_dropped_lines_total`). Keep the returned guard alive until exit: dropping it
/// writes what is queued.
pub fn init(config: &LogConfig) -> Result<LogWriter, String> {
    let filter = EnvFilter::try_new(&config.level).map_err(|e| format!("log.level: {e}"))?;
    let guard = LogWriter::builder()
        .thread_name("vhsmd-log")
        .spawn(std::io::stdout())
        .map_err(|e| e.to_string())?;
    let handle = guard.handle();
    let writer = move || handle.clone();
    // Colour only on a terminal: a log file or journald gets no ANSI escape sequences.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(guard)
}

/// One finished request, as logged. Carries no request or response body.
#[derive(Debug)]
pub struct RequestLog<'a> {
    /// `Service/Method`.
    pub method: &'static str,
    /// Certificate identity of the caller.
    pub identity: &'a str,
    /// Role name (`none` without one).
    pub role: &'static str,
    /// Caller-supplied correlation id (may be empty).
    pub request_id: &'a str,
    /// gRPC code name (`Ok`, `NotFound`, ...).
    pub code: tonic::Code,
    /// Stable reason name (`REASON_UNSPECIFIED` on success).
    pub reason: &'static str,
    /// Server-side latency in microseconds.
    pub latency_us: u64,
}

/// Emits the request line: INFO on success and client errors, WARN on permission denials,
/// ERROR on internal failures.
pub fn log_request(r: &RequestLog<'_>) {
    let code = format!("{:?}", r.code);
    match r.code {
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => tracing::error!(
            method = r.method, identity = r.identity, role = r.role, request_id = r.request_id,
            code = %code, reason = r.reason, latency_us = r.latency_us, "request"
        ),
        tonic::Code::PermissionDenied => tracing::warn!(
            method = r.method, identity = r.identity, role = r.role, request_id = r.request_id,
            code = %code, reason = r.reason, latency_us = r.latency_us, "request"
        ),
        _ => tracing::info!(
            method = r.method, identity = r.identity, role = r.role, request_id = r.request_id,
            code = %code, reason = r.reason, latency_us = r.latency_us, "request"
        ),
    }
}
