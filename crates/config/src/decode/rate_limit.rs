//! Decoding of the local rate limit filter and of the route `rate_limits`
//! that build its descriptors.

use std::time::Duration;

use http::HeaderValue;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::route::v3 as route_api;
use legate_api::envoy::extensions::common::ratelimit::v3 as common;
use legate_api::envoy::extensions::filters::http::local_ratelimit::v3 as api;
use legate_api::envoy::r#type::v3::fractional_percent::DenominatorType;
use legate_api::envoy::r#type::v3 as types;

use super::auth::header_name;
use super::{decode_message, duration};
use crate::error::Collector;
use crate::model::{LocalRateLimit, LocalRateLimitDescriptor, RateLimit, RateLimitAction, TokenBucket};

pub(crate) const LOCAL_RATELIMIT_NAME: &str = "envoy.filters.http.local_ratelimit";
pub(crate) const LOCAL_RATELIMIT_TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// Envoy's default `max_dynamic_descriptors`.
const DEFAULT_MAX_DYNAMIC_DESCRIPTORS: usize = 20;

/// Shortest `fill_interval`, as Envoy requires, so refills stay cheap.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

/// Decodes a `LocalRateLimit`. At the filter level `token_bucket` may be
/// unset; in `typed_per_filter_config` (`per_route`) it is required.
pub(crate) fn local_rate_limit(bytes: &[u8], per_route: bool, errors: &mut Collector) -> Option<LocalRateLimit> {
    let proto = decode_message::<api::LocalRateLimit>(bytes, errors)?;
    if proto.stat_prefix.is_empty() {
        errors.missing("stat_prefix");
    }
    let token_bucket = proto.token_bucket.as_ref().and_then(|bucket| errors.at("token_bucket", |errors| token_bucket(bucket, errors)));
    if per_route && proto.token_bucket.is_none() {
        errors.missing("token_bucket");
    }
    let status = proto.status.as_ref().map_or(429, |status| status.code as u16);
    let descriptors = proto
        .descriptors
        .iter()
        .enumerate()
        .filter_map(|(index, descriptor)| errors.at(format!("descriptors[{index}]"), |errors| self::descriptor(descriptor, errors)))
        .collect();
    let x_ratelimit_headers = match common::XRateLimitHeadersRfcVersion::try_from(proto.enable_x_ratelimit_headers) {
        Ok(version) => version == common::XRateLimitHeadersRfcVersion::DraftVersion03,
        Err(_) => {
            errors.invalid(format!("enable_x_ratelimit_headers has unknown value {}", proto.enable_x_ratelimit_headers));
            false
        }
    };
    let max_dynamic_descriptors = proto.max_dynamic_descriptors.map_or(DEFAULT_MAX_DYNAMIC_DESCRIPTORS, |max| max as usize);
    if max_dynamic_descriptors == 0 {
        errors.at("max_dynamic_descriptors", |errors| errors.invalid("max_dynamic_descriptors must be at least 1"));
    }

    Some(LocalRateLimit {
        stat_prefix: proto.stat_prefix.clone(),
        status: if status < 400 { 429 } else { status },
        token_bucket,
        filter_enabled: errors.at("filter_enabled", |errors| fraction(proto.filter_enabled.as_ref(), errors)),
        filter_enforced: errors.at("filter_enforced", |errors| fraction(proto.filter_enforced.as_ref(), errors)),
        response_headers_to_add: errors.at("response_headers_to_add", |errors| headers_to_add(&proto.response_headers_to_add, errors)),
        descriptors,
        x_ratelimit_headers,
        always_consume_default_token_bucket: proto.always_consume_default_token_bucket.unwrap_or(true),
        rate_limited_as_resource_exhausted: proto.rate_limited_as_resource_exhausted,
        max_dynamic_descriptors,
    })
}

pub(crate) fn token_bucket(proto: &types::TokenBucket, errors: &mut Collector) -> Option<TokenBucket> {
    let fill_interval = match &proto.fill_interval {
        Some(interval) => errors.at("fill_interval", |errors| duration(interval, errors))?,
        None => {
            errors.missing("fill_interval");
            return None;
        }
    };
    if fill_interval < MIN_FILL_INTERVAL {
        errors.at("fill_interval", |errors| errors.invalid(format!("fill_interval {fill_interval:?} must be at least 50ms")));
    }
    let tokens_per_fill = proto.tokens_per_fill.unwrap_or(1);
    if tokens_per_fill == 0 {
        errors.at("tokens_per_fill", |errors| errors.invalid("tokens_per_fill must be greater than 0"));
    }
    Some(TokenBucket { max_tokens: proto.max_tokens, tokens_per_fill, fill_interval })
}

