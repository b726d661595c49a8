//! Endpoint health: outlier detection (passive, from the results of real
//! requests) and active health checks. Both only mark endpoints; the load
//! balancer skips marked ones, and uses them anyway when every endpoint is
//! marked, as Envoy's panic mode does.
//!
//! An endpoint's health lives in its `Membership`, so it survives cluster
//! updates that keep the endpoint.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use legate_config::model::{HealthCheck, OutlierDetection};

use super::{ClusterHandle, EndpointPool};

/// Milliseconds on a clock that starts with the process, for atomics.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[derive(Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    interval_success: AtomicU64,
    interval_failure: AtomicU64,
    /// When the ejection ends, on `now_ms`'s clock; 0 when not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    check_failed: AtomicBool,
    /// Consecutive check results that disagree with `check_failed`.
    check_streak: AtomicU32,
}

/// The result of one request, as outlier detection reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Success,
    /// A 5xx response; `gateway` for 502, 503 and 504.
    ServerError { gateway: bool },
    /// Connect failure, timeout or reset: no response from the endpoint.
    LocalFailure,
}

impl EndpointHealth {
    /// Tells whether the endpoint takes new requests: not ejected, and not
    /// failing its active health checks.
    pub fn is_available(&self) -> bool {
        !self.check_failed.load(Ordering::Relaxed) && !self.is_ejected(now_ms())
    }

    /// Tells whether outlier detection has the endpoint ejected now.
    pub fn is_ejected_now(&self) -> bool {
        self.is_ejected(now_ms())
    }

    /// Tells whether active health checks have the endpoint out.
    pub fn fails_checks(&self) -> bool {
        self.check_failed.load(Ordering::Relaxed)
    }

    fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now
    }

    /// Applies one active check result; returns the new state when it flipped.
    fn record_check(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        let failed = self.check_failed.load(Ordering::Relaxed);
        if passed != failed {
            self.check_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if failed { check.healthy_threshold } else { check.unhealthy_threshold };
        if streak < threshold {
            return None;
        }
        self.check_streak.store(0, Ordering::Relaxed);
        self.check_failed.store(!failed, Ordering::Relaxed);
        Some(!failed)
    }
}

impl ClusterHandle {
    /// Feeds a request's result to outlier detection.
    pub fn record_outcome(&self, endpoint: &EndpointPool, outcome: RequestOutcome) {
        let Some(config) = &self.config.outlier_detection else { return };
        let health = &endpoint.membership().health;
        let outcome = match outcome {
            RequestOutcome::LocalFailure if !config.split_external_local_origin_errors => {
                RequestOutcome::ServerError { gateway: true }
            }
            other => other,
        };

        match outcome {
            RequestOutcome::Success => {
                health.interval_success.fetch_add(1, Ordering::Relaxed);
                health.consecutive_5xx.store(0, Ordering::Relaxed);
                health.consecutive_gateway.store(0, Ordering::Relaxed);
                health.consecutive_local.store(0, Ordering::Relaxed);
            }
            RequestOutcome::ServerError { gateway } => {
                health.interval_failure.fetch_add(1, Ordering::Relaxed);
                let errors = health.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                let gateway_errors = if gateway {
                    health.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    health.consecutive_gateway.store(0, Ordering::Relaxed);
                    0
                };
                if errors >= config.consecutive_5xx && enforced(config.enforcing_consecutive_5xx) {
                    self.eject(endpoint, config, "consecutive_5xx");
                } else if gateway && gateway_errors >= config.consecutive_gateway_failure && enforced(config.enforcing_consecutive_gateway_failure) {
                    self.eject(endpoint, config, "consecutive_gateway_failure");
                }
            }
            RequestOutcome::LocalFailure => {
                health.interval_failure.fetch_add(1, Ordering::Relaxed);
                let failures = health.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= config.consecutive_local_origin_failure && enforced(config.enforcing_consecutive_local_origin_failure) {
                    self.eject(endpoint, config, "consecutive_local_origin_failure");
                }
            }
        }
    }

    /// Ejects `endpoint` unless that would pass `max_ejection_percent` (one
    /// endpoint can always be ejected, as in Envoy). Each ejection of the
    /// same endpoint lasts longer, up to `max_ejection_time`.
    fn eject(&self, endpoint: &EndpointPool, config: &OutlierDetection, reason: &'static str) {
        let now = now_ms();
        let health = &endpoint.membership().health;
        if health.is_ejected(now) {
            return;
        }
        let total = self.balancer.pools().count();
        let ejected = self.balancer.pools().filter(|pool| pool.membership().health.is_ejected(now)).count();
        let allowed = (total * config.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            debug!(cluster = self.name(), upstream.addr = %endpoint.address(), reason, "ejection skipped: max_ejection_percent reached");
            return;
        }

        let ejections = health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let time = config.base_ejection_time.saturating_mul(ejections).min(config.max_ejection_time);
        health.ejected_until.store(now + time.as_millis() as u64, Ordering::Relaxed);
        health.consecutive_5xx.store(0, Ordering::Relaxed);
        health.consecutive_gateway.store(0, Ordering::Relaxed);
        health.consecutive_local.store(0, Ordering::Relaxed);
        self.stats.ejections.inc();
        info!(cluster = self.name(), upstream.addr = %endpoint.address(), reason, ejection_ms = time.as_millis() as u64, "endpoint ejected");
    }

