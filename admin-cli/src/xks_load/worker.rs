//! One connection of `xks load`: builds, signs and sends each request, reconnects after a
//! failure, and verifies and counts each answer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use tokio::time::Instant;

use super::args::Op;
use super::client::{ClientError, Connection, Connector};
use super::progress::Progress;
use super::schedule::{drive, Plan, Requester, Schedule};
use super::sign::Signer;
use super::stats::Stats;
use super::verify::{self, Outcome};
use super::workload::{Call, Sealed, Workload};

/// After a failed connect, wait this long before the next attempt (a down endpoint must not
/// turn the run into a connect loop).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// Dials the endpoint.
    pub connector: Connector,
    /// Signs requests.
    pub signer: Signer,
    /// The requests.
    pub workload: Workload,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Prefix of every kmsRequestId of this run.
    pub run_id: String,
    /// The live counters.
    pub progress: Arc<Progress>,
    /// The endpoint URL as given (for messages).
    pub url: String,
    /// The URI path prefix in use.
    pub prefix: String,
}

/// A request that got an answer: its status and how it counts.
pub type Answer = (u16, Outcome);

/// One connection's state.
#[derive(Debug)]
pub struct Worker {
    index: u32,
    shared: Arc<Shared>,
    conn: Option<Connection>,
    sealed: Option<Sealed>,
    retry_at: Option<Instant>,
}

impl Worker {
    /// Connection `index`, opened now.
    pub async fn open(index: u32, shared: Arc<Shared>) -> Result<Self, ClientError> {
        let conn = match tokio::time::timeout(shared.timeout, shared.connector.connect()).await {
            Ok(c) => c?,
            Err(_) => return Err(ClientError::Timeout),
        };
        Ok(Worker {
            index,
            shared,
            conn: Some(conn),
            sealed: None,
            retry_at: None,
        })
    }

    /// The connection's number.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Decrypt runs: one Encrypt (not counted) whose ciphertext every Decrypt then opens.
    pub async fn seal_once(&mut self) -> Result<(), String> {
        match self.exchange(Call::Encrypt, u64::MAX).await {
            Ok((_, Outcome::Ok)) if self.sealed.is_some() => Ok(()),
            Ok((status, Outcome::Error { name, .. })) => Err(format!("{status} {name}")),
            Ok((_, Outcome::VerifyFailed(what))) => {
                Err(format!("answer failed verification: {what}"))
            }
            Ok((status, Outcome::Ok)) => Err(format!("{status} without a ciphertext")),
            Err(kind) => Err(format!("no answer ({kind})")),
        }
    }

    /// Sends until `plan.end`, returning this connection's counts.
    pub async fn run(mut self, plan: Plan, schedule: Option<Schedule>) -> Stats {
        let mut stats = Stats::new();
        let progress = self.shared.progress.clone();
        drive(plan, schedule, &mut self, |t, r| {
            let latency = t.latency();
            let ok = matches!(r, Ok((_, Outcome::Ok)));
            progress.add(ok, latency);
            match r {
                Ok((status, outcome)) => stats.answered(status, &outcome, latency, t.lag()),
                Err(kind) => stats.unanswered(kind, latency, t.lag()),
            }
        })
        .await;
        stats
    }

