//! Writes sent to a cluster: one request id per change (so a retry is applied once), retried
//! while the cluster answers "no quorum yet" or "conflict", and the kill-switch warning.

use std::future::Future;
use std::time::Duration;

use tonic::{Request, Response, Status};
use vhsm_proto::v1::Reason;

/// Metadata header carrying the request id (vhsmd's dispatcher reads it).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Metadata header naming the members that had not applied a kill switch.
pub const LAGGING_MEMBERS_HEADER: &str = "x-vhsm-lagging-members";
/// Attempts of one write.
pub const MAX_ATTEMPTS: u32 = 5;

/// A fresh random request id (hex).
pub fn new_request_id() -> String {
    let mut raw = [0u8; 12];
    // A failing OS RNG leaves zeros: the id then only loses its uniqueness, never safety
    // (vhsmd still refuses a conflicting write).
    let _ = getrandom::fill(&mut raw);
    hex::encode(raw)
}

/// Whether vhsmd says nothing was applied, or that the outcome is unknown but a retry with
/// the same id is safe.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        vhsm_proto::reason_of(status),
        Reason::Conflict | Reason::NoQuorum
    )
}

/// Sends `msg` with one request id until it is not retryable (at most [`MAX_ATTEMPTS`]).
/// Returns the last answer and whether it came from a retry.
pub async fn send<T, R, F, Fut>(msg: T, mut call: F) -> (Result<Response<R>, Status>, bool)
where
    T: Clone,
    F: FnMut(Request<T>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let id = new_request_id();
    let mut attempt = 1;
    loop {
        let mut req = Request::new(msg.clone());
        if let Ok(v) = id.parse() {
            req.metadata_mut().insert(REQUEST_ID_HEADER, v);
        }
        let answer = call(req).await;
        match &answer {
            Err(s) if is_retryable(s) && attempt < MAX_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            _ => return (answer, attempt > 1),
        }
    }
}

/// The members a kill switch had not reached when vhsmd answered (empty: all had).
pub fn lagging_members<R>(resp: &Response<R>) -> Vec<String> {
    resp.metadata()
        .get(LAGGING_MEMBERS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn status(reason: Reason) -> Status {
        vhsm_proto::status_with_reason(tonic::Code::Aborted, "x", reason, 0)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_conflicts_with_one_request_id_then_stops() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU32::new(0));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&calls));
        let (answer, retried) = send((), move |req: Request<()>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push(
                req.metadata()
                    .get(REQUEST_ID_HEADER)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            async move {
                if n < 2 {
                    Err(status(Reason::Conflict))
                } else {
                    Ok(Response::new(7u8))
                }
            }
        })
        .await;
        assert_eq!(answer.unwrap().into_inner(), 7);
        assert!(retried);
        let ids = seen.lock().unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried_and_attempts_are_bounded() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let (answer, retried) = send((), move |_req: Request<()>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<Response<()>, _>(status(Reason::KeyNotFound)) }
        })
        .await;
        assert!(answer.is_err() && !retried);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let c = Arc::clone(&calls);
        let (answer, _) = send((), move |_req: Request<()>| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<Response<()>, _>(status(Reason::NoQuorum)) }
        })
        .await;
        assert!(answer.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + MAX_ATTEMPTS);
    }
}
