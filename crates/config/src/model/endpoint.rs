//! Endpoints of a cluster.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLoadAssignment {
    pub cluster_name: String,
    pub endpoints: Vec<LbEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbEndpoint {
    pub address: EndpointAddress,
    /// Load-balancing weight, at least 1.
    pub weight: u32,
    pub health: HealthStatus,
    /// Lower values are preferred; a higher priority is used only when no
    /// lower one has a healthy endpoint.
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    Socket(SocketAddr),
    /// A host name, resolved by STRICT_DNS clusters.
    Dns { host: String, port: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// UNKNOWN or HEALTHY: eligible for traffic.
    Healthy,
    /// DEGRADED: eligible, as Envoy treats it without health checking.
    Degraded,
    /// UNHEALTHY, DRAINING or TIMEOUT: no new requests.
    Unhealthy,
}

impl LbEndpoint {
    pub fn is_routable(&self) -> bool {
        self.health != HealthStatus::Unhealthy
    }
}
