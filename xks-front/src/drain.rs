//! Reads and discards the body of a request that is answered before its body was needed.
//!
//! When a handler answers (an error) without reading the request body, hyper ends the HTTP/2
//! stream with `RST_STREAM(NO_ERROR)` after the answer. RFC 9113 §8.1 allows that, but curl 7.88
//! (which runs the AWS conformance client) and other HTTP/2 clients then drop the answer and
//! report "Stream error in the HTTP/2 framing layer" (curl exit code 92) instead of, say,
//! `InvalidUriPathException`. Reading the body to its end first lets the stream close cleanly.
//! The read is bounded in bytes and in time, so a client cannot use it to hold a task: past
//! either bound the body is dropped and the stream is reset as before.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;

/// Reads `body` to its end and throws the bytes away, stopping early after `max_bytes` bytes,
/// after `max_wait`, or on a body error. Returns whether the end of the body was reached.
pub async fn drain(body: Body, max_bytes: usize, max_wait: Duration) -> bool {
    let mut body = body;
    let read = async {
        let mut seen: usize = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > max_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(max_wait, read).await.unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use axum::body::{Bytes, HttpBody};
    use hyper::body::Frame;

    use super::*;

    /// How a `Probe` body behaves after its chunks.
    #[derive(Clone, Copy)]
    enum Then {
        End,
        Fail,
    }

    /// A body of `chunks` 1 KiB chunks (`None`: endless) that records how far it was read;
    /// `stalled`: never ready (a client that stops sending).
    struct Probe {
        chunks: Option<usize>,
        then: Then,
        stalled: bool,
        polled: Arc<AtomicUsize>,
        ended: Arc<AtomicBool>,
    }

    fn probe(
        chunks: Option<usize>,
        then: Then,
        stalled: bool,
    ) -> (Body, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let body = Body::new(Probe {
            chunks,
            then,
            stalled,
            polled: polled.clone(),
            ended: ended.clone(),
        });
        (body, polled, ended)
    }

    impl HttpBody for Probe {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.stalled {
                // Never ready and never woken.
                return Poll::Pending;
            }
            match (self.chunks, self.then) {
                (Some(0), Then::End) => {
                    self.ended.store(true, Ordering::SeqCst);
                    return Poll::Ready(None);
                }
                (Some(0), Then::Fail) => {
                    return Poll::Ready(Some(Err(std::io::Error::other("client went away"))));
                }
                (Some(n), _) => self.chunks = Some(n - 1),
                (None, _) => {}
            }
            self.polled.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[b' '; 1024])))))
        }
    }

    #[tokio::test]
    async fn reads_a_small_body_to_its_end() {
        let (body, polled, ended) = probe(Some(3), Then::End, false);
        assert!(drain(body, 64 * 1024, Duration::from_secs(5)).await);
        assert_eq!(polled.load(Ordering::SeqCst), 3);
        assert!(ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn empty_and_exactly_max_bytes_bodies_are_drained() {
        assert!(drain(Body::empty(), 0, Duration::from_secs(5)).await);
        assert!(drain(Body::from("exactly"), 7, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn one_byte_over_max_bytes_is_not_drained() {
        assert!(!drain(Body::from("exactly!"), 7, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn stops_after_max_bytes_of_an_endless_body() {
        let (body, polled, ended) = probe(None, Then::End, false);
        assert!(!drain(body, 8 * 1024, Duration::from_secs(5)).await);
        // 8 chunks fit, the 9th crosses the bound.
        assert_eq!(polled.load(Ordering::SeqCst), 9);
        assert!(!ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn gives_up_on_a_stalled_sender_after_max_wait() {
        let (body, polled, ended) = probe(Some(3), Then::End, true);
        assert!(!drain(body, 64 * 1024, Duration::from_millis(20)).await);
        assert_eq!(polled.load(Ordering::SeqCst), 0);
        assert!(!ended.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_body_error_stops_the_drain() {
        let (body, polled, ended) = probe(Some(2), Then::Fail, false);
        assert!(!drain(body, 64 * 1024, Duration::from_secs(5)).await);
        assert_eq!(polled.load(Ordering::SeqCst), 2);
        assert!(!ended.load(Ordering::SeqCst));
    }
}
