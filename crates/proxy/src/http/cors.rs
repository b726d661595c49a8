//! The CORS filter: replies to preflight requests at the proxy, and CORS
//! headers on the responses to allowed origins.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use legate_config::model::CorsPolicy;

use super::body::ResponseBody;
use crate::router::value_matches;

/// Tells whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(parts: &Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Returns the request's origin when the policy allows it.
pub fn allowed_origin<'a>(policy: &CorsPolicy, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    policy.allow_origins.iter().any(|matcher| value_matches(matcher, text)).then_some(origin)
}

/// Builds the reply to a preflight. An allowed origin gets the policy's methods,
/// headers and max age; any other origin gets a 200 with no CORS header,
/// so the browser blocks the real request. The preflight never reaches
/// the upstream.
pub fn preflight_reply(policy: &CorsPolicy, parts: &Parts) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Local(None));
    *response.status_mut() = StatusCode::OK;
    let Some(origin) = allowed_origin(policy, &parts.headers) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Some(methods) = &policy.allow_methods {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
    }
    if let Some(allowed) = &policy.allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
    }
    if let Some(max_age) = &policy.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
    }
    if policy.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// Adds CORS headers to a real response when the origin is allowed.
pub fn add_response_headers(policy: &CorsPolicy, origin: &HeaderValue, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if let Some(exposed) = &policy.expose_headers {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
    }
    if policy.allow_credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}
