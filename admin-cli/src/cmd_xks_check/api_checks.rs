//! The HTTP half of `xks check`: the four XKS operations as KMS calls them (responses verified:
//! key spec, IV and tag sizes, CDIV recomputed, decrypt round trip, KMS's largest payloads), every
//! error a caller outside can provoke, and latencies against KMS's budget.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{headers, Reply, Session, Signing};
use super::report::{Report, Verdict};
use super::target::{Credential, Endpoint};

/// Warm calls timed for the latency summary.
const TIMED_CALLS: usize = 20;
/// KMS's largest Encrypt plaintext and AAD (XKS spec minimums a proxy must accept).
const MAX_PLAINTEXT: usize = 4300;
const MAX_AAD: usize = 8192;
/// Far above any XKS request (the largest legitimate body is about 20 KiB).
const OVERSIZED_BODY: usize = 300 * 1024;

/// Everything the API checks need.
#[derive(Debug)]
pub struct Probe<'a> {
    /// The keep-alive connection.
    pub session: Session,
    /// The operator's credential.
    pub credential: &'a Credential,
    /// SigV4 region.
    pub region: &'a str,
    /// The key to use.
    pub key_id: &'a str,
    /// Distinguishes this run's kmsRequestIds in the proxy's logs.
    pub run_id: String,
    calls: u32,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let _ = getrandom::fill(&mut v);
    v
}

fn b64(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {field}"))?;
    B64.decode(s)
        .map_err(|_| format!("{field} is not standard Base64"))
}

/// What an Encrypt returned, checked.
#[derive(Debug, Clone)]
struct Sealed {
    response: Value,
}

/// Checks an Encrypt response against the spec; recomputes the CDIV.
fn verify_encrypt(plaintext: &[u8], aad: &[u8], body: &Value) -> Result<Sealed, String> {
    let ct = b64(body, "ciphertext")?;
    let iv = b64(body, "initializationVector")?;
    let tag = b64(body, "authenticationTag")?;
    let md = match body.get("ciphertextMetadata") {
        Some(Value::String(_)) => b64(body, "ciphertextMetadata")?,
        _ => Vec::new(),
    };
    if ct.len() != plaintext.len() {
        return Err(format!(
            "ciphertext is {} bytes for {} bytes of plaintext",
            ct.len(),
            plaintext.len()
        ));
    }
    if iv.len() != 12 && iv.len() != 16 {
        return Err(format!("IV of {} bytes (12 or 16)", iv.len()));
    }
    if tag.len() != 16 {
        return Err(format!("tag of {} bytes (16)", tag.len()));
    }
    if md.len() > 20 {
        return Err(format!(
            "ciphertextMetadata of {} bytes (KMS rejects more than 20)",
            md.len()
        ));
    }
    let cdiv = b64(body, "ciphertextDataIntegrityValue")?;
    let mut h = Sha256::new();
    for part in [aad, &md, &iv, &ct, &tag] {
        h.update(part);
    }
    if cdiv != h.finalize().as_slice() {
        return Err("ciphertextDataIntegrityValue does not match SHA-256(AAD || metadata || IV || ciphertext || tag)".into());
    }
    Ok(Sealed {
        response: body.clone(),
    })
}

impl<'a> Probe<'a> {
    /// A probe over `session`.
    pub fn new(
        session: Session,
        credential: &'a Credential,
        region: &'a str,
        key_id: &'a str,
    ) -> Self {
        let run_id = hex::encode(random_bytes(4));
        Probe {
            session,
            credential,
            region,
            key_id,
            run_id,
            calls: 0,
        }
    }

    fn ep(&self) -> &Endpoint {
        self.session.endpoint()
    }

    fn path(&self, tail: &str) -> String {
        format!("{}{tail}", self.ep().base_path)
    }

    fn metadata(&mut self, operation: &str) -> Value {
        self.calls += 1;
        json!({
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/vhsm-admin-xks-check",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/xks-check",
            "kmsOperation": operation,
            "kmsRequestId": format!("xks-check-{}-{}", self.run_id, self.calls),
        })
    }