    /// Sends one request on the open connection (or a new one), reading the whole answer. A
    /// kept-alive connection the server had closed is replaced once, transparently, as KMS's
    /// client would; any other failure drops the connection and counts.
    async fn round_trip(
        &mut self,
        path: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
        deadline: Instant,
    ) -> Result<(u16, Bytes), &'static str> {
        let sh = self.shared.clone();
        let mut reused = self.conn.is_some();
        loop {
            let conn = match self.conn.as_mut() {
                Some(c) => c,
                None => {
                    if let Some(at) = self.retry_at.take() {
                        tokio::time::sleep_until(at).await;
                    }
                    match tokio::time::timeout_at(deadline, sh.connector.connect()).await {
                        Ok(Ok(c)) => self.conn.insert(c),
                        Ok(Err(e)) => {
                            self.retry_at = Some(Instant::now() + RECONNECT_BACKOFF);
                            return Err(e.kind());
                        }
                        Err(_) => return Err("timeout"),
                    }
                }
            };
            let sent = conn.post(sh.signer.authority(), path, headers, body.clone());
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(ClientError::Closed)) if reused => {
                    self.conn = None;
                    reused = false;
                }
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e.kind());
                }
                Err(_) => {
                    self.conn = None;
                    return Err("timeout");
                }
            }
        }
    }

    /// The call for request `seq`; a Decrypt needs a ciphertext, else it becomes an Encrypt.
    fn call(&self, seq: u64) -> Call {
        match self.shared.workload.call(seq) {
            Call::Decrypt if self.sealed.is_none() => Call::Encrypt,
            c => c,
        }
    }

    /// One request and its verified answer, or the kind of transport failure.
    async fn exchange(&mut self, call: Call, seq: u64) -> Result<Answer, &'static str> {
        let sh = self.shared.clone();
        let id = format!("{}-{}-{}", sh.run_id, self.index, seq);
        let path = sh.workload.path(call);
        let body = sh
            .workload
            .body(call, &id, self.sealed.as_ref())
            .map_err(|_| "request")?;
        let headers = sh
            .signer
            .headers(&path, &body, SystemTime::now())
            .map_err(|_| "request")?;
        let deadline = Instant::now() + sh.timeout;
        let (status, answer) = self
            .round_trip(&path, &headers, Bytes::from(body), deadline)
            .await?;
        let w = &sh.workload;
        let outcome = match call {
            Call::Health => verify::check_health(status, &answer),
            Call::Metadata => verify::check_metadata(status, &answer),
            Call::Decrypt => verify::check_decrypt(status, &answer, &w.plaintext),
            Call::Encrypt => {
                let (o, sealed) = verify::check_encrypt(status, &answer, w.plaintext.len(), &w.aad);
                if sealed.is_some() && (w.op == Op::Mixed || self.sealed.is_none()) {
                    self.sealed = sealed;
                }
                o
            }
        };
        Ok((status, outcome))
    }
}

impl Requester for Worker {
    type Out = Result<Answer, &'static str>;

    fn send(&mut self, seq: u64) -> impl std::future::Future<Output = Self::Out> + Send {
        let call = self.call(seq);
        self.exchange(call, seq)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use secrecy::SecretString;

    use super::*;
    use crate::cmd_pki::{create_pki, PkiSpec};
    use crate::xks_load::target::{server_name, tls_config, Credential};

    const HEALTH: &[u8] = br#"{"xksProxyFleetSize":1,"xksProxyVendor":"t","xksProxyModel":"t",
        "ekmVendor":"t","ekmFleetDetails":[{"id":"a","model":"b","healthStatus":"ACTIVE"}]}"#;

    /// A TLS HTTP/1.1 server answering every request with a health body; counts connections.
    async fn server(pki: &Path, keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.join("xks-front.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join("xks-front.key")).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            HEALTH,
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn shared(pki: &Path, addr: SocketAddr) -> Arc<Shared> {
        let cred = Credential {
            access_key_id: "AKIDAKIDAKIDAKIDAKID".into(),
            secret: SecretString::from("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="),
        };
        Arc::new(Shared {
            connector: Connector::new(
                addr,
                server_name("xks.localhost").unwrap(),
                tls_config(&pki.join("ca.crt"), None).unwrap(),
            ),
            signer: Signer::new(
                &cred,
                "us-east-1",
                &format!("xks.localhost:{}", addr.port()),
            ),
            workload: Workload::new(Op::Health, "", None, "us-east-1", 1, 0).unwrap(),
            timeout: Duration::from_secs(5),
            run_id: "test".into(),
            progress: Arc::new(Progress::default()),
            url: "https://xks.localhost".into(),
            prefix: String::new(),
        })
    }

    #[tokio::test]
    async fn keep_alive_reuses_one_connection_and_a_closed_one_is_replaced_silently() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        create_pki(&PkiSpec::new(&pki)).unwrap();
        for (keep_alive, want_connections) in [(true, 1), (false, 5)] {
            let (addr, accepted) = server(&pki, keep_alive).await;
            let mut w = Worker::open(0, shared(&pki, addr)).await.unwrap();
            for seq in 0..5 {
                let r = w.exchange(Call::Health, seq).await;
                assert_eq!(
                    r,
                    Ok((200, Outcome::Ok)),
                    "keep-alive {keep_alive}, request {seq}"
                );
            }
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                want_connections,
                "keep-alive {keep_alive}"
            );
        }
    }
}
