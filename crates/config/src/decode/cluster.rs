//! Cluster decoding.

use std::time::Duration;

use legate_api::envoy::config::cluster::v3 as api;
use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::extensions::upstreams::http::v3 as upstream_http;

use super::listener::{ads_source, http2_settings};
use super::{decode_message, duration, enum_value, note_ignored, required_name, timeout_or};
use crate::error::Collector;
use crate::model::{
    CircuitBreakers, Cluster, ClusterLoadAssignment, DiscoveryType, Http2Settings, LbPolicy, Priority, RetryBudget, Thresholds, UpstreamProtocol,
};

/// Envoy's defaults.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);
const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Envoy's retry budget defaults.
const DEFAULT_RETRY_BUDGET_PERCENT: f64 = 20.0;
const DEFAULT_MIN_RETRY_CONCURRENCY: u32 = 3;

const HTTP_PROTOCOL_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn cluster(proto: &api::Cluster, errors: &mut Collector) -> Option<Cluster> {
    required_name(&proto.name, "name", errors);
    note_ignored(proto.metadata.is_some(), "metadata", errors);
    note_ignored(!proto.alt_stat_name.is_empty(), "alt_stat_name", errors);

    let discovery = errors.at("type", |errors| discovery_type(proto, errors));
    let connect_timeout = errors.at("connect_timeout", |errors| connect_timeout(proto.connect_timeout.as_ref(), errors));
    let lb_policy = lb_policy(proto, errors);
    let protocol = protocol_options(proto, errors);

    let load_assignment = match (&discovery, &proto.load_assignment) {
        (Some(DiscoveryType::Eds { .. }), Some(_)) => {
            errors.at("load_assignment", |errors| {
                errors.invalid("EDS clusters get their endpoints over EDS; remove load_assignment")
            });
            None
        }
        (Some(DiscoveryType::Eds { .. }), None) | (None, _) => None,
        (Some(discovery), Some(assignment)) => {
            let allow_hostname = matches!(discovery, DiscoveryType::StrictDns { .. });
            errors.at("load_assignment", |errors| super::endpoint::assignment(assignment, allow_hostname, errors))
        }
        // As in Envoy, a cluster with no load_assignment has no hosts: its
        // requests get 503 until an update gives it endpoints.
        (Some(_), None) => Some(ClusterLoadAssignment { cluster_name: proto.name.clone(), endpoints: Vec::new() }),
    };

    let circuit_breakers = match &proto.circuit_breakers {
        Some(breakers) => errors.at("circuit_breakers", |errors| circuit_breakers(breakers, errors)),
        None => CircuitBreakers::default(),
    };

    let outlier_detection = proto
        .outlier_detection
        .as_ref()
        .map(|outlier| errors.at("outlier_detection", |errors| super::health::outlier_detection(outlier, errors)));
    let health_checks = proto
        .health_checks
        .iter()
        .enumerate()
        .filter_map(|(index, check)| errors.at(format!("health_checks[{index}]"), |errors| super::health::health_check(check, errors)))
        .collect();

    let tls = match &proto.transport_socket {
        Some(socket) => errors.at("transport_socket", |errors| super::tls::upstream(socket, errors)).map(Some),
        None => Some(None),
    };

    let (protocol, http2, idle_timeout) = protocol?;
    Some(Cluster {
        name: proto.name.clone(),
        discovery: discovery?,
        connect_timeout: connect_timeout?,
        lb_policy: lb_policy?,
        protocol,
        http2,
        idle_timeout,
        load_assignment,
        circuit_breakers,
        outlier_detection,
        health_checks,
        tls: tls?,
    })
}

