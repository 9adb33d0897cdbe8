//! The accept loop: TCP → (TLS + mTLS subject check) → hyper HTTP/1.1 or HTTP/2 → the axum router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake taking longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed handshake: how long, and how many bytes, the client is still read from.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// See `LINGER_TIMEOUT`.
pub const LINGER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight connections to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for the listener: the acceptor and, for mTLS, the allowed client subject CNs.
#[derive(Clone)]
pub struct TlsSetup {
    /// The rustls acceptor.
    pub acceptor: TlsAcceptor,
    /// Empty = no subject check (no mTLS).
    pub client_subjects: Arc<[String]>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("client_subjects", &self.client_subjects)
            .finish_non_exhaustive()
    }
}

/// Serves `app` on `listener` until `shutdown` becomes true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsSetup>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            match tls {
                None => serve_conn(tcp, app, shutdown).await,
                Some(t) => {
                    let accept = t.acceptor.accept(tcp).into_fallible();
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                            Ok(Ok(s)) => s,
                            Ok(Err((e, tcp))) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                linger_close(tcp).await;
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    if !t.client_subjects.is_empty() {
                        let leaf = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref().to_vec());
                        let ok = leaf.is_some_and(|l| {
                            crate::tls::subject_allowed(&l, &t.client_subjects)
                        });
                        if !ok {
                            tracing::warn!(%peer, "client certificate subject not allowed; closing");
                            return;
                        }
                    }
                    serve_conn(stream, app, shutdown).await;
                }
            }
        });
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
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

async fn serve_conn<I>(io: I, app: Router, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    let svc = TowerToHyperService::new(app);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
