//! The XKS HTTP router: `/ping` plus the API pipeline (pre-auth budget → route → bounded body →
//! SigV4 → in-flight gate → rate limit → parse → authz → vhsm). Nothing shared is spent before
//! the signature has verified.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::api::{self, ApiPath, Operation, RequestMetadata};
use crate::body::{self, BodyError};
use crate::cdiv;
use crate::conn::ConnInfo;
use crate::drain;
use crate::errors::XksError;
use crate::health::{health_response, HealthCache};
use crate::key_manager::{DecryptInput, KeyManager, KeyState, VhsmError};
use crate::keystores::{KeyStore, KeyStores, Registry};
use crate::limits::RequestLimits;
use crate::metrics::{Limit, Metrics};
use crate::policy::{AuthzRequest, Decision};
use crate::preauth::PreAuth;
use crate::ratelimit::RateLimiter;
use crate::sigv4::{SignedRequest, VerifyParams};

/// The SigV4 service name of the XKS API.
pub const SERVICE: &str = "kms-xks-proxy";
/// Accepted clock skew of a signed request (spec: 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Router settings taken from the main config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Region in the SigV4 scope.
    pub region: String,
    /// `xksProxyFleetSize`.
    pub fleet_size: u32,
    /// Budget for all vhsm calls of one request.
    pub deadline: Duration,
    /// Authenticated requests in flight before ThrottlingException.
    pub max_concurrency: usize,
    /// Body and unauthenticated-work limits.
    pub limits: RequestLimits,
}

struct Inner {
    settings: Settings,
    keystores: Arc<Registry>,
    km: Arc<dyn KeyManager>,
    health: Arc<HealthCache>,
    metrics: Arc<Metrics>,
    limiter: RateLimiter,
    in_flight: Arc<Semaphore>,
    preauth: PreAuth,
}

/// Shared state of the router (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state; the rate limiter and the concurrency gate are created here.
    pub fn new(
        settings: Settings,
        keystores: Arc<Registry>,
        km: Arc<dyn KeyManager>,
        health: Arc<HealthCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(settings.max_concurrency));
        let preauth = PreAuth::new(
            settings.limits.unauthenticated_per_connection,
            settings.limits.unauthenticated_per_peer,
            metrics.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                settings,
                keystores,
                km,
                health,
                metrics,
                limiter: RateLimiter::new(),
                in_flight,
                preauth,
            }),
        }
    }
}

/// The whole HTTP surface: `GET /ping` and every XKS API path.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .fallback(api)
        .with_state(state)
}

async fn ping() -> &'static str {
    "ok"
}

/// What the access log says about one request (never any payload).
#[derive(Default)]
struct Ctx {
    op: Option<Operation>,
    store: Option<String>,
    /// The credential whose signature verified (shows which one KMS uses during a rotation).
    access_key_id: Option<String>,
    key_id: Option<String>,
    kms_request_id: Option<String>,
    kms_operation: Option<String>,
    node: Option<Arc<str>>,
}

impl Ctx {
    fn note_meta(&mut self, m: &RequestMetadata) {
        self.kms_request_id = m.kms_request_id.as_deref().map(log_safe);
        self.kms_operation = m.kms_operation.as_deref().map(log_safe);
    }
}