fn circuit_breakers(proto: &api::CircuitBreakers, errors: &mut Collector) -> CircuitBreakers {
    let mut breakers = CircuitBreakers::default();
    let mut seen = [false; 2];
    for (index, thresholds) in proto.thresholds.iter().enumerate() {
        errors.at(format!("thresholds[{index}]"), |errors| {
            let Some(priority) = priority(thresholds.priority, errors) else { return };
            if std::mem::replace(&mut seen[priority.index()], true) {
                errors.invalid(format!("priority {} has thresholds twice", priority.as_str()));
            }
            breakers.thresholds[priority.index()] = decode_thresholds(thresholds, errors);
        });
    }

    let mut seen_per_host = [false; 2];
    for (index, thresholds) in proto.per_host_thresholds.iter().enumerate() {
        errors.at(format!("per_host_thresholds[{index}]"), |errors| {
            let Some(priority) = priority(thresholds.priority, errors) else { return };
            if std::mem::replace(&mut seen_per_host[priority.index()], true) {
                errors.invalid(format!("priority {} has per-host thresholds twice", priority.as_str()));
            }
            let others = thresholds.max_pending_requests.is_some()
                || thresholds.max_requests.is_some()
                || thresholds.max_retries.is_some()
                || thresholds.retry_budget.is_some();
            if others {
                errors.unsupported("per_host_thresholds support max_connections only, as in Envoy");
            }
            breakers.per_host_max_connections[priority.index()] = thresholds.max_connections;
        });
    }
    breakers
}

fn decode_thresholds(proto: &api::circuit_breakers::Thresholds, errors: &mut Collector) -> Thresholds {
    let defaults = Thresholds::default();
    let retry_budget = proto.retry_budget.as_ref().map(|budget| {
        let budget_percent = budget.budget_percent.as_ref().map_or(DEFAULT_RETRY_BUDGET_PERCENT, |p| p.value);
        if !(0.0..=100.0).contains(&budget_percent) {
            errors.at("retry_budget.budget_percent", |errors| {
                errors.invalid(format!("budget_percent {budget_percent} is outside 0-100"))
            });
        }
        RetryBudget {
            budget_percent,
            min_retry_concurrency: budget.min_retry_concurrency.unwrap_or(DEFAULT_MIN_RETRY_CONCURRENCY),
        }
    });
    Thresholds {
        max_connections: proto.max_connections.unwrap_or(defaults.max_connections),
        max_pending_requests: proto.max_pending_requests.unwrap_or(defaults.max_pending_requests),
        max_requests: proto.max_requests.unwrap_or(defaults.max_requests),
        max_retries: proto.max_retries.unwrap_or(defaults.max_retries),
        retry_budget,
    }
}

pub(crate) fn priority(value: i32, errors: &mut Collector) -> Option<Priority> {
    match enum_value::<core::RoutingPriority>(value, "priority", errors)? {
        core::RoutingPriority::Default => Some(Priority::Default),
        core::RoutingPriority::High => Some(Priority::High),
    }
}

fn discovery_type(proto: &api::Cluster, errors: &mut Collector) -> Option<DiscoveryType> {
    use api::cluster::{ClusterDiscoveryType, DiscoveryType as Type};

    let value = match proto.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(value)) => value,
        None => Type::Static as i32,
    };
    let kind = enum_value::<Type>(value, "type", errors)?;

    if kind != Type::Eds && proto.eds_cluster_config.is_some() {
        errors.invalid("eds_cluster_config is only valid with type EDS");
    }
    if kind != Type::StrictDns && proto.dns_refresh_rate.is_some() {
        errors.invalid("dns_refresh_rate is only valid with type STRICT_DNS");
    }
    if proto.dns_lookup_family != api::cluster::DnsLookupFamily::Auto as i32
        && proto.dns_lookup_family != api::cluster::DnsLookupFamily::V4Preferred as i32
    {
        errors.unsupported(
            "dns_lookup_family other than AUTO or V4_PREFERRED is not supported; Legate tries every resolved address",
        );
    }

    match kind {
        Type::Static => Some(DiscoveryType::Static),
        Type::StrictDns => {
            let refresh_rate = proto
                .dns_refresh_rate
                .as_ref()
                .map_or(Some(DEFAULT_DNS_REFRESH_RATE), |rate| duration(rate, errors))
                .filter(|rate| !rate.is_zero());
            if refresh_rate.is_none() {
                errors.invalid("dns_refresh_rate must be greater than 0");
            }
            Some(DiscoveryType::StrictDns { refresh_rate: refresh_rate? })
        }
        Type::Eds => {
            let config = proto.eds_cluster_config.as_ref();
            ads_source(config.and_then(|c| c.eds_config.as_ref()), "eds_cluster_config.eds_config", errors);
            let service_name = config.map(|c| c.service_name.clone()).filter(|name| !name.is_empty());
            Some(DiscoveryType::Eds { service_name: service_name.unwrap_or_else(|| proto.name.clone()) })
        }
        Type::LogicalDns | Type::OriginalDst => {
            errors.unsupported(format!("cluster type {} is not supported by Legate", kind.as_str_name()));
            None
        }
    }
}

