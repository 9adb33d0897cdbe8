//! Reads an XKS request body within a size limit and a deadline; an oversized body is drained
//! (bounded) so its error answer ends an HTTP/2 stream cleanly instead of with a reset.
//!
//! The body holds the request's plaintext (Base64): it is collected into a zeroizing buffer
//! that is never reallocated in place (each growth copies into a new zeroizing buffer and
//! wipes the old one), and each chunk hyper hands over is wiped too when it is the chunk's
//! only owner.

use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use zeroize::{Zeroize, Zeroizing};

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not complete within the deadline (a slow or stalled sender).
    Timeout,
    /// Longer than the limit. `drained`: the rest was read to its end, so an answer can follow
    /// on the same stream; otherwise the stream will be reset.
    TooLarge {
        /// Whether the body was read to its end.
        drained: bool,
    },
    /// The client aborted the body (stream reset, connection error).
    Failed,
}

/// Reads `body` completely if it has at most `max` bytes and arrives within `wait`. A longer
/// body is read on and discarded up to `max_drain` bytes in all (within the same `wait`).
pub async fn read_bounded(
    body: Body,
    max: usize,
    max_drain: usize,
    wait: Duration,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut body = body;
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    let mut seen: usize = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if seen > max => return Err(BodyError::TooLarge { drained: false }),
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) if seen > max => return Err(BodyError::TooLarge { drained: true }),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(_))) => return Err(BodyError::Failed),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > max_drain {
            wipe_chunk(data);
            return Err(BodyError::TooLarge { drained: false });
        }
        if seen <= max {
            extend_zeroizing(&mut buf, &data, max);
        } else if !buf.is_empty() {
            buf = Zeroizing::new(Vec::new());
        }
        wipe_chunk(data);
    }
}

/// Appends `data` to `buf` without leaving a copy behind: when `buf` must grow, its contents
/// move to a new buffer (at least doubled, at most `max`) and the old one is zeroized.
fn extend_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8], max: usize) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let cap = need.max(buf.capacity() * 2).min(max.max(need));
        let mut grown = Zeroizing::new(Vec::with_capacity(cap));
        grown.extend_from_slice(buf);
        // The old buffer is zeroized as it drops.
        *buf = grown;
    }
    buf.extend_from_slice(data);
}

/// Zeroizes a chunk of the body when this is its only reference (hyper's HTTP/1 chunks often
/// share the connection's read buffer, which is then left as it is).
fn wipe_chunk(data: Bytes) {
    if let Ok(mut m) = data.try_into_mut() {
        m.as_mut().zeroize();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::HttpBody;
    use hyper::body::Frame;

    use super::*;

    /// `chunks` chunks of `size` bytes, then end (or stall forever when `stall`).
    struct Chunks {
        left: usize,
        size: usize,
        stall: bool,
    }

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.left == 0 {
                return if self.stall {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
        }
    }

    fn chunks(left: usize, size: usize, stall: bool) -> Body {
        Body::new(Chunks { left, size, stall })
    }

    const WAIT: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_body_within_the_limit_is_returned_whole() {
        let b = read_bounded(chunks(4, 1000, false), 4000, 8000, WAIT)
            .await
            .unwrap();
        assert_eq!(b.len(), 4000);
        assert!(b.iter().all(|&c| c == b'x'));
        assert!(read_bounded(Body::empty(), 0, 0, WAIT)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_up_to_max_drain() {
        let e = read_bounded(chunks(5, 1000, false), 4000, 8000, WAIT).await;
        assert_eq!(e, Err(BodyError::TooLarge { drained: true }));
        let e = read_bounded(chunks(9, 1000, false), 4000, 8000, WAIT).await;
        assert_eq!(e, Err(BodyError::TooLarge { drained: false }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let e = read_bounded(chunks(1, 10, true), 4000, 8000, WAIT).await;
        assert_eq!(e, Err(BodyError::Timeout));
        // Oversized and then stalled: too large, not drained.
        let e = read_bounded(chunks(5, 1000, true), 4000, 8000, WAIT).await;
        assert_eq!(e, Err(BodyError::TooLarge { drained: false }));
    }

    #[test]
    fn growing_moves_the_contents_and_keeps_them_whole() {
        let mut buf = Zeroizing::new(Vec::new());
        for i in 0..100u8 {
            extend_zeroizing(&mut buf, &[i; 37], 4000);
            assert!(buf.capacity() <= 4000);
        }
        assert_eq!(buf.len(), 3700);
        assert!(buf
            .chunks(37)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
        // Past `max` it still holds everything (the caller enforces the limit).
        extend_zeroizing(&mut buf, &[7; 400], 4000);
        assert_eq!(buf.len(), 4100);
    }

    #[test]
    fn a_shared_chunk_is_left_alone() {
        let shared = Bytes::from(vec![9u8; 64]);
        let other = shared.clone();
        wipe_chunk(shared);
        assert!(other.iter().all(|&b| b == 9));
        // The last reference: wiped (not observable afterwards; this only must not panic).
        wipe_chunk(other);
    }
}