    fn health_body(&mut self) -> Value {
        self.calls += 1;
        json!({"requestMetadata": {
            "kmsRequestId": format!("xks-check-{}-{}", self.run_id, self.calls),
            "kmsOperation": "KmsHealthCheck"
        }})
    }

    fn encrypt_body(&mut self, plaintext: &[u8], aad: &[u8]) -> Value {
        json!({
            "requestMetadata": self.metadata("Encrypt"),
            "plaintext": B64.encode(plaintext),
            "additionalAuthenticatedData": B64.encode(aad),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
        })
    }

    fn decrypt_body(&mut self, sealed: &Sealed, aad: &[u8]) -> Value {
        let r = &sealed.response;
        let mut body = json!({
            "requestMetadata": self.metadata("Decrypt"),
            "ciphertext": r["ciphertext"],
            "initializationVector": r["initializationVector"],
            "authenticationTag": r["authenticationTag"],
            "additionalAuthenticatedData": B64.encode(aad),
            "encryptionAlgorithm": "AES_GCM"
        });
        if let Some(md) = r.get("ciphertextMetadata") {
            body["ciphertextMetadata"] = md.clone();
        }
        body
    }

    /// A POST signed with `credential` (None: unsigned) at `time`.
    async fn post_as(
        &mut self,
        path: &str,
        body: &[u8],
        credential: Option<&Credential>,
        time: SystemTime,
    ) -> Result<Reply, String> {
        let signing = Signing {
            credential,
            region: self.region,
            time,
        };
        let h = headers(self.ep(), "POST", path, body, signing)?;
        self.session.send("POST", path, h, body.to_vec()).await
    }

