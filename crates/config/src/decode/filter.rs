//! HTTP filter list of the connection manager, and the CORS and gRPC
//! settings that routes and virtual hosts carry.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderValue;

use legate_api::envoy::config::route::v3 as route_api;
use legate_api::envoy::extensions::filters::http::cors::v3 as cors_api;
use legate_api::envoy::extensions::filters::http::grpc_stats::v3 as stats_api;
use legate_api::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
use legate_api::envoy::extensions::filters::http::router::v3::Router;
use legate_api::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use legate_api::envoy::r#type::matcher::v3::StringMatcher;

use super::auth::{API_KEY_AUTH_NAME, API_KEY_AUTH_TYPE};
use super::ext_authz::{EXT_AUTHZ_NAME, EXT_AUTHZ_TYPE};
use super::jwt_authn::{JWT_AUTHN_NAME, JWT_AUTHN_TYPE};
use super::rate_limit::{LOCAL_RATELIMIT_NAME, LOCAL_RATELIMIT_TYPE};
use super::transcoder::{TRANSCODER_NAME, TRANSCODER_TYPE};
use super::{decode_message, duration, note_ignored};
use crate::error::Collector;
use crate::model::{CorsPolicy, GrpcStatsConfig, HttpFilter, MaxStreamDuration};
use crate::reflect::type_url_of;

const ROUTER_NAME: &str = "envoy.filters.http.router";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const GRPC_WEB_NAME: &str = "envoy.filters.http.grpc_web";
const GRPC_WEB_TYPE: &str = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb";
pub(crate) const CORS_NAME: &str = "envoy.filters.http.cors";
const CORS_TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
pub(crate) const CORS_POLICY_TYPE: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
const GRPC_STATS_NAME: &str = "envoy.filters.http.grpc_stats";
const GRPC_STATS_TYPE: &str = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

/// The filter kinds Legate runs, by config type and by filter name.
const KNOWN: [(&str, &str); 9] = [
    (ROUTER_TYPE, ROUTER_NAME),
    (GRPC_WEB_TYPE, GRPC_WEB_NAME),
    (CORS_TYPE, CORS_NAME),
    (GRPC_STATS_TYPE, GRPC_STATS_NAME),
    (API_KEY_AUTH_TYPE, API_KEY_AUTH_NAME),
    (LOCAL_RATELIMIT_TYPE, LOCAL_RATELIMIT_NAME),
    (EXT_AUTHZ_TYPE, EXT_AUTHZ_NAME),
    (JWT_AUTHN_TYPE, JWT_AUTHN_NAME),
    (TRANSCODER_TYPE, TRANSCODER_NAME),
];

/// Decodes `http_filters`: each known filter once, the router last. An
/// unknown filter is an error unless it is marked `is_optional`.
pub(crate) fn http_filters(filters: &[hcm::HttpFilter], errors: &mut Collector) -> Vec<HttpFilter> {
    if filters.is_empty() {
        errors.missing(ROUTER_NAME);
        return Vec::new();
    }

    let mut decoded = Vec::with_capacity(filters.len());
    let last = filters.len() - 1;
    for (index, filter) in filters.iter().enumerate() {
        let Some(http_filter) = errors.at(format!("[{index}]"), |errors| http_filter(filter, index == last, errors)) else {
            continue;
        };
        if decoded.iter().any(|seen| std::mem::discriminant(seen) == std::mem::discriminant(&http_filter)) {
            errors.at(format!("[{index}]"), |errors| errors.invalid(format!("filter {:?} is listed twice", filter.name)));
        }
        decoded.push(http_filter);
    }
    if !matches!(decoded.last(), Some(HttpFilter::Router)) && !errors.has_errors() {
        errors.missing(ROUTER_NAME);
    }
    decoded
}

fn http_filter(filter: &hcm::HttpFilter, is_last: bool, errors: &mut Collector) -> Option<HttpFilter> {
    let config = filter.config_type.as_ref().map(|hcm::http_filter::ConfigType::TypedConfig(config)| config);
    let kind = match config {
        Some(config) => KNOWN.iter().find(|(type_name, _)| config.type_url == type_url_of(type_name)),
        None => KNOWN.iter().find(|(_, name)| filter.name == *name),
    };
    let Some((type_name, name)) = kind else {
        if filter.is_optional {
            errors.ignored(&format!("optional HTTP filter {:?}", filter.name));
        } else {
            errors.unsupported(format!("HTTP filter {:?} is not supported by Legate", filter.name));
        }
        return None;
    };
    if filter.disabled {
        errors.invalid(format!("{name} cannot be disabled; remove it from http_filters instead"));
    }
    let is_router = *type_name == ROUTER_TYPE;
    if is_router != is_last {
        errors.invalid(format!("{ROUTER_NAME} must be the last HTTP filter, and only the last"));
    }

    let bytes: &[u8] = config.map(|config| config.value.as_slice()).unwrap_or_default();
    errors.at("typed_config", |errors| match *type_name {
        ROUTER_TYPE => {
            let router = decode_message::<Router>(bytes, errors)?;
            note_ignored(router.dynamic_stats.is_some(), "dynamic_stats", errors);
            Some(HttpFilter::Router)
        }
        GRPC_WEB_TYPE => decode_message::<GrpcWeb>(bytes, errors).map(|_| HttpFilter::GrpcWeb),
        CORS_TYPE => decode_message::<cors_api::Cors>(bytes, errors).map(|_| HttpFilter::Cors),
        API_KEY_AUTH_TYPE => super::auth::api_key_auth(bytes, errors).map(|config| HttpFilter::ApiKeyAuth(Arc::new(config))),
        EXT_AUTHZ_TYPE => super::ext_authz::ext_authz(bytes, errors).map(|config| HttpFilter::ExtAuthz(Arc::new(config))),
        JWT_AUTHN_TYPE => super::jwt_authn::jwt_authn(bytes, errors).map(|config| HttpFilter::JwtAuthn(Arc::new(config))),
        TRANSCODER_TYPE => {
            super::transcoder::grpc_json_transcoder(bytes, errors).map(|config| HttpFilter::GrpcJsonTranscoder(Arc::new(config)))
        }
        LOCAL_RATELIMIT_TYPE => {
            super::rate_limit::local_rate_limit(bytes, false, errors).map(|config| HttpFilter::LocalRateLimit(Arc::new(config)))
        }
        _ => {
            let proto = decode_message::<stats_api::FilterConfig>(bytes, errors)?;
            Some(HttpFilter::GrpcStats(grpc_stats(&proto, errors)))
        }
    })
}