    /// Starts the outlier-detection sweep and the active health checks of
    /// this cluster; they stop when the handle is dropped.
    pub fn start_health_tasks(self: &Arc<Self>) {
        if let Some(config) = &self.config.outlier_detection {
            tokio::spawn(sweep_outliers(Arc::downgrade(self), config.interval));
        }
        for (index, check) in self.config.health_checks.iter().enumerate() {
            for pool in self.balancer.pools() {
                tokio::spawn(super::checks::run(Arc::downgrade(self), index, pool.clone(), check.clone()));
            }
        }
    }

    /// Records an active check's result on `endpoint`.
    pub(super) fn record_check(&self, endpoint: &EndpointPool, passed: bool, check: &HealthCheck) {
        let health = &endpoint.membership().health;
        if let Some(now_failed) = health.record_check(passed, check) {
            let state = if now_failed { "unhealthy" } else { "healthy" };
            info!(cluster = self.name(), upstream.addr = %endpoint.address(), state, "health check changed endpoint state");
        }
        let result = if passed { &self.stats.health_checks_passed } else { &self.stats.health_checks_failed };
        result.inc();
        self.publish_health();
    }

    fn publish_health(&self) {
        let now = now_ms();
        let healthy = self.balancer.pools().filter(|pool| pool.membership().health.is_available()).count();
        let ejected = self.balancer.pools().filter(|pool| pool.membership().health.is_ejected(now)).count();
        self.stats.endpoints_healthy.set(healthy as i64);
        self.stats.endpoints_ejected.set(ejected as i64);
    }
}

/// Reads a gRPC status as an outlier outcome: UNKNOWN, DEADLINE_EXCEEDED,
/// INTERNAL and UNAVAILABLE are server errors, UNAVAILABLE a gateway one.
pub fn grpc_outcome(code: u32) -> RequestOutcome {
    match code {
        14 => RequestOutcome::ServerError { gateway: true },
        2 | 4 | 13 => RequestOutcome::ServerError { gateway: false },
        _ => RequestOutcome::Success,
    }
}

/// Reads an upstream response status as an outlier outcome.
pub fn status_outcome(status: u16) -> RequestOutcome {
    match status {
        502..=504 => RequestOutcome::ServerError { gateway: true },
        500..=599 => RequestOutcome::ServerError { gateway: false },
        _ => RequestOutcome::Success,
    }
}

fn enforced(percent: u32) -> bool {
    percent >= 100 || fastrand::u32(..100) < percent
}

/// Runs the outlier sweep every `interval`. It applies the success-rate and
/// failure-percentage rules to the interval's counts, eases the ejection
/// multiplier of endpoints that stayed healthy, and starts a new interval.
async fn sweep_outliers(cluster: Weak<ClusterHandle>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(cluster) = cluster.upgrade() else { return };
        let Some(config) = &cluster.config.outlier_detection else { return };

        let counts: Vec<(&Arc<EndpointPool>, u64, u64)> = cluster
            .balancer
            .pools()
            .map(|pool| {
                let health = &pool.membership().health;
                let success = health.interval_success.swap(0, Ordering::Relaxed);
                let failure = health.interval_failure.swap(0, Ordering::Relaxed);
                (pool, success, failure)
            })
            .collect();

        success_rate_rule(&cluster, config, &counts);
        failure_percentage_rule(&cluster, config, &counts);

        let now = now_ms();
        for (pool, _, failure) in &counts {
            let health = &pool.membership().health;
            if !health.is_ejected(now) && *failure == 0 && health.ejections.load(Ordering::Relaxed) > 0 {
                health.ejections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        cluster.publish_health();
    }
}

fn success_rate_rule(cluster: &ClusterHandle, config: &OutlierDetection, counts: &[(&Arc<EndpointPool>, u64, u64)]) {
    let rates: Vec<(&Arc<EndpointPool>, f64)> = counts
        .iter()
        .filter(|(_, success, failure)| success + failure >= u64::from(config.success_rate_request_volume))
        .map(|(pool, success, failure)| (*pool, *success as f64 / (success + failure) as f64 * 100.0))
        .collect();
    if rates.len() < config.success_rate_minimum_hosts as usize || rates.is_empty() {
        return;
    }
    let mean = rates.iter().map(|(_, rate)| rate).sum::<f64>() / rates.len() as f64;
    let variance = rates.iter().map(|(_, rate)| (rate - mean).powi(2)).sum::<f64>() / rates.len() as f64;
    let threshold = mean - variance.sqrt() * f64::from(config.success_rate_stdev_factor) / 1000.0;
    for (pool, rate) in rates {
        if rate < threshold && enforced(config.enforcing_success_rate) {
            cluster.eject(pool, config, "success_rate");
        }
    }
}

fn failure_percentage_rule(cluster: &ClusterHandle, config: &OutlierDetection, counts: &[(&Arc<EndpointPool>, u64, u64)]) {
    let eligible: Vec<_> = counts
        .iter()
        .filter(|(_, success, failure)| success + failure >= u64::from(config.failure_percentage_request_volume))
        .collect();
    if eligible.len() < config.failure_percentage_minimum_hosts as usize {
        return;
    }
    for (pool, success, failure) in eligible {
        let percent = *failure as f64 / (success + failure) as f64 * 100.0;
        if percent >= f64::from(config.failure_percentage_threshold) && enforced(config.enforcing_failure_percentage) {
            cluster.eject(pool, config, "failure_percentage");
        }
    }
}
