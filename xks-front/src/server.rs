//! The accept loop: TCP (connection caps) → TLS (handshake timeout, mTLS subject check) →
//! hyper HTTP/1.1 or HTTP/2 (explicit limits, idle watchdog) → the axum router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::accept::AcceptErrors;
use crate::conn::{ConnInfo, ConnState, Verdict};
use crate::conn_rate::ConnRate;
use crate::errors::{ErrorName, XksError};
use crate::limits::ConnLimits;
use crate::metered::Metered;
use crate::metrics::{Limit, Metrics};
use crate::peers::{PeerSlot, PeerTable};

/// After a failed handshake: how long, and how many bytes, the client is still read from.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// See `LINGER_TIMEOUT`.
pub const LINGER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 send buffer per stream (XKS answers are a few KiB).
const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// TLS for the listener. The mTLS checks (chain to the CA, subject CN in
/// `tls.client_subjects`) run inside the handshake, in the acceptor's verifier
/// (`tls::server_config`).
#[derive(Clone)]
pub struct TlsSetup {
    /// The rustls acceptor.
    pub acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").finish_non_exhaustive()
    }
}

/// Serves `app` with the default limits and a private metric set (tests, tools).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsSetup>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = Arc::new(Metrics::new());
    serve_with(listener, app, tls, ConnLimits::default(), metrics, shutdown).await;
}

/// What every connection task shares.
struct Shared {
    app: Router,
    tls: Option<TlsSetup>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
}

/// Slots a connection holds while it is open; released (and the gauge lowered) on drop.
struct ConnSlots {
    _global: OwnedSemaphorePermit,
    _peer: PeerSlot,
    metrics: Arc<Metrics>,
}

impl Drop for ConnSlots {
    fn drop(&mut self) {
        self.metrics.connections_open().dec();
    }
}

/// Serves `app` on `listener` until `shutdown` becomes true, then drains open connections.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsSetup>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = PeerTable::new(limits.max_connections_per_peer);
    let rate = ConnRate::new(
        limits.new_connections_per_sec,
        limits.new_connections_per_peer_per_sec,
        Instant::now(),
    );
    let shared = Arc::new(Shared {
        app,
        tls,
        limits,
        metrics,
    });
    let mut errors = AcceptErrors::default();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    errors.on_success();
                    x
                }
                Err(e) => {
                    shared.metrics.hit(Limit::AcceptError);
                    let (wait, log) = errors.on_error(&e, Instant::now());
                    if let Some(earlier) = log {
                        tracing::warn!(error = %e, suppressed = earlier, "accept failed");
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.changed() => break,
                        }
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if let Err(limit) = rate.admit(peer.ip(), Instant::now()) {
            shared.metrics.hit(limit);
            drop(tcp);
            continue;
        }
        let Some(slots) = admit(&open, &per_peer, &shared.metrics, peer) else {
            // Over a cap: close at once; established connections are untouched.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            handle(tcp, peer, &shared, shutdown).await;
            drop(slots);
        });
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Takes the global and per-peer connection slots, or counts the cap that refused.
fn admit(
    open: &Arc<Semaphore>,
    per_peer: &PeerTable,
    metrics: &Arc<Metrics>,
    peer: SocketAddr,
) -> Option<ConnSlots> {
    let Ok(global) = open.clone().try_acquire_owned() else {
        metrics.hit(Limit::MaxConnections);
        return None;
    };
    let Some(peer_slot) = per_peer.try_acquire(peer.ip()) else {
        metrics.hit(Limit::MaxConnectionsPerPeer);
        return None;
    };
    metrics.connections_open().inc();
    Some(ConnSlots {
        _global: global,
        _peer: peer_slot,
        metrics: metrics.clone(),
    })
}