    async fn post(&mut self, path: &str, body: &Value) -> Result<Reply, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let cred = self.credential;
        self.post_as(path, &bytes, Some(cred), SystemTime::now())
            .await
    }

    /// Runs every check into `report`.
    pub async fn run(&mut self, report: &mut Report) {
        self.operations(report).await;
        self.errors(report).await;
        self.latency(report).await;
    }

    async fn operations(&mut self, report: &mut Report) {
        let body = self.health_body();
        let path = self.path("/health");
        match self.post(&path, &body).await {
            Ok(r) if r.status == 200 => {
                let (v, d) = judge_health(&r.body);
                report.add_timed("api", "GetHealthStatus", v, r.elapsed, d);
            }
            Ok(r) => report.add_timed(
                "api",
                "GetHealthStatus",
                Verdict::Fail,
                r.elapsed,
                r.summary(),
            ),
            Err(e) => report.add("api", "GetHealthStatus", Verdict::Fail, e),
        }

        let body = json!({"requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/vhsm-admin-xks-check",
            "kmsOperation": "CreateKey",
            "kmsRequestId": format!("xks-check-{}-md", self.run_id),
        }});
        let path = self.path(&format!("/keys/{}/metadata", self.key_id));
        match self.post(&path, &body).await {
            Ok(r) if r.status == 200 => {
                let (v, d) = judge_metadata(&r.body);
                report.add_timed("api", "GetKeyMetadata", v, r.elapsed, d);
            }
            Ok(r) => report.add_timed(
                "api",
                "GetKeyMetadata",
                Verdict::Fail,
                r.elapsed,
                r.summary(),
            ),
            Err(e) => report.add("api", "GetKeyMetadata", Verdict::Fail, e),
        }

        for (name, pt_len, aad_len) in [
            ("Encrypt + Decrypt, 32 B", 32, 16),
            (
                "Encrypt + Decrypt, KMS's largest (4300 B, 8 KiB AAD)",
                MAX_PLAINTEXT,
                MAX_AAD,
            ),
        ] {
            self.round_trip(report, name, pt_len, aad_len).await;
        }
    }

    async fn round_trip(&mut self, report: &mut Report, name: &str, pt_len: usize, aad_len: usize) {
        let plaintext = random_bytes(pt_len);
        let aad = random_bytes(aad_len);
        let body = self.encrypt_body(&plaintext, &aad);
        let enc_path = self.path(&format!("/keys/{}/encrypt", self.key_id));
        let sealed = match self.post(&enc_path, &body).await {
            Ok(r) if r.status == 200 => match verify_encrypt(&plaintext, &aad, &r.body) {
                Ok(s) => {
                    report.add_timed(
                        "api",
                        format!("{name}: Encrypt"),
                        Verdict::Pass,
                        r.elapsed,
                        "IV, tag, length and CDIV verified",
                    );
                    s
                }
                Err(e) => {
                    report.add_timed(
                        "api",
                        format!("{name}: Encrypt"),
                        Verdict::Fail,
                        r.elapsed,
                        e,
                    );
                    return;
                }
            },
            Ok(r) => {
                report.add_timed(
                    "api",
                    format!("{name}: Encrypt"),
                    Verdict::Fail,
                    r.elapsed,
                    r.summary(),
                );
                return;
            }
            Err(e) => {
                report.add("api", format!("{name}: Encrypt"), Verdict::Fail, e);
                return;
            }
        };
        let body = self.decrypt_body(&sealed, &aad);
        let dec_path = self.path(&format!("/keys/{}/decrypt", self.key_id));
        match self.post(&dec_path, &body).await {
            Ok(r) if r.status == 200 => {
                let ok = b64(&r.body, "plaintext").is_ok_and(|p| p == plaintext);
                let (v, d) = if ok {
                    (Verdict::Pass, "plaintext round-trips")
                } else {
                    (
                        Verdict::Fail,
                        "the plaintext returned differs from the one encrypted",
                    )
                };
                report.add_timed("api", format!("{name}: Decrypt"), v, r.elapsed, d);
            }
            Ok(r) => report.add_timed(
                "api",
                format!("{name}: Decrypt"),
                Verdict::Fail,
                r.elapsed,
                r.summary(),
            ),
            Err(e) => report.add("api", format!("{name}: Decrypt"), Verdict::Fail, e),
        }
        if pt_len > 32 {
            return;
        }
        // The same ciphertext under other AAD must not decrypt.
        let mut wrong = aad.clone();
        wrong[0] ^= 1;
        let body = self.decrypt_body(&sealed, &wrong);
        let r = self.post(&dec_path, &body).await;
        expect(
            report,
            "Decrypt with the wrong AAD",
            r,
            400,
            "InvalidCiphertextException",
        );
    }

    async fn errors(&mut self, report: &mut Report) {
        let health = self.path("/health");
        let body = serde_json::to_vec(&self.health_body()).unwrap_or_default();

        let wrong = Credential {
            access_key_id: self.credential.access_key_id.clone(),
            secret: zeroize::Zeroizing::new(B64.encode(random_bytes(32))),
        };
        let r = self
            .post_as(&health, &body, Some(&wrong), SystemTime::now())
            .await;
        expect(
            report,
            "bad signature (wrong secret)",
            r,
            401,
            "AuthenticationFailedException",
        );

        let unknown = Credential {
            access_key_id: random_access_key_id(),
            secret: zeroize::Zeroizing::new(B64.encode(random_bytes(32))),
        };
        let r = self
            .post_as(&health, &body, Some(&unknown), SystemTime::now())
            .await;
        expect(
            report,
            "unknown access key id",
            r,
            401,
            "AuthenticationFailedException",
        );

        let r = self.post_as(&health, &body, None, SystemTime::now()).await;
        expect(
            report,
            "no Authorization header",
            r,
            401,
            "AuthenticationFailedException",
        );

        let cred = self.credential;
        for (name, skew) in [
            ("signed 10 minutes in the past (clock skew)", -600i64),
            ("signed 10 minutes in the future (clock skew)", 600),
        ] {
            let at = if skew < 0 {
                SystemTime::now() - Duration::from_secs(skew.unsigned_abs())
            } else {
                SystemTime::now() + Duration::from_secs(skew.unsigned_abs())
            };
            let r = self.post_as(&health, &body, Some(cred), at).await;
            expect(report, name, r, 401, "AuthenticationFailedException");
        }

        let unknown_key = format!("xks-check-no-such-key-{}", self.run_id);
        let plaintext = random_bytes(16);
        let enc = self.encrypt_body(&plaintext, b"");
        let r = self
            .post(&self.path(&format!("/keys/{unknown_key}/encrypt")), &enc)
            .await;
        expect(report, "unknown key", r, 404, "KeyNotFoundException");

        let wrong_prefix = format!("/xks-check-no-such-prefix{}", self.ep().base_path);
        let body = self.health_body();
        let r = self.post(&format!("{wrong_prefix}/health"), &body).await;
        expect(
            report,
            "wrong URI path prefix",
            r,
            404,
            "InvalidUriPathException",
        );

        let r = self
            .post(&self.path(&format!("/keys/{}/sign", self.key_id)), &enc)
            .await;
        expect(
            report,
            "unknown operation path",
            r,
            404,
            "InvalidUriPathException",
        );

        let mut missing = self.encrypt_body(&plaintext, b"");
        if let Some(o) = missing.as_object_mut() {
            o.remove("plaintext");
        }
        let r = self
            .post(
                &self.path(&format!("/keys/{}/encrypt", self.key_id)),
                &missing,
            )
            .await;
        expect(
            report,
            "Encrypt without plaintext",
            r,
            400,
            "ValidationException",
        );

        self.oversized(report).await;

        let h = headers(
            self.ep(),
            "GET",
            &health,
            b"",
            Signing {
                credential: Some(cred),
                region: self.region,
                time: SystemTime::now(),
            },
        );
        let r = match h {
            Ok(h) => self.session.send("GET", &health, h, Vec::new()).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(r) if r.status == 405 => report.add_timed(
                "errors",
                "GET on an API path",
                Verdict::Pass,
                r.elapsed,
                format!("HTTP 405, Allow: {}", r.allow.as_deref().unwrap_or("-")),
            ),
            Ok(r) => report.add_timed(
                "errors",
                "GET on an API path",
                Verdict::Fail,
                r.elapsed,
                format!("{} (want HTTP 405)", r.summary()),
            ),
            Err(e) => report.add("errors", "GET on an API path", Verdict::Fail, e),
        }
    }

    async fn oversized(&mut self, report: &mut Report) {
        let name = format!("oversized body ({} KiB)", OVERSIZED_BODY / 1024);
        let plaintext = random_bytes(OVERSIZED_BODY * 3 / 4);
        let body = self.encrypt_body(&plaintext, b"");
        let r = self
            .post(&self.path(&format!("/keys/{}/encrypt", self.key_id)), &body)
            .await;
        match r {
            Ok(r) if r.status == 200 => report.add_timed(
                "errors",
                name,
                Verdict::Fail,
                r.elapsed,
                "accepted: a proxy should bound request bodies",
            ),
            Ok(r)
                if (r.status == 501 && r.error_name() == "UnsupportedOperationException")
                    || r.status == 413
                    || (r.status == 400 && r.error_name() == "ValidationException") =>
            {
                report.add_timed("errors", name, Verdict::Pass, r.elapsed, r.summary());
            }
            Ok(r) => report.add_timed(
                "errors",
                name,
                Verdict::Warn,
                r.elapsed,
                format!(
                    "{} (the spec answer is HTTP 501 UnsupportedOperationException)",
                    r.summary()
                ),
            ),
            Err(e) => report.add(
                "errors",
                name,
                Verdict::Warn,
                format!("refused without an XKS answer: {e}"),
            ),
        }
    }

    async fn latency(&mut self, report: &mut Report) {
        // A new connection as KMS opens one: TCP + TLS + the call, all inside the budget.
        let body = self.health_body();
        let path = self.path("/health");
        match self.session.reconnect().await {
            Ok(setup) => match self.post(&path, &body).await {
                Ok(r) if r.status == 200 => report.add_timed(
                    "latency",
                    "new connection + GetHealthStatus",
                    Verdict::Pass,
                    setup + r.elapsed,
                    format!(
                        "TCP + TLS {:.1} ms, call {:.1} ms",
                        ms(setup),
                        ms(r.elapsed)
                    ),
                ),
                Ok(r) => report.add(
                    "latency",
                    "new connection + GetHealthStatus",
                    Verdict::Fail,
                    r.summary(),
                ),
                Err(e) => report.add(
                    "latency",
                    "new connection + GetHealthStatus",
                    Verdict::Fail,
                    e,
                ),
            },
            Err(e) => report.add(
                "latency",
                "new connection + GetHealthStatus",
                Verdict::Fail,
                e,
            ),
        }
        let mut times = Vec::with_capacity(TIMED_CALLS);
        let path = self.path(&format!("/keys/{}/encrypt", self.key_id));
        for _ in 0..TIMED_CALLS {
            let plaintext = random_bytes(32);
            let body = self.encrypt_body(&plaintext, b"");
            match self.post(&path, &body).await {
                Ok(r) if r.status == 200 => times.push(r.elapsed),
                Ok(r) => {
                    report.add(
                        "latency",
                        format!("{TIMED_CALLS} Encrypts on one connection"),
                        Verdict::Fail,
                        r.summary(),
                    );
                    return;
                }
                Err(e) => {
                    report.add(
                        "latency",
                        format!("{TIMED_CALLS} Encrypts on one connection"),
                        Verdict::Fail,
                        e,
                    );
                    return;
                }
            }
        }
        times.sort();
        let p50 = times[times.len() / 2];
        let max = times[times.len() - 1];
        report.add_timed(
            "latency",
            format!("{TIMED_CALLS} Encrypts on one connection (max)"),
            Verdict::Pass,
            max,
            format!("p50 {:.1} ms, max {:.1} ms", ms(p50), ms(max)),
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// 24 characters of A-Z2-7, as KMS access key ids are.
fn random_access_key_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    random_bytes(24)
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect()
}

/// A row for a call that must fail with `status` and `error`.
fn expect(report: &mut Report, name: &str, r: Result<Reply, String>, status: u16, error: &str) {
    match r {
        Ok(r) if r.status == status && r.error_name() == error => {
            report.add_timed("errors", name, Verdict::Pass, r.elapsed, r.summary());
        }
        Ok(r) => report.add_timed(
            "errors",
            name,
            Verdict::Fail,
            r.elapsed,
            format!("{} (want HTTP {status} {error})", r.summary()),
        ),
        Err(e) => report.add("errors", name, Verdict::Fail, e),
    }
}

/// GetHealthStatus fields (spec 5.4).
fn judge_health(body: &Value) -> (Verdict, String) {
    let fleet = body.get("xksProxyFleetSize").and_then(Value::as_u64);
    let strings = ["xksProxyVendor", "xksProxyModel", "ekmVendor"];
    if fleet.is_none_or(|n| n == 0)
        || strings
            .iter()
            .any(|f| body.get(*f).and_then(Value::as_str).is_none())
    {
        return (Verdict::Fail, format!("malformed answer: {body}"));
    }
    let Some(details) = body.get("ekmFleetDetails").and_then(Value::as_array) else {
        return (Verdict::Fail, "no ekmFleetDetails".into());
    };
    if details.is_empty() || details.len() > 10 {
        return (
            Verdict::Fail,
            format!("{} ekmFleetDetails entries (1 to 10)", details.len()),
        );
    }
    let states: Vec<String> = details
        .iter()
        .map(|d| {
            format!(
                "{}={}",
                d.get("id").and_then(Value::as_str).unwrap_or("?"),
                d.get("healthStatus").and_then(Value::as_str).unwrap_or("?")
            )
        })
        .collect();
    let status = |s: &str| {
        details
            .iter()
            .filter(|d| d.get("healthStatus").and_then(Value::as_str) == Some(s))
            .count()
    };
    let model = body["xksProxyModel"].as_str().unwrap_or("");
    let detail = format!("{model}; {}", states.join(" "));
    if status("UNAVAILABLE") == details.len() {
        (
            Verdict::Fail,
            format!("every key manager UNAVAILABLE: {detail}"),
        )
    } else if status("ACTIVE") == details.len() {
        (Verdict::Pass, detail)
    } else {
        (Verdict::Warn, detail)
    }
}

/// GetKeyMetadata fields (spec 5.1): what KMS CreateKey requires.
fn judge_metadata(body: &Value) -> (Verdict, String) {
    let spec = body.get("keySpec").and_then(Value::as_str).unwrap_or("?");
    let status = body.get("keyStatus").and_then(Value::as_str).unwrap_or("?");
    let usage: Vec<&str> = body
        .get("keyUsage")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let detail = format!("{spec} [{}] {status}", usage.join(","));
    if spec == "AES_256"
        && status == "ENABLED"
        && usage.contains(&"ENCRYPT")
        && usage.contains(&"DECRYPT")
    {
        (Verdict::Pass, detail)
    } else {
        (
            Verdict::Fail,
            format!("{detail}: KMS needs AES_256, ENCRYPT and DECRYPT, ENABLED"),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sealed_response(aad: &[u8], pt: &[u8]) -> Value {
        let (md, iv, ct, tag) = (
            b"v1".to_vec(),
            vec![1u8; 12],
            vec![2u8; pt.len()],
            vec![3u8; 16],
        );
        let mut h = Sha256::new();
        for p in [aad, &md, &iv, &ct, &tag] {
            h.update(p);
        }
        json!({
            "ciphertext": B64.encode(&ct),
            "ciphertextMetadata": B64.encode(&md),
            "initializationVector": B64.encode(&iv),
            "authenticationTag": B64.encode(&tag),
            "ciphertextDataIntegrityValue": B64.encode(h.finalize()),
        })
    }

    #[test]
    fn the_cdiv_is_recomputed_and_a_wrong_one_fails() {
        let body = sealed_response(b"aad", b"0123456789");
        assert!(verify_encrypt(b"0123456789", b"aad", &body).is_ok());
        // Other AAD than the request's: the CDIV no longer matches.
        let e = verify_encrypt(b"0123456789", b"aaX", &body).unwrap_err();
        assert!(e.contains("ciphertextDataIntegrityValue"), "{e}");
        let e = verify_encrypt(b"01234", b"aad", &body).unwrap_err();
        assert!(e.contains("ciphertext is 10 bytes"), "{e}");
        let mut short_tag = body.clone();
        short_tag["authenticationTag"] = json!(B64.encode([0u8; 12]));
        assert!(verify_encrypt(b"0123456789", b"aad", &short_tag).is_err());
    }

    #[test]
    fn health_and_metadata_are_judged_as_kms_does() {
        let h = |s: &str| {
            json!({"xksProxyFleetSize": 1, "xksProxyVendor": "v", "xksProxyModel": "m", "ekmVendor": "e",
            "ekmFleetDetails": [{"id": "a", "model": "x", "healthStatus": s}]})
        };
        assert_eq!(judge_health(&h("ACTIVE")).0, Verdict::Pass);
        assert_eq!(judge_health(&h("DEGRADED")).0, Verdict::Warn);
        assert_eq!(judge_health(&h("UNAVAILABLE")).0, Verdict::Fail);
        assert_eq!(
            judge_health(&json!({"xksProxyFleetSize": 0})).0,
            Verdict::Fail
        );
        let md =
            |usage: Value| json!({"keySpec": "AES_256", "keyUsage": usage, "keyStatus": "ENABLED"});
        assert_eq!(
            judge_metadata(&md(json!(["ENCRYPT", "DECRYPT"]))).0,
            Verdict::Pass
        );
        assert_eq!(judge_metadata(&md(json!(["ENCRYPT"]))).0, Verdict::Fail);
    }

    #[test]
    fn random_access_key_ids_look_like_kms_ones() {
        let id = random_access_key_id();
        assert_eq!(id.len(), 24);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }
}
