//! Interoperability: requests signed by the independent `aws-sigv4` crate verify, tampered ones fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use http::{HeaderValue, Method, Request, Uri};
use secrecy::SecretString;
use xks_front::sigv4::{verify, AuthError, SignedRequest, VerifyParams};

const AKID: &str = "AKIAI2SFODNN7EXAMPLEAB";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
const HOST: &str = "xks.example.com";
const PATH: &str = "/example/kms/xks/v1/keys/my.key_id-1/encrypt";
const BODY: &[u8] = br#"{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/k","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM"}"#;
const MAX_SKEW: Duration = Duration::from_secs(300);

/// A fixed instant: 2026-11-29T08:30:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_941_000)
}

/// The request as the server sees it over HTTP/1.1: origin-form URI plus a Host header.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn verify_at(&self, now: SystemTime, region: &str) -> Result<String, AuthError> {
        let req = SignedRequest {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            body: &self.body,
        };
        let params = VerifyParams {
            region,
            service: "kms-xks-proxy",
            now,
            max_skew: MAX_SKEW,
        };
        let lookup = |id: &str| (id == AKID).then(|| SecretString::from(SECRET));
        verify(&req, &params, &lookup).map(|a| a.access_key_id)
    }

    fn set_auth(&mut self, f: impl Fn(&str) -> String) {
        let old = self.headers["authorization"].to_str().unwrap().to_owned();
        self.headers
            .insert("authorization", HeaderValue::from_str(&f(&old)).unwrap());
    }
}

struct Signer<'a> {
    akid: &'a str,
    secret: &'a str,
    region: &'a str,
    service: &'a str,
    time: SystemTime,
    checksum_header: bool,
}

impl Default for Signer<'_> {
    fn default() -> Self {
        Signer {
            akid: AKID,
            secret: SECRET,
            region: "us-east-1",
            service: "kms-xks-proxy",
            time: t0(),
            checksum_header: false,
        }
    }
}

impl Signer<'_> {
    fn sign(&self, path: &str, body: &[u8]) -> Received {
        let identity = Credentials::new(self.akid, self.secret, None, None, "test").into();
        let mut settings = SigningSettings::default();
        if self.checksum_header {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let url = format!("https://{HOST}{path}");
        let headers = [("content-type", "application/json"), ("host", HOST)];
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _sig) = sign(signable, &params).unwrap().into_parts();
        let mut req = Request::builder()
            .method("POST")
            .uri(url.as_str())
            .header("content-type", "application/json")
            .header("host", HOST)
            .body(body.to_vec())
            .unwrap();
        instructions.apply_to_request_http1x(&mut req);
        let (parts, body) = req.into_parts();
        Received {
            method: parts.method,
            uri: parts.uri.path().parse().unwrap(),
            headers: parts.headers,
            body,
        }
    }
}

#[test]
fn aws_sigv4_signed_request_verifies() {
    let req = Signer::default().sign(PATH, BODY);
    let auth = req.headers["authorization"].to_str().unwrap();
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date"),
        "{auth}"
    );
    assert_eq!(req.verify_at(t0(), "us-east-1").unwrap(), AKID);
}

