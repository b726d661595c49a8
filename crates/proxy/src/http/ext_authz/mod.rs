//! The external authorization filter: sends each request's details to an
//! HTTP or gRPC authorization service through the proxy's own upstream
//! pools, then forwards or rejects the request. When the service fails, the
//! failure mode decides.

mod grpc_service;
mod http_service;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tracing::debug;

use legate_config::model::{ExtAuthz, ExtAuthzService, HeaderMatch, Priority};

use super::body::{RequestBody, ResponseBody};
use super::local_reply;
use crate::router::value_matches;
use crate::snapshot::Snapshot;
use crate::stats::{ProxyStats, ResponseFlag};
use crate::upstream::{ConnectionLimits, StreamTimers, UpstreamError};

/// Largest authorization response body read; a larger one is a failure.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The authorization service's decision.
enum Decision {
    /// Headers to set on, and to remove from, the upstream request.
    Allow { set: Vec<(HeaderName, HeaderValue)>, remove: Vec<HeaderName> },
    /// The reply to send to the client.
    Deny(Box<Response<ResponseBody>>),
}

/// A failure to get a decision from the authorization service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authorization cluster {0:?} not found")]
    ClusterNotFound(String),
    #[error("authorization cluster {0:?} has no healthy endpoint")]
    NoHealthyEndpoint(String),
    #[error("authorization request failed")]
    Upstream(#[source] UpstreamError),
    #[error("authorization service did not answer within the timeout")]
    TimedOut,
    #[error("reading the authorization response failed: {0}")]
    Body(String),
    #[error("authorization request could not be built")]
    InvalidRequest,
    #[error("authorization call failed with gRPC status {code}")]
    GrpcStatus { code: u32 },
    #[error("authorization response is not a valid CheckResponse")]
    InvalidResponse,
}

/// Runs the filter on one request. Returns the reply for a denied request,
/// or for one the filter rejects because the service failed.
pub async fn check(config: &ExtAuthz, parts: &mut Parts, snapshot: &Snapshot, stats: &ProxyStats) -> Result<(), Box<Response<ResponseBody>>> {
    let decision = match &config.service {
        ExtAuthzService::Http(service) => http_service::check(service, &config.allowed_headers, parts, snapshot).await,
        ExtAuthzService::Grpc { cluster, timeout } => {
            grpc_service::check(cluster, *timeout, &config.allowed_headers, parts, snapshot).await
        }
    };
    match decision {
        Ok(Decision::Allow { set, remove }) => {
            stats.http.count_ext_authz("ok");
            for name in remove {
                parts.headers.remove(name);
            }
            for (name, value) in set {
                parts.headers.insert(name, value);
            }
            Ok(())
        }
        Ok(Decision::Deny(mut reply)) => {
            debug!(status = reply.status().as_u16(), path = parts.uri.path(), "external authorization denied the request");
            stats.http.count_ext_authz("denied");
            stats.http.count_flag(ResponseFlag::UnauthorizedExternalService);
            reply.extensions_mut().insert(ResponseFlag::UnauthorizedExternalService);
            Err(reply)
        }
        Err(error) if config.failure_mode_allow => {
            debug!(error = %error, "external authorization failed; failure_mode_allow passes the request");
            stats.http.count_ext_authz("failure_mode_allowed");
            Ok(())
        }
        Err(error) => {
            debug!(error = %error, "external authorization failed; the request is rejected");
            stats.http.count_ext_authz("error");
            stats.http.count_flag(ResponseFlag::UnauthorizedExternalService);
            let status = StatusCode::from_u16(config.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
            let mut reply = local_reply(status, "external authorization failed");
            reply.extensions_mut().insert(ResponseFlag::UnauthorizedExternalService);
            Err(Box::new(reply))
        }
    }
}

fn allowed(matchers: &[HeaderMatch], name: &str) -> bool {
    matchers.iter().any(|matcher| value_matches(matcher, name))
}

/// A whole response from the authorization service.
struct ServiceResponse {
    parts: http::response::Parts,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// Sends a request to an endpoint of `cluster` and reads the whole response,
/// all before `deadline`.
async fn call(cluster_name: &str, request: Request<RequestBody>, deadline: Instant, snapshot: &Snapshot) -> Result<ServiceResponse, AuthError> {
    let cluster = snapshot.clusters.get(cluster_name).ok_or_else(|| AuthError::ClusterNotFound(cluster_name.to_string()))?;
    let endpoint = cluster.balancer.pick(None).ok_or_else(|| AuthError::NoHealthyEndpoint(cluster_name.to_string()))?;
    let limits = ConnectionLimits::new(&cluster.config.circuit_breakers, Priority::Default);
    let timers = StreamTimers { deadline: Some(deadline), idle: None };
    let exchange = async {
        let response = endpoint.send(request, timers, &limits).await.map_err(AuthError::Upstream)?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE_BODY).collect().await.map_err(|error| AuthError::Body(error.to_string()))?;
        let trailers = collected.trailers().cloned();
        Ok(ServiceResponse { parts, body: collected.to_bytes(), trailers })
    };
    tokio::time::timeout_at(deadline, exchange).await.unwrap_or(Err(AuthError::TimedOut))
}
