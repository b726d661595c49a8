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

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

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
    const ALL: [Resource; 4] = [Resource::Connections, Resource::PendingRequests, Resource::Requests, Resource::Retries];

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
    /// Indexed by priority, then by resource.
    levels: [[Breaker; 4]; 2],
    /// Wakes requests pending for a connection when one is handed back or
    /// closed.
    released: tokio::sync::Notify,
}

struct Breaker {
    open: AtomicU64,
    stats: BreakerStats,
}

/// Metric handles of one breaker.
pub struct BreakerStats {
    pub open: Gauge,
    pub remaining: Gauge,
    pub overflow: Counter,
}

impl ClusterCircuit {
    pub fn new(cluster: &str, stats: &UpstreamStats) -> Arc<Self> {
        let level = |priority: Priority| {
            Resource::ALL.map(|resource| Breaker { open: AtomicU64::new(0), stats: stats.breaker(cluster, priority, resource) })
        };
        Arc::new(ClusterCircuit { levels: [level(Priority::Default), level(Priority::High)], released: tokio::sync::Notify::new() })
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
        let mut current = breaker.open.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                breaker.stats.overflow.inc();
                breaker.stats.open.set(1);
                return None;
            }
            match breaker.open.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        breaker.publish(current + 1, limit);
        Some(Slot { circuit: self.clone(), priority, resource, limit })
    }

    /// Publishes each breaker's remaining capacity under `limits`, so the
    /// gauges read right before any request has used a breaker.
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
                let breaker = self.breaker(priority, resource);
                breaker.publish(breaker.open.load(Ordering::Relaxed), u64::from(limit_of(resource)));
            }
        }
    }

    /// Units of `resource` in use now.
    pub fn in_use(&self, priority: Priority, resource: Resource) -> u64 {
        self.breaker(priority, resource).open.load(Ordering::Relaxed)
    }

    fn breaker(&self, priority: Priority, resource: Resource) -> &Breaker {
        &self.levels[priority.index()][resource.index()]
    }
}

impl Breaker {
    fn publish(&self, in_use: u64, limit: u64) {
        self.stats.remaining.set(limit.saturating_sub(in_use) as i64);
        self.stats.open.set(i64::from(in_use >= limit));
    }
}

/// One unit of a limited resource, given back when dropped.
pub struct Slot {
    circuit: Arc<ClusterCircuit>,
    priority: Priority,
    resource: Resource,
    limit: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let breaker = self.circuit.breaker(self.priority, self.resource);
        let before = breaker.open.fetch_sub(1, Ordering::AcqRel);
        breaker.publish(before.saturating_sub(1), self.limit);
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
        let held: Vec<Slot> = (0..3).filter_map(|_| circuit.try_acquire(Priority::Default, Resource::Requests, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(circuit.try_acquire(Priority::Default, Resource::Requests, 3).is_none(), "the fourth overflows");
        assert!(circuit.try_acquire(Priority::High, Resource::Requests, 3).is_some(), "priorities have their own breakers");
        drop(held);
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
}
