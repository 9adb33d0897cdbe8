//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) verification of incoming XKS requests.
//!
//! The canonical request is rebuilt from the request exactly as received (the path is used
//! verbatim, i.e. single encoding; XKS paths only hold unreserved characters so this equals
//! what both curl and the `aws-sigv4` crate sign), the signing key is derived from the secret
//! returned by the caller's lookup, and the signature is compared in constant time.
//! Every failure is a typed [`AuthError`]; none of them carries caller-supplied or secret data.
//!
//! The signing key depends only on the secret and the scope (date, region, service), so
//! [`verify_cached`] keeps the keys it derived in a small [`SigningKeyCache`] (four HMACs saved
//! per request); the signature itself is still computed and compared per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The only algorithm accepted.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";
/// Header carrying the request time.
const X_AMZ_DATE: &str = "x-amz-date";
/// Optional header carrying the payload hash.
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
/// Upper bound on the length of the Authorization header we are willing to parse.
const MAX_AUTHORIZATION_LEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// The parts of an HTTP request that SigV4 covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Request method.
    pub method: &'a http::Method,
    /// Path and query as received (for HTTP/2 the authority is taken from here when `host` is absent).
    pub uri: &'a http::Uri,
    /// All request headers.
    pub headers: &'a http::HeaderMap,
    /// The complete request body (bounded by the caller).
    pub body: &'a [u8],
}

/// What the verifier expects of the signature scope and the clock.
#[derive(Debug, Clone, Copy)]
pub struct VerifyParams<'a> {
    /// AWS region of the key store (e.g. `us-east-1`).
    pub region: &'a str,
    /// Signing service name; `kms-xks-proxy` for XKS.
    pub service: &'a str,
    /// Current time.
    pub now: SystemTime,
    /// Largest accepted distance between `X-Amz-Date` and `now` (5 minutes for XKS).
    pub max_skew: Duration,
}

/// Why a request failed authentication. Callers map every variant to
/// `AuthenticationFailedException` (401); the variant is for logs and metrics only.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    MissingAuthorization,
    /// A SigV4 element is syntactically invalid; the text names the element.
    #[error("malformed SigV4 request: {0}")]
    Malformed(&'static str),
    /// The Authorization scheme is not `AWS4-HMAC-SHA256`.
    #[error("unsupported signing algorithm")]
    UnsupportedAlgorithm,
    /// No credential with this access key id is configured.
    #[error("unknown access key id")]
    UnknownAccessKey,
    /// The credential scope names another region.
    #[error("credential scope names the wrong region")]
    WrongRegion,
    /// The credential scope names another service.
    #[error("credential scope names the wrong service")]
    WrongService,
    /// The credential scope date is not the date of `X-Amz-Date`.
    #[error("credential scope date does not match X-Amz-Date")]
    WrongScopeDate,
    /// A header that must be signed (`host`, `x-amz-date`) is not in SignedHeaders or absent.
    #[error("required header not signed or absent: {0}")]
    MissingSignedHeader(&'static str),
    /// `X-Amz-Date` is further than the allowed skew from now.
    #[error("request date outside the allowed clock skew")]
    StaleOrFutureDate,
    /// The signature does not match.
    #[error("signature mismatch")]
    BadSignature,
}

/// A successfully authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The access key id whose secret produced the signature.
    pub access_key_id: String,
}

/// The parsed `Authorization` header.
#[derive(Debug)]
struct AuthorizationHeader<'h> {
    access_key_id: &'h str,
    scope_date: &'h str,
    region: &'h str,
    service: &'h str,
    signed_headers: &'h str,
    signature: [u8; 32],
}

/// Verifies the SigV4 signature of `req`, deriving the signing key afresh.
///
/// `secret_for(access_key_id)` returns the secret of a configured credential, or `None`.
pub fn verify(
    req: &SignedRequest<'_>,
    params: &VerifyParams<'_>,
    secret_for: &dyn Fn(&str) -> Option<SecretString>,
) -> Result<Authenticated, AuthError> {
    verify_with(req, params, &mut |auth| {
        let secret = secret_for(auth.access_key_id).ok_or(AuthError::UnknownAccessKey)?;
        signing_key(&secret, auth.scope_date, auth.region, auth.service)
    })
}

/// Verifies the SigV4 signature of `req` like [`verify`], taking the signing key from `cache`
/// when it holds the key for this access key id, secret, date, region and service, and adding
/// it there after a successful verification otherwise.
///
/// `secret_for(access_key_id)` returns the secret of a configured credential, or `None`.
pub fn verify_cached<'s>(
    req: &SignedRequest<'_>,
    params: &VerifyParams<'_>,
    secret_for: &dyn Fn(&str) -> Option<&'s SigningSecret>,
    cache: &SigningKeyCache,
) -> Result<Authenticated, AuthError> {
    let mut derived: Option<CachedKey> = None;
    let verified = verify_with(req, params, &mut |auth| {
        let secret = secret_for(auth.access_key_id).ok_or(AuthError::UnknownAccessKey)?;
        let scope = Scope {
            access_key_id: auth.access_key_id,
            secret_id: secret.id,
            date: auth.scope_date,
            region: auth.region,
            service: auth.service,
        };
        if let Some(key) = cache.get(&scope) {
            return Ok(key);
        }
        let key = signing_key(&secret.secret, auth.scope_date, auth.region, auth.service)?;
        derived = Some(CachedKey::new(&scope, key.clone()));
        Ok(key)
    });
    // Only keys that verified a signature are kept: failed attempts cannot churn the cache.
    if let (Ok(_), Some(entry)) = (&verified, derived) {
        cache.insert(entry);
    }
    verified
}

