//! Listener and HttpConnectionManager decoding.

use std::time::Duration;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::listener::v3 as api;
use legate_api::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use super::{decode_message, enum_value, host_port, note_ignored, required_name, timeout_or, HostPort};
use crate::error::Collector;
use crate::model::{
    self, ClientCertDetails, Codec, EscapedSlashes, ForwardClientCert, Http2Settings, PathNormalization, RequestLimits, RouteSource,
    UpgradeConfig,
};
use crate::reflect::type_url_of;

const TLS_INSPECTOR_NAME: &str = "envoy.filters.listener.tls_inspector";
const TLS_INSPECTOR_TYPE: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HCM_TYPE: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Envoy's defaults for the connection manager's timeouts.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for a TLS handshake when `transport_socket_connect_timeout` is unset.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

    for (index, filter) in proto.listener_filters.iter().enumerate() {
        errors.at(format!("listener_filters[{index}]"), |errors| listener_filter(filter, errors));
    }

    let filter_chains = if proto.filter_chains.is_empty() {
        errors.missing("filter_chains");
        None
    } else {
        errors.at("filter_chains", |errors| filter_chains(&proto.filter_chains, errors))
    };

    Some(model::Listener { name: proto.name.clone(), address: address?, filter_chains: filter_chains? })
}

/// Accepts the TLS inspector, which changes nothing: Legate reads the
/// ClientHello of every connection to a TLS filter chain.
fn listener_filter(filter: &api::ListenerFilter, errors: &mut Collector) {
    let is_tls_inspector = match &filter.config_type {
        Some(api::listener_filter::ConfigType::TypedConfig(config)) => config.type_url == type_url_of(TLS_INSPECTOR_TYPE),
        None => filter.name == TLS_INSPECTOR_NAME,
    };
    if !is_tls_inspector {
        errors.unsupported(format!("listener filter {:?} is not supported; Legate supports {TLS_INSPECTOR_NAME}", filter.name));
    }
}

fn filter_chains(chains: &[api::FilterChain], errors: &mut Collector) -> Option<Vec<model::FilterChain>> {
    let decoded: Vec<_> =
        chains.iter().enumerate().map(|(index, chain)| errors.at(format!("[{index}]"), |errors| filter_chain(chain, errors))).collect();
    let decoded: Vec<model::FilterChain> = decoded.into_iter().collect::<Option<_>>()?;

    let defaults = decoded.iter().filter(|chain| chain.server_names.is_empty()).count();
    if defaults > 1 {
        errors.invalid("more than one filter chain has no filter_chain_match.server_names; only one may be the default");
    }
    let plaintext = decoded.iter().filter(|chain| chain.tls.is_none()).count();
    if plaintext > 0 && decoded.len() > 1 {
        errors.unsupported(
            "a listener with several filter chains needs a TLS transport_socket on each, because chains are chosen by SNI",
        );
    }
    let mut keys = std::collections::HashSet::new();
    for chain in &decoded {
        if let Some(name) = chain.key.strip_prefix("name:").filter(|_| !keys.insert(chain.key.clone())) {
            errors.invalid(format!("filter chain name {name:?} is used twice"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for name in decoded.iter().flat_map(|chain| &chain.server_names) {
        if !seen.insert(name.as_str()) {
            errors.invalid(format!("server name {name:?} is in more than one filter chain"));
        }
    }
    Some(decoded)
}

fn filter_chain(chain: &api::FilterChain, errors: &mut Collector) -> Option<model::FilterChain> {
    note_ignored(chain.metadata.is_some(), "metadata", errors);

    let server_names = match &chain.filter_chain_match {
        Some(matcher) => errors.at("filter_chain_match.server_names", |errors| server_names(&matcher.server_names, errors)),
        None => Some(Vec::new()),
    };
    let tls = match &chain.transport_socket {
        Some(socket) => errors.at("transport_socket", |errors| super::tls::downstream(socket, errors)).map(Some),
        None => Some(None),
    };
    if tls == Some(None) && server_names.as_ref().is_some_and(|names| !names.is_empty()) {
        errors.invalid("filter_chain_match.server_names needs a TLS transport_socket, because the names come from SNI");
    }

    let filters = super::network_filter::filters(&chain.filters, errors);
    let handshake_timeout = match &chain.transport_socket_connect_timeout {
        Some(timeout) => errors.at("transport_socket_connect_timeout", |errors| super::duration(timeout, errors)),
        None => Some(DEFAULT_HANDSHAKE_TIMEOUT),
    };
    let server_names = server_names?;
    let key = match chain.name.as_str() {
        "" => format!("sni:{}", server_names.join(",")),
        name => format!("name:{name}"),
    };
    let (connection_filters, http) = filters?;
    Some(model::FilterChain { key: key.into(), server_names, tls: tls?, http, connection_filters, handshake_timeout: handshake_timeout? })
}

/// Lowercases SNI names; each is exact or a `*.suffix` wildcard.
fn server_names(names: &[String], errors: &mut Collector) -> Option<Vec<String>> {
    let mut valid = true;
    let names = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if bare.is_empty() || bare.contains('*') || !super::is_hostname(bare) {
                errors.at(format!("[{index}]"), |errors| {
                    errors.invalid(format!("server name {name:?} is not a host name or a *.suffix wildcard"))
                });
                valid = false;
            }
            name.to_ascii_lowercase()
        })
        .collect();
    valid.then_some(names)
}

pub(super) fn network_filter(filter: &api::Filter, errors: &mut Collector) -> Option<model::HttpConnectionManager> {
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
        forward_client_cert: forward_client_cert(proto, errors)?,
        set_current_client_cert: client_cert_details(proto.set_current_client_cert_details.as_ref()),
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
    // Left unset, normalize_path is Legate's secure default, and it brings
    // slash merging with it, so `//admin` meets the `/admin` route. Set
    // normalize_path explicitly to let merge_slashes alone decide.
    let merge_slashes = proto.merge_slashes || proto.normalize_path.is_none();
    PathNormalization { normalize: proto.normalize_path.unwrap_or(defaults.normalize), merge_slashes, escaped_slashes }
}

fn forward_client_cert(proto: &hcm::HttpConnectionManager, errors: &mut Collector) -> Option<ForwardClientCert> {
    use hcm::http_connection_manager::ForwardClientCertDetails as Mode;

    let mode = enum_value::<Mode>(proto.forward_client_cert_details, "forward_client_cert_details", errors)?;
    Some(match mode {
        Mode::Sanitize => ForwardClientCert::Sanitize,
        Mode::ForwardOnly => ForwardClientCert::ForwardOnly,
        Mode::AppendForward => ForwardClientCert::AppendForward,
        Mode::SanitizeSet => ForwardClientCert::SanitizeSet,
        Mode::AlwaysForwardOnly => ForwardClientCert::AlwaysForwardOnly,
    })
}

fn client_cert_details(proto: Option<&hcm::http_connection_manager::SetCurrentClientCertDetails>) -> ClientCertDetails {
    let Some(proto) = proto else {
        return ClientCertDetails::default();
    };
    ClientCertDetails { subject: proto.subject.unwrap_or(false), cert: proto.cert, chain: proto.chain, dns: proto.dns, uri: proto.uri }
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
pub(crate) fn ads_source(source: Option<&core::ConfigSource>, field: &'static str, errors: &mut Collector) {
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
