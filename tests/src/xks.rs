//! A KMS-shaped XKS client: HTTPS (rustls) requests signed by AWS's own SigV4 signer (`aws-sigv4`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// Status and parsed JSON body of one XKS response.
#[derive(Debug, Clone)]
pub struct XksResponse {
    pub status: u16,
    pub body: Value,
}

impl XksResponse {
    /// The `errorName` of an error response ("" for success).
    pub fn error_name(&self) -> &str {
        self.body
            .get("errorName")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Signs and sends XKS API requests the way AWS KMS does.
#[derive(Clone)]
pub struct XksClient {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    host: String,
    pub access_key_id: String,
    pub secret: String,
    pub region: String,
    pub service: String,
}

impl std::fmt::Debug for XksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksClient")
            .field("addr", &self.addr)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl XksClient {
    /// A client trusting `pki/ca.crt`, optionally presenting `client_cert` (mTLS).
    pub fn new(
        addr: SocketAddr,
        pki: &Path,
        client_cert: Option<(&Path, &Path)>,
        access_key_id: &str,
        secret: &str,
    ) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
                let key = PrivateKeyDer::from_pem_file(key)?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(XksClient {
            addr,
            tls: Arc::new(config),
            host: format!("xks.localhost:{}", addr.port()),
            access_key_id: access_key_id.to_string(),
            secret: secret.to_string(),
            region: "us-east-1".to_string(),
            service: "kms-xks-proxy".to_string(),
        })
    }

    /// The same client with other credentials.
    pub fn with_credentials(&self, access_key_id: &str, secret: &str) -> Self {
        let mut c = self.clone();
        c.access_key_id = access_key_id.to_string();
        c.secret = secret.to_string();
        c
    }

    /// Signs `body` for `path` at `time` and returns the headers to send.
    pub fn signed_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>> {
        let identity = Credentials::new(
            self.access_key_id.clone(),
            self.secret.clone(),
            None,
            None,
            "e2e",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| anyhow!("signing params: {e}"))?
            .into();
        let uri = format!("https://{}{}", self.host, path);
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signable = SignableRequest::new(
            method,
            uri.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )?;
        let (instructions, _sig) = sign(signable, &params)?.into_parts();
        let mut req = http::Request::builder().method(method).uri(path).body(())?;
        instructions.apply_to_request_http1x(&mut req);
        let mut out = vec![
            ("host".to_string(), self.host.clone()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        for (k, v) in req.headers() {
            out.push((k.to_string(), v.to_str()?.to_string()));
        }
        Ok(out)
    }

    /// A signed POST of `body` (JSON) to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<XksResponse> {
        let bytes = serde_json::to_vec(body)?;
        let headers = self.signed_headers("POST", path, &bytes, SystemTime::now())?;
        self.send("POST", path, headers, bytes).await
    }

    /// Opens one keep-alive HTTP/1.1 connection for many requests (load generation).
    pub async fn connect(&self) -> Result<XksConnection> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::try_from("xks.localhost")?;
        let tls = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(tls))
                .await?;
        tokio::spawn(conn);
        Ok(XksConnection {
            client: self.clone(),
            sender,
        })
    }

    /// Sends a request with exactly these headers (for tampering tests).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<XksResponse> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::try_from("xks.localhost")?;
        let tls = connector
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(tls))
                .await?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = sender
            .send_request(req.body(Full::new(bytes::Bytes::from(body)))?)
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(XksResponse { status, body })
    }
}

/// One persistent connection to xks-front.
pub struct XksConnection {
    client: XksClient,
    sender: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
}

impl std::fmt::Debug for XksConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XksConnection").finish_non_exhaustive()
    }
}

impl XksConnection {
    /// A signed POST over this connection.
    pub async fn post(&mut self, path: &str, body: &Value) -> Result<XksResponse> {
        let bytes = serde_json::to_vec(body)?;
        let headers = self
            .client
            .signed_headers("POST", path, &bytes, SystemTime::now())?;
        let mut req = http::Request::builder().method("POST").uri(path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(bytes::Bytes::from(bytes)))?)
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(XksResponse { status, body })
    }
}
