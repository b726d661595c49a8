//! RouteConfiguration decoding: virtual hosts, matchers and actions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::route::v3 as api;
use legate_api::envoy::r#type::matcher::v3 as matcher;

use super::auth::{API_KEY_AUTH_NAME, API_KEY_AUTH_PER_ROUTE_TYPE};
use super::jwt_authn::{JWT_AUTHN_NAME, JWT_AUTHN_PER_ROUTE_TYPE};
use super::ext_authz::{EXT_AUTHZ_NAME, EXT_AUTHZ_PER_ROUTE_TYPE};
use super::rate_limit::{LOCAL_RATELIMIT_NAME, LOCAL_RATELIMIT_TYPE};
use super::transcoder::{TRANSCODER_NAME, TRANSCODER_PER_ROUTE_TYPE, TRANSCODER_TYPE};
use super::listener::upgrade;
use super::{decode_message, duration, note_ignored, required_name, timeout_or};
use crate::error::Collector;
use crate::reflect::type_url_of;
use crate::model::{JwtPerRoute, PerRoute, RouteFilterConfigs,
    ClusterSelection, DomainMatcher, ForwardAction, HashPolicy, HashSource, HeaderMatch, HeaderMatcher, HostRewrite, PathMatch, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WebSocketFrames, WeightedCluster,
};
use legate_api::legate::extensions::websocket::v1::WebSocketRoute;

/// Key and type of Legate's WebSocket settings in `typed_per_filter_config`.
const WEBSOCKET_FILTER_KEY: &str = "legate.websocket";
const WEBSOCKET_ROUTE_TYPE: &str = "legate.extensions.websocket.v1.WebSocketRoute";

/// Envoy's generic per-filter wrapper, used to turn a filter off for a route.
const FILTER_CONFIG_TYPE: &str = "envoy.config.route.v3.FilterConfig";

/// Largest WebSocket message in frame-aware mode unless configured.
const DEFAULT_MAX_WEBSOCKET_MESSAGE: usize = 16 * 1024 * 1024;

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest direct response body, as Envoy's default
/// `max_direct_response_body_size_bytes`.
const MAX_DIRECT_RESPONSE_BODY: usize = 4096;

pub fn route_configuration(proto: &api::RouteConfiguration, errors: &mut Collector) -> Option<RouteConfiguration> {
    let mut virtual_hosts = Vec::with_capacity(proto.virtual_hosts.len());
    let mut domain_owners: HashMap<String, String> = HashMap::new();

    for (index, proto_host) in proto.virtual_hosts.iter().enumerate() {
        let host = errors.at(format!("virtual_hosts[{index}]"), |errors| {
            let host = virtual_host(proto_host, errors)?;
            for domain in &proto_host.domains {
                let key = domain.to_ascii_lowercase();
                if let Some(owner) = domain_owners.insert(key, host.name.clone()) {
                    errors.error(
                        crate::error::ErrorKind::Duplicate,
                        format!("domain {domain:?} is also in virtual host {owner:?}"),
                    );
                }
            }
            Some(host)
        });
        virtual_hosts.extend(host);
    }

    Some(RouteConfiguration {
        name: proto.name.clone(),
        virtual_hosts,
        ignore_port_in_host_matching: proto.ignore_port_in_host_matching,
    })
}

fn virtual_host(proto: &api::VirtualHost, errors: &mut Collector) -> Option<VirtualHost> {
    required_name(&proto.name, "name", errors);
    note_ignored(proto.metadata.is_some(), "metadata", errors);

    if proto.domains.is_empty() {
        errors.missing("domains");
    }
    let domains = proto
        .domains
        .iter()
        .enumerate()
        .filter_map(|(index, domain)| errors.at(format!("domains[{index}]"), |errors| domain_matcher(domain, errors)))
        .collect();

    let mut host_filters = errors.at("typed_per_filter_config", |errors| per_filter_config(&proto.typed_per_filter_config, errors));
    host_filters.filters.rate_limits = super::rate_limit::rate_limits(&proto.rate_limits, errors).into();
    #[allow(deprecated)]
    let host_cors = match &proto.cors {
        Some(cors) => errors.at("cors", |errors| super::filter::route_cors(cors, errors)),
        None => host_filters.cors.clone(),
    };
    let mut routes: Vec<Route> = proto
        .routes
        .iter()
        .enumerate()
        .filter_map(|(index, proto_route)| {
            errors.at(format!("routes[{index}]"), |errors| route(proto_route, &host_filters, host_cors.as_ref(), errors))
        })
        .collect();

    let host_retry = proto.retry_policy.as_ref().and_then(|policy| errors.at("retry_policy", |errors| retry_policy(policy, errors)));
    if let Some(host_retry) = host_retry {
        for route in &mut routes {
            if let RouteAction::Forward(action) = &mut route.action {
                action.retry_policy.get_or_insert_with(|| host_retry.clone());
            }
        }
    }

    Some(VirtualHost { name: proto.name.clone(), domains, routes })
}

