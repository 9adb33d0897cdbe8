//! SigV4 signing of XKS requests with AWS's own signer (`aws-sigv4`), as KMS signs them.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use secrecy::ExposeSecret;

use super::target::Credential;

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";

/// Signs requests for one endpoint with one credential.
#[derive(Clone)]
pub struct Signer {
    creds: Credentials,
    region: String,
    authority: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Signing failed (a bad header value or parameter; never contains the secret).
#[derive(Debug, thiserror::Error)]
#[error("SigV4 signing failed: {0}")]
pub struct SignError(String);

impl Signer {
    /// A signer for requests to `authority` (the Host header) in `region`.
    pub fn new(cred: &Credential, region: &str, authority: &str) -> Self {
        // aws-credential-types keeps the secret in a zeroizing buffer and redacts it in Debug.
        let creds = Credentials::new(
            cred.access_key_id.clone(),
            cred.secret.expose_secret().to_string(),
            None,
            None,
            "vhsm-admin xks load",
        );
        Signer {
            creds,
            region: region.to_string(),
            authority: authority.to_string(),
        }
    }

    /// The `Host` header value.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The headers to add to a `POST path` of `body` at `time`: `authorization` and
    /// `x-amz-date`. Like KMS, only `host` and `x-amz-date` are signed; the caller sends `host`.
    pub fn headers(
        &self,
        path: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, SignError> {
        let identity = self.creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SignError(e.to_string()))?
            .into();
        let uri = format!("https://{}{}", self.authority, path);
        let headers = [("host", self.authority.as_str())];
        let signable = SignableRequest::new(
            "POST",
            uri.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| SignError(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| SignError(e.to_string()))?
            .into_parts();
        let mut req = http::Request::new(());
        instructions.apply_to_request_http1x(&mut req);
        Ok(req
            .headers()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn the_signature_covers_host_and_date_in_the_xks_scope() {
        let cred = Credential {
            access_key_id: "AKIDAKIDAKIDAKIDAKID".into(),
            secret: SecretString::from("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="),
        };
        let s = Signer::new(&cred, "eu-west-1", "xks.example.com:8443");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let h = s.headers("/p/kms/xks/v1/health", b"{}", t).unwrap();
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
                .unwrap()
        };
        let auth = get("authorization");
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDAKIDAKIDAKIDAKID/20231114/eu-west-1/kms-xks-proxy/aws4_request"
        ), "{auth}");
        assert!(auth.contains("SignedHeaders=host;x-amz-date"), "{auth}");
        assert_eq!(get("x-amz-date"), "20231114T221320Z");
        // Another body, another signature.
        let h2 = s.headers("/p/kms/xks/v1/health", b"{ }", t).unwrap();
        assert_ne!(h, h2);
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
    }
}
