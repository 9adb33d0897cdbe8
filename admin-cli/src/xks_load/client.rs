//! One keep-alive HTTPS connection (HTTP/1.1 over rustls, like KMS), polled in the caller's own
//! task: no connection task, so no task hop between the request and the socket.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("TCP connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, name, protocol or a refused client certificate).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// HTTP/1.1 failed (handshake, request, or the connection closed mid-answer).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The server closed the connection between requests.
    #[error("the server closed the connection")]
    Closed,
    /// No answer within the timeout.
    #[error("no answer in time")]
    Timeout,
    /// The request could not be built (a header value).
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

impl ClientError {
    /// A short name for the report's transport error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Http(_) => "http",
            ClientError::Closed => "closed",
            ClientError::Timeout => "timeout",
            ClientError::Request(_) => "request",
        }
    }
}

/// Opens connections to one endpoint.
#[derive(Clone)]
pub struct Connector {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

type Io = TokioIo<TlsStream<TcpStream>>;

/// One open connection.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Pin<Box<http1::Connection<Io, Full<Bytes>>>>,
    /// The connection future has completed (it must not be polled again).
    finished: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connector {
    /// Dial `addr`, expect a certificate for `server_name`.
    pub fn new(
        addr: SocketAddr,
        server_name: ServerName<'static>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Connector {
            addr,
            server_name,
            tls: TlsConnector::from(tls),
        }
    }

    /// TCP (no Nagle) + TLS + HTTP/1.1 handshake.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        tcp.set_nodelay(true)
            .map_err(|source| ClientError::Connect {
                addr: self.addr,
                source,
            })?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ClientError::Tls)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        Ok(Connection {
            sender,
            conn: Box::pin(conn),
            finished: false,
        })
    }
}

impl Connection {
    /// POSTs `body` to `path` with `headers` (plus `host` and `content-type`) and reads the whole
    /// answer: (status, body). [`ClientError::Closed`] means the server had closed the
    /// connection: the request was not answered and may be sent again on a new one.
    pub async fn post(
        &mut self,
        authority: &str,
        path: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body))?;
        if self.finished {
            return Err(ClientError::Closed);
        }
        let sender = &mut self.sender;
        // Closed before the request left (e.g. the last answer said `Connection: close`).
        tokio::select! {
            biased;
            r = sender.ready() => r.map_err(|_| ClientError::Closed)?,
            _ = &mut self.conn => {
                self.finished = true;
                return Err(ClientError::Closed);
            }
        }
        let exchange = async move {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, bytes))
        };
        tokio::pin!(exchange);
        // The connection future does the socket I/O; poll it together with the exchange.
        let ended = tokio::select! {
            biased;
            r = &mut exchange => return Ok(r?),
            r = &mut self.conn => r,
        };
        // The connection ended (the server closed it after answering, or it failed): what it
        // had read may still complete the answer.
        self.finished = true;
        match exchange.await {
            Ok(a) => Ok(a),
            Err(e) => Err(ClientError::Http(ended.err().unwrap_or(e))),
        }
    }
}
