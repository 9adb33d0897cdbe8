//! The `vhsm.v1.Crypto` service: encrypt/decrypt/wrap/unwrap/random/metadata/health on the core.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vhsm_core::DecryptInput;
use vhsm_proto::v1::crypto_server::Crypto;
use vhsm_proto::v1::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GenerateRandomRequest,
    GenerateRandomResponse, GetKeyMetadataRequest, GetKeyMetadataResponse, HealthRequest,
    HealthResponse, UnwrapKeyRequest, UnwrapKeyResponse, WrapKeyRequest, WrapKeyResponse,
};
use zeroize::Zeroize;

use crate::access::Method;
use crate::convert;
use crate::dispatch::{core_status, Dispatcher};
use crate::error_map;

/// Model string reported by Health.
pub const MODEL: &str = "vhsmd";

/// The Crypto service (role `crypto`; admin may call Health and GetKeyMetadata).
#[derive(Debug, Clone)]
pub struct CryptoService {
    d: Arc<Dispatcher>,
}

impl CryptoService {
    /// A service over the shared dispatcher.
    pub fn new(d: Arc<Dispatcher>) -> Self {
        CryptoService { d }
    }
}

#[tonic::async_trait]
impl Crypto for CryptoService {
    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let rid = request.get_ref().request_id.clone();
        self.d.prepare_encrypt(&request.get_ref().key_id).await;
        let reserver = Arc::clone(self.d.reserver());
        self.d
            .call(request, Method::Encrypt, &rid, move |v, _, mut r| {
                let out = if r.integrity_check {
                    v.encrypt_verified(&r.key_id, &r.plaintext, &r.aad)
                        .map(|(out, cdiv)| (out, cdiv.to_vec()))
                } else {
                    v.encrypt(&r.key_id, &r.plaintext, &r.aad)
                        .map(|out| (out, Vec::new()))
                };
                r.plaintext.zeroize();
                if let Err(vhsm_core::Error::KeyVersionExhausted(_)) = &out {
                    reserver.note_exhausted();
                }
                let (out, integrity_value) = out.map_err(|e| core_status(&e))?;
                Ok(EncryptResponse {
                    ciphertext: out.ciphertext,
                    iv: out.iv.to_vec(),
                    tag: out.tag.to_vec(),
                    metadata: out.metadata,
                    integrity_value,
                })
            })
            .await
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let rid = request.get_ref().request_id.clone();
        {
            let r = request.get_ref();
            self.d.catch_up_for_key(&r.key_id, Some(&r.metadata)).await;
        }
        self.d
            .call(request, Method::Decrypt, &rid, |v, _, r| {
                let input = DecryptInput {
                    ciphertext: &r.ciphertext,
                    iv: &r.iv,
                    tag: &r.tag,
                    aad: &r.aad,
                    metadata: &r.metadata,
                };
                let plaintext = v.decrypt(&r.key_id, &input).map_err(|e| core_status(&e))?;
                Ok(DecryptResponse {
                    plaintext: plaintext.to_vec(),
                })
            })
            .await
    }

    async fn get_key_metadata(
        &self,
        request: Request<GetKeyMetadataRequest>,
    ) -> Result<Response<GetKeyMetadataResponse>, Status> {
        let rid = request.get_ref().request_id.clone();
        self.d
            .catch_up_for_key(&request.get_ref().key_id, None)
            .await;
        self.d
            .call(request, Method::GetKeyMetadata, &rid, |v, _, r| {
                let k = v.key_metadata(&r.key_id).map_err(|e| core_status(&e))?;
                Ok(GetKeyMetadataResponse {
                    key: Some(convert::key_info(k)),
                })
            })
            .await
    }

    async fn wrap_key(
        &self,
        request: Request<WrapKeyRequest>,
    ) -> Result<Response<WrapKeyResponse>, Status> {
        let rid = request.get_ref().request_id.clone();
        self.d
            .call(request, Method::WrapKey, &rid, |v, _, mut r| {
                let out = v.wrap_key(&r.key_id, &r.key_material);
                r.key_material.zeroize();
                let (wrapped, key_version) = out.map_err(|e| core_status(&e))?;
                Ok(WrapKeyResponse {
                    wrapped,
                    key_version,
                })
            })
            .await
    }

    async fn unwrap_key(
        &self,
        request: Request<UnwrapKeyRequest>,
    ) -> Result<Response<UnwrapKeyResponse>, Status> {
        let rid = request.get_ref().request_id.clone();
        self.d
            .call(request, Method::UnwrapKey, &rid, |v, _, r| {
                let material = v
                    .unwrap_key(&r.key_id, &r.wrapped, r.key_version)
                    .map_err(|e| core_status(&e))?;
                Ok(UnwrapKeyResponse {
                    key_material: material.to_vec(),
                })
            })
            .await
    }

    async fn generate_random(
        &self,
        request: Request<GenerateRandomRequest>,
    ) -> Result<Response<GenerateRandomResponse>, Status> {
        self.d
            .call(request, Method::GenerateRandom, "", |v, _, r| {
                let len =
                    usize::try_from(r.length).map_err(|_| error_map::invalid_argument("length"))?;
                let random = v.random(len).map_err(|e| core_status(&e))?;
                Ok(GenerateRandomResponse { random })
            })
            .await
    }

    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let node_id = self.d.node_id().to_owned();
        let cluster = self.d.cluster().map(|n| n.view());
        self.d
            .call(request, Method::Health, "", move |v, _, _| {
                // The key cache only: Health runs inline and must not wait for a ceremony.
                let (seal_state, key_count) = v.health();
                let (serving, not_serving_reason, lease_remaining_ms, apply_lag) =
                    match cluster.clone() {
                        Some(c) => (
                            c.serving,
                            c.not_serving_reason,
                            u64::try_from(c.lease_remaining.as_millis()).unwrap_or(u64::MAX),
                            c.apply_lag,
                        ),
                        None => (true, String::new(), 0, 0),
                    };
                Ok(HealthResponse {
                    node_id: node_id.clone(),
                    seal_state: convert::seal_state(seal_state) as i32,
                    model: MODEL.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    key_count,
                    serving,
                    not_serving_reason,
                    lease_remaining_ms,
                    apply_lag,
                })
            })
            .await
    }
}
