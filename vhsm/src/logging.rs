//! Structured logging set-up (`tracing`, text or JSON) and the one per-request log line.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines that may wait for the writer thread before a request waits for it (never dropped).
const BUFFERED_LINES: usize = 65_536;

/// Installs the global tracing subscriber. Fails if one is already installed or the level is
/// invalid (the config validation has already checked it).
///
/// Lines are formatted on the calling thread and written by a background thread through a
/// buffered stdout that it flushes whenever its queue is empty, so a busy hot path costs one
/// queue push per line instead of one `write(2)`. Keep the returned guard alive until exit:
/// dropping it flushes what is queued.
pub fn init(config: &LogConfig) -> Result<WorkerGuard, String> {
    let filter = EnvFilter::try_new(&config.level).map_err(|e| format!("log.level: {e}"))?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("vhsmd-log")
        .finish(std::io::BufWriter::new(std::io::stdout()));
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