fn connect_timeout(value: Option<&prost_types::Duration>, errors: &mut Collector) -> Option<Duration> {
    let timeout = value.map_or(Some(DEFAULT_CONNECT_TIMEOUT), |value| duration(value, errors))?;
    if timeout.is_zero() {
        errors.invalid("connect_timeout must be greater than 0");
        return None;
    }
    Some(timeout)
}

/// Envoy's defaults and limits for the hashing load balancers.
const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
const DEFAULT_MAXIMUM_RING_SIZE: u64 = 8 * 1024 * 1024;
const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
const MAXIMUM_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

fn lb_policy(proto: &api::Cluster, errors: &mut Collector) -> Option<LbPolicy> {
    use api::cluster::LbConfig;
    use api::cluster::LbPolicy as Policy;

    let policy = errors.at("lb_policy", |errors| enum_value::<Policy>(proto.lb_policy, "lb_policy", errors))?;
    let config = proto.lb_config.as_ref();
    let mismatch = match (policy, config) {
        (Policy::RingHash, Some(LbConfig::MaglevLbConfig(_))) | (Policy::Maglev, Some(LbConfig::RingHashLbConfig(_))) => true,
        (Policy::RingHash | Policy::Maglev, _) | (_, None) => false,
        (_, Some(_)) => true,
    };
    if mismatch {
        errors.invalid(format!("the lb_config set does not belong to lb_policy {}", policy.as_str_name()));
    }

    match policy {
        Policy::RoundRobin => Some(LbPolicy::RoundRobin),
        Policy::LeastRequest => Some(LbPolicy::LeastRequest),
        Policy::Random => Some(LbPolicy::Random),
        Policy::RingHash => {
            let ring = match config {
                Some(LbConfig::RingHashLbConfig(ring)) => Some(ring),
                _ => None,
            };
            errors.at("ring_hash_lb_config", |errors| ring_hash(ring, errors))
        }
        Policy::Maglev => {
            let maglev = match config {
                Some(LbConfig::MaglevLbConfig(maglev)) => maglev.table_size,
                _ => None,
            };
            errors.at("maglev_lb_config.table_size", |errors| maglev_table(maglev, errors))
        }
        other => {
            errors.at("lb_policy", |errors| {
                errors.unsupported(format!("lb_policy {} is not supported by Legate", other.as_str_name()))
            });
            None
        }
    }
}

fn ring_hash(proto: Option<&api::cluster::RingHashLbConfig>, errors: &mut Collector) -> Option<LbPolicy> {
    use api::cluster::ring_hash_lb_config::HashFunction;

    let minimum_ring_size = proto.and_then(|p| p.minimum_ring_size).unwrap_or(DEFAULT_MINIMUM_RING_SIZE);
    let maximum_ring_size = proto.and_then(|p| p.maximum_ring_size).unwrap_or(DEFAULT_MAXIMUM_RING_SIZE);
    if proto.is_some_and(|p| p.hash_function == HashFunction::MurmurHash2 as i32) {
        errors.unsupported("hash_function MURMUR_HASH_2 is not supported; Legate hashes with XX_HASH");
    }
    if minimum_ring_size == 0 || minimum_ring_size > maximum_ring_size || maximum_ring_size > DEFAULT_MAXIMUM_RING_SIZE {
        errors.invalid(format!(
            "ring sizes must satisfy 0 < minimum_ring_size ({minimum_ring_size}) <= maximum_ring_size ({maximum_ring_size}) <= {DEFAULT_MAXIMUM_RING_SIZE}"
        ));
        return None;
    }
    Some(LbPolicy::RingHash { minimum_ring_size, maximum_ring_size })
}

