//! Decoding of the external authorization filter and its per-route settings.

use std::time::Duration;

use http::HeaderValue;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::extensions::filters::http::ext_authz::v3 as api;
use legate_api::envoy::r#type::matcher::v3::ListStringMatcher;

use super::auth::header_name;
use super::{decode_message, duration};
use crate::error::Collector;
use crate::model::{ExtAuthz, ExtAuthzService, HeaderMatch, HttpAuthService};

pub(crate) const EXT_AUTHZ_NAME: &str = "envoy.filters.http.ext_authz";
pub(crate) const EXT_AUTHZ_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub(crate) const EXT_AUTHZ_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// Envoy's default time allowed for an authorization call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

pub(crate) fn ext_authz(bytes: &[u8], errors: &mut Collector) -> Option<ExtAuthz> {
    let proto = decode_message::<api::ExtAuthz>(bytes, errors)?;
    let service = match &proto.services {
        Some(api::ext_authz::Services::HttpService(http)) => errors.at("http_service", |errors| http_service(http, errors)),
        Some(api::ext_authz::Services::GrpcService(grpc)) => errors.at("grpc_service", |errors| grpc_service(grpc, errors)),
        None => {
            errors.missing("http_service or grpc_service");
            None
        }
    }?;
    let status_on_error = proto.status_on_error.as_ref().map_or(403, |status| status.code as u16);
    if !(200..600).contains(&status_on_error) {
        errors.at("status_on_error", |errors| errors.invalid(format!("status {status_on_error} is not an HTTP status")));
    }
    let allowed_headers = errors.at("allowed_headers", |errors| matchers(proto.allowed_headers.as_ref(), errors));
    Some(ExtAuthz { service, failure_mode_allow: proto.failure_mode_allow, status_on_error, allowed_headers })
}

fn http_service(proto: &api::HttpService, errors: &mut Collector) -> Option<ExtAuthzService> {
    let Some(server_uri) = &proto.server_uri else {
        errors.missing("server_uri");
        return None;
    };
    let Some(core::http_uri::HttpUpstreamType::Cluster(cluster)) = &server_uri.http_upstream_type else {
        errors.missing("server_uri.cluster");
        return None;
    };
    // The request goes to `cluster` with the original request's host, so
    // the URI is only checked.
    if server_uri.uri.parse::<http::Uri>().is_err() {
        errors.at("server_uri", |errors| errors.invalid(format!("uri {:?} is not a valid URI", server_uri.uri)));
    }
    let timeout = errors.at("server_uri", |errors| timeout(server_uri.timeout.as_ref(), errors));
    if !proto.path_prefix.is_empty() && !proto.path_prefix.starts_with('/') {
        errors.at("path_prefix", |errors| errors.invalid(format!("path_prefix {:?} must start with '/'", proto.path_prefix)));
    }
    let request = proto.authorization_request.clone().unwrap_or_default();
    let response = proto.authorization_response.clone().unwrap_or_default();
    Some(ExtAuthzService::Http(HttpAuthService {
        cluster: cluster.clone(),
        timeout,
        path_prefix: proto.path_prefix.clone(),
        allowed_headers: errors.at("authorization_request.allowed_headers", |errors| matchers(request.allowed_headers.as_ref(), errors)),
        headers_to_add: errors.at("authorization_request.headers_to_add", |errors| headers(&request.headers_to_add, errors)),
        allowed_upstream_headers: errors
            .at("authorization_response.allowed_upstream_headers", |errors| matchers(response.allowed_upstream_headers.as_ref(), errors)),
        allowed_client_headers: errors
            .at("authorization_response.allowed_client_headers", |errors| matchers(response.allowed_client_headers.as_ref(), errors)),
    }))
}

fn grpc_service(proto: &core::GrpcService, errors: &mut Collector) -> Option<ExtAuthzService> {
    let Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(grpc)) = &proto.target_specifier else {
        errors.missing("envoy_grpc");
        return None;
    };
    if grpc.cluster_name.is_empty() {
        errors.missing("envoy_grpc.cluster_name");
    }
    let timeout = timeout(proto.timeout.as_ref(), errors);
    Some(ExtAuthzService::Grpc { cluster: grpc.cluster_name.clone(), timeout })
}

fn timeout(proto: Option<&prost_types::Duration>, errors: &mut Collector) -> Duration {
    let Some(value) = proto else { return DEFAULT_TIMEOUT };
    let timeout = errors.at("timeout", |errors| duration(value, errors)).unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        errors.at("timeout", |errors| errors.invalid("timeout must be greater than 0"));
    }
    timeout
}

fn matchers(proto: Option<&ListStringMatcher>, errors: &mut Collector) -> Vec<HeaderMatch> {
    let Some(list) = proto else { return Vec::new() };
    list.patterns
        .iter()
        .enumerate()
        .filter_map(|(index, pattern)| errors.at(format!("patterns[{index}]"), |errors| super::route::string_matcher(pattern, errors)))
        .collect()
}

fn headers(proto: &[core::HeaderValue], errors: &mut Collector) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(proto.len());
    for (index, header) in proto.iter().enumerate() {
        errors.at(format!("[{index}]"), |errors| {
            let name = header_name(&header.key, "key", errors);
            match (name, HeaderValue::from_str(&header.value)) {
                (Some(name), Ok(value)) => headers.push((name, value)),
                (_, Err(_)) => errors.at("value", |errors| errors.invalid(format!("{:?} is not a valid header value", header.value))),
                _ => {}
            }
        });
    }
    headers
}

/// Reads `ExtAuthzPerRoute`, where Legate supports `disabled: true` only.
pub(crate) fn ext_authz_per_route(bytes: &[u8], errors: &mut Collector) -> bool {
    let Some(proto) = decode_message::<api::ExtAuthzPerRoute>(bytes, errors) else { return false };
    match proto.r#override {
        Some(api::ext_authz_per_route::Override::Disabled(true)) => true,
        _ => {
            errors.invalid("ExtAuthzPerRoute must set disabled: true; Legate has no per-route check_settings");
            false
        }
    }
}