fn domain_matcher(domain: &str, errors: &mut Collector) -> Option<DomainMatcher> {
    let domain = domain.to_ascii_lowercase();
    let wildcards = domain.matches('*').count();

    if domain == "*" {
        return Some(DomainMatcher::Any);
    }
    if domain.is_empty() || wildcards > 1 {
        errors.invalid(format!("domain {domain:?} must be non-empty with at most one '*'"));
        return None;
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        return Some(DomainMatcher::Suffix(suffix.to_string()));
    }
    if let Some(prefix) = domain.strip_suffix('*') {
        return Some(DomainMatcher::Prefix(prefix.to_string()));
    }
    if wildcards == 1 {
        errors.invalid(format!("domain {domain:?} may have '*' only at its start or end"));
        return None;
    }
    Some(DomainMatcher::Exact(domain))
}

/// What a route's or virtual host's `typed_per_filter_config` sets.
#[derive(Default)]
struct PerFilterConfig {
    /// `legate.websocket`: frame-aware settings when it enables them.
    websocket: Option<Option<WebSocketFrames>>,
    /// `envoy.filters.http.cors`: the CORS policy.
    cors: Option<std::sync::Arc<crate::model::CorsPolicy>>,
    /// The authentication and rate limit filters' entries.
    filters: RouteFilterConfigs,
}

/// Reads `typed_per_filter_config`, where Legate knows the keys
/// `legate.websocket`, `envoy.filters.http.cors`,
/// `envoy.filters.http.api_key_auth`, `envoy.filters.http.local_ratelimit`,
/// `envoy.filters.http.ext_authz`, `envoy.filters.http.jwt_authn` and
/// `envoy.filters.http.grpc_json_transcoder`.
fn per_filter_config(entries: &std::collections::HashMap<String, prost_types::Any>, errors: &mut Collector) -> PerFilterConfig {
    let mut config = PerFilterConfig::default();
    for (key, any) in entries {
        errors.at(format!("[{key}]"), |errors| per_filter_entry(key, any, &mut config, errors));
    }
    config
}