/// Caller-supplied text made safe for a log line: printable ASCII only, at most 128 chars.
fn log_safe(s: &str) -> String {
    s.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

async fn api(State(st): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let mut ctx = Ctx::default();
    let result = pipeline(&st.inner, req, &mut ctx).await;
    let (resp, err) = match result {
        Ok(r) => (r, None),
        Err(e) => (e.into_response(), Some(e)),
    };
    let elapsed = start.elapsed();
    let op = ctx.op.map_or("Unknown", Operation::as_str);
    let error_name = err.map(|e| e.name.as_str());
    st.inner
        .metrics
        .observe(op, error_name, elapsed.as_secs_f64());
    tracing::info!(
        target: "xks_access",
        kms_request_id = ctx.kms_request_id.as_deref().unwrap_or("-"),
        kms_operation = ctx.kms_operation.as_deref().unwrap_or("-"),
        key_store = ctx.store.as_deref().unwrap_or("-"),
        access_key_id = ctx.access_key_id.as_deref().unwrap_or("-"),
        key_id = ctx.key_id.as_deref().unwrap_or("-"),
        xks_operation = op,
        status = resp.status().as_u16(),
        error_name = error_name.unwrap_or("-"),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        vhsm_node = ctx.node.as_deref().unwrap_or("-"),
        "xks request"
    );
    resp
}

fn json_response(body: Vec<u8>) -> Response {
    json_body_response(Body::from(body))
}

/// A JSON answer holding a secret (the Decrypt plaintext): hyper frees the body's bytes once
/// they are written; they are zeroized then.
fn secret_json_response(body: Zeroizing<Vec<u8>>) -> Response {
    json_body_response(Body::from(Bytes::from_owner(body)))
}

fn json_body_response(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// How long a request refused by the unauthenticated budget may have its body drained.
const THROTTLED_DRAIN_WAIT: Duration = Duration::from_millis(50);

/// An error answered before the body is read: the body is drained first (bounded) so the
/// answer ends an HTTP/2 stream cleanly instead of with a reset (see `drain`).
async fn early(st: &Inner, body: axum::body::Body, e: XksError) -> XksError {
    drain::drain(body, api::MAX_BODY, st.settings.limits.body_timeout).await;
    e
}

/// Step 2 of the pipeline: URI length, key-store prefix, XKS path, method.
fn route<'a>(
    parts: &'a Parts,
    stores: &'a KeyStores,
    ctx: &mut Ctx,
) -> Result<(&'a KeyStore, ApiPath<'a>), XksError> {
    let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > api::MAX_URI {
        return Err(XksError::URI_TOO_LONG);
    }
    let (store, rest) = stores
        .route(parts.uri.path())
        .ok_or(XksError::UNKNOWN_PATH)?;
    ctx.store = Some(store.name.clone());
    let api_path = api::parse_path(rest).ok_or(XksError::UNKNOWN_PATH)?;
    ctx.op = Some(api_path.operation());
    if let ApiPath::Key { key_id, .. } = &api_path {
        ctx.key_id = Some((*key_id).to_string());
    }
    if parts.method != Method::POST {
        return Err(XksError::NOT_POST);
    }
    Ok((store, api_path))
}

async fn pipeline(st: &Inner, req: Request, ctx: &mut Ctx) -> Result<Response, XksError> {
    let (parts, body) = req.into_parts();
    let conn = parts.extensions.get::<ConnInfo>();

    // 1. Unauthenticated budget of this connection and peer: fail fast, never queue.
    let Ok(preauth) = st.preauth.enter(conn) else {
        drain::drain(body, api::MAX_BODY, THROTTLED_DRAIN_WAIT).await;
        return Err(XksError::UNAUTHENTICATED_FLOOD);
    };

    // 2. Route by key-store prefix, then the XKS path.
    let stores = st.keystores.current();
    let (store, api_path) = match route(&parts, &stores, ctx) {
        Ok(routed) => routed,
        Err(e) => return Err(early(st, body, e).await),
    };

    // 3. Bounded body, read within a tight deadline: a slow sender only holds its own
    // unauthenticated slot, and only briefly. Oversized bodies are drained (bounded) before
    // the answer, so HTTP/2 clients read it instead of a stream reset.
    let limits = &st.settings.limits;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_drain_bytes as u64) {
        st.metrics.hit(Limit::BodyTooLargeReset);
        return Err(XksError::BODY_TOO_LARGE);
    }
    // Zeroized when the request is done (it holds the plaintext of an Encrypt).
    let body: Zeroizing<Vec<u8>> = match body::read_bounded(
        body,
        api::MAX_BODY,
        limits.max_drain_bytes,
        limits.body_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::Timeout) => {
            st.metrics.hit(Limit::BodyTimeout);
            return Err(XksError::BODY_TIMEOUT);
        }
        Err(BodyError::TooLarge { drained }) => {
            st.metrics.hit(if drained {
                Limit::BodyTooLarge
            } else {
                Limit::BodyTooLargeReset
            });
            return Err(XksError::BODY_TOO_LARGE);
        }
        Err(BodyError::Failed) => {
            return Err(XksError::BODY_INCOMPLETE);
        }
    };

    // 4. SigV4 with this key store's credentials.
    let signed = SignedRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    let params = VerifyParams {
        region: &st.settings.region,
        service: SERVICE,
        now: SystemTime::now(),
        max_skew: MAX_SKEW,
    };
    let verified = store.verify(&signed, &params);
    drop(preauth);
    match verified {
        Ok(who) => ctx.access_key_id = Some(who.access_key_id),
        Err(e) => {
            tracing::warn!(key_store = %store.name, reason = %e, "SigV4 verification failed");
            return Err(XksError::BAD_SIGNATURE);
        }
    }
    if let Some(ConnInfo(c)) = conn {
        c.mark_authenticated();
    }

    // 5. Global concurrency gate, for authenticated requests only: fail fast, never queue.
    let Ok(_permit) = st.in_flight.clone().try_acquire_owned() else {
        st.metrics.hit(Limit::MaxConcurrency);
        return Err(XksError::TOO_MANY_IN_FLIGHT);
    };

    // 6. Per-key-store rate limit.
    let (rate, burst) = store.rate();
    if !st
        .limiter
        .try_acquire(&store.name, rate, burst, Instant::now())
    {
        st.metrics.hit(Limit::KeyStoreRate);
        return Err(XksError::KEY_STORE_RATE);
    }

    // 7. Parse, check sizes, allow-list, secondary authorization, call vhsm.
    if !is_json(&parts.headers) {
        return Err(XksError::NOT_JSON);
    }
    match api_path {
        ApiPath::Health => {
            let r = api::parse_metadata_only(&body, Operation::GetHealthStatus)?;
            ctx.note_meta(&r.meta);
            let h = health_response(&st.health, st.settings.fleet_size, Instant::now());
            let body = serde_json::to_vec(&h).map_err(|_| XksError::ENCODING_FAILED)?;
            Ok(json_response(body))
        }
        ApiPath::Key { key_id, op } => {
            let deadline = || Instant::now() + st.settings.deadline;
            match op {
                Operation::GetKeyMetadata => {
                    let r = api::parse_metadata_only(&body, op)?;
                    ctx.note_meta(&r.meta);
                    admit(store, key_id, op, &r.meta)?;
                    key_metadata(st, key_id, &r.meta, deadline(), ctx).await
                }
                Operation::Encrypt => {
                    let r = api::parse_encrypt(&body)?;
                    ctx.note_meta(&r.meta);
                    admit(store, key_id, op, &r.meta)?;
                    encrypt(st, key_id, &r, deadline(), ctx).await
                }
                Operation::Decrypt => {
                    let r = api::parse_decrypt(&body)?;
                    ctx.note_meta(&r.meta);
                    admit(store, key_id, op, &r.meta)?;
                    decrypt(st, key_id, &r, deadline(), ctx).await
                }
                Operation::GetHealthStatus => Err(XksError::UNKNOWN_PATH),
            }
        }
    }
}

