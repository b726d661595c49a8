//! Listener and HttpConnectionManager decoding.

use std::time::Duration;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::listener::v3 as api;
use legate_api::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use super::{decode_message, enum_value, host_port, note_ignored, required_name, timeout_or, HostPort};
use crate::error::Collector;
use crate::model::{self, Codec, EscapedSlashes, Http2Settings, PathNormalization, RequestLimits, RouteSource, UpgradeConfig};
use crate::reflect::type_url_of;

const HCM_TYPE: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Envoy's defaults for the connection manager's timeouts.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle limit of upgraded connections when `stream_idle_timeout` is unset.
const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn listener(proto: &api::Listener, errors: &mut Collector) -> Option<model::Listener> {
    required_name(&proto.name, "name", errors);
    note_ignored(proto.metadata.is_some(), "metadata", errors);
    note_ignored(!proto.stat_prefix.is_empty(), "stat_prefix", errors);

    let address = match host_port(proto.address.as_ref(), false, errors) {
        Some(HostPort::Ip(address)) => Some(address),
        _ => None,
    };

    let http = match proto.filter_chains.as_slice() {
        [] => {
            errors.missing("filter_chains");
            None
        }
        [chain] => errors.at("filter_chains[0]", |errors| filter_chain(chain, errors)),
        _ => {
            errors.unsupported(
                "more than one filter chain needs filter_chain_match, which Legate does not support yet; use one filter chain",
            );
            None
        }
    };

    Some(model::Listener { name: proto.name.clone(), address: address?, http: http? })
}

fn filter_chain(chain: &api::FilterChain, errors: &mut Collector) -> Option<model::HttpConnectionManager> {
    note_ignored(chain.metadata.is_some(), "metadata", errors);
    note_ignored(!chain.name.is_empty(), "name", errors);

    match chain.filters.as_slice() {
        [filter] => errors.at("filters[0]", |errors| network_filter(filter, errors)),
        [] => {
            errors.missing("filters");
            None
        }
        _ => {
            errors.unsupported(format!(
                "only the network filter {HCM_TYPE} is supported, but the chain has {} filters",
                chain.filters.len()
            ));
            None
        }
    }
}

fn network_filter(filter: &api::Filter, errors: &mut Collector) -> Option<model::HttpConnectionManager> {
    let Some(api::filter::ConfigType::TypedConfig(config)) = &filter.config_type else {
        errors.missing("typed_config");
        return None;
    };
    if config.type_url != type_url_of(HCM_TYPE) {
        errors.unsupported(format!("network filter {:?} ({}) is not supported by Legate", filter.name, config.type_url));
        return None;
    }
    let proto = errors.at("typed_config", |errors| decode_message::<hcm::HttpConnectionManager>(&config.value, errors))?;
    errors.at("typed_config", |errors| connection_manager(&proto, errors))
}

fn connection_manager(proto: &hcm::HttpConnectionManager, errors: &mut Collector) -> Option<model::HttpConnectionManager> {
    let codec = match enum_value(proto.codec_type, "codec_type", errors)? {
        hcm::http_connection_manager::CodecType::Auto => Codec::Auto,
        hcm::http_connection_manager::CodecType::Http1 => Codec::Http1,
        hcm::http_connection_manager::CodecType::Http2 => Codec::Http2,
        hcm::http_connection_manager::CodecType::Http3 => {
            errors.at("codec_type", |errors| errors.unsupported("HTTP3 is not supported by Legate"));
            return None;
        }
    };

    let routes = route_source(proto, errors);
    let http_filters = errors.at("http_filters", |errors| super::filter::http_filters(&proto.http_filters, errors));

    let idle_timeout = proto.common_http_protocol_options.as_ref().and_then(|options| {
        errors.at("common_http_protocol_options.idle_timeout", |errors| {
            timeout_or(options.idle_timeout.as_ref(), Some(DEFAULT_IDLE_TIMEOUT), errors)
        })
    });
    let idle_timeout = if proto.common_http_protocol_options.is_none() { Some(DEFAULT_IDLE_TIMEOUT) } else { idle_timeout };

    let stream_idle_timeout = errors.at("stream_idle_timeout", |errors| {
        timeout_or(proto.stream_idle_timeout.as_ref(), Some(DEFAULT_STREAM_IDLE_TIMEOUT), errors)
    });
    let upgrade_idle_timeout = match &proto.stream_idle_timeout {
        Some(_) => stream_idle_timeout,
        None => Some(DEFAULT_UPGRADE_IDLE_TIMEOUT),
    };
    let request_timeout = errors.at("request_timeout", |errors| timeout_or(proto.request_timeout.as_ref(), None, errors));
    let drain_timeout = errors
        .at("drain_timeout", |errors| timeout_or(proto.drain_timeout.as_ref(), Some(DEFAULT_DRAIN_TIMEOUT), errors))
        .unwrap_or_default();

    let upgrades = proto
        .upgrade_configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            errors.at(format!("upgrade_configs[{index}]"), |errors| {
                upgrade(&config.upgrade_type, config.enabled, errors)
            })
        })
        .collect::<Vec<_>>();

    let limits = request_limits(proto, errors);
    let path = path_normalization(proto, errors);

    let access_logs = proto
        .access_log
        .iter()
        .enumerate()
        .filter_map(|(index, log)| errors.at(format!("access_log[{index}]"), |errors| super::access_log::access_log(log, errors)))
        .collect();

    Some(model::HttpConnectionManager {
        stat_prefix: proto.stat_prefix.clone(),
        codec,
        routes: routes?,
        stream_idle_timeout,
        upgrade_idle_timeout,
        request_timeout,
        idle_timeout,
        drain_timeout,
        upgrades,
        http2: http2_settings(proto.http2_protocol_options.as_ref()),
        limits,
        path,
        access_logs,
        http_filters,
    })
}

