//! Decoding of a filter chain's `filters`: the connection rate limit and the
//! connection limit, in any order, then the HTTP connection manager last.

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::listener::v3 as api;
use legate_api::envoy::extensions::filters::network::connection_limit::v3 as connection_limit;
use legate_api::envoy::extensions::filters::network::local_ratelimit::v3 as local_ratelimit;

use super::decode_message;
use crate::error::Collector;
use crate::model::{ConnectionFilter, ConnectionLimit, ConnectionRateLimit, HttpConnectionManager};
use crate::reflect::type_url_of;

const LOCAL_RATELIMIT_NAME: &str = "envoy.filters.network.local_ratelimit";
const LOCAL_RATELIMIT_TYPE: &str = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
const CONNECTION_LIMIT_NAME: &str = "envoy.filters.network.connection_limit";
const CONNECTION_LIMIT_TYPE: &str = "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";

/// Decodes a filter chain's `filters`: connection filters first, each kind
/// at most once, and the connection manager last.
pub(super) fn filters(filters: &[api::Filter], errors: &mut Collector) -> Option<(Vec<ConnectionFilter>, HttpConnectionManager)> {
    let Some((last, before)) = filters.split_last() else {
        errors.missing("filters");
        return None;
    };
    let mut decoded = Vec::new();
    let mut valid = true;
    for (index, filter) in before.iter().enumerate() {
        match errors.at(format!("filters[{index}]"), |errors| connection_filter(filter, &decoded, errors)) {
            Some(filter) => decoded.push(filter),
            None => valid = false,
        }
    }
    let http = errors.at(format!("filters[{}]", before.len()), |errors| {
        if is_connection_filter(last) {
            errors.invalid("the HTTP connection manager must be the last filter, after the connection filters");
            return None;
        }
        super::listener::network_filter(last, errors)
    });
    valid.then_some((decoded, http?))
}

fn is_connection_filter(filter: &api::Filter) -> bool {
    match &filter.config_type {
        Some(api::filter::ConfigType::TypedConfig(config)) => {
            config.type_url == type_url_of(LOCAL_RATELIMIT_TYPE) || config.type_url == type_url_of(CONNECTION_LIMIT_TYPE)
        }
        None => false,
    }
}

/// Decodes one filter before the connection manager. `earlier` contains the
/// filters decoded before it, to reject a second filter of the same kind.
fn connection_filter(filter: &api::Filter, earlier: &[ConnectionFilter], errors: &mut Collector) -> Option<ConnectionFilter> {
    let Some(api::filter::ConfigType::TypedConfig(config)) = &filter.config_type else {
        errors.missing("typed_config");
        return None;
    };
    let (decoded, name) = if config.type_url == type_url_of(LOCAL_RATELIMIT_TYPE) {
        let limit = errors.at("typed_config", |errors| rate_limit(&config.value, errors))?;
        (ConnectionFilter::LocalRateLimit(limit), LOCAL_RATELIMIT_NAME)
    } else if config.type_url == type_url_of(CONNECTION_LIMIT_TYPE) {
        let limit = errors.at("typed_config", |errors| connection_limit(&config.value, errors))?;
        (ConnectionFilter::ConnectionLimit(limit), CONNECTION_LIMIT_NAME)
    } else {
        errors.unsupported(format!(
            "network filter {:?} ({}) is not supported before the last filter; Legate supports {LOCAL_RATELIMIT_NAME} and \
             {CONNECTION_LIMIT_NAME} there, then the HTTP connection manager last",
            filter.name, config.type_url
        ));
        return None;
    };
    if earlier.iter().any(|other| std::mem::discriminant(other) == std::mem::discriminant(&decoded)) {
        errors.invalid(format!("{name} appears more than once in the filter chain"));
        return None;
    }
    Some(decoded)
}

fn rate_limit(bytes: &[u8], errors: &mut Collector) -> Option<ConnectionRateLimit> {
    let proto = decode_message::<local_ratelimit::LocalRateLimit>(bytes, errors)?;
    if proto.stat_prefix.is_empty() {
        errors.missing("stat_prefix");
    }
    if !proto.share_key.is_empty() {
        errors.at("share_key", |errors| {
            errors.unsupported("share_key is not supported; each filter chain config has its own bucket")
        });
    }
    let enabled = errors.at("runtime_enabled", |errors| runtime_enabled(proto.runtime_enabled.as_ref(), errors));
    let Some(bucket) = &proto.token_bucket else {
        errors.missing("token_bucket");
        return None;
    };
    let token_bucket = errors.at("token_bucket", |errors| super::rate_limit::token_bucket(bucket, errors))?;
    if token_bucket.max_tokens == 0 {
        errors.at("token_bucket.max_tokens", |errors| errors.invalid("max_tokens must be at least 1"));
    }
    Some(ConnectionRateLimit { stat_prefix: proto.stat_prefix, token_bucket, enabled })
}

fn connection_limit(bytes: &[u8], errors: &mut Collector) -> Option<ConnectionLimit> {
    let proto = decode_message::<connection_limit::ConnectionLimit>(bytes, errors)?;
    if proto.stat_prefix.is_empty() {
        errors.missing("stat_prefix");
    }
    let enabled = errors.at("runtime_enabled", |errors| runtime_enabled(proto.runtime_enabled.as_ref(), errors));
    let delay = match &proto.delay {
        Some(delay) => Some(errors.at("delay", |errors| super::duration(delay, errors))?).filter(|delay| !delay.is_zero()),
        None => None,
    };
    let max_connections = match proto.max_connections {
        Some(0) => {
            errors.at("max_connections", |errors| errors.invalid("max_connections must be at least 1"));
            return None;
        }
        Some(max) => max,
        None => {
            errors.missing("max_connections");
            return None;
        }
    };
    Some(ConnectionLimit { stat_prefix: proto.stat_prefix, max_connections, delay, enabled })
}

/// Reads `runtime_enabled`: Legate has no runtime, so its `default_value`
/// decides, and an unset flag means enabled.
fn runtime_enabled(flag: Option<&core::RuntimeFeatureFlag>, errors: &mut Collector) -> bool {
    match flag {
        None => true,
        Some(flag) => flag.default_value.unwrap_or_else(|| {
            errors.missing("default_value");
            true
        }),
    }
}