/// Key allow-list of the key store, then secondary authorization.
fn admit(
    store: &KeyStore,
    key_id: &str,
    op: Operation,
    meta: &RequestMetadata,
) -> Result<(), XksError> {
    if !store.allows_key(key_id) {
        return Err(XksError::KEY_NOT_FOUND);
    }
    let req = AuthzRequest {
        key_id,
        kms_operation: meta.kms_operation.as_deref().unwrap_or(""),
        aws_principal_arn: meta.aws_principal_arn.as_deref(),
        kms_key_arn: meta.kms_key_arn.as_deref(),
        kms_via_service: meta.kms_via_service.as_deref(),
        aws_source_vpc: meta.aws_source_vpc.as_deref(),
        aws_source_vpce: meta.aws_source_vpce.as_deref(),
    };
    match store.authorize(&req) {
        Decision::Allow { .. } => Ok(()),
        Decision::Deny { rule } => {
            tracing::warn!(
                key_store = %store.name,
                key_id,
                xks_operation = op.as_str(),
                rule = rule.as_deref().unwrap_or("default-deny"),
                "secondary authorization denied the request"
            );
            Err(XksError::DENIED_BY_POLICY)
        }
    }
}

async fn key_metadata(
    st: &Inner,
    key_id: &str,
    meta: &RequestMetadata,
    deadline: Instant,
    ctx: &mut Ctx,
) -> Result<Response, XksError> {
    let rid = meta.kms_request_id.as_deref().unwrap_or("");
    let served = within(deadline, st.km.key_metadata(key_id, rid, deadline)).await?;
    ctx.node = Some(served.node);
    let m = served.value;
    if m.state == KeyState::Destroyed {
        return Err(XksError::KEY_NOT_FOUND);
    }
    let mut usage = Vec::with_capacity(2);
    if m.encrypt {
        usage.push("ENCRYPT");
    }
    if m.decrypt {
        usage.push("DECRYPT");
    }
    let body = api::KeyMetadataResponse {
        key_spec: m.key_spec,
        key_usage: usage,
        key_status: if m.state == KeyState::Enabled {
            "ENABLED"
        } else {
            "DISABLED"
        },
    };
    serde_json::to_vec(&body)
        .map(json_response)
        .map_err(|_| XksError::ENCODING_FAILED)
}