fn descriptor(proto: &common::LocalRateLimitDescriptor, errors: &mut Collector) -> Option<LocalRateLimitDescriptor> {
    if proto.entries.is_empty() {
        errors.missing("entries");
    }
    for (index, entry) in proto.entries.iter().enumerate() {
        if entry.key.is_empty() {
            errors.at(format!("entries[{index}]"), |errors| errors.missing("key"));
        }
    }
    let Some(bucket) = &proto.token_bucket else {
        errors.missing("token_bucket");
        return None;
    };
    let token_bucket = errors.at("token_bucket", |errors| token_bucket(bucket, errors))?;
    let entries = proto.entries.iter().map(|entry| (entry.key.clone(), entry.value.clone())).collect();
    Some(LocalRateLimitDescriptor { entries, token_bucket })
}

/// Reads a `RuntimeFractionalPercent` default as millionths; unset is 0%.
fn fraction(proto: Option<&core::RuntimeFractionalPercent>, errors: &mut Collector) -> u32 {
    let Some(percent) = proto.and_then(|proto| proto.default_value.as_ref()) else { return 0 };
    let scale = match DenominatorType::try_from(percent.denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => {
            errors.invalid(format!("denominator {} is unknown", percent.denominator));
            return 0;
        }
    };
    percent.numerator.saturating_mul(scale).min(1_000_000)
}

fn headers_to_add(proto: &[core::HeaderValueOption], errors: &mut Collector) -> Vec<(http::HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(proto.len());
    for (index, option) in proto.iter().enumerate() {
        errors.at(format!("[{index}].header"), |errors| {
            let Some(header) = &option.header else {
                errors.missing("header");
                return;
            };
            let name = header_name(&header.key, "key", errors);
            let value = HeaderValue::from_str(&header.value);
            if value.is_err() {
                errors.at("value", |errors| errors.invalid(format!("{:?} is not a valid header value", header.value)));
            }
            if let (Some(name), Ok(value)) = (name, value) {
                headers.push((name, value));
            }
        });
    }
    headers
}

/// Decodes a route's or virtual host's `rate_limits`.
pub(crate) fn rate_limits(proto: &[route_api::RateLimit], errors: &mut Collector) -> Vec<RateLimit> {
    proto
        .iter()
        .enumerate()
        .map(|(index, limit)| {
            errors.at(format!("rate_limits[{index}]"), |errors| {
                if limit.actions.is_empty() {
                    errors.missing("actions");
                }
                let actions = limit
                    .actions
                    .iter()
                    .enumerate()
                    .filter_map(|(index, action)| errors.at(format!("actions[{index}]"), |errors| self::action(action, errors)))
                    .collect();
                RateLimit { actions }
            })
        })
        .collect()
}

fn action(proto: &route_api::rate_limit::Action, errors: &mut Collector) -> Option<RateLimitAction> {
    use route_api::rate_limit::action::ActionSpecifier;

    match &proto.action_specifier {
        Some(ActionSpecifier::RequestHeaders(headers)) => {
            if headers.descriptor_key.is_empty() {
                errors.at("request_headers", |errors| errors.missing("descriptor_key"));
            }
            let header_name = errors.at("request_headers", |errors| header_name(&headers.header_name, "header_name", errors))?;
            Some(RateLimitAction::RequestHeaders {
                header_name,
                descriptor_key: headers.descriptor_key.clone(),
                skip_if_absent: headers.skip_if_absent,
            })
        }
        Some(ActionSpecifier::RemoteAddress(_)) => Some(RateLimitAction::RemoteAddress),
        Some(ActionSpecifier::GenericKey(key)) => {
            if key.descriptor_value.is_empty() {
                errors.at("generic_key", |errors| errors.missing("descriptor_value"));
            }
            let descriptor_key = if key.descriptor_key.is_empty() { "generic_key".to_string() } else { key.descriptor_key.clone() };
            Some(RateLimitAction::GenericKey { descriptor_key, descriptor_value: key.descriptor_value.clone() })
        }
        None => {
            errors.missing("request_headers, remote_address or generic_key");
            None
        }
    }
}
