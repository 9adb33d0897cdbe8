//! Fuzzes SigV4 verification in xks-front (`sigv4::verify`): the `Authorization` header parser
//! (credential scope, SignedHeaders, Signature), the `X-Amz-Date` parser, the clock-skew check
//! and the canonical request builder (path, query decoding and re-encoding, header value
//! trimming, the HTTP/2 `:authority` fallback for `host`).
//! Properties: no panic; verification is deterministic; a request is accepted only under the
//! configured credential, region and service.
//!
//! Input (text): line 1 the method, line 2 the URI (`/path?query` or `https://host/path`),
//! then `name: value` header lines up to an empty line, then the body. The clock is fixed at
//! 2024-01-01T00:00:00Z; the only credential is `AKIAFUZZFUZZFUZZFUZZ` with the secret in
//! `SECRET` (the seed `signed-encrypt` carries a valid signature, made by
//! `fuzz/seeds/sign_sigv4_seed.py`).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use xks_front::sigv4::{self, SignedRequest, VerifyParams};

const ACCESS_KEY_ID: &str = "AKIAFUZZFUZZFUZZFUZZ";
const SECRET: &str = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

fn lookup(id: &str) -> Option<SecretString> {
    (id == ACCESS_KEY_ID).then(|| SecretString::from(SECRET))
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut line = || -> Option<&[u8]> {
        let at = rest.iter().position(|&b| b == b'\n')?;
        let (l, r) = (&rest[..at], &rest[at + 1..]);
        rest = r;
        Some(l.strip_suffix(b"\r").unwrap_or(l))
    };
    let Some(method) = line().and_then(|m| http::Method::from_bytes(m).ok()) else {
        return;
    };
    let Some(uri) = line().and_then(|u| http::Uri::try_from(u).ok()) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    while let Some(l) = line() {
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = http::HeaderName::from_bytes(&l[..colon]);
        let value = http::HeaderValue::from_bytes(l[colon + 1..].trim_ascii_start());
        if let (Ok(n), Ok(v)) = (name, value) {
            headers.append(n, v);
        }
    }
    let body = rest;
    let req = SignedRequest {
        method: &method,
        uri: &uri,
        headers: &headers,
        body,
    };
    let params = VerifyParams {
        region: "us-east-1",
        service: "kms-xks-proxy",
        now: UNIX_EPOCH + Duration::from_secs(1_704_067_200),
        max_skew: Duration::from_secs(300),
    };
    let first = sigv4::verify(&req, &params, &lookup);
    let second = sigv4::verify(&req, &params, &lookup);
    assert_eq!(first, second, "verification is not deterministic");
    if let Ok(auth) = &first {
        assert_eq!(
            auth.access_key_id, ACCESS_KEY_ID,
            "accepted an unknown key id"
        );
        let other_region = VerifyParams {
            region: "eu-west-1",
            ..params
        };
        assert!(
            sigv4::verify(&req, &other_region, &lookup).is_err(),
            "accepted under another region"
        );
        assert!(
            sigv4::verify(&req, &params, &|_| None).is_err(),
            "accepted without a secret"
        );
    }
});