/// Bounds a key-manager call by the request deadline even if the implementation does not.
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, VhsmError>>,
) -> Result<T, XksError> {
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(XksError::from_vhsm(&e)),
        Err(_) => Err(XksError::from_vhsm(&VhsmError::Timeout)),
    }
}

async fn encrypt(
    st: &Inner,
    key_id: &str,
    r: &api::EncryptRequest,
    deadline: Instant,
    ctx: &mut Ctx,
) -> Result<Response, XksError> {
    let rid = r.meta.kms_request_id.as_deref().unwrap_or("");
    let served = within(
        deadline,
        st.km
            .encrypt(key_id, &r.plaintext, &r.aad, r.want_cdiv, rid, deadline),
    )
    .await?;
    ctx.node = Some(served.node);
    let out = served.value;
    if out.iv.len() != 12
        || out.tag.len() != 16
        || out.metadata.len() > api::MAX_METADATA
        || out.ciphertext.len() != r.plaintext.len()
    {
        return Err(XksError::BAD_KEY_MANAGER_OUTPUT);
    }
    let integrity = if r.want_cdiv {
        // vhsm computed the CDIV right after encrypting and self-checked the result; recompute
        // it over exactly what we return, so any change on the way here is caught too.
        let value = cdiv::digest(&r.aad, &out.metadata, &out.iv, &out.ciphertext, &out.tag);
        if !bool::from(value.as_slice().ct_eq(out.integrity_value.as_slice())) {
            tracing::error!(key_id = %log_safe(key_id), "integrity value mismatch");
            return Err(XksError::INTEGRITY_MISMATCH);
        }
        Some(api::encode(&value))
    } else {
        None
    };
    let body = api::EncryptResponse {
        ciphertext: api::encode(&out.ciphertext),
        ciphertext_metadata: (!out.metadata.is_empty()).then(|| api::encode(&out.metadata)),
        initialization_vector: api::encode(&out.iv),
        authentication_tag: api::encode(&out.tag),
        ciphertext_data_integrity_value: integrity,
    };
    serde_json::to_vec(&body)
        .map(json_response)
        .map_err(|_| XksError::ENCODING_FAILED)
}

async fn decrypt(
    st: &Inner,
    key_id: &str,
    r: &api::DecryptRequest,
    deadline: Instant,
    ctx: &mut Ctx,
) -> Result<Response, XksError> {
    let rid = r.meta.kms_request_id.as_deref().unwrap_or("");
    let input = DecryptInput {
        ciphertext: &r.ciphertext,
        iv: &r.iv,
        tag: &r.tag,
        aad: &r.aad,
        metadata: &r.metadata,
    };
    let served = within(deadline, st.km.decrypt(key_id, input, rid, deadline)).await?;
    ctx.node = Some(served.node);
    Ok(secret_json_response(api::decrypt_response_body(
        &served.value,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_safe_strips_control_characters_and_caps_length() {
        assert_eq!(log_safe("abc\n\u{1b}[31mx"), "abc??[31mx");
        assert_eq!(log_safe(&"k".repeat(300)).len(), 128);
    }
}
