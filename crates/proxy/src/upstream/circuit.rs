//! Circuit breakers of a cluster: for each routing priority, how many
//! connections, pending requests, active requests and retries are open,
//! checked against the cluster's thresholds.
//!
//! Counts belong to the cluster and survive cluster updates, because a new
//! handle takes over its predecessor's breaker. Limits come from the config
//! in force at each check, so a CDS change applies at once without dropping
//! what is in flight. The counts are atomics, so the limits hold exactly
//! across worker threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use legate_config::model::Priority;

use crate::stats::UpstreamStats;

/// A resource a circuit breaker limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Resource {
    pub const ALL: [Resource; 4] = [Resource::Connections, Resource::PendingRequests, Resource::Requests, Resource::Retries];

    const fn index(self) -> usize {
        match self {
            Resource::Connections => 0,
            Resource::PendingRequests => 1,
            Resource::Requests => 2,
            Resource::Retries => 3,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Resource::Connections => "connections",
            Resource::PendingRequests => "pending_requests",
            Resource::Requests => "requests",
            Resource::Retries => "retries",
        }
    }
}

pub struct ClusterCircuit {
    cluster: String,
    /// Indexed by priority, then by resource.
    levels: [[Breaker; 4]; 2],
    /// Wakes requests pending for a connection when one is handed back or
    /// closed.
    released: tokio::sync::Notify,
}

impl std::fmt::Debug for ClusterCircuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCircuit").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

/// One breaker's counts. The metrics read them when scraped, so a cluster
/// creates no metric series of its own. With one series per cluster,
/// priority and resource, 10,000 clusters took most of a config update's
/// time hashing 240,000 label sets.
#[derive(Default)]
struct Breaker {
    in_use: AtomicU64,
    /// The limit of the latest check or config, for the `remaining` gauge.
    limit: AtomicU64,
    overflow: AtomicU64,
}

/// The counts of one breaker at a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerReading {
    pub priority: Priority,
    pub resource: Resource,
    pub in_use: u64,
    pub limit: u64,
    /// Requests, connections or retries refused since the cluster was added.
    pub overflow: u64,
}

impl BreakerReading {
    /// Returns whether the breaker is full.
    pub fn is_open(&self) -> bool {
        self.in_use >= self.limit
    }

    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.in_use)
    }
}

impl ClusterCircuit {
    /// Creates the breakers of `cluster` and adds them to the metrics.
    pub fn new(cluster: &str, stats: &UpstreamStats) -> Arc<Self> {
        let circuit = Arc::new(ClusterCircuit { cluster: cluster.to_string(), levels: Default::default(), released: tokio::sync::Notify::new() });
        stats.add_circuit(&circuit);
        circuit
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Reads every breaker, default priority first.
    pub fn readings(&self) -> impl Iterator<Item = BreakerReading> + '_ {
        [Priority::Default, Priority::High].into_iter().flat_map(move |priority| {
            Resource::ALL.into_iter().map(move |resource| {
                let breaker = self.breaker(priority, resource);
                BreakerReading {
                    priority,
                    resource,
                    in_use: breaker.in_use.load(Ordering::Relaxed),
                    limit: breaker.limit.load(Ordering::Relaxed),
                    overflow: breaker.overflow.load(Ordering::Relaxed),
                }
            })
        })
    }

    /// Resolves at the next `notify_released`; create it before checking
    /// for a free connection so no release is missed.
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    pub fn notify_released(&self) {
        self.released.notify_waiters();
    }

    /// Takes one unit of `resource` if fewer than `limit` are in use; when
    /// the breaker is full, counts an overflow and returns `None`.
    pub fn try_acquire(self: &Arc<Self>, priority: Priority, resource: Resource, limit: u32) -> Option<Slot> {
        let breaker = self.breaker(priority, resource);
        let limit = u64::from(limit);
        breaker.limit.store(limit, Ordering::Relaxed);
        let mut current = breaker.in_use.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                breaker.overflow.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match breaker.in_use.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        Some(Slot { circuit: self.clone(), priority, resource })
    }