fn per_filter_entry(key: &str, any: &prost_types::Any, config: &mut PerFilterConfig, errors: &mut Collector) {
    let type_is = |name: &str| any.type_url == type_url_of(name);
    if key == super::filter::CORS_NAME && type_is(super::filter::CORS_POLICY_TYPE) {
        config.cors = super::filter::filter_cors(&any.value, errors);
    } else if key == API_KEY_AUTH_NAME && type_is(API_KEY_AUTH_PER_ROUTE_TYPE) {
        config.filters.api_key_auth = super::auth::api_key_auth_per_route(&any.value, errors).map(|c| PerRoute::Override(Arc::new(c)));
    } else if key == API_KEY_AUTH_NAME && type_is(FILTER_CONFIG_TYPE) {
        config.filters.api_key_auth = disabled_filter(&any.value, errors);
    } else if key == LOCAL_RATELIMIT_NAME && type_is(LOCAL_RATELIMIT_TYPE) {
        config.filters.local_ratelimit =
            super::rate_limit::local_rate_limit(&any.value, true, errors).map(|c| PerRoute::Override(Arc::new(c)));
    } else if key == LOCAL_RATELIMIT_NAME && type_is(FILTER_CONFIG_TYPE) {
        config.filters.local_ratelimit = disabled_filter(&any.value, errors);
    } else if key == EXT_AUTHZ_NAME && type_is(EXT_AUTHZ_PER_ROUTE_TYPE) {
        config.filters.ext_authz_disabled = super::ext_authz::ext_authz_per_route(&any.value, errors);
    } else if key == EXT_AUTHZ_NAME && type_is(FILTER_CONFIG_TYPE) {
        config.filters.ext_authz_disabled = disabled_filter::<()>(&any.value, errors).is_some();
    } else if key == JWT_AUTHN_NAME && type_is(JWT_AUTHN_PER_ROUTE_TYPE) {
        config.filters.jwt_authn = super::jwt_authn::jwt_authn_per_route(&any.value, errors);
    } else if key == JWT_AUTHN_NAME && type_is(FILTER_CONFIG_TYPE) {
        config.filters.jwt_authn = disabled_filter::<()>(&any.value, errors).map(|_| JwtPerRoute::Disabled);
    } else if key == TRANSCODER_NAME && type_is(TRANSCODER_PER_ROUTE_TYPE) {
        config.filters.grpc_json_transcoder_disabled = super::transcoder::transcoder_per_route(&any.value, errors);
    } else if key == TRANSCODER_NAME && type_is(TRANSCODER_TYPE) {
        config.filters.grpc_json_transcoder_disabled = super::transcoder::transcoder_route_override(&any.value, errors);
    } else if key == TRANSCODER_NAME && type_is(FILTER_CONFIG_TYPE) {
        config.filters.grpc_json_transcoder_disabled = disabled_filter::<()>(&any.value, errors).is_some();
    } else if key == WEBSOCKET_FILTER_KEY && type_is(WEBSOCKET_ROUTE_TYPE) {
        let Some(websocket) = decode_message::<WebSocketRoute>(&any.value, errors) else { return };
        let max_message_bytes = websocket.max_message_bytes.map_or(DEFAULT_MAX_WEBSOCKET_MESSAGE, |bytes| bytes as usize);
        if websocket.frame_aware && max_message_bytes == 0 {
            errors.invalid("max_message_bytes must be greater than 0");
        }
        config.websocket = Some(websocket.frame_aware.then_some(WebSocketFrames { max_message_bytes }));
    } else {
        errors.unsupported(format!(
            "per-filter config for {key:?} ({}) is not supported; Legate reads {WEBSOCKET_FILTER_KEY:?}, {:?}, {API_KEY_AUTH_NAME:?}, {LOCAL_RATELIMIT_NAME:?}, {EXT_AUTHZ_NAME:?}, {JWT_AUTHN_NAME:?} and {TRANSCODER_NAME:?}",
            any.type_url,
            super::filter::CORS_NAME
        ));
    }
}

/// Reads an `envoy.config.route.v3.FilterConfig`, which Legate accepts only
/// to turn a filter off.
fn disabled_filter<T>(bytes: &[u8], errors: &mut Collector) -> Option<PerRoute<T>> {
    let proto = decode_message::<api::FilterConfig>(bytes, errors)?;
    if !proto.disabled {
        errors.invalid("a FilterConfig must set disabled: true; Legate reads no other field of it");
        return None;
    }
    Some(PerRoute::Disabled)
}

