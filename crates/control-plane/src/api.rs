//! Legate's config API (`legate.config.v1.ConfigService`): apply changes,
//! read the config in force, list connected proxies, follow rollouts, list
//! the history and roll back.

use std::sync::Arc;

use legate_api::google::rpc::Status as RpcStatus;
use legate_api::legate::config::v1::config_service_server::ConfigService;
use legate_api::legate::config::v1::{
    ApplyRequest, ApplyResponse, GetConfigRequest, GetConfigResponse, GetRolloutRequest, GetRolloutResponse, HistoryEntry,
    ListHistoryRequest, ListHistoryResponse, ListProxiesRequest, ListProxiesResponse, RollbackRequest, ValidationFailure,
};
use legate_config::ConfigErrors;
use prost::Message;
use tonic::{Code, Request, Response, Status};

use crate::proxies::{ProxyEntry, ProxyRegistry};
use crate::targets::Selector;
use crate::snapshot::{ResourceKey, Snapshot};
use crate::store::{ApplyError, ApplyOptions, ApplyOutcome, Store};

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
        let target = request
            .target
            .as_ref()
            .map(Selector::from_proto)
            .transpose()
            .map_err(|error| Status::invalid_argument(format!("invalid target: {error}")))?;
        let if_version = optional_version(&request.if_version, "if_version")?;
        let options = ApplyOptions { if_version, applied_by: request.applied_by, target };
        let outcome = self.store.apply_with(&request.resources, &request.remove, &options).await;
        outcome.map(|outcome| Response::new(apply_response(outcome))).map_err(apply_status)
    }

    async fn rollback(&self, request: Request<RollbackRequest>) -> Result<Response<ApplyResponse>, Status> {
        let request = request.into_inner();
        let version = required_version(&request.version)?;
        let if_version = optional_version(&request.if_version, "if_version")?;
        let options = ApplyOptions { if_version, applied_by: request.applied_by, target: None };
        let outcome = self.store.rollback(version, &options).await;
        outcome.map(|outcome| Response::new(apply_response(outcome))).map_err(apply_status)
    }

    async fn get_rollout(&self, request: Request<GetRolloutRequest>) -> Result<Response<GetRolloutResponse>, Status> {
        let snapshot = match optional_version(&request.into_inner().version, "version")? {
            None => self.store.snapshot(),
            Some(version) => self
                .store
                .version(version)
                .ok_or_else(|| Status::not_found(format!("version {version} is not in the history")))?,
        };
        // In HA mode the other replicas' proxies count too, from what they published to etcd.
        let mut proxies = self.proxies.list();
        let others = crate::presence::list_others(self.store.etcd(), &self.proxies).await;
        proxies.extend(others.iter().map(ProxyEntry::from_status));
        Ok(Response::new(crate::rollout::rollout(&snapshot, &proxies)))
    }

    async fn list_history(&self, _request: Request<ListHistoryRequest>) -> Result<Response<ListHistoryResponse>, Status> {
        let versions = self.store.history().iter().map(|snapshot| history_entry(snapshot)).collect();
        Ok(Response::new(ListHistoryResponse { versions }))
    }

    async fn get_config(&self, request: Request<GetConfigRequest>) -> Result<Response<GetConfigResponse>, Status> {
        let snapshot = self.store.snapshot();
        let resources = match request.into_inner().target {
            None => snapshot.packed_in_push_order(),
            Some(target) => {
                let selector = Selector::from_proto(&target).map_err(|error| Status::invalid_argument(format!("invalid target: {error}")))?;
                let overlay = snapshot.overlays().iter().find(|overlay| overlay.selector == selector);
                overlay.map(|overlay| overlay.to_stored().resources).unwrap_or_default()
            }
        };
        let targets = snapshot.overlays().iter().map(|overlay| overlay.selector.to_proto()).collect();
        Ok(Response::new(GetConfigResponse { version: snapshot.version().to_string(), resources, targets }))
    }

    async fn list_proxies(&self, _request: Request<ListProxiesRequest>) -> Result<Response<ListProxiesResponse>, Status> {
        let proxies = crate::presence::list_all(self.store.etcd(), &self.proxies).await;
        Ok(Response::new(ListProxiesResponse { proxies }))
    }
}

fn apply_status(error: ApplyError) -> Status {
    match error {
        ApplyError::Invalid(errors) => invalid_argument(&errors),
        ApplyError::VersionConflict { .. } => Status::failed_precondition(error.to_string()),
        ApplyError::UnknownVersion(_) => Status::not_found(error.to_string()),
        ApplyError::EtcdUnavailable(_) => Status::unavailable(crate::error_chain(&error)),
        ApplyError::Contended(_) => Status::aborted(error.to_string()),
        error => Status::internal(crate::error_chain(&error)),
    }
}

fn required_version(text: &str) -> Result<u64, Status> {
    text.parse().map_err(|_| Status::invalid_argument(format!("invalid version {text:?}: expected a version number")))
}

/// Reads an optional version field: empty means absent.
fn optional_version(text: &str, field: &str) -> Result<Option<u64>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("invalid {field} {text:?}: expected a version number")))
}

fn history_entry(snapshot: &Snapshot) -> HistoryEntry {
    let origin = snapshot.origin();
    HistoryEntry {
        version: snapshot.version().to_string(),
        applied_at: (origin.applied_at != std::time::SystemTime::UNIX_EPOCH).then(|| origin.applied_at.into()),
        applied_by: origin.applied_by.clone(),
        resources: snapshot.len() as u32,
        rolled_back_to: origin.rolled_back_to.map(|version| version.to_string()).unwrap_or_default(),
        target: snapshot.target().map(Selector::to_proto),
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
                Err(Status::unauthenticated(format!("wrong bearer token for {}", self.service)))
            }
            None => Err(Status::unauthenticated(format!("{} needs a bearer token (authorization: Bearer ...)", self.service))),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}