    /// Records the limits of the config in force, so the gauges read right
    /// before any request has used a breaker.
    pub fn publish_limits(&self, limits: &legate_config::model::CircuitBreakers) {
        for priority in [Priority::Default, Priority::High] {
            let thresholds = &limits.thresholds[priority.index()];
            let limit_of = |resource: Resource| match resource {
                Resource::Connections => thresholds.max_connections,
                Resource::PendingRequests => thresholds.max_pending_requests,
                Resource::Requests => thresholds.max_requests,
                Resource::Retries => thresholds.max_retries,
            };
            for resource in Resource::ALL {
                self.breaker(priority, resource).limit.store(u64::from(limit_of(resource)), Ordering::Relaxed);
            }
        }
    }

    /// Units of `resource` in use now.
    pub fn in_use(&self, priority: Priority, resource: Resource) -> u64 {
        self.breaker(priority, resource).in_use.load(Ordering::Relaxed)
    }

    fn breaker(&self, priority: Priority, resource: Resource) -> &Breaker {
        &self.levels[priority.index()][resource.index()]
    }
}

/// One unit of a limited resource, given back when dropped.
pub struct Slot {
    circuit: Arc<ClusterCircuit>,
    priority: Priority,
    resource: Resource,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.circuit.breaker(self.priority, self.resource).in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ProxyStats;

    #[test]
    fn limit_holds_and_slots_return() {
        let stats = ProxyStats::new();
        let circuit = ClusterCircuit::new("c", &stats.upstream);
        let taken: Vec<Slot> = (0..3).filter_map(|_| circuit.try_acquire(Priority::Default, Resource::Requests, 3)).collect();
        assert_eq!(taken.len(), 3);
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, 3).is_none(), "the fourth overflows");
        assert!(circuit.try_acquire(Priority::High, Resource::Requests, 3).is_some(), "priorities have their own breakers");
        drop(taken);
        assert_eq!(circuit.in_use(Priority::Default, Resource::Requests), 0);
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, 3).is_some());
    }

    #[test]
    fn raised_limit_applies_at_once() {
        let stats = ProxyStats::new();
        let circuit = ClusterCircuit::new("c", &stats.upstream);
        let _first = circuit.try_acquire(Priority::Default, Resource::Requests, 1).unwrap();
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, 1).is_none());
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, 2).is_some(), "a new limit counts the slots in use");
    }

    #[test]
    fn metrics_read_breakers_at_scrape() {
        let stats = ProxyStats::new();
        let circuit = ClusterCircuit::new("c", &stats.upstream);
        circuit.publish_limits(&Default::default());
        let limit = legate_config::model::CircuitBreakers::default().thresholds[0].max_requests;
        let taken: Vec<Slot> = (0..limit).filter_map(|_| circuit.try_acquire(Priority::Default, Resource::Requests, limit)).collect();
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, limit).is_none());

        let text = stats.encode();
        let series = "{cluster=\"c\",priority=\"default\",resource=\"requests\"}";
        assert!(text.contains(&format!("legate_circuit_breaker_open{series} 1\n")), "{text}");
        assert!(text.contains(&format!("legate_circuit_breaker_remaining{series} 0\n")), "{text}");
        assert!(text.contains(&format!("legate_upstream_overflow_total{series} 1\n")), "{text}");
        let retries = "{cluster=\"c\",priority=\"high\",resource=\"retries\"}";
        assert!(text.contains(&format!("legate_circuit_breaker_remaining{retries} 3\n")), "{text}");

        drop(taken);
        let text = stats.encode();
        assert!(text.contains(&format!("legate_circuit_breaker_open{series} 0\n")), "{text}");
        assert!(text.contains(&format!("legate_circuit_breaker_remaining{series} {limit}\n")), "{text}");
    }

    #[test]
    fn removed_cluster_leaves_metrics() {
        let stats = ProxyStats::new();
        let circuit = ClusterCircuit::new("gone", &stats.upstream);
        assert!(stats.encode().contains("cluster=\"gone\""));

        drop(circuit);
        assert!(!stats.encode().contains("cluster=\"gone\""));
    }
}