fn route(
    proto: &api::Route,
    host: &PerFilterConfig,
    host_cors: Option<&std::sync::Arc<crate::model::CorsPolicy>>,
    errors: &mut Collector,
) -> Option<Route> {
    note_ignored(proto.metadata.is_some(), "metadata", errors);
    let route_filters = errors.at("typed_per_filter_config", |errors| per_filter_config(&proto.typed_per_filter_config, errors));
    let websocket_frames = route_filters.websocket.or(host.websocket).flatten();
    let route_rate_limits = match &proto.action {
        Some(api::route::Action::Route(action)) if !action.rate_limits.is_empty() => {
            Some(errors.at("route", |errors| super::rate_limit::rate_limits(&action.rate_limits, errors)).into())
        }
        _ => None,
    };
    let filter_configs = RouteFilterConfigs {
        api_key_auth: route_filters.filters.api_key_auth.or_else(|| host.filters.api_key_auth.clone()),
        local_ratelimit: route_filters.filters.local_ratelimit.or_else(|| host.filters.local_ratelimit.clone()),
        rate_limits: route_rate_limits.unwrap_or_else(|| host.filters.rate_limits.clone()),
        ext_authz_disabled: route_filters.filters.ext_authz_disabled || host.filters.ext_authz_disabled,
        jwt_authn: route_filters.filters.jwt_authn.or_else(|| host.filters.jwt_authn.clone()),
        grpc_json_transcoder_disabled: route_filters.filters.grpc_json_transcoder_disabled || host.filters.grpc_json_transcoder_disabled,
    };
    #[allow(deprecated)]
    let action_cors = match &proto.action {
        Some(api::route::Action::Route(action)) => action.cors.as_ref(),
        _ => None,
    };
    let action_cors = action_cors.and_then(|cors| errors.at("route.cors", |errors| super::filter::route_cors(cors, errors)));
    let cors = route_filters.cors.or(action_cors).or_else(|| host_cors.cloned());

    let matcher = match &proto.r#match {
        Some(proto_match) => errors.at("match", |errors| route_match(proto_match, errors)),
        None => {
            errors.missing("match");
            None
        }
    };

    let action = match &proto.action {
        Some(api::route::Action::Route(action)) => errors
            .at("route", |errors| forward_action(action, matcher.as_ref(), errors))
            .map(|action| RouteAction::Forward(Box::new(ForwardAction { websocket_frames, ..action }))),
        Some(api::route::Action::DirectResponse(response)) => {
            errors.at("direct_response", |errors| direct_response(response, errors))
        }
        None => {
            errors.missing("route or direct_response");
            None
        }
    };

    Some(Route { name: proto.name.clone(), matcher: matcher?, action: action?, cors, filter_configs })
}

pub(crate) fn route_match(proto: &api::RouteMatch, errors: &mut Collector) -> Option<RouteMatch> {
    let case_sensitive = proto.case_sensitive.unwrap_or(true);

    let path = match &proto.path_specifier {
        Some(api::route_match::PathSpecifier::Prefix(prefix)) => Some(PathMatch::Prefix(prefix.clone())),
        Some(api::route_match::PathSpecifier::Path(path)) => Some(PathMatch::Exact(path.clone())),
        Some(api::route_match::PathSpecifier::SafeRegex(regex)) => {
            errors.at("safe_regex", |errors| compile_regex(regex, !case_sensitive, errors)).map(PathMatch::Regex)
        }
        None => {
            errors.missing("prefix, path or safe_regex");
            None
        }
    };

    let headers = proto
        .headers
        .iter()
        .enumerate()
        .filter_map(|(index, header)| errors.at(format!("headers[{index}]"), |errors| header_matcher(header, errors)))
        .collect();

    Some(RouteMatch { path: path?, case_sensitive, headers, grpc: proto.grpc.is_some() })
}

/// Compiles an RE2-style regex anchored to match the whole input.
fn compile_regex(proto: &matcher::RegexMatcher, ignore_case: bool, errors: &mut Collector) -> Option<Regex> {
    note_ignored(proto.engine_type.is_some(), "google_re2", errors);
    let flags = if ignore_case { "(?i)" } else { "" };
    match Regex::new(&format!("{flags}^(?:{})$", proto.regex)) {
        Ok(regex) => Some(regex),
        Err(error) => {
            errors.invalid(format!("invalid regex {:?}: {error}", proto.regex));
            None
        }
    }
}

fn header_matcher(proto: &api::HeaderMatcher, errors: &mut Collector) -> Option<HeaderMatcher> {
    use api::header_matcher::HeaderMatchSpecifier as Spec;

    required_name(&proto.name, "name", errors);
    if http_header_name_is_invalid(&proto.name) {
        errors.invalid(format!("{:?} is not a valid header name", proto.name));
    }

    let plain = |value: &String| (value.clone(), false);
    let matcher = match &proto.header_match_specifier {
        None => Some(HeaderMatch::Present(true)),
        Some(Spec::PresentMatch(present)) => Some(HeaderMatch::Present(*present)),
        Some(Spec::ExactMatch(value)) => Some(exact(plain(value))),
        Some(Spec::PrefixMatch(value)) => Some(prefix(plain(value))),
        Some(Spec::SuffixMatch(value)) => Some(suffix(plain(value))),
        Some(Spec::ContainsMatch(value)) => Some(contains(plain(value))),
        Some(Spec::SafeRegexMatch(regex)) => {
            errors.at("safe_regex_match", |errors| compile_regex(regex, false, errors)).map(HeaderMatch::Regex)
        }
        Some(Spec::StringMatch(string)) => errors.at("string_match", |errors| string_matcher(string, errors)),
    };

    Some(HeaderMatcher {
        name: proto.name.to_ascii_lowercase(),
        matcher: matcher?,
        invert: proto.invert_match,
        treat_missing_as_empty: proto.treat_missing_header_as_empty,
    })
}

