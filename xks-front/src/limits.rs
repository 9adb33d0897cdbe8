//! `[limits]` of the main config: every load and hostile-network limit, its default and its bounds.
//!
//! Each limit has a safe default, a key here, a line in the README limits table and a metric
//! that shows it being hit (`xks_limit_hits_total{limit=...}`, see `metrics::Limit`).

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Authenticated requests in flight; more are answered ThrottlingException at once.
    pub max_concurrency: usize,
    /// Async worker threads; 0 = half the CPUs (at least 1), since xks-front usually shares
    /// its host with vhsmd. Cross-thread wake-ups cost more than they give on small hosts.
    pub worker_threads: usize,
    /// Open client connections (TCP accepted, any TLS/HTTP state); beyond it new ones are closed
    /// at once, established ones are untouched.
    pub max_connections: usize,
    /// Open connections from one peer address (IPv4 address, IPv6 /64).
    pub max_connections_per_peer: usize,
    /// New connections accepted per second (burst: a quarter of it); beyond it a new connection is
    /// closed before any TLS work, so churn cannot buy handshakes faster than this.
    pub new_connections_per_sec: u64,
    /// The same per peer address (IPv4 address, IPv6 /64; burst: the rate).
    pub new_connections_per_peer_per_sec: u64,
    /// A TLS handshake taking longer is dropped.
    pub tls_handshake_timeout_ms: u64,
    /// Until a connection has carried one SigV4-verified request it is closed this long after
    /// its TLS handshake: silent, slow and unauthenticated connections do not stay.
    pub first_request_timeout_ms: u64,
    /// HTTP/1.1: the request line and headers of each request must arrive within this. hyper
    /// starts the timer when the connection waits for its next request, so it also bounds
    /// keep-alive idle time (keep it >= `idle_timeout_ms`). Unauthenticated connections are
    /// bounded by `first_request_timeout_ms` anyway.
    pub header_read_timeout_ms: u64,
    /// An authenticated connection with no request for this long is closed (HTTP/1.1 keep-alive
    /// and HTTP/2 alike; HTTP/2 pings do not count as requests).
    pub idle_timeout_ms: u64,
    /// The whole request body must arrive within this.
    pub body_timeout_ms: u64,
    /// A body above the 64 KiB request limit is read and discarded up to this many bytes, then
    /// answered (501 UnsupportedOperationException); beyond it the stream/connection is reset.
    pub max_drain_bytes: usize,
    /// Requests not yet SigV4-verified, per connection (HTTP/2 streams awaiting their body).
    pub unauthenticated_per_connection: usize,
    /// Requests not yet SigV4-verified, per peer address (IPv4 address, IPv6 /64).
    pub unauthenticated_per_peer: usize,
    /// Bytes per second a connection may send until one of its requests has authenticated
    /// (burst: `max_drain_bytes` + 64 KiB, so one oversized body can still be drained and
    /// answered). Bounds what floods of small HTTP/2 frames (SETTINGS, PING, RST_STREAM,
    /// CONTINUATION) make us process before we know who is talking.
    pub unauthenticated_read_bytes_per_sec: u64,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE (bytes; also bounds CONTINUATION floods).
    pub http2_max_header_list_size: u32,
    /// HTTP/2 streams reset by the client before we accepted them (rapid-reset defence).
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams we reset because of client protocol errors before the connection is closed.
    pub http2_max_local_error_reset_streams: usize,
    /// HTTP/2 ping interval (dead-peer detection).
    pub http2_keepalive_interval_ms: u64,
    /// HTTP/2: close the connection when a ping is not answered within this.
    pub http2_keepalive_timeout_ms: u64,
    /// HTTP/1.1: most request headers.
    pub http1_max_headers: usize,
    /// HTTP/1.1: read buffer (request line + headers must fit).
    pub http1_max_buf_size: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 1024,
            worker_threads: 0,
            max_connections: 8192,
            max_connections_per_peer: 2048,
            new_connections_per_sec: 256,
            new_connections_per_peer_per_sec: 256,
            tls_handshake_timeout_ms: 3000,
            first_request_timeout_ms: 3000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
            body_timeout_ms: 1000,
            max_drain_bytes: 1024 * 1024,
            unauthenticated_per_connection: 8,
            unauthenticated_per_peer: 256,
            unauthenticated_read_bytes_per_sec: 256 * 1024,
            http2_max_concurrent_streams: 32,
            http2_max_header_list_size: 16 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 128,
            http2_keepalive_interval_ms: 20_000,
            http2_keepalive_timeout_ms: 5000,
            http1_max_headers: 64,
            http1_max_buf_size: 32 * 1024,
        }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            field: format!("limits.{field}"),
            reason: format!("must be within {min}..={max}"),
        });
    }
    Ok(())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl LimitsConfig {
    /// The number of async worker threads to start.
    pub fn effective_worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        (cpus / 2).max(1)
    }

    /// Checks every value; the first bad field is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check("max_concurrency", self.max_concurrency, 1, 1 << 20)?;
        check("worker_threads", self.worker_threads, 0, 256)?;
        check("max_connections", self.max_connections, 1, 1 << 20)?;
        check(
            "max_connections_per_peer",
            self.max_connections_per_peer,
            1,
            self.max_connections,
        )?;
        check(
            "new_connections_per_sec",
            self.new_connections_per_sec,
            1,
            1 << 20,
        )?;
        check(
            "new_connections_per_peer_per_sec",
            self.new_connections_per_peer_per_sec,
            1,
            self.new_connections_per_sec,
        )?;
        check(
            "tls_handshake_timeout_ms",
            self.tls_handshake_timeout_ms,
            100,
            60_000,
        )?;
        check(
            "first_request_timeout_ms",
            self.first_request_timeout_ms,
            100,
            60_000,
        )?;
        check(
            "header_read_timeout_ms",
            self.header_read_timeout_ms,
            100,
            60_000,
        )?;
        check("idle_timeout_ms", self.idle_timeout_ms, 100, 3_600_000)?;
        check("body_timeout_ms", self.body_timeout_ms, 10, 10_000)?;
        check(
            "max_drain_bytes",
            self.max_drain_bytes,
            crate::api::MAX_BODY,
            64 * 1024 * 1024,
        )?;
        check(
            "unauthenticated_per_connection",
            self.unauthenticated_per_connection,
            1,
            1 << 16,
        )?;
        check(
            "unauthenticated_per_peer",
            self.unauthenticated_per_peer,
            1,
            1 << 20,
        )?;
        check(
            "unauthenticated_read_bytes_per_sec",
            self.unauthenticated_read_bytes_per_sec,
            16 * 1024,
            1 << 30,
        )?;
        check(
            "http2_max_concurrent_streams",
            self.http2_max_concurrent_streams,
            1,
            1024,
        )?;
        check(
            "http2_max_header_list_size",
            self.http2_max_header_list_size,
            4096,
            1 << 20,
        )?;
        check(
            "http2_max_pending_accept_reset_streams",
            self.http2_max_pending_accept_reset_streams,
            1,
            1024,
        )?;
        check(
            "http2_max_local_error_reset_streams",
            self.http2_max_local_error_reset_streams,
            1,
            65_536,
        )?;
        check(
            "http2_keepalive_interval_ms",
            self.http2_keepalive_interval_ms,
            1000,
            3_600_000,
        )?;
        check(
            "http2_keepalive_timeout_ms",
            self.http2_keepalive_timeout_ms,
            100,
            600_000,
        )?;
        check("http1_max_headers", self.http1_max_headers, 16, 1024)?;
        check("http1_max_buf_size", self.http1_max_buf_size, 8192, 1 << 20)?;
        Ok(())
    }

    /// The connection-level limits the listener applies.
    pub fn conn(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            new_connections_per_sec: self.new_connections_per_sec,
            new_connections_per_peer_per_sec: self.new_connections_per_peer_per_sec,
            tls_handshake_timeout: ms(self.tls_handshake_timeout_ms),
            first_request_timeout: ms(self.first_request_timeout_ms),
            header_read_timeout: ms(self.header_read_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            close_grace: ms(self.body_timeout_ms) + Duration::from_secs(1),
            unauthenticated_read_rate: self.unauthenticated_read_bytes_per_sec,
            unauthenticated_read_burst: (self.max_drain_bytes + crate::api::MAX_BODY) as u64,
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_max_header_list_size: self.http2_max_header_list_size,
            http2_max_pending_accept_reset_streams: self.http2_max_pending_accept_reset_streams,
            http2_max_local_error_reset_streams: self.http2_max_local_error_reset_streams,
            http2_keepalive_interval: ms(self.http2_keepalive_interval_ms),
            http2_keepalive_timeout: ms(self.http2_keepalive_timeout_ms),
            http1_max_headers: self.http1_max_headers,
            http1_max_buf_size: self.http1_max_buf_size,
        }
    }

    /// The request-level limits the router applies before SigV4.
    pub fn request(&self) -> RequestLimits {
        RequestLimits {
            body_timeout: ms(self.body_timeout_ms),
            max_drain_bytes: self.max_drain_bytes,
            unauthenticated_per_connection: self.unauthenticated_per_connection,
            unauthenticated_per_peer: self.unauthenticated_per_peer,
        }
    }
}