fn grpc_stats(proto: &stats_api::FilterConfig, errors: &mut Collector) -> GrpcStatsConfig {
    use stats_api::filter_config::PerMethodStatSpecifier;

    match &proto.per_method_stat_specifier {
        None => GrpcStatsConfig::None,
        Some(PerMethodStatSpecifier::StatsForAllMethods(all)) if *all => GrpcStatsConfig::AllMethods,
        Some(PerMethodStatSpecifier::StatsForAllMethods(_)) => GrpcStatsConfig::None,
        Some(PerMethodStatSpecifier::IndividualMethodStatsAllowlist(list)) => {
            let mut services: HashMap<String, Vec<String>> = HashMap::new();
            for (index, service) in list.services.iter().enumerate() {
                errors.at(format!("individual_method_stats_allowlist.services[{index}]"), |errors| {
                    if service.name.is_empty() {
                        errors.missing("name");
                    }
                    services.entry(service.name.clone()).or_default().extend(service.method_names.iter().cloned());
                });
            }
            GrpcStatsConfig::Allowlist(services)
        }
    }
}

/// Decodes the older `cors` field of a virtual host or route.
pub(crate) fn route_cors(proto: &route_api::CorsPolicy, errors: &mut Collector) -> Option<Arc<CorsPolicy>> {
    let fields = CorsFields {
        origins: &proto.allow_origin_string_match,
        methods: &proto.allow_methods,
        headers: &proto.allow_headers,
        expose: &proto.expose_headers,
        max_age: &proto.max_age,
        credentials: proto.allow_credentials,
    };
    cors_policy(&fields, errors)
}

/// Decodes a CORS filter's per-route config (`typed_per_filter_config`
/// under `envoy.filters.http.cors`).
pub(crate) fn filter_cors(bytes: &[u8], errors: &mut Collector) -> Option<Arc<CorsPolicy>> {
    let proto = decode_message::<cors_api::CorsPolicy>(bytes, errors)?;
    let fields = CorsFields {
        origins: &proto.allow_origin_string_match,
        methods: &proto.allow_methods,
        headers: &proto.allow_headers,
        expose: &proto.expose_headers,
        max_age: &proto.max_age,
        credentials: proto.allow_credentials,
    };
    cors_policy(&fields, errors)
}

/// The fields both CORS policy messages share.
struct CorsFields<'a> {
    origins: &'a [StringMatcher],
    methods: &'a str,
    headers: &'a str,
    expose: &'a str,
    max_age: &'a str,
    credentials: Option<bool>,
}

fn cors_policy(fields: &CorsFields<'_>, errors: &mut Collector) -> Option<Arc<CorsPolicy>> {
    let allow_origins = fields
        .origins
        .iter()
        .enumerate()
        .filter_map(|(index, matcher)| {
            errors.at(format!("allow_origin_string_match[{index}]"), |errors| super::route::string_matcher(matcher, errors))
        })
        .collect();
    if !fields.max_age.is_empty() && !fields.max_age.bytes().all(|b| b.is_ascii_digit()) {
        errors.at("max_age", |errors| errors.invalid(format!("max_age {:?} must be a number of seconds", fields.max_age)));
    }
    Some(Arc::new(CorsPolicy {
        allow_origins,
        allow_methods: header_value(fields.methods, "allow_methods", errors),
        allow_headers: header_value(fields.headers, "allow_headers", errors),
        expose_headers: header_value(fields.expose, "expose_headers", errors),
        max_age: header_value(fields.max_age, "max_age", errors),
        allow_credentials: fields.credentials.unwrap_or(false),
    }))
}

fn header_value(text: &str, field: &'static str, errors: &mut Collector) -> Option<HeaderValue> {
    if text.is_empty() {
        return None;
    }
    match HeaderValue::from_str(text) {
        Ok(value) => Some(value),
        Err(_) => {
            errors.at(field, |errors| errors.invalid(format!("{text:?} is not a valid header value")));
            None
        }
    }
}

/// Decodes a route's `max_stream_duration`.
pub(crate) fn max_stream_duration(
    proto: &route_api::route_action::MaxStreamDuration,
    errors: &mut Collector,
) -> MaxStreamDuration {
    let read = |value: Option<&prost_types::Duration>, field: &'static str, errors: &mut Collector| {
        value.and_then(|value| errors.at(field, |errors| duration(value, errors)))
    };
    MaxStreamDuration {
        max_stream_duration: read(proto.max_stream_duration.as_ref(), "max_stream_duration", errors).filter(|d| !d.is_zero()),
        grpc_timeout_header_max: read(proto.grpc_timeout_header_max.as_ref(), "grpc_timeout_header_max", errors),
        grpc_timeout_header_offset: read(proto.grpc_timeout_header_offset.as_ref(), "grpc_timeout_header_offset", errors)
            .unwrap_or_default(),
    }
}