fn http_header_name_is_invalid(name: &str) -> bool {
    !name.is_empty() && http::HeaderName::from_bytes(name.trim_start_matches(':').as_bytes()).is_err()
}

pub(super) fn string_matcher(proto: &matcher::StringMatcher, errors: &mut Collector) -> Option<HeaderMatch> {
    use matcher::string_matcher::MatchPattern;

    let with_case = |value: &String| (value.clone(), proto.ignore_case);
    match &proto.match_pattern {
        Some(MatchPattern::Exact(value)) => Some(exact(with_case(value))),
        Some(MatchPattern::Prefix(value)) => Some(prefix(with_case(value))),
        Some(MatchPattern::Suffix(value)) => Some(suffix(with_case(value))),
        Some(MatchPattern::Contains(value)) => Some(contains(with_case(value))),
        Some(MatchPattern::SafeRegex(regex)) => {
            errors.at("safe_regex", |errors| compile_regex(regex, proto.ignore_case, errors)).map(HeaderMatch::Regex)
        }
        None => {
            errors.missing("exact, prefix, suffix, contains or safe_regex");
            None
        }
    }
}

fn exact((value, ignore_case): (String, bool)) -> HeaderMatch {
    HeaderMatch::Exact { value, ignore_case }
}

fn prefix((value, ignore_case): (String, bool)) -> HeaderMatch {
    HeaderMatch::Prefix { value, ignore_case }
}

fn suffix((value, ignore_case): (String, bool)) -> HeaderMatch {
    HeaderMatch::Suffix { value, ignore_case }
}

fn contains((value, ignore_case): (String, bool)) -> HeaderMatch {
    HeaderMatch::Contains { value, ignore_case }
}

fn forward_action(proto: &api::RouteAction, matcher: Option<&RouteMatch>, errors: &mut Collector) -> Option<ForwardAction> {
    use api::route_action::ClusterSpecifier;

    let clusters = match &proto.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            required_name(name, "cluster", errors);
            Some(ClusterSelection::Single(name.clone()))
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            errors.at("weighted_clusters", |errors| weighted_clusters(weighted, errors))
        }
        None => {
            errors.missing("cluster or weighted_clusters");
            None
        }
    };

    let prefix_rewrite = (!proto.prefix_rewrite.is_empty()).then(|| proto.prefix_rewrite.clone());
    if prefix_rewrite.is_some() && matches!(matcher.map(|m| &m.path), Some(PathMatch::Regex(_))) {
        errors.at("prefix_rewrite", |errors| {
            errors.invalid("prefix_rewrite needs a prefix or path match, not safe_regex")
        });
    }

    let host_rewrite = proto
        .host_rewrite_specifier
        .as_ref()
        .and_then(|api::route_action::HostRewriteSpecifier::HostRewriteLiteral(host)| host_rewrite(host, errors));

    let max_stream_duration = proto
        .max_stream_duration
        .as_ref()
        .map(|value| errors.at("max_stream_duration", |errors| super::filter::max_stream_duration(value, errors)));
    let timeout = errors.at("timeout", |errors| timeout_or(proto.timeout.as_ref(), Some(DEFAULT_ROUTE_TIMEOUT), errors));
    // As in Envoy, a route with max_stream_duration leaves the route timeout
    // unused, so the stream's own limit (or grpc-timeout) governs it.
    let timeout = if max_stream_duration.is_some() { None } else { timeout };
    let idle_timeout = proto
        .idle_timeout
        .as_ref()
        .and_then(|value| errors.at("idle_timeout", |errors| duration(value, errors)));

    let upgrades = proto
        .upgrade_configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            errors.at(format!("upgrade_configs[{index}]"), |errors| upgrade(&config.upgrade_type, config.enabled, errors))
        })
        .collect();

    let hash_policies = proto
        .hash_policy
        .iter()
        .enumerate()
        .filter_map(|(index, policy)| errors.at(format!("hash_policy[{index}]"), |errors| hash_policy(policy, errors)))
        .collect();

    Some(ForwardAction {
        clusters: clusters?,
        prefix_rewrite,
        host_rewrite,
        timeout,
        idle_timeout,
        upgrades,
        hash_policies,
        websocket_frames: None,
        max_stream_duration,
        priority: errors.at("priority", |errors| super::cluster::priority(proto.priority, errors)).unwrap_or_default(),
        retry_policy: proto.retry_policy.as_ref().and_then(|policy| errors.at("retry_policy", |errors| retry_policy(policy, errors))),
    })
}