#[test]
fn aws_sigv4_with_content_sha256_header_verifies() {
    let signer = Signer {
        checksum_header: true,
        ..Signer::default()
    };
    let req = signer.sign(PATH, BODY);
    assert!(req.headers.contains_key("x-amz-content-sha256"));
    req.verify_at(t0(), "us-east-1").unwrap();
    let mut tampered = req.clone();
    tampered.body[3] ^= 1;
    assert_eq!(
        tampered.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn http2_style_request_uses_uri_authority() {
    let mut req = Signer::default().sign(PATH, BODY);
    req.headers.remove("host");
    req.uri = format!("https://{HOST}{PATH}").parse().unwrap();
    req.verify_at(t0(), "us-east-1").unwrap();
}

#[test]
fn empty_body_and_prefixless_health_path_verify() {
    let req = Signer::default().sign("/kms/xks/v1/health", b"");
    req.verify_at(t0(), "us-east-1").unwrap();
}

#[test]
fn accepted_within_skew_both_directions() {
    let req = Signer::default().sign(PATH, BODY);
    req.verify_at(t0() + Duration::from_secs(299), "us-east-1")
        .unwrap();
    req.verify_at(t0() - Duration::from_secs(299), "us-east-1")
        .unwrap();
}

#[test]
fn clock_skew_of_six_minutes_is_rejected() {
    let six = Duration::from_secs(360);
    let past = Signer {
        time: t0() - six,
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        past.verify_at(t0(), "us-east-1"),
        Err(AuthError::StaleOrFutureDate)
    );
    let future = Signer {
        time: t0() + six,
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        future.verify_at(t0(), "us-east-1"),
        Err(AuthError::StaleOrFutureDate)
    );
}

#[test]
fn replayed_request_is_rejected_once_stale() {
    let req = Signer::default().sign(PATH, BODY);
    req.verify_at(t0(), "us-east-1").unwrap();
    assert_eq!(
        req.verify_at(t0() + Duration::from_secs(301), "us-east-1"),
        Err(AuthError::StaleOrFutureDate)
    );
}

#[test]
fn wrong_region_service_secret_and_key_are_rejected() {
    let req = Signer::default().sign(PATH, BODY);
    assert_eq!(
        req.verify_at(t0(), "eu-west-1"),
        Err(AuthError::WrongRegion)
    );

    let other_region = Signer {
        region: "us-west-2",
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        other_region.verify_at(t0(), "us-east-1"),
        Err(AuthError::WrongRegion)
    );

    let kms_xks = Signer {
        service: "kms-xks",
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        kms_xks.verify_at(t0(), "us-east-1"),
        Err(AuthError::WrongService)
    );

    let wrong_secret = Signer {
        secret: "0000EXAMPLEFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9+vE=",
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        wrong_secret.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let unknown = Signer {
        akid: "AKIAZZZZZZZZZZZZZZZZZZ",
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(
        unknown.verify_at(t0(), "us-east-1"),
        Err(AuthError::UnknownAccessKey)
    );
}

#[test]
fn modified_body_path_method_or_header_is_rejected() {
    let req = Signer::default().sign(PATH, BODY);

    let mut body = req.clone();
    body.body = BODY.to_vec();
    body.body.push(b' ');
    assert_eq!(
        body.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut path = req.clone();
    path.uri = "/example/kms/xks/v1/keys/my.key_id-1/decrypt"
        .parse()
        .unwrap();
    assert_eq!(
        path.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut prefix = req.clone();
    prefix.uri = "/other/kms/xks/v1/keys/my.key_id-1/encrypt"
        .parse()
        .unwrap();
    assert_eq!(
        prefix.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut method = req.clone();
    method.method = Method::PUT;
    assert_eq!(
        method.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut host = req.clone();
    host.headers
        .insert("host", HeaderValue::from_static("evil.example.com"));
    assert_eq!(
        host.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut ctype = req.clone();
    ctype
        .headers
        .insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        ctype.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    // An unsigned extra header does not matter.
    let mut extra = req.clone();
    extra
        .headers
        .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    extra.verify_at(t0(), "us-east-1").unwrap();
}

#[test]
fn missing_or_unsigned_host_and_date_are_rejected() {
    let req = Signer::default().sign(PATH, BODY);

    let mut no_host = req.clone();
    no_host.headers.remove("host");
    assert_eq!(
        no_host.verify_at(t0(), "us-east-1"),
        Err(AuthError::MissingSignedHeader("host"))
    );

    let mut no_date = req.clone();
    no_date.headers.remove("x-amz-date");
    assert_eq!(
        no_date.verify_at(t0(), "us-east-1"),
        Err(AuthError::MissingSignedHeader("x-amz-date"))
    );

    let mut host_unsigned = req.clone();
    host_unsigned
        .set_auth(|a| a.replace("content-type;host;x-amz-date", "content-type;x-amz-date"));
    assert_eq!(
        host_unsigned.verify_at(t0(), "us-east-1"),
        Err(AuthError::MissingSignedHeader("host"))
    );

    let mut date_unsigned = req.clone();
    date_unsigned.set_auth(|a| a.replace("content-type;host;x-amz-date", "content-type;host"));
    assert_eq!(
        date_unsigned.verify_at(t0(), "us-east-1"),
        Err(AuthError::MissingSignedHeader("x-amz-date"))
    );

    // Dropping a signed header from the list changes the canonical request.
    let mut fewer = req.clone();
    fewer.set_auth(|a| a.replace("content-type;host;x-amz-date", "host;x-amz-date"));
    assert_eq!(
        fewer.verify_at(t0(), "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut no_auth = req.clone();
    no_auth.headers.remove("authorization");
    assert_eq!(
        no_auth.verify_at(t0(), "us-east-1"),
        Err(AuthError::MissingAuthorization)
    );
}

#[test]
fn malformed_authorization_headers_are_rejected() {
    let req = Signer::default().sign(PATH, BODY);
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(Edit, AuthError)> = vec![
        (
            Box::new(|a: &str| a.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA1 ")),
            AuthError::UnsupportedAlgorithm,
        ),
        (
            Box::new(|a: &str| a.replace("Credential=", "Credentials=")),
            AuthError::Malformed("Authorization parameter"),
        ),
        (
            Box::new(|a: &str| a.replace("/aws4_request", "")),
            AuthError::Malformed("Credential"),
        ),
        (
            Box::new(|a: &str| format!("{}zz", &a[..a.len() - 2])),
            AuthError::Malformed("Signature"),
        ),
        (
            Box::new(|a: &str| a.replace("Signature=", "Signature=00")),
            AuthError::Malformed("Signature"),
        ),
        (
            Box::new(|_: &str| String::new()),
            AuthError::Malformed("Authorization"),
        ),
    ];
    for (edit, want) in cases {
        let mut r = req.clone();
        r.set_auth(|a| edit(a));
        assert_eq!(r.verify_at(t0(), "us-east-1"), Err(want));
    }

    let mut bad_date = req.clone();
    bad_date.headers.insert(
        "x-amz-date",
        HeaderValue::from_static("Sun, 29 Nov 2026 08:30:00 GMT"),
    );
    assert_eq!(
        bad_date.verify_at(t0(), "us-east-1"),
        Err(AuthError::Malformed("X-Amz-Date"))
    );
}

#[test]
fn scope_date_differing_from_amz_date_is_rejected() {
    // Signed one second before midnight; the date header is then moved past midnight
    // (still well within the skew window), so the scope date no longer matches.
    let before_midnight = UNIX_EPOCH + Duration::from_secs(1_795_996_799); // 2026-11-29T23:59:59Z
    let mut req = Signer {
        time: before_midnight,
        ..Signer::default()
    }
    .sign(PATH, BODY);
    assert_eq!(req.headers["x-amz-date"], "20261129T235959Z");
    req.verify_at(before_midnight, "us-east-1").unwrap();
    req.headers
        .insert("x-amz-date", HeaderValue::from_static("20261130T000001Z"));
    assert_eq!(
        req.verify_at(before_midnight, "us-east-1"),
        Err(AuthError::WrongScopeDate)
    );
}
