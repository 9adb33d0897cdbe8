//! Interoperability: requests signed by real `curl --aws-sigv4` verify, tampered ones fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use secrecy::SecretString;
use xks_front::sigv4::{verify, AuthError, SignedRequest, VerifyParams};

const AKID: &str = "AKIAI2SFODNN7EXAMPLEAB";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
const BODY: &str = r#"{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsOperation":"Encrypt","kmsRequestId":"r-1"},"plaintext":"SGVsbG8=","encryptionAlgorithm":"AES_GCM"}"#;

/// One HTTP/1.1 request as read off the socket.
#[derive(Debug, Clone)]
struct Captured {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Captured {
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
            max_skew: Duration::from_secs(300),
        };
        let lookup = |id: &str| (id == AKID).then(|| SecretString::from(SECRET));
        verify(&req, &params, &lookup).map(|a| a.access_key_id)
    }
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Reads one request from `listener`, answers 200 with an empty body.
fn capture_one(listener: TcpListener) -> Captured {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let method: Method = parts.next().unwrap().parse().unwrap();
    let uri: Uri = parts.next().unwrap().parse().unwrap();
    let mut headers = HeaderMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.append(
            HeaderName::from_bytes(n.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    let len: usize = headers
        .get("content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    Captured {
        method,
        uri,
        headers,
        body,
    }
}

/// Runs curl against a capture server and returns what it sent.
fn curl_request(path: &str, region: &str, service: &str) -> Option<Captured> {
    if !curl_available() {
        eprintln!("NOTICE: curl not found; skipping the curl SigV4 interoperability test");
        return None;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || capture_one(listener));
    let status = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--aws-sigv4",
            &format!("aws:amz:{region}:{service}"),
            "--user",
            &format!("{AKID}:{SECRET}"),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            BODY,
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "curl failed: {status}");
    Some(server.join().unwrap())
}

#[test]
fn curl_signed_request_verifies_and_tampering_fails() {
    let Some(req) = curl_request(
        "/example/kms/xks/v1/keys/my.key_id-1/encrypt",
        "us-east-1",
        "kms-xks-proxy",
    ) else {
        return;
    };
    assert_eq!(req.body, BODY.as_bytes());
    let auth = req.headers["authorization"].to_str().unwrap().to_owned();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential="), "{auth}");
    let now = SystemTime::now();
    assert_eq!(req.verify_at(now, "us-east-1").unwrap(), AKID);

    assert_eq!(req.verify_at(now, "us-west-2"), Err(AuthError::WrongRegion));
    assert_eq!(
        req.verify_at(now + Duration::from_secs(360), "us-east-1"),
        Err(AuthError::StaleOrFutureDate)
    );
    assert_eq!(
        req.verify_at(now - Duration::from_secs(360), "us-east-1"),
        Err(AuthError::StaleOrFutureDate)
    );

    let mut body = req.clone();
    body.body[10] ^= 0x20;
    assert_eq!(
        body.verify_at(now, "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut path = req.clone();
    path.uri = "/example/kms/xks/v1/keys/my.key_id-2/encrypt"
        .parse()
        .unwrap();
    assert_eq!(
        path.verify_at(now, "us-east-1"),
        Err(AuthError::BadSignature)
    );

    let mut host = req.clone();
    host.headers.remove("host");
    assert_eq!(
        host.verify_at(now, "us-east-1"),
        Err(AuthError::MissingSignedHeader("host"))
    );
}

#[test]
fn curl_with_kms_xks_service_is_rejected() {
    let Some(req) = curl_request("/kms/xks/v1/health", "us-east-1", "kms-xks") else {
        return;
    };
    assert_eq!(
        req.verify_at(SystemTime::now(), "us-east-1"),
        Err(AuthError::WrongService)
    );
}