fn maglev_table(table_size: Option<u64>, errors: &mut Collector) -> Option<LbPolicy> {
    let table_size = table_size.unwrap_or(DEFAULT_MAGLEV_TABLE_SIZE);
    if table_size > MAXIMUM_MAGLEV_TABLE_SIZE || !is_prime(table_size) {
        errors.invalid(format!("table_size {table_size} must be a prime no larger than {MAXIMUM_MAGLEV_TABLE_SIZE}"));
        return None;
    }
    Some(LbPolicy::Maglev { table_size })
}

fn is_prime(value: u64) -> bool {
    value >= 2 && (2..).take_while(|divisor| divisor * divisor <= value).all(|divisor| !value.is_multiple_of(divisor))
}

/// Reads the upstream HTTP version, HTTP/2 settings and idle timeout from
/// either the current `typed_extension_protocol_options` or the older
/// cluster fields.
fn protocol_options(proto: &api::Cluster, errors: &mut Collector) -> Option<(UpstreamProtocol, Http2Settings, Duration)> {
    let mut protocol = UpstreamProtocol::Http1;
    let mut http2 = Http2Settings::default();
    let mut idle = None;

    if let Some(options) = &proto.http2_protocol_options {
        protocol = UpstreamProtocol::Http2;
        http2 = http2_settings(Some(options));
    }
    if let Some(options) = &proto.common_http_protocol_options {
        errors.at("common_http_protocol_options", |errors| upstream_header_limit(options, errors));
        idle = Some(options.idle_timeout);
    }

    for (key, any) in &proto.typed_extension_protocol_options {
        errors.at(format!("typed_extension_protocol_options[{key}]"), |errors| {
            if key != HTTP_PROTOCOL_OPTIONS_KEY || !any.type_url.ends_with(HTTP_PROTOCOL_OPTIONS_KEY) {
                errors.unsupported(format!("protocol options {key:?} ({}) are not supported by Legate", any.type_url));
                return;
            }
            if proto.http2_protocol_options.is_some() {
                errors.invalid("set either http2_protocol_options or typed_extension_protocol_options, not both");
            }
            let Some(options) = decode_message::<upstream_http::HttpProtocolOptions>(&any.value, errors) else {
                return;
            };
            if let Some((explicit_protocol, settings)) = explicit_protocol(&options) {
                protocol = explicit_protocol;
                http2 = settings;
            } else {
                errors.missing("explicit_http_config");
            }
            if let Some(common) = &options.common_http_protocol_options {
                errors.at("common_http_protocol_options", |errors| upstream_header_limit(common, errors));
                idle = Some(common.idle_timeout);
            }
        });
    }

    let idle_timeout = match idle {
        Some(value) => errors.at("idle_timeout", |errors| {
            timeout_or(value.as_ref(), Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT), errors).unwrap_or(Duration::MAX)
        }),
        None => DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    };
    Some((protocol, http2, idle_timeout))
}

/// Legate limits the header count of downstream requests only.
fn upstream_header_limit(options: &core::HttpProtocolOptions, errors: &mut Collector) {
    if options.max_headers_count.is_some() {
        errors.at("max_headers_count", |errors| errors.unsupported("a header count limit on upstream responses is not supported by Legate"));
    }
}

fn explicit_protocol(options: &upstream_http::HttpProtocolOptions) -> Option<(UpstreamProtocol, Http2Settings)> {
    use upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig;
    use upstream_http::http_protocol_options::UpstreamProtocolOptions;

    let Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) = &options.upstream_protocol_options else {
        return None;
    };
    match explicit.protocol_config.as_ref()? {
        ProtocolConfig::HttpProtocolOptions(core::Http1ProtocolOptions {}) => {
            Some((UpstreamProtocol::Http1, Http2Settings::default()))
        }
        ProtocolConfig::Http2ProtocolOptions(settings) => Some((UpstreamProtocol::Http2, http2_settings(Some(settings)))),
    }
}