/// One connection: TLS (if configured), the mTLS subject check, then HTTP.
async fn handle(tcp: TcpStream, peer: SocketAddr, sh: &Shared, shutdown: watch::Receiver<bool>) {
    let Some(t) = &sh.tls else {
        serve_conn(tcp, peer, sh, shutdown).await;
        return;
    };
    let accept = t.acceptor.accept(tcp).into_fallible();
    let stream = match tokio::time::timeout(sh.limits.tls_handshake_timeout, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err((e, tcp))) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            linger_close(tcp).await;
            return;
        }
        Err(_) => {
            sh.metrics.hit(Limit::TlsHandshakeTimeout);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    serve_conn(stream, peer, sh, shutdown).await;
}

/// Ends a connection whose TLS handshake failed so that the client reads the alert rustls has
/// just sent: half-close, then read and discard what the client still sends (bounded by
/// `LINGER_BYTES` and `LINGER_TIMEOUT`) before closing. Closing at once with unread input makes
/// the kernel send a TCP reset, which can destroy the alert before the client reads it; a TLS 1.3
/// client sends its first request right after its Finished, before the server has checked its
/// certificate, and would then see "connection reset" instead of `handshake_failure`.
async fn linger_close<I>(mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let _ = io.shutdown().await;
    let mut buf = [0u8; 4096];
    let read = async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, read).await;
}

fn builder(l: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .keep_alive(true)
        .max_headers(l.http1_max_headers)
        .max_buf_size(l.http1_max_buf_size);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(l.http2_keepalive_interval))
        .keep_alive_timeout(l.http2_keepalive_timeout)
        .max_concurrent_streams(l.http2_max_concurrent_streams)
        .max_header_list_size(l.http2_max_header_list_size)
        .max_pending_accept_reset_streams(l.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(l.http2_max_local_error_reset_streams)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    b
}

/// Counts the limit behind a connection error, if any (a peer that just went away is none).
fn classify(metrics: &Metrics, e: &(dyn std::error::Error + 'static)) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some() {
            return;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                metrics.hit(Limit::HttpTimeout);
                return;
            }
            if h.is_closed() || h.is_canceled() || h.is_incomplete_message() {
                return;
            }
        }
        source = err.source();
    }
    metrics.hit(Limit::HttpProtocol);
}

/// HTTP on one connection, watched: closed gracefully when the watchdog says so (see
/// `ConnState::verdict`), dropped if it has not closed `close_grace` later.
async fn serve_conn<I>(io: I, peer: SocketAddr, sh: &Shared, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let l = &sh.limits;
    let state = ConnState::new(peer.ip(), Instant::now());
    let app = sh.app.clone();
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let state = svc_state.clone();
        let mut app = app.clone();
        async move {
            // A connection told to close for going over its unauthenticated budget gets no
            // more router work: its remaining streams are refused as cheaply as possible.
            if state.is_close_requested() && !state.is_authenticated() {
                let refused = XksError::new(ErrorName::Throttling, "connection is closing");
                return Ok(refused.into_response());
            }
            req.extensions_mut().insert(ConnInfo(state.clone()));
            let active = state.request_started();
            let resp = tower::Service::call(&mut app, req).await;
            drop(active);
            resp
        }
    });
    let builder = builder(l);
    let io = Metered::new(
        io,
        state.clone(),
        sh.metrics.clone(),
        l.unauthenticated_read_rate,
        l.unauthenticated_read_burst,
    );
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut check_at = tokio::time::Instant::now() + l.first_request_timeout;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                    classify(&sh.metrics, &*e);
                }
                return;
            }
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            _ = state.close_requested() => {
                tracing::debug!(%peer, "closing connection over its unauthenticated budget");
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(l.close_grace, conn.as_mut()).await;
                return;
            }
            _ = tokio::time::sleep_until(check_at) => {
                match state.verdict(Instant::now(), l.first_request_timeout, l.idle_timeout) {
                    Verdict::Keep(at) => check_at = tokio::time::Instant::from_std(at),
                    Verdict::Close(limit) => {
                        sh.metrics.hit(limit);
                        tracing::debug!(%peer, limit = limit.as_str(), "closing connection");
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(l.close_grace, conn.as_mut()).await;
                        return;
                    }
                }
            }
        }
    }
}