/// Envoy's ceiling for `max_request_headers_kb`.
const MAX_REQUEST_HEADERS_KB: u32 = 8192;

fn request_limits(proto: &hcm::HttpConnectionManager, errors: &mut Collector) -> RequestLimits {
    let mut limits = RequestLimits::default();
    if let Some(kb) = proto.max_request_headers_kb {
        if kb == 0 || kb > MAX_REQUEST_HEADERS_KB {
            errors.at("max_request_headers_kb", |errors| errors.invalid(format!("{kb} is outside 1 to {MAX_REQUEST_HEADERS_KB}")));
        }
        limits.max_header_bytes = kb.clamp(1, MAX_REQUEST_HEADERS_KB) * 1024;
    }
    let count = proto.common_http_protocol_options.as_ref().and_then(|options| options.max_headers_count);
    if let Some(count) = count {
        if count == 0 {
            errors.at("common_http_protocol_options.max_headers_count", |errors| errors.invalid("must be at least 1"));
        }
        limits.max_headers = count.max(1);
    }
    limits.headers_timeout = errors.at("request_headers_timeout", |errors| {
        timeout_or(proto.request_headers_timeout.as_ref(), limits.headers_timeout, errors)
    });
    limits
}

fn path_normalization(proto: &hcm::HttpConnectionManager, errors: &mut Collector) -> PathNormalization {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as Action;

    let defaults = PathNormalization::default();
    let escaped_slashes = match enum_value(proto.path_with_escaped_slashes_action, "path_with_escaped_slashes_action", errors) {
        Some(Action::RejectRequest) => EscapedSlashes::Reject,
        Some(Action::UnescapeAndRedirect) => EscapedSlashes::UnescapeAndRedirect,
        Some(Action::UnescapeAndForward) => EscapedSlashes::UnescapeAndForward,
        Some(Action::ImplementationSpecificDefault | Action::KeepUnchanged) | None => EscapedSlashes::Keep,
    };
    PathNormalization { normalize: proto.normalize_path.unwrap_or(defaults.normalize), merge_slashes: proto.merge_slashes, escaped_slashes }
}

fn route_source(proto: &hcm::HttpConnectionManager, errors: &mut Collector) -> Option<RouteSource> {
    use hcm::http_connection_manager::RouteSpecifier;

    match &proto.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => errors.at("rds", |errors| {
            required_name(&rds.route_config_name, "route_config_name", errors);
            ads_source(rds.config_source.as_ref(), "config_source", errors);
            Some(RouteSource::Rds(rds.route_config_name.clone()))
        }),
        Some(RouteSpecifier::RouteConfig(config)) => errors
            .at("route_config", |errors| super::route_configuration(config, errors))
            .map(|routes| RouteSource::Inline(routes.into())),
        None => {
            errors.missing("rds or route_config");
            None
        }
    }
}

/// Checks that a config source points at ADS, the only source Legate uses.
pub(crate) fn ads_source(source: Option<&core::ConfigSource>, field: &str, errors: &mut Collector) {
    match source.and_then(|source| source.config_source_specifier.as_ref()) {
        Some(core::config_source::ConfigSourceSpecifier::Ads(_)) => {}
        None => errors.at(field, |errors| errors.missing("ads")),
    }
}

/// Decodes one upgrade setting; Legate's data plane knows `websocket` only.
pub(crate) fn upgrade(upgrade_type: &str, enabled: Option<bool>, errors: &mut Collector) -> UpgradeConfig {
    let upgrade_type = upgrade_type.to_ascii_lowercase();
    if upgrade_type.is_empty() {
        errors.missing("upgrade_type");
    } else if upgrade_type != "websocket" {
        errors.unsupported(format!("upgrade_type {upgrade_type:?} is not supported; Legate supports websocket"));
    }
    UpgradeConfig { upgrade_type, enabled: enabled.unwrap_or(true) }
}

pub(crate) fn http2_settings(options: Option<&core::Http2ProtocolOptions>) -> Http2Settings {
    let Some(options) = options else {
        return Http2Settings::default();
    };
    Http2Settings {
        max_concurrent_streams: options.max_concurrent_streams,
        initial_stream_window_size: options.initial_stream_window_size,
        initial_connection_window_size: options.initial_connection_window_size,
    }
}
