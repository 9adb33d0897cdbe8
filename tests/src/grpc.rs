//! Direct gRPC clients to a vhsmd node over mutual TLS, with a role's certificate from the PKI dir.

use std::path::Path;

use anyhow::Result;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vhsm_proto::v1::crypto_client::CryptoClient;

/// A channel to `endpoint` authenticated as `role` (`crypto`, `admin` or `auditor` cert files).
pub async fn channel(endpoint: &str, pki: &Path, role: &str) -> Result<Channel> {
    let ca = Certificate::from_pem(std::fs::read(pki.join("ca.crt"))?);
    let identity = Identity::from_pem(
        std::fs::read(pki.join(format!("{role}.crt")))?,
        std::fs::read(pki.join(format!("{role}.key")))?,
    );
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .domain_name("vhsmd");
    Ok(Channel::from_shared(endpoint.to_string())?
        .tls_config(tls)?
        .connect()
        .await?)
}

/// A Crypto client as xks-front would hold it.
pub async fn crypto(endpoint: &str, pki: &Path) -> Result<CryptoClient<Channel>> {
    Ok(CryptoClient::new(channel(endpoint, pki, "crypto").await?))
}

/// An Admin client with the operator's certificate.
pub async fn admin(
    endpoint: &str,
    pki: &Path,
) -> Result<vhsm_proto::v1::admin_client::AdminClient<Channel>> {
    Ok(vhsm_proto::v1::admin_client::AdminClient::new(
        channel(endpoint, pki, "admin").await?,
    ))
}
