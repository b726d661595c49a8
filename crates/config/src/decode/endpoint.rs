//! ClusterLoadAssignment decoding.

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::config::endpoint::v3 as api;

use super::{enum_value, host_port, note_ignored, required_name, HostPort};
use crate::error::Collector;
use crate::model::{ClusterLoadAssignment, EndpointAddress, HealthStatus, LbEndpoint};

/// Decodes an EDS resource; its endpoints must be IP addresses.
pub fn cluster_load_assignment(proto: &api::ClusterLoadAssignment, errors: &mut Collector) -> Option<ClusterLoadAssignment> {
    required_name(&proto.cluster_name, "cluster_name", errors);
    assignment(proto, false, errors)
}

/// Decodes endpoints; `allow_hostname` lets STRICT_DNS clusters name hosts.
pub(crate) fn assignment(
    proto: &api::ClusterLoadAssignment,
    allow_hostname: bool,
    errors: &mut Collector,
) -> Option<ClusterLoadAssignment> {
    let mut endpoints = Vec::new();
    for (index, locality) in proto.endpoints.iter().enumerate() {
        errors.at(format!("endpoints[{index}]"), |errors| {
            note_ignored(locality.locality.is_some(), "locality", errors);
            for (index, endpoint) in locality.lb_endpoints.iter().enumerate() {
                let decoded = errors.at(format!("lb_endpoints[{index}]"), |errors| {
                    lb_endpoint(endpoint, locality.priority, allow_hostname, errors)
                });
                endpoints.extend(decoded);
            }
        });
    }
    Some(ClusterLoadAssignment { cluster_name: proto.cluster_name.clone(), endpoints })
}

fn lb_endpoint(proto: &api::LbEndpoint, priority: u32, allow_hostname: bool, errors: &mut Collector) -> Option<LbEndpoint> {
    note_ignored(proto.metadata.is_some(), "metadata", errors);

    let Some(api::lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &proto.host_identifier else {
        errors.missing("endpoint");
        return None;
    };
    note_ignored(!endpoint.hostname.is_empty(), "endpoint.hostname", errors);

    let address = errors.at("endpoint", |errors| host_port(endpoint.address.as_ref(), allow_hostname, errors));
    let health = match enum_value::<core::HealthStatus>(proto.health_status, "health_status", errors)? {
        core::HealthStatus::Unknown | core::HealthStatus::Healthy => HealthStatus::Healthy,
        core::HealthStatus::Degraded => HealthStatus::Degraded,
        core::HealthStatus::Unhealthy | core::HealthStatus::Draining | core::HealthStatus::Timeout => {
            HealthStatus::Unhealthy
        }
    };
    let weight = proto.load_balancing_weight.unwrap_or(1);
    if weight == 0 {
        errors.at("load_balancing_weight", |errors| errors.invalid("load_balancing_weight must be at least 1"));
    }

    let address = match address? {
        HostPort::Ip(address) => EndpointAddress::Socket(address),
        HostPort::Hostname(host, port) => EndpointAddress::Dns { host, port },
    };
    Some(LbEndpoint { address, weight: weight.max(1), health, priority })
}
