//! Authorization by a gRPC service: `envoy.service.auth.v3.Authorization/Check`
//! with the request's method, path, host and headers.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use prost::Message;
use tokio::time::Instant;

use legate_api::envoy::config::core::v3::HeaderValueOption;
use legate_config::model::HeaderMatch;
use legate_api::envoy::service::auth::v3::attribute_context::{HttpRequest, Request as AttributeRequest};
use legate_api::envoy::service::auth::v3::check_response::HttpResponse;
use legate_api::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use super::{allowed, call, AuthError, Decision};
use crate::http::body::{RequestBody, ResponseBody};
use crate::snapshot::Snapshot;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Calls `Check` about a request, with the headers `allowed_headers`
/// matches, or all of them when it is empty.
pub(super) async fn check(
    cluster: &str,
    timeout: Duration,
    allowed_headers: &[HeaderMatch],
    parts: &Parts,
    snapshot: &Snapshot,
) -> Result<Decision, AuthError> {
    let deadline = Instant::now() + timeout;
    let request = check_call(cluster, timeout, allowed_headers, parts)?;
    let response = call(cluster, request, deadline, snapshot).await?;

    let status = response.trailers.as_ref().and_then(|trailers| trailers.get("grpc-status")).or_else(|| response.parts.headers.get("grpc-status"));
    let code = status.and_then(|value| value.to_str().ok()?.parse::<u32>().ok()).unwrap_or(2);
    if response.parts.status != StatusCode::OK || code != 0 {
        return Err(AuthError::GrpcStatus { code });
    }
    let message = response.body.get(5..).ok_or(AuthError::InvalidResponse)?;
    let check = CheckResponse::decode(message).map_err(|_| AuthError::InvalidResponse)?;
    Ok(decision(check))
}

/// Turns a `CheckResponse` into a decision: status code 0 allows, any other denies.
fn decision(check: CheckResponse) -> Decision {
    let allowed = check.status.as_ref().is_none_or(|status| status.code == 0);
    if allowed {
        let Some(HttpResponse::OkResponse(ok)) = check.http_response else {
            return Decision::Allow { set: Vec::new(), remove: Vec::new() };
        };
        let remove = ok.headers_to_remove.iter().filter_map(|name| HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()).collect();
        return Decision::Allow { set: header_pairs(&ok.headers), remove };
    }

    let denied = match check.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        _ => Default::default(),
    };
    let status = denied.status.as_ref().and_then(|status| StatusCode::from_u16(status.code as u16).ok()).unwrap_or(StatusCode::FORBIDDEN);
    let mut reply = Response::new(ResponseBody::local(denied.body));
    *reply.status_mut() = status;
    for (name, value) in header_pairs(&denied.headers) {
        reply.headers_mut().append(name, value);
    }
    Decision::Deny(Box::new(reply))
}

fn header_pairs(options: &[HeaderValueOption]) -> Vec<(HeaderName, HeaderValue)> {
    options
        .iter()
        .filter_map(|option| {
            let header = option.header.as_ref()?;
            let name = HeaderName::from_bytes(header.key.to_ascii_lowercase().as_bytes()).ok()?;
            Some((name, HeaderValue::from_str(&header.value).ok()?))
        })
        .collect()
}

/// Builds the HTTP/2 request of the `Check` call.
fn check_call(cluster: &str, timeout: Duration, allowed_headers: &[HeaderMatch], parts: &Parts) -> Result<Request<RequestBody>, AuthError> {
    let message = check_request(allowed_headers, parts).encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0);
    body.put_u32(message.len() as u32);
    body.put_slice(&message);

    let uri = http::Uri::builder().scheme("http").authority(cluster).path_and_query(CHECK_PATH).build().map_err(|_| AuthError::InvalidRequest)?;
    let mut request = Request::new(RequestBody::Full(Some(body.freeze())));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", format!("{}m", timeout.as_millis().max(1)).parse().map_err(|_| AuthError::InvalidRequest)?);
    Ok(request)
}

/// Describes the request: method, path with query string, host, protocol
/// and headers (values of a repeated header joined by commas).
fn check_request(allowed_headers: &[HeaderMatch], parts: &Parts) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::with_capacity(parts.headers.keys_len());
    let sent = parts.headers.iter().filter(|(name, _)| allowed_headers.is_empty() || allowed(allowed_headers, name.as_str()));
    for (name, value) in sent {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers.entry(name.as_str().to_string()).and_modify(|joined| {
            joined.push(',');
            joined.push_str(&value);
        }).or_insert_with(|| value.into_owned());
    }
    let http = HttpRequest {
        id: parts.headers.get("x-request-id").and_then(|id| id.to_str().ok()).unwrap_or("").to_string(),
        method: parts.method.as_str().to_string(),
        path: parts.uri.path_and_query().map_or("/", |path| path.as_str()).to_string(),
        host: crate::http::headers::parts_host(parts).unwrap_or("").to_string(),
        scheme: "http".to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        protocol: match parts.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        }
        .to_string(),
        headers,
    };
    CheckRequest { attributes: Some(AttributeContext { request: Some(AttributeRequest { http: Some(http) }) }) }
}
