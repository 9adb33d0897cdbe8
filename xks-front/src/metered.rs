//! A connection's read side, metered: until a request on the connection has authenticated, it
//! may read only so many bytes per second (token bucket); and every connection yields to the
//! scheduler after each `YIELD_BYTES` read, so one connection flooding small frames (HTTP/2
//! SETTINGS, rapid resets, CONTINUATION) cannot monopolize a worker thread.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::conn::ConnState;
use crate::metrics::{Limit, Metrics};

/// Bytes read between two forced yields.
pub const YIELD_BYTES: usize = 16 * 1024;
/// Smallest refill waited for once the bucket is empty.
const MIN_REFILL: u64 = 4096;

/// Token bucket of one connection's unauthenticated reads.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let add = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(self.burst);
            self.last = now;
        }
    }

    fn wait_for_refill(&self) -> Duration {
        let want = MIN_REFILL.min(self.burst).max(1);
        Duration::from_nanos(want.saturating_mul(1_000_000_000) / self.rate.max(1))
    }
}

/// An I/O stream whose reads are metered (see the module docs); writes pass through.
pub struct Metered<I> {
    inner: I,
    conn: Arc<ConnState>,
    metrics: Arc<Metrics>,
    bucket: Bucket,
    sleep: Option<Pin<Box<Sleep>>>,
    since_yield: usize,
}

impl<I> std::fmt::Debug for Metered<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("bucket", &self.bucket)
            .field("since_yield", &self.since_yield)
            .finish_non_exhaustive()
    }
}

impl<I> Metered<I> {
    /// Meters `inner`: `rate` bytes/s with a `burst` until `conn` has authenticated.
    pub fn new(
        inner: I,
        conn: Arc<ConnState>,
        metrics: Arc<Metrics>,
        rate: u64,
        burst: u64,
    ) -> Self {
        Self {
            inner,
            conn,
            metrics,
            bucket: Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            },
            sleep: None,
            since_yield: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.since_yield >= YIELD_BYTES {
            this.since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let limited = !this.conn.is_authenticated();
        let mut allowed = buf.remaining();
        if limited {
            loop {
                if let Some(sleep) = this.sleep.as_mut() {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep = None;
                }
                this.bucket.refill(Instant::now());
                if this.bucket.tokens > 0 {
                    break;
                }
                this.metrics.hit(Limit::UnauthenticatedReadRate);
                this.sleep = Some(Box::pin(tokio::time::sleep(this.bucket.wait_for_refill())));
            }
            allowed = allowed.min(usize::try_from(this.bucket.tokens).unwrap_or(usize::MAX));
        }
        let n = {
            let mut sub = ReadBuf::new(buf.initialize_unfilled_to(allowed));
            match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => sub.filled().len(),
            }
        };
        buf.advance(n);
        this.since_yield += n;
        if limited {
            this.bucket.tokens = this.bucket.tokens.saturating_sub(n as u64);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::IpAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn conn() -> Arc<ConnState> {
        ConnState::new(IpAddr::from([127, 0, 0, 1]), std::time::Instant::now())
    }

    /// Reads everything the writer sends within `for_` (virtual time).
    async fn read_for(m: &mut Metered<tokio::io::DuplexStream>, for_: Duration) -> usize {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(for_, async {
            loop {
                match m.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        total
    }

    #[tokio::test(start_paused = true)]
    async fn unauthenticated_reads_are_held_to_the_rate_after_the_burst() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            while tx.write_all(&chunk).await.is_ok() {}
        });
        let metrics = Arc::new(Metrics::new());
        let c = conn();
        let mut m = Metered::new(rx, c.clone(), metrics.clone(), 100_000, 50_000);
        let got = read_for(&mut m, Duration::from_secs(2)).await;
        // 50 kB burst + 2 s × 100 kB/s, give or take one refill step.
        assert!((240_000..=260_000).contains(&got), "{got}");
        assert!(metrics
            .encode()
            .contains("limit=\"unauthenticated_read_rate\""));
        // Once authenticated, no limit: 2 MB in no (virtual) time.
        c.mark_authenticated();
        let started = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 2_000_000 {
            got += m.read(&mut buf).await.unwrap();
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn yields_between_large_reads_and_passes_writes() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let c = conn();
        c.mark_authenticated();
        let mut m = Metered::new(rx, c, Arc::new(Metrics::new()), 1, 1);
        tx.write_all(&vec![1u8; 3 * YIELD_BYTES]).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        m.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 3 * YIELD_BYTES);
        let (a, mut b) = tokio::io::duplex(64);
        let mut m = Metered::new(a, conn(), Arc::new(Metrics::new()), 1, 1);
        m.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
    }
}
