//! XKS requests as KMS sends them: HTTP/1.1 keep-alive over TLS, signed with AWS's own SigV4
//! signer (`aws-sigv4`, service `kms-xks-proxy`), and the status, headers and JSON that came back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use serde_json::Value;

use super::target::{connect, Credential, Endpoint, IO_TIMEOUT};

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";

/// One response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The `Allow` header, if any.
    pub allow: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// Request sent until the whole body received.
    pub elapsed: Duration,
}

impl Reply {
    /// `errorName` of an error body ("" if none).
    pub fn error_name(&self) -> &str {
        self.body
            .get("errorName")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// `status errorName`, for a detail column.
    pub fn summary(&self) -> String {
        match self.error_name() {
            "" => format!("HTTP {}", self.status),
            e => format!("HTTP {} {e}", self.status),
        }
    }
}

/// How to sign one request.
#[derive(Debug, Clone, Copy)]
pub struct Signing<'a> {
    /// The credential (`None`: send no Authorization header).
    pub credential: Option<&'a Credential>,
    /// SigV4 region (the KMS key store's region).
    pub region: &'a str,
    /// The signing time (now, or skewed on purpose).
    pub time: SystemTime,
}

/// The headers of a POST/GET of `body` to `path`, signed as KMS signs them.
pub fn headers(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: &[u8],
    signing: Signing<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![
        ("host".to_string(), ep.authority.clone()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let Some(cred) = signing.credential else {
        return Ok(out);
    };
    // aws-sigv4 keeps its own copy of the secret for the signature (not zeroized by us).
    let identity = aws_credential_types::Credentials::new(
        cred.access_key_id.clone(),
        cred.secret.as_str().to_string(),
        None,
        None,
        "vhsm-admin-xks-check",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(signing.region)
        .name(SERVICE)
        .time(signing.time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let uri = format!("https://{}{path}", ep.authority);
    let signable = SignableRequest::new(
        method,
        uri.as_str(),
        out.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut req);
    for (k, v) in req.headers() {
        out.push((
            k.to_string(),
            v.to_str().map_err(|e| e.to_string())?.to_string(),
        ));
    }
    Ok(out)
}

/// A keep-alive connection, reopened after the server closed it.
#[derive(Debug)]
pub struct Session {
    ep: Endpoint,
    tls: Arc<ClientConfig>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Session {
    /// No connection yet: the first request opens it.
    pub fn new(ep: Endpoint, tls: Arc<ClientConfig>) -> Self {
        Session {
            ep,
            tls,
            sender: None,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Opens a new connection now (TCP + TLS + HTTP/1.1); the time it took.
    pub async fn reconnect(&mut self) -> Result<Duration, String> {
        let start = Instant::now();
        self.sender = None;
        let (tls, _) = connect(&self.ep, self.tls.clone()).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))?;
        tokio::spawn(conn);
        self.sender = Some(sender);
        Ok(start.elapsed())
    }

    /// Sends one request with exactly `headers`; on any failure the connection is dropped.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !reused {
            self.reconnect().await?;
        }
        let result = self.exchange(method, path, &headers, body.clone()).await;
        match result {
            Ok(r) => Ok(r),
            // A kept-alive connection the server closed meanwhile: once more on a new one.
            Err(_) if reused => {
                self.reconnect().await?;
                let r = self.exchange(method, path, &headers, body).await;
                if r.is_err() {
                    self.sender = None;
                }
                r
            }
            Err(e) => {
                self.sender = None;
                Err(e)
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let sender = self.sender.as_mut().ok_or("not connected")?;
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let exchange = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let allow = resp
                .headers()
                .get(http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, allow, bytes))
        };
        let (status, allow, bytes) = tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", IO_TIMEOUT.as_secs()))??;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            allow,
            body,
            elapsed: start.elapsed(),
        })
    }
}
