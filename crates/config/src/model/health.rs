//! Outlier detection and active health checking of a cluster's endpoints.

use std::time::Duration;

/// Envoy's `OutlierDetection` with its defaults filled in. Percentages are
/// 0-100; `enforcing_*` is the chance an ejection the rule calls for
/// happens.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub enforcing_consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    /// Whether connect failures, timeouts and resets are counted apart
    /// from upstream responses, as local-origin failures.
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub enforcing_success_rate: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// Ejects below mean minus stdev times this / 1000.
    pub success_rate_stdev_factor: u32,
    pub failure_percentage_threshold: u32,
    pub enforcing_failure_percentage: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
        }
    }
}

/// One active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub timeout: Duration,
    pub interval: Duration,
    /// Extra random wait added to each interval, at most this long.
    pub interval_jitter: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    /// GET `path`; healthy when the status is in one of the `[start, end)`
    /// ranges (200 only by default).
    Http { host: Option<String>, path: String, expected_statuses: Vec<(u16, u16)> },
    /// A TCP connect, optionally sending `send` and expecting the reply to
    /// contain every `receive` block.
    Tcp { send: Option<Vec<u8>>, receive: Vec<Vec<u8>> },
    /// `grpc.health.v1.Health/Check` for `service_name`; healthy when SERVING.
    Grpc { service_name: String, authority: Option<String> },
}
