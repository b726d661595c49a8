//! Upstream clusters.

use std::time::Duration;

use super::endpoint::ClusterLoadAssignment;

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub discovery: DiscoveryType,
    /// Envoy's default is 5 seconds.
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub protocol: UpstreamProtocol,
    pub http2: Http2Settings,
    /// Closes pooled upstream connections idle for this long. Envoy's default
    /// is 1 hour.
    pub idle_timeout: Duration,
    /// Endpoints given inline; for EDS clusters they arrive separately.
    pub load_assignment: Option<ClusterLoadAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    /// Endpoints are host names resolved again every `refresh_rate`.
    StrictDns { refresh_rate: Duration },
    /// Endpoints come over ADS in a ClusterLoadAssignment named
    /// `service_name`.
    Eds { service_name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on active requests.
    LeastRequest,
    Random,
    /// Consistent hashing on a ring of `ring_size` points (Envoy's
    /// `minimum_ring_size`, 1024 by default, capped by `maximum_ring_size`).
    RingHash { minimum_ring_size: u64, maximum_ring_size: u64 },
    /// Maglev consistent hashing with a lookup table of `table_size` entries,
    /// a prime (65537 by default).
    Maglev { table_size: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    Http2,
}

/// HTTP/2 settings; `None` keeps hyper's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Settings {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
}

impl Cluster {
    /// Name of the ClusterLoadAssignment that holds this cluster's endpoints
    /// when they come over EDS.
    pub fn eds_service_name(&self) -> Option<&str> {
        match &self.discovery {
            DiscoveryType::Eds { service_name } => Some(service_name),
            _ => None,
        }
    }
}