/// Looks up the signing key for a parsed Authorization header (cached or derived).
type SigningKeyLookup<'a> =
    dyn FnMut(&AuthorizationHeader<'_>) -> Result<Zeroizing<[u8; 32]>, AuthError> + 'a;

/// The checks shared by [`verify`] and [`verify_cached`]; `key_for` looks up the secret (after
/// the scope and clock checks, as before) and returns the signing key.
fn verify_with(
    req: &SignedRequest<'_>,
    params: &VerifyParams<'_>,
    key_for: &mut SigningKeyLookup<'_>,
) -> Result<Authenticated, AuthError> {
    let auth_value = single_header_str(req.headers, http::header::AUTHORIZATION.as_str())?
        .ok_or(AuthError::MissingAuthorization)?;
    let auth = parse_authorization(auth_value)?;

    if auth.service != params.service {
        return Err(AuthError::WrongService);
    }
    if auth.region != params.region {
        return Err(AuthError::WrongRegion);
    }

    let signed: Vec<&str> = parse_signed_headers(auth.signed_headers)?;
    if !signed.contains(&"host") {
        return Err(AuthError::MissingSignedHeader("host"));
    }
    if !signed.contains(&X_AMZ_DATE) {
        return Err(AuthError::MissingSignedHeader("x-amz-date"));
    }

    let amz_date = single_header_str(req.headers, X_AMZ_DATE)?
        .ok_or(AuthError::MissingSignedHeader("x-amz-date"))?;
    let request_time = parse_amz_date(amz_date)?;
    if &amz_date[..8] != auth.scope_date {
        return Err(AuthError::WrongScopeDate);
    }
    check_skew(request_time, params.now, params.max_skew)?;

    let key = key_for(&auth)?;

    let payload_hash = hex::encode(Sha256::digest(req.body));
    if signed.contains(&X_AMZ_CONTENT_SHA256) {
        let claimed = single_header_str(req.headers, X_AMZ_CONTENT_SHA256)?.ok_or(
            AuthError::Malformed("x-amz-content-sha256 signed but absent"),
        )?;
        if !bool::from(claimed.as_bytes().ct_eq(payload_hash.as_bytes())) {
            return Err(AuthError::BadSignature);
        }
    }

    let canonical = canonical_request(req, &signed, auth.signed_headers, &payload_hash)?;
    let scope = format!(
        "{}/{}/{}/{}",
        auth.scope_date, auth.region, auth.service, SCOPE_TERMINATOR
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(&canonical))
    );
    let expected = hmac(&key[..], string_to_sign.as_bytes())?;

    if bool::from(expected.ct_eq(&auth.signature)) {
        Ok(Authenticated {
            access_key_id: auth.access_key_id.to_owned(),
        })
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Identities handed out to [`SigningSecret`]s.
static NEXT_SECRET_ID: AtomicU64 = AtomicU64::new(1);

/// A credential's secret with a process-unique identity: what [`SigningKeyCache`] calls "the
/// same secret". Every [`SigningSecret::new`] gets a fresh identity, so a secret read again
/// (a reload) or changed under the same access key id never finds a key derived from another
/// one. Clones share the identity. `Debug` does not show the secret.
#[derive(Debug, Clone)]
pub struct SigningSecret {
    id: u64,
    secret: SecretString,
}

impl SigningSecret {
    /// Wraps `secret` under a new identity.
    pub fn new(secret: SecretString) -> SigningSecret {
        SigningSecret {
            id: NEXT_SECRET_ID.fetch_add(1, Ordering::Relaxed),
            secret,
        }
    }

    /// The secret.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }
}

/// Signing keys kept by one [`SigningKeyCache`]: a handful of credentials times the one or two
/// dates the clock-skew window allows at a time.
pub const SIGNING_KEY_CACHE_CAPACITY: usize = 16;

/// What a signing key is derived from (the secret by identity).
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    access_key_id: &'a str,
    secret_id: u64,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// One derived signing key and its scope. `Debug` does not show the key.
struct CachedKey {
    access_key_id: String,
    secret_id: u64,
    date: String,
    region: String,
    service: String,
    key: Zeroizing<[u8; 32]>,
}

impl CachedKey {
    fn new(scope: &Scope<'_>, key: Zeroizing<[u8; 32]>) -> CachedKey {
        CachedKey {
            access_key_id: scope.access_key_id.to_owned(),
            secret_id: scope.secret_id,
            date: scope.date.to_owned(),
            region: scope.region.to_owned(),
            service: scope.service.to_owned(),
            key,
        }
    }

    fn matches(&self, scope: &Scope<'_>) -> bool {
        self.secret_id == scope.secret_id
            && self.access_key_id == scope.access_key_id
            && self.date == scope.date
            && self.region == scope.region
            && self.service == scope.service
    }
}

impl std::fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKey")
            .field("access_key_id", &self.access_key_id)
            .field("date", &self.date)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A bounded cache of derived SigV4 signing keys, keyed by (access key id, secret identity,
/// date, region, service). Keys are held in zeroizing buffers (wiped on eviction, clearing and
/// drop). When full, the entry with the oldest date is evicted. Drop the cache (or
/// [`clear`](SigningKeyCache::clear) it) when the credentials it served are replaced.
#[derive(Debug, Default)]
pub struct SigningKeyCache {
    entries: Mutex<Vec<CachedKey>>,
}

impl SigningKeyCache {
    /// An empty cache.
    pub fn new() -> SigningKeyCache {
        SigningKeyCache::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CachedKey>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, scope: &Scope<'_>) -> Option<Zeroizing<[u8; 32]>> {
        self.lock()
            .iter()
            .find(|e| e.matches(scope))
            .map(|e| e.key.clone())
    }

    fn insert(&self, entry: CachedKey) {
        let mut entries = self.lock();
        let scope = Scope {
            access_key_id: &entry.access_key_id,
            secret_id: entry.secret_id,
            date: &entry.date,
            region: &entry.region,
            service: &entry.service,
        };
        if entries.iter().any(|e| e.matches(&scope)) {
            return; // a concurrent request derived it too
        }
        if entries.len() >= SIGNING_KEY_CACHE_CAPACITY {
            // Dates are YYYYMMDD: the smallest string is the oldest date.
            if let Some(oldest) = entries
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| a.date.cmp(&b.date))
                .map(|(i, _)| i)
            {
                entries.swap_remove(oldest);
            }
        }
        entries.push(entry);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets (and wipes) every key.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Returns the only value of header `name` as text; several values or non-ASCII are malformed.
fn single_header_str<'h>(
    headers: &'h http::HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed("duplicate header"));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| AuthError::Malformed("header is not visible ASCII"))
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex` (spaces after the commas are optional).
fn parse_authorization(value: &str) -> Result<AuthorizationHeader<'_>, AuthError> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(AuthError::Malformed("Authorization too long"));
    }
    let value = value.trim();
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("Authorization"))?;
    if scheme != ALGORITHM {
        return Err(AuthError::UnsupportedAlgorithm);
    }

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, val) = part
            .trim()
            .split_once('=')
            .ok_or(AuthError::Malformed("Authorization parameter"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(AuthError::Malformed("Authorization parameter")),
        };
        if slot.replace(val).is_some() {
            return Err(AuthError::Malformed("duplicate Authorization parameter"));
        }
    }
    let credential = credential.ok_or(AuthError::Malformed("Credential"))?;
    let signed_headers = signed_headers.ok_or(AuthError::Malformed("SignedHeaders"))?;
    let signature = signature.ok_or(AuthError::Malformed("Signature"))?;

    let mut scope = credential.split('/');
    let mut next = || scope.next().filter(|s| !s.is_empty());
    let access_key_id = next().ok_or(AuthError::Malformed("Credential"))?;
    let scope_date = next().ok_or(AuthError::Malformed("Credential"))?;
    let region = next().ok_or(AuthError::Malformed("Credential"))?;
    let service = next().ok_or(AuthError::Malformed("Credential"))?;
    let terminator = next().ok_or(AuthError::Malformed("Credential"))?;
    if terminator != SCOPE_TERMINATOR || scope.next().is_some() {
        return Err(AuthError::Malformed("Credential"));
    }
    if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("Credential date"));
    }

    if signature.len() != 64
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(AuthError::Malformed("Signature"));
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(signature, &mut sig).map_err(|_| AuthError::Malformed("Signature"))?;

    Ok(AuthorizationHeader {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature: sig,
    })
}

/// Splits SignedHeaders; names must be lowercase, unique and sorted (as every signer emits them).
fn parse_signed_headers(list: &str) -> Result<Vec<&str>, AuthError> {
    let names: Vec<&str> = list.split(';').collect();
    let well_formed = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':')
    });
    if !well_formed || !names.windows(2).all(|w| w[0] < w[1]) {
        return Err(AuthError::Malformed("SignedHeaders"));
    }
    Ok(names)
}

/// Parses `YYYYMMDDTHHMMSSZ` into a point in time.
fn parse_amz_date(value: &str) -> Result<SystemTime, AuthError> {
    const BAD: AuthError = AuthError::Malformed("X-Amz-Date");
    let b = value.as_bytes();
    let digits_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !digits_ok {
        return Err(BAD);
    }
    let num = |range: std::ops::Range<usize>| -> u32 {
        b[range]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let year = i32::try_from(num(0..4)).map_err(|_| BAD)?;
    let month = u8::try_from(num(4..6)).map_err(|_| BAD)?;
    let month = time::Month::try_from(month).map_err(|_| BAD)?;
    let day = u8::try_from(num(6..8)).map_err(|_| BAD)?;
    let hour = u8::try_from(num(9..11)).map_err(|_| BAD)?;
    let minute = u8::try_from(num(11..13)).map_err(|_| BAD)?;
    let second = u8::try_from(num(13..15)).map_err(|_| BAD)?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| BAD)?;
    let clock = time::Time::from_hms(hour, minute, second).map_err(|_| BAD)?;
    let unix = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    let secs = u64::try_from(unix).map_err(|_| BAD)?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Fails when `at` is more than `max_skew` before or after `now`.
fn check_skew(at: SystemTime, now: SystemTime, max_skew: Duration) -> Result<(), AuthError> {
    let distance = match now.duration_since(at) {
        Ok(past) => past,
        Err(future) => future.duration(),
    };
    if distance > max_skew {
        return Err(AuthError::StaleOrFutureDate);
    }
    Ok(())
}

/// Builds the canonical request bytes.
fn canonical_request(
    req: &SignedRequest<'_>,
    signed: &[&str],
    signed_headers: &str,
    payload_hash: &str,
) -> Result<Vec<u8>, AuthError> {
    let mut out = Vec::with_capacity(256 + 64 * signed.len());
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b'\n');
    let path = req.uri.path();
    out.extend_from_slice(if path.is_empty() { "/" } else { path }.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(req.uri.query().unwrap_or(""))?.as_bytes());
    out.push(b'\n');
    for name in signed {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        append_header_values(&mut out, req, name)?;
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

/// Appends the canonical value of header `name`: every value trimmed, inner runs of spaces
/// collapsed, joined with commas. `host` falls back to the URI authority (HTTP/2 `:authority`).
fn append_header_values(
    out: &mut Vec<u8>,
    req: &SignedRequest<'_>,
    name: &str,
) -> Result<(), AuthError> {
    let mut values = req.headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        if name == "host" {
            let authority = req
                .uri
                .authority()
                .ok_or(AuthError::MissingSignedHeader("host"))?;
            out.extend_from_slice(authority.as_str().as_bytes());
            return Ok(());
        }
        return Err(AuthError::Malformed("a signed header is absent"));
    }
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        append_trimmed(out, value.as_bytes());
    }
    Ok(())
}

/// Appends `value` without leading/trailing whitespace and with whitespace runs collapsed to one space.
fn append_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let mut pending_space = false;
    let mut started = false;
    for b in value {
        if is_ws(b) {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(*b);
            started = true;
        }
    }
}

/// Canonical query string: pairs decoded (`+` is a space), re-encoded per RFC 3986 and sorted.
fn canonical_query(query: &str) -> Result<String, AuthError> {
    if query.is_empty() {
        return Ok(String::new());
    }
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((
            uri_encode(&percent_decode(name)?),
            uri_encode(&percent_decode(value)?),
        ));
    }
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    Ok(joined.join("&"))
}

/// Decodes `%XX` escapes and `+`; a broken escape is malformed.
fn percent_decode(s: &str) -> Result<Vec<u8>, AuthError> {
    const BAD: AuthError = AuthError::Malformed("query string");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(BAD)?;
                let mut byte = [0u8; 1];
                hex::decode_to_slice(hex, &mut byte).map_err(|_| BAD)?;
                out.push(byte[0]);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// RFC 3986 encoding: unreserved characters kept, everything else `%XX` (uppercase hex).
fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Derives the SigV4 signing key: HMAC chain "AWS4"+secret → date → region → service → "aws4_request".
fn signing_key(
    secret: &SecretString,
    date: &str,
    region: &str,
    service: &str,
) -> Result<Zeroizing<[u8; 32]>, AuthError> {
    let mut seed = Zeroizing::new(Vec::with_capacity(4 + secret.expose_secret().len()));
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.expose_secret().as_bytes());
    let k_date = hmac(&seed, date.as_bytes())?;
    let k_region = hmac(&k_date[..], region.as_bytes())?;
    let k_service = hmac(&k_region[..], service.as_bytes())?;
    hmac(&k_service[..], SCOPE_TERMINATOR.as_bytes())
}

/// HMAC-SHA256 of `data` under `key`, in a zeroizing buffer.
fn hmac(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 32]>, AuthError> {
    // HMAC accepts keys of any length; the error arm is unreachable but kept typed.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AuthError::BadSignature)?;
    mac.update(data);
    Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method, Uri};

    const SUITE_AKID: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_DATE: &str = "20150830T123600Z";

    fn suite_now() -> SystemTime {
        parse_amz_date(SUITE_DATE).unwrap()
    }

    fn suite_params() -> VerifyParams<'static> {
        VerifyParams {
            region: "us-east-1",
            service: "service",
            now: suite_now(),
            max_skew: Duration::from_secs(300),
        }
    }

    fn suite_secret(akid: &str) -> Option<SecretString> {
        (akid == SUITE_AKID).then(|| SecretString::from(SUITE_SECRET))
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in list {
            map.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn suite_auth(signed: &str, sig: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={sig}"
        )
    }

    fn check(method: &str, uri: &str, hdrs: &[(&str, &str)], body: &[u8]) -> Result<(), AuthError> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = uri.parse().unwrap();
        let headers = headers(hdrs);
        let req = SignedRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            body,
        };
        verify(&req, &suite_params(), &suite_secret).map(|a| {
            assert_eq!(a.access_key_id, SUITE_AKID);
        })
    }

    // Vectors from the AWS SigV4 test suite (aws-signing-test-suite/v4/*/header-signed-request.txt).
    #[test]
    fn suite_get_vanilla() {
        let auth = suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("GET", "/", &h, b"").unwrap();
        // The same signature does not verify a POST.
        assert_eq!(check("POST", "/", &h, b""), Err(AuthError::BadSignature));
    }

    /// Verifies the suite's get-vanilla request (signature `sig`) through `cache`.
    fn check_cached(
        secret: &SigningSecret,
        cache: &SigningKeyCache,
        sig: &str,
    ) -> Result<Authenticated, AuthError> {
        let auth = suite_auth("host;x-amz-date", sig);
        let h = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ]);
        let method = Method::GET;
        let uri: Uri = "/".parse().unwrap();
        let req = SignedRequest {
            method: &method,
            uri: &uri,
            headers: &h,
            body: b"",
        };
        let lookup = |akid: &str| (akid == SUITE_AKID).then_some(secret);
        verify_cached(&req, &suite_params(), &lookup, cache)
    }

    fn scope_of(secret: &SigningSecret, date: &'static str) -> Scope<'static> {
        Scope {
            access_key_id: SUITE_AKID,
            secret_id: secret.id,
            date,
            region: "us-east-1",
            service: "service",
        }
    }

    #[test]
    fn a_cache_hit_verifies_like_a_fresh_derivation() {
        let secret = SigningSecret::new(SecretString::from(SUITE_SECRET));
        let cache = SigningKeyCache::new();
        // Miss: derived, verified against the suite's known answer, then cached.
        check_cached(&secret, &cache, VANILLA_SIG).unwrap();
        assert_eq!(cache.len(), 1);
        let cached = cache.get(&scope_of(&secret, "20150830")).unwrap();
        let fresh = signing_key(secret.secret(), "20150830", "us-east-1", "service").unwrap();
        assert_eq!(cached[..], fresh[..]);
        // Hit: the same answer, no new entry, and a wrong signature still fails.
        check_cached(&secret, &cache, VANILLA_SIG).unwrap();
        assert_eq!(cache.len(), 1);
        let mut wrong = VANILLA_SIG.to_owned();
        wrong.replace_range(63.., "0");
        assert_eq!(
            check_cached(&secret, &cache, &wrong),
            Err(AuthError::BadSignature)
        );
        // The uncached path agrees.
        check(
            "GET",
            "/",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", SUITE_DATE),
                (
                    "authorization",
                    suite_auth("host;x-amz-date", VANILLA_SIG).as_str(),
                ),
            ],
            b"",
        )
        .unwrap();
    }

    #[test]
    fn another_secret_under_the_same_access_key_id_does_not_reuse_the_key() {
        let cache = SigningKeyCache::new();
        let right = SigningSecret::new(SecretString::from(SUITE_SECRET));
        check_cached(&right, &cache, VANILLA_SIG).unwrap();
        // The access key id's secret changed (e.g. a reload): the cached key is not used.
        let other = SigningSecret::new(SecretString::from(
            "another-secret-of-forty-characters-xxxxx",
        ));
        assert_eq!(
            check_cached(&other, &cache, VANILLA_SIG),
            Err(AuthError::BadSignature)
        );
        assert_eq!(cache.len(), 1, "a failed verification is not cached");
        // The same secret read again gets a new identity: derived again, then cached too.
        let reread = SigningSecret::new(SecretString::from(SUITE_SECRET));
        assert!(cache.get(&scope_of(&reread, "20150830")).is_none());
        check_cached(&reread, &cache, VANILLA_SIG).unwrap();
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_the_oldest_date() {
        let secret = SigningSecret::new(SecretString::from(SUITE_SECRET));
        let cache = SigningKeyCache::new();
        let dates: Vec<&'static str> = (0..=SIGNING_KEY_CACHE_CAPACITY)
            .map(|i| &*Box::leak(format!("201501{:02}", i + 1).into_boxed_str()))
            .collect();
        let add = |date: &'static str| {
            let key = signing_key(secret.secret(), date, "us-east-1", "service").unwrap();
            cache.insert(CachedKey::new(&scope_of(&secret, date), key));
        };
        // Inserted newest first, so the oldest is the last one in, not the first.
        for date in dates[..SIGNING_KEY_CACHE_CAPACITY].iter().rev() {
            add(date);
        }
        assert_eq!(cache.len(), SIGNING_KEY_CACHE_CAPACITY);
        add(dates[SIGNING_KEY_CACHE_CAPACITY]);
        assert_eq!(cache.len(), SIGNING_KEY_CACHE_CAPACITY);
        assert!(
            cache.get(&scope_of(&secret, dates[0])).is_none(),
            "oldest kept"
        );
        for date in &dates[1..] {
            assert!(
                cache.get(&scope_of(&secret, date)).is_some(),
                "{date} evicted"
            );
        }
        // Neither the cache nor a secret shows key material in Debug.
        let shown = format!("{cache:?} {secret:?}");
        assert!(!shown.contains(SUITE_SECRET), "{shown}");
    }

    #[test]
    fn suite_post_vanilla() {
        let auth = suite_auth(
            "host;x-amz-date",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("POST", "/", &h, b"").unwrap();
    }

    #[test]
    fn suite_header_value_trim() {
        let auth = suite_auth(
            "host;my-header1;my-header2;x-amz-date",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("my-header1", " value1"),
            ("my-header2", " \"a   b   c\""),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("GET", "/", &h, b"").unwrap();
    }

    #[test]
    fn suite_header_key_duplicate() {
        let auth = suite_auth(
            "host;my-header1;x-amz-date",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("my-header1", "value2"),
            ("my-header1", "value2"),
            ("my-header1", "value1"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("GET", "/", &h, b"").unwrap();
    }

    #[test]
    fn suite_query_order_key_case() {
        let auth = suite_auth(
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("GET", "/?Param2=value2&Param1=value1", &h, b"").unwrap();
    }

    #[test]
    fn suite_post_form_urlencoded_with_content_sha256() {
        let auth = suite_auth(
            "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        );
        let body_hash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
        let h = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "example.amazonaws.com"),
            ("content-length", "13"),
            ("x-amz-date", SUITE_DATE),
            ("x-amz-content-sha256", body_hash),
            ("authorization", auth.as_str()),
        ];
        check("POST", "/", &h, b"Param1=value1").unwrap();
        // Body changed: the signed content hash no longer matches.
        assert_eq!(
            check("POST", "/", &h, b"Param1=value2"),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn host_falls_back_to_uri_authority() {
        let auth = suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        let h = [("x-amz-date", SUITE_DATE), ("authorization", auth.as_str())];
        check("GET", "https://example.amazonaws.com/", &h, b"").unwrap();
        // No host header and no authority.
        assert_eq!(
            check("GET", "/", &h, b""),
            Err(AuthError::MissingSignedHeader("host"))
        );
    }

    #[test]
    fn authorization_parsing_errors() {
        let good_sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let cases: Vec<(String, AuthError)> = vec![
            (
                "Bearer abc".into(),
                AuthError::UnsupportedAlgorithm,
            ),
            (
                format!("AWS4-HMAC-SHA512 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::UnsupportedAlgorithm,
            ),
            ("AWS4-HMAC-SHA256".into(), AuthError::Malformed("Authorization")),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, Signature={good_sig}"),
                AuthError::Malformed("SignedHeaders"),
            ),
            (
                format!("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("Credential"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date"),
                AuthError::Malformed("Signature"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={}", &good_sig[..63]),
                AuthError::Malformed("Signature"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={}", good_sig.to_uppercase()),
                AuthError::Malformed("Signature"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request/x, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("Credential"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws5_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("Credential"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}//us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("Credential"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/2015083/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("Credential date"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date;host, Signature={good_sig}"),
                AuthError::Malformed("SignedHeaders"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=Host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("SignedHeaders"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("SignedHeaders"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("duplicate Authorization parameter"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}, Extra=1"),
                AuthError::Malformed("Authorization parameter"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={good_sig}, "),
                AuthError::Malformed("Authorization parameter"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature={good_sig}"),
                AuthError::MissingSignedHeader("x-amz-date"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature={good_sig}"),
                AuthError::MissingSignedHeader("host"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("a signed header is absent"),
            ),
            (
                format!("AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={good_sig}"),
                AuthError::Malformed("x-amz-content-sha256 signed but absent"),
            ),
            ("x".repeat(MAX_AUTHORIZATION_LEN + 1), AuthError::Malformed("Authorization too long")),
        ];
        for (auth, want) in cases {
            let h = [
                ("host", "example.amazonaws.com"),
                ("x-amz-date", SUITE_DATE),
                ("authorization", auth.as_str()),
            ];
            assert_eq!(check("GET", "/", &h, b""), Err(want), "{auth}");
        }
    }

    #[test]
    fn tolerates_no_space_after_commas() {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={SUITE_AKID}/20150830/us-east-1/service/aws4_request,SignedHeaders=host;x-amz-date,Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        check("GET", "/", &h, b"").unwrap();
    }

    #[test]
    fn header_level_errors() {
        let auth = suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        // No Authorization at all.
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
        ];
        assert_eq!(
            check("GET", "/", &h, b""),
            Err(AuthError::MissingAuthorization)
        );
        // Two Authorization headers.
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
            ("authorization", auth.as_str()),
        ];
        assert_eq!(
            check("GET", "/", &h, b""),
            Err(AuthError::Malformed("duplicate header"))
        );
        // x-amz-date signed but absent.
        let h = [
            ("host", "example.amazonaws.com"),
            ("authorization", auth.as_str()),
        ];
        assert_eq!(
            check("GET", "/", &h, b""),
            Err(AuthError::MissingSignedHeader("x-amz-date"))
        );
        // Bad x-amz-date formats.
        for bad in [
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20150830 123600Z",
            "20151330T123600Z",
            "20150230T123600Z",
            "20150830T250000Z",
            "20150830T123660Z",
            "2015083xT123600Z",
        ] {
            let h = [
                ("host", "example.amazonaws.com"),
                ("x-amz-date", bad),
                ("authorization", auth.as_str()),
            ];
            assert_eq!(
                check("GET", "/", &h, b""),
                Err(AuthError::Malformed("X-Amz-Date")),
                "{bad}"
            );
        }
    }

    #[test]
    fn scope_date_must_match_amz_date() {
        let auth = suite_auth(
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .replace("/20150830/", "/20150829/");
        let h = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", SUITE_DATE),
            ("authorization", auth.as_str()),
        ];
        assert_eq!(check("GET", "/", &h, b""), Err(AuthError::WrongScopeDate));
    }

    #[test]
    fn scope_and_key_errors() {
        let sig = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let base = suite_auth("host;x-amz-date", sig);
        let cases = [
            (
                base.replace("/us-east-1/", "/us-west-2/"),
                AuthError::WrongRegion,
            ),
            (
                base.replace("/service/", "/kms-xks/"),
                AuthError::WrongService,
            ),
            (
                base.replace(SUITE_AKID, "AKIDOTHER"),
                AuthError::UnknownAccessKey,
            ),
            (
                base.replace(sig, &sig.replace('5', "6")),
                AuthError::BadSignature,
            ),
        ];
        for (auth, want) in cases {
            let h = [
                ("host", "example.amazonaws.com"),
                ("x-amz-date", SUITE_DATE),
                ("authorization", auth.as_str()),
            ];
            assert_eq!(check("GET", "/", &h, b""), Err(want), "{auth}");
        }
    }

    #[test]
    fn skew_window_is_inclusive_and_symmetric() {
        let at = suite_now();
        let skew = Duration::from_secs(300);
        assert_eq!(check_skew(at, at + skew, skew), Ok(()));
        assert_eq!(check_skew(at, at - skew, skew), Ok(()));
        assert_eq!(
            check_skew(at, at + skew + Duration::from_secs(1), skew),
            Err(AuthError::StaleOrFutureDate)
        );
        assert_eq!(
            check_skew(at, at - skew - Duration::from_secs(1), skew),
            Err(AuthError::StaleOrFutureDate)
        );
    }

    #[test]
    fn amz_date_parses_to_unix_time() {
        let t = parse_amz_date("19700101T000001Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1));
        let t = parse_amz_date(SUITE_DATE).unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert_eq!(
            parse_amz_date("19691231T235959Z"),
            Err(AuthError::Malformed("X-Amz-Date"))
        );
    }

    #[test]
    fn canonical_query_encodes_and_sorts() {
        assert_eq!(canonical_query("").unwrap(), "");
        assert_eq!(canonical_query("b=2&a=1").unwrap(), "a=1&b=2");
        assert_eq!(canonical_query("a").unwrap(), "a=");
        assert_eq!(canonical_query("a=x%2fy&c=~-_.").unwrap(), "a=x%2Fy&c=~-_.");
        assert_eq!(canonical_query("a=b+c").unwrap(), "a=b%20c");
        assert_eq!(
            canonical_query("a=%zz"),
            Err(AuthError::Malformed("query string"))
        );
        assert_eq!(
            canonical_query("a=%2"),
            Err(AuthError::Malformed("query string"))
        );
    }

    #[test]
    fn trimming_collapses_inner_whitespace() {
        let mut out = Vec::new();
        append_trimmed(&mut out, b"  a \t  b   c  ");
        assert_eq!(out, b"a b c");
        out.clear();
        append_trimmed(&mut out, b"   ");
        assert_eq!(out, b"");
    }

    #[test]
    fn error_messages_do_not_echo_request_data() {
        for e in [
            AuthError::UnknownAccessKey,
            AuthError::BadSignature,
            AuthError::Malformed("Credential"),
        ] {
            let text = e.to_string();
            assert!(
                !text.contains(SUITE_AKID) && !text.contains(SUITE_SECRET),
                "{text}"
            );
        }
    }

    use crate::fuzz::Rng;

    /// SigV4-significant bytes plus hostile ones (non-ASCII, DEL, tab).
    const ALPHABET: &[u8] = b"AWS4-HMAC-SHA256 Credential=/,;SignedHeaders=Signature=0123456789abcdefT Z\t\x7f\xc3\xa9\xff";

    fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
        crate::fuzz::mutate(valid, ALPHABET, rng, usize::MAX)
    }

    fn without_whitespace(b: &[u8]) -> Vec<u8> {
        b.iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect()
    }

    /// Runs `verify` on the vanilla GET suite request with the given raw header values
    /// (`None`: header absent); values the `http` crate refuses are reported as `None`.
    fn verify_raw(
        auth: Option<&[u8]>,
        date: Option<&[u8]>,
        extra_auth: bool,
    ) -> Option<Result<(), AuthError>> {
        let mut map = headers(&[("host", "example.amazonaws.com")]);
        for (name, value) in [("authorization", auth), ("x-amz-date", date)] {
            if let Some(v) = value {
                map.append(name, HeaderValue::from_bytes(v).ok()?);
            }
        }
        if extra_auth {
            map.append("authorization", HeaderValue::from_static("x"));
        }
        let uri: Uri = "/".parse().unwrap();
        let req = SignedRequest {
            method: &Method::GET,
            uri: &uri,
            headers: &map,
            body: b"",
        };
        Some(verify(&req, &suite_params(), &suite_secret).map(|_| ()))
    }

    const VANILLA_SIG: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    #[test]
    fn mutated_authorization_and_date_headers_never_verify() {
        let auth = suite_auth("host;x-amz-date", VANILLA_SIG);
        assert_eq!(
            verify_raw(Some(auth.as_bytes()), Some(SUITE_DATE.as_bytes()), false),
            Some(Ok(()))
        );
        let mut rng = Rng(0x5194_0001);
        let mut reached = 0;
        for case in 0..4000 {
            let (a, d) = match case % 3 {
                0 => (
                    mutate(auth.as_bytes(), &mut rng),
                    SUITE_DATE.as_bytes().to_vec(),
                ),
                1 => (
                    auth.as_bytes().to_vec(),
                    mutate(SUITE_DATE.as_bytes(), &mut rng),
                ),
                _ => (
                    mutate(auth.as_bytes(), &mut rng),
                    mutate(SUITE_DATE.as_bytes(), &mut rng),
                ),
            };
            let Some(outcome) = verify_raw(Some(&a), Some(&d), case % 97 == 0) else {
                continue;
            };
            reached += 1;
            if outcome.is_ok() {
                // Only whitespace the parser trims (around parameters) may differ.
                assert_eq!(without_whitespace(&a), without_whitespace(auth.as_bytes()));
                assert_eq!(d, SUITE_DATE.as_bytes());
                assert!(case % 97 != 0, "duplicate Authorization accepted");
            }
        }
        assert!(reached > 3000, "most mutations are valid header values");
    }

    #[test]
    fn random_authorization_and_date_headers_are_refused() {
        let mut rng = Rng(0x5194_0002);
        for case in 0..4000 {
            let n = rng.below(200);
            let mut a: Vec<u8> = (0..n)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            if case % 2 == 0 {
                a.splice(0..0, b"AWS4-HMAC-SHA256 ".iter().copied());
            }
            let n = rng.below(20);
            let d: Vec<u8> = if case % 4 == 0 {
                // Calendar-shaped garbage: digits with T and Z in place.
                (0..16)
                    .map(|i| match i {
                        8 => b'T',
                        15 => b'Z',
                        _ => b'0' + rng.below(10) as u8,
                    })
                    .collect()
            } else {
                (0..n).map(|_| rng.next() as u8).collect()
            };
            let absent = rng.below(8);
            let outcome = verify_raw(
                (absent != 0).then_some(&a[..]),
                (absent != 1).then_some(&d[..]),
                false,
            );
            if let Some(outcome) = outcome {
                assert!(outcome.is_err());
            }
        }
        // An over-long header is refused before any parsing work.
        let long = format!(
            "{}{}",
            suite_auth("host;x-amz-date", VANILLA_SIG),
            " ".repeat(MAX_AUTHORIZATION_LEN)
        );
        assert_eq!(
            verify_raw(Some(long.as_bytes()), Some(SUITE_DATE.as_bytes()), false),
            Some(Err(AuthError::Malformed("Authorization too long")))
        );
    }

    #[test]
    fn parse_amz_date_on_shaped_garbage_is_typed() {
        let mut rng = Rng(0x5194_0003);
        let mut accepted = 0;
        for _ in 0..5000 {
            let v: String = (0..16)
                .map(|i| match i {
                    8 => 'T',
                    15 => 'Z',
                    _ => char::from(b'0' + rng.below(10) as u8),
                })
                .collect();
            match parse_amz_date(&v) {
                Ok(t) => {
                    // Accepted dates are real calendar dates at or after the epoch.
                    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
                    let dt = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
                    let back = format!(
                        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                        dt.year(),
                        u8::from(dt.month()),
                        dt.day(),
                        dt.hour(),
                        dt.minute(),
                        dt.second()
                    );
                    assert_eq!(back, v);
                    accepted += 1;
                }
                Err(e) => assert_eq!(e, AuthError::Malformed("X-Amz-Date")),
            }
        }
        assert!(accepted > 0, "some shaped strings are real dates");
    }
}