fn hash_policy(proto: &api::route_action::HashPolicy, errors: &mut Collector) -> Option<HashPolicy> {
    use api::route_action::hash_policy::PolicySpecifier;

    let source = match proto.policy_specifier.as_ref() {
        Some(PolicySpecifier::Header(header)) => {
            if http_header_name_is_invalid(&header.header_name) || header.header_name.is_empty() {
                errors.invalid(format!("header_name {:?} is not a valid header name", header.header_name));
                return None;
            }
            HashSource::Header(header.header_name.to_ascii_lowercase())
        }
        Some(PolicySpecifier::Cookie(cookie)) => {
            required_name(&cookie.name, "cookie.name", errors);
            let ttl = cookie.ttl.as_ref().and_then(|ttl| errors.at("cookie.ttl", |errors| duration(ttl, errors)));
            let path = (!cookie.path.is_empty()).then(|| cookie.path.clone());
            HashSource::Cookie { name: cookie.name.clone(), ttl, path }
        }
        Some(PolicySpecifier::ConnectionProperties(properties)) => {
            if !properties.source_ip {
                errors.invalid("connection_properties needs source_ip: true");
                return None;
            }
            HashSource::SourceIp
        }
        Some(PolicySpecifier::QueryParameter(parameter)) => {
            required_name(&parameter.name, "query_parameter.name", errors);
            HashSource::QueryParameter(parameter.name.clone())
        }
        None => {
            errors.missing("header, cookie, connection_properties or query_parameter");
            return None;
        }
    };
    Some(HashPolicy { source, terminal: proto.terminal })
}

/// Parses a `host_rewrite_literal` into the upstream `Host` and
/// `:authority` it becomes, recording an error when it cannot be either.
fn host_rewrite(host: &str, errors: &mut Collector) -> Option<HostRewrite> {
    let header = http::HeaderValue::from_str(host).ok();
    let authority = http::uri::Authority::try_from(host).ok();
    match (header, authority) {
        (Some(header), Some(authority)) => Some(HostRewrite { header, authority }),
        _ => {
            errors.at("host_rewrite_literal", |errors| errors.invalid(format!("{host:?} is not a valid host")));
            None
        }
    }
}

fn weighted_clusters(proto: &api::WeightedCluster, errors: &mut Collector) -> Option<ClusterSelection> {
    if proto.clusters.is_empty() {
        errors.missing("clusters");
        return None;
    }

    let mut clusters = Vec::with_capacity(proto.clusters.len());
    let mut total_weight: u64 = 0;
    for (index, entry) in proto.clusters.iter().enumerate() {
        errors.at(format!("clusters[{index}]"), |errors| {
            required_name(&entry.name, "name", errors);
            note_ignored(entry.metadata_match.is_some(), "metadata_match", errors);
            let weight = entry.weight.unwrap_or(0);
            total_weight += u64::from(weight);
            let host_rewrite = entry.host_rewrite_specifier.as_ref().and_then(|specifier| match specifier {
                api::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(host) => host_rewrite(host, errors),
            });
            clusters.push(WeightedCluster { name: entry.name.clone(), weight, host_rewrite });
        });
    }

    match u32::try_from(total_weight) {
        Ok(0) => {
            errors.invalid("the sum of cluster weights must be greater than 0");
            None
        }
        Ok(total_weight) => Some(ClusterSelection::Weighted { clusters, total_weight }),
        Err(_) => {
            errors.invalid(format!("the sum of cluster weights {total_weight} exceeds {}", u32::MAX));
            None
        }
    }
}