/// Connection limits of the listener (see `LimitsConfig` for each one).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub new_connections_per_sec: u64,
    pub new_connections_per_peer_per_sec: u64,
    pub tls_handshake_timeout: Duration,
    pub first_request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// After a connection is told to close (GOAWAY / keep-alive off): how long its in-flight
    /// requests may still run before it is dropped.
    pub close_grace: Duration,
    pub unauthenticated_read_rate: u64,
    pub unauthenticated_read_burst: u64,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_header_list_size: u32,
    pub http2_max_pending_accept_reset_streams: usize,
    pub http2_max_local_error_reset_streams: usize,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub http1_max_headers: usize,
    pub http1_max_buf_size: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        LimitsConfig::default().conn()
    }
}

/// Request limits the router applies before a request is authenticated.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct RequestLimits {
    pub body_timeout: Duration,
    pub max_drain_bytes: usize,
    pub unauthenticated_per_connection: usize,
    pub unauthenticated_per_peer: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        LimitsConfig::default().request()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_safe() {
        let l = LimitsConfig::default();
        l.validate().unwrap();
        let c = l.conn();
        assert!(c.first_request_timeout <= Duration::from_secs(5));
        assert!(c.tls_handshake_timeout <= Duration::from_secs(5));
        assert!(l.request().body_timeout <= Duration::from_secs(1));
        assert!(l.http2_max_concurrent_streams <= 100);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        type Case = (&'static str, fn(&mut LimitsConfig));
        let cases: [Case; 6] = [
            ("limits.max_connections", |l| l.max_connections = 0),
            ("limits.max_connections_per_peer", |l| {
                l.max_connections_per_peer = l.max_connections + 1
            }),
            ("limits.body_timeout_ms", |l| l.body_timeout_ms = 60_000),
            ("limits.max_drain_bytes", |l| l.max_drain_bytes = 10),
            ("limits.http2_max_concurrent_streams", |l| {
                l.http2_max_concurrent_streams = 0
            }),
            ("limits.unauthenticated_per_peer", |l| {
                l.unauthenticated_per_peer = 0
            }),
        ];
        for (field, set) in cases {
            let mut l = LimitsConfig::default();
            set(&mut l);
            let e = l.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
