//! Legate's config API (`legate.config.v1.ConfigService`): apply changes,
//! read the config in force, list connected proxies.

use std::sync::Arc;

use legate_api::google::rpc::Status as RpcStatus;
use legate_api::legate::config::v1::config_service_server::ConfigService;
use legate_api::legate::config::v1::{
    ApplyRequest, ApplyResponse, GetConfigRequest, GetConfigResponse, ListProxiesRequest, ListProxiesResponse,
    ValidationFailure,
};
use legate_config::ConfigErrors;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::proxies::ProxyRegistry;
use crate::snapshot::ResourceKey;
use crate::store::{ApplyError, ApplyOutcome, Store};

/// Type URL of the `ValidationFailure` detail in a rejected apply's status.
pub const VALIDATION_FAILURE_TYPE_URL: &str = "type.googleapis.com/legate.config.v1.ValidationFailure";

/// The config API's gRPC service.
#[derive(Debug, Clone)]
pub struct ConfigApi {
    store: Arc<Store>,
    proxies: ProxyRegistry,
}

impl ConfigApi {
    pub fn new(store: Arc<Store>, proxies: ProxyRegistry) -> Self {
        ConfigApi { store, proxies }
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let request = request.into_inner();
        match self.store.apply(&request.resources, &request.remove).await {
            Ok(outcome) => Ok(Response::new(apply_response(outcome))),
            Err(ApplyError::Invalid(errors)) => Err(invalid_argument(&errors)),
            Err(error) => Err(Status::internal(crate::error_chain(&error))),
        }
    }

    async fn get_config(&self, _request: Request<GetConfigRequest>) -> Result<Response<GetConfigResponse>, Status> {
        let snapshot = self.store.snapshot();
        let response =
            GetConfigResponse { version: snapshot.version().to_string(), resources: snapshot.packed_in_push_order() };
        Ok(Response::new(response))
    }

    async fn list_proxies(&self, _request: Request<ListProxiesRequest>) -> Result<Response<ListProxiesResponse>, Status> {
        Ok(Response::new(ListProxiesResponse { proxies: self.proxies.statuses() }))
    }
}

fn apply_response(outcome: ApplyOutcome) -> ApplyResponse {
    let refs = |keys: Vec<ResourceKey>| keys.iter().map(ResourceKey::to_ref).collect();
    ApplyResponse {
        version: outcome.version.to_string(),
        changed: outcome.changed,
        added: refs(outcome.added),
        modified: refs(outcome.modified),
        removed: refs(outcome.removed),
        ignored_fields: outcome.ignored_fields,
    }
}

/// INVALID_ARGUMENT whose message lists every error, one per line, and whose
/// details carry the same list as a `ValidationFailure` inside a
/// `google.rpc.Status`, the layout gRPC clients expect for rich errors.
pub fn invalid_argument(errors: &ConfigErrors) -> Status {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let message = lines.join("\n");

    let failure = ValidationFailure { errors: lines };
    let details = RpcStatus {
        code: Code::InvalidArgument as i32,
        message: message.clone(),
        details: vec![prost_types::Any { type_url: VALIDATION_FAILURE_TYPE_URL.to_string(), value: failure.encode_to_vec() }],
    };
    Status::with_details(Code::InvalidArgument, message, details.encode_to_vec().into())
}

/// Extracts the errors of a rejected apply: the `ValidationFailure` detail when the
/// status has one, otherwise the lines of its message.
pub fn validation_errors(status: &Status) -> Vec<String> {
    let detail = RpcStatus::decode(status.details())
        .ok()
        .and_then(|rich| rich.details.into_iter().find(|any| any.type_url == VALIDATION_FAILURE_TYPE_URL))
        .and_then(|any| ValidationFailure::decode(any.value.as_slice()).ok());

    match detail {
        Some(failure) => failure.errors,
        None => status.message().lines().map(str::to_string).collect(),
    }
}

/// Checks the bearer token of config API calls when one is configured.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<Arc<str>>,
    /// The service the token guards, for messages and logs.
    service: &'static str,
}

impl TokenCheck {
    pub fn new(token: Option<Arc<str>>, service: &'static str) -> Self {
        TokenCheck { token, service }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => {
                tracing::warn!(service = self.service, "call with a wrong bearer token");
                Err(Status::unauthenticated(format!("the {} token is wrong", self.service)))
            }
            None => Err(Status::unauthenticated(format!("the {} needs a bearer token (authorization: Bearer ...)", self.service))),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}