fn direct_response(proto: &api::DirectResponseAction, errors: &mut Collector) -> Option<RouteAction> {
    let status = match u16::try_from(proto.status) {
        Ok(status) if (200..=599).contains(&status) => Some(status),
        _ => {
            errors.at("status", |errors| errors.invalid(format!("status {} is outside 200-599", proto.status)));
            None
        }
    };

    let body: Vec<u8> = match proto.body.as_ref().and_then(|body| body.specifier.as_ref()) {
        Some(core::data_source::Specifier::InlineBytes(bytes)) => bytes.clone(),
        Some(core::data_source::Specifier::InlineString(text)) => text.clone().into_bytes(),
        Some(core::data_source::Specifier::Filename(_)) => {
            errors.at("body.filename", |errors| errors.unsupported("a direct response body from a file is not supported; use inline_string or inline_bytes"));
            Vec::new()
        }
        None => Vec::new(),
    };
    if body.len() > MAX_DIRECT_RESPONSE_BODY {
        errors.at("body", |errors| {
            errors.invalid(format!("body is {} bytes, more than the limit of {MAX_DIRECT_RESPONSE_BODY}", body.len()))
        });
    }

    Some(RouteAction::DirectResponse { status: status?, body: body.into() })
}

/// Envoy's retry defaults.
const DEFAULT_RETRY_BASE_INTERVAL: Duration = Duration::from_millis(25);
const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

fn retry_policy(proto: &api::RetryPolicy, errors: &mut Collector) -> Option<crate::model::RetryPolicy> {
    let retry_on = match crate::model::RetryOn::parse(&proto.retry_on) {
        Ok(retry_on) => retry_on,
        Err(token) => {
            errors.at("retry_on", |errors| errors.unsupported(format!("retry condition {token:?} is not supported by Legate")));
            return None;
        }
    };

    let per_try_timeout = proto
        .per_try_timeout
        .as_ref()
        .and_then(|value| errors.at("per_try_timeout", |errors| duration(value, errors)))
        .filter(|value| !value.is_zero());
    let back_off = proto.retry_back_off.as_ref();
    let base_interval = back_off
        .and_then(|b| b.base_interval.as_ref())
        .and_then(|value| errors.at("retry_back_off.base_interval", |errors| duration(value, errors)))
        .unwrap_or(DEFAULT_RETRY_BASE_INTERVAL);
    let max_interval = back_off
        .and_then(|b| b.max_interval.as_ref())
        .and_then(|value| errors.at("retry_back_off.max_interval", |errors| duration(value, errors)))
        .unwrap_or(base_interval * 10);
    if base_interval.is_zero() || max_interval < base_interval {
        errors.at("retry_back_off", |errors| errors.invalid("base_interval must be above 0 and at most max_interval"));
    }

    let mut avoid_previous_hosts = false;
    for (index, predicate) in proto.retry_host_predicate.iter().enumerate() {
        errors.at(format!("retry_host_predicate[{index}]"), |errors| {
            let type_url = match &predicate.config_type {
                Some(api::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
                None => "",
            };
            if type_url.ends_with(PREVIOUS_HOSTS_PREDICATE) || predicate.name == "envoy.retry_host_predicates.previous_hosts" {
                avoid_previous_hosts = true;
            } else {
                errors.unsupported(format!("retry host predicate {:?} is not supported; Legate supports previous_hosts", predicate.name));
            }
        });
    }

    let mut retriable_status_codes = Vec::new();
    for code in &proto.retriable_status_codes {
        match u16::try_from(*code) {
            Ok(code) if (100..=599).contains(&code) => retriable_status_codes.push(code),
            _ => errors.at("retriable_status_codes", |errors| errors.invalid(format!("{code} is not an HTTP status code"))),
        }
    }

    Some(crate::model::RetryPolicy {
        retry_on,
        num_retries: proto.num_retries.unwrap_or(1),
        per_try_timeout,
        base_interval,
        max_interval,
        avoid_previous_hosts,
        host_selection_max_attempts: u32::try_from(proto.host_selection_retry_max_attempts.max(1)).unwrap_or(u32::MAX),
        retriable_status_codes,
    })
}
