//! Authorization by an HTTP service: the request's method, path with query
//! string and selected headers go to the service, and a 200 reply allows
//! the request.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::Uri;
use http::{Request, Response, Version};
use tokio::time::Instant;

use legate_config::model::{HeaderMatch, HttpAuthService, UpstreamProtocol};

use super::{allowed, call, AuthError, Decision};
use crate::http::body::{RequestBody, ResponseBody};
use crate::snapshot::Snapshot;

/// Headers always sent to the service when the request has them, besides
/// the method, path and host.
const ALWAYS_SENT: [header::HeaderName; 1] = [header::AUTHORIZATION];

/// Headers of a denying reply passed to the client whatever
/// `allowed_client_headers` matches.
const ALWAYS_PASSED: [header::HeaderName; 2] = [header::LOCATION, header::WWW_AUTHENTICATE];

/// Asks the service about a request. `allowed_headers` is the filter's
/// list, which adds to the service's own.
pub(super) async fn check(
    service: &HttpAuthService,
    allowed_headers: &[HeaderMatch],
    parts: &Parts,
    snapshot: &Snapshot,
) -> Result<Decision, AuthError> {
    let deadline = Instant::now() + service.timeout;
    let protocol = snapshot.clusters.get(service.cluster.as_str()).map_or(UpstreamProtocol::Http1, |cluster| cluster.config.protocol);
    let sent = |name: &str| allowed(&service.allowed_headers, name) || allowed(allowed_headers, name);
    let request = authorization_request(service, &sent, parts, protocol)?;
    let response = call(&service.cluster, request, deadline, snapshot).await?;

    if response.parts.status == http::StatusCode::OK {
        let set = response
            .parts
            .headers
            .iter()
            .filter(|(name, _)| allowed(&service.allowed_upstream_headers, name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        return Ok(Decision::Allow { set, remove: Vec::new() });
    }

    let mut reply = Response::new(ResponseBody::local(response.body));
    *reply.status_mut() = response.parts.status;
    for (name, value) in &response.parts.headers {
        let listed = service.allowed_client_headers.is_empty()
            || ALWAYS_PASSED.contains(name)
            || allowed(&service.allowed_client_headers, name.as_str());
        let passed = listed && !is_framing(name);
        if passed {
            reply.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(Decision::Deny(Box::new(reply)))
}

/// Builds the request to the service: the original method, `path_prefix`
/// and the original path with its query string, the host, and the allowed
/// headers, with no body.
fn authorization_request(
    service: &HttpAuthService,
    sent: &dyn Fn(&str) -> bool,
    parts: &Parts,
    protocol: UpstreamProtocol,
) -> Result<Request<RequestBody>, AuthError> {
    let original = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let path = format!("{}{original}", service.path_prefix.trim_end_matches('/'));
    let host = crate::http::headers::parts_host(parts).unwrap_or("").to_string();

    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if ALWAYS_SENT.contains(name) || sent(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &service.headers_to_add {
        headers.insert(name.clone(), value.clone());
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    headers.remove(header::UPGRADE);
    headers.insert("x-envoy-expected-rq-timeout-ms", HeaderValue::from(service.timeout.as_millis() as u64));

    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = parts.method.clone();
    match protocol {
        UpstreamProtocol::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = path.parse::<Uri>().map_err(|_| AuthError::InvalidRequest)?;
            headers.insert(header::HOST, host.parse().map_err(|_| AuthError::InvalidRequest)?);
        }
        UpstreamProtocol::Http2 => {
            *request.version_mut() = Version::HTTP_2;
            let uri = Uri::builder().scheme("http").authority(host.as_str()).path_and_query(path).build();
            *request.uri_mut() = uri.map_err(|_| AuthError::InvalidRequest)?;
            headers.remove(header::HOST);
        }
    }
    *request.headers_mut() = headers;
    Ok(request)
}

/// Headers of the service's reply that describe its own framing, which the
/// reply to the client sets itself.
fn is_framing(name: &header::HeaderName) -> bool {
    [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION].contains(name)
}
