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
    pub circuit_breakers: CircuitBreakers,
    pub outlier_detection: Option<super::OutlierDetection>,
    pub health_checks: Vec<super::HealthCheck>,
    /// The `UpstreamTlsContext` of its transport socket; `None` is plaintext.
    pub tls: Option<std::sync::Arc<super::UpstreamTls>>,
}

/// Routing priority of a route, choosing which circuit-breaker thresholds
/// its requests count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    #[default]
    Default,
    High,
}

impl Priority {
    pub const fn index(self) -> usize {
        match self {
            Priority::Default => 0,
            Priority::High => 1,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Default => "default",
            Priority::High => "high",
        }
    }
}

/// A cluster's limits per routing priority (`[default, high]`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CircuitBreakers {
    pub thresholds: [Thresholds; 2],
    /// `per_host_thresholds.max_connections` per priority; `None` is no limit.
    pub per_host_max_connections: [Option<u32>; 2],
}

/// Envoy's circuit-breaker limits; the defaults are 1024 connections,
/// pending requests and requests, and 3 retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    pub retry_budget: Option<RetryBudget>,
}

/// Retries allowed as a share of active requests, instead of `max_retries`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Percent of active plus pending requests; Envoy's default is 20.
    pub budget_percent: f64,
    /// Retries always allowed; Envoy's default is 3.
    pub min_retry_concurrency: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024, max_retries: 3, retry_budget: None }
    }
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
