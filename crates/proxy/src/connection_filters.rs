//! The connection filters of one filter chain, checked once per new
//! downstream connection before TLS and HTTP: a token bucket for new
//! connections (`envoy.filters.network.local_ratelimit`) and a cap on open
//! ones (`envoy.filters.network.connection_limit`).
//!
//! Both are built once per filter chain config and kept across listener
//! updates that leave the chain's filters unchanged, so such an update
//! neither refills the bucket nor resets the count of open connections. A
//! changed filter config starts a full bucket and a count of zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use legate_config::model::{ConnectionFilter, ConnectionLimit};

use crate::ratelimit::AtomicBucket;
use crate::stats::DownstreamStats;

/// The enabled connection filters of one filter chain, in config order.
pub struct ConnectionFilters {
    config: Vec<ConnectionFilter>,
    checks: Vec<Check>,
}

enum Check {
    RateLimit { stat_prefix: Arc<str>, bucket: AtomicBucket, rate_limited: Counter },
    Limit(Arc<OpenLimit>),
}

/// The count of open connections of one connection limit filter.
pub struct OpenLimit {
    stat_prefix: Arc<str>,
    max: u64,
    delay: Option<Duration>,
    open: AtomicU64,
    active: Gauge,
    limited: Counter,
}

/// One connection's place under a connection limit, given back on drop.
pub struct LimitSlot(Arc<OpenLimit>);

impl Drop for LimitSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.active.dec();
    }
}

/// The reason a new connection is closed before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The connection rate limit's bucket was empty.
    RateLimited { stat_prefix: Arc<str> },
    /// The connection limit was reached, and the connection is closed after `delay`.
    OverLimit { stat_prefix: Arc<str>, delay: Option<Duration> },
}

impl ConnectionFilters {
    /// Builds the runtime state of a chain's filters. Returns `None` when no
    /// filter is enabled, so that connections skip the check entirely.
    pub fn new(config: &[ConnectionFilter], listener: &str, stats: &DownstreamStats) -> Option<Arc<ConnectionFilters>> {
        let now = Instant::now();
        let checks: Vec<Check> = config
            .iter()
            .filter_map(|filter| match filter {
                ConnectionFilter::LocalRateLimit(limit) if limit.enabled => Some(Check::RateLimit {
                    stat_prefix: Arc::from(limit.stat_prefix.as_str()),
                    bucket: AtomicBucket::new(limit.token_bucket, now),
                    rate_limited: stats.connections_rate_limited(listener, &limit.stat_prefix),
                }),
                ConnectionFilter::ConnectionLimit(limit) if limit.enabled => Some(Check::Limit(OpenLimit::new(limit, listener, stats))),
                _ => None,
            })
            .collect();
        if checks.is_empty() {
            return None;
        }
        Some(Arc::new(ConnectionFilters { config: config.to_vec(), checks }))
    }

    /// Returns whether these filters were built from `config`, so a listener
    /// update can keep them.
    pub fn is_built_from(&self, config: &[ConnectionFilter]) -> bool {
        self.config == config
    }

    /// Runs the checks in config order on a new connection. Returns the
    /// connection limit's slot, if there is one, which the connection keeps
    /// until it closes. A rejection is counted in its filter's metric.
    pub fn admit(&self, now: Instant) -> Result<Option<LimitSlot>, Rejection> {
        let mut slot = None;
        for check in &self.checks {
            match check {
                Check::RateLimit { stat_prefix, bucket, rate_limited } => {
                    if !bucket.take(now).allowed {
                        rate_limited.inc();
                        return Err(Rejection::RateLimited { stat_prefix: stat_prefix.clone() });
                    }
                }
                Check::Limit(limit) => match limit.acquire() {
                    Some(acquired) => slot = Some(acquired),
                    None => {
                        limit.limited.inc();
                        return Err(Rejection::OverLimit { stat_prefix: limit.stat_prefix.clone(), delay: limit.delay });
                    }
                },
            }
        }
        Ok(slot)
    }
}

impl OpenLimit {
    fn new(config: &ConnectionLimit, listener: &str, stats: &DownstreamStats) -> Arc<OpenLimit> {
        Arc::new(OpenLimit {
            stat_prefix: Arc::from(config.stat_prefix.as_str()),
            max: config.max_connections,
            delay: config.delay,
            open: AtomicU64::new(0),
            active: stats.connection_limit_active(listener, &config.stat_prefix),
            limited: stats.connections_limited(listener, &config.stat_prefix),
        })
    }

    /// Counts one more open connection unless `max` are open already.
    fn acquire(self: &Arc<Self>) -> Option<LimitSlot> {
        let counted = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.max).then_some(open + 1));
        counted.ok().map(|_| {
            self.active.inc();
            LimitSlot(self.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use legate_config::model::{ConnectionRateLimit, TokenBucket};

    fn stats() -> Arc<crate::stats::ProxyStats> {
        crate::stats::ProxyStats::new()
    }

    fn limit(max_connections: u64) -> ConnectionFilter {
        ConnectionFilter::ConnectionLimit(ConnectionLimit { stat_prefix: "cap".into(), max_connections, delay: None, enabled: true })
    }

    fn rate_limit(max_tokens: u32) -> ConnectionFilter {
        let token_bucket = TokenBucket { max_tokens, tokens_per_fill: max_tokens, fill_interval: Duration::from_secs(60) };
        ConnectionFilter::LocalRateLimit(ConnectionRateLimit { stat_prefix: "rate".into(), token_bucket, enabled: true })
    }

    #[test]
    fn disabled_filters_build_nothing() {
        let ConnectionFilter::ConnectionLimit(mut config) = limit(1) else { unreachable!() };
        config.enabled = false;
        assert!(ConnectionFilters::new(&[ConnectionFilter::ConnectionLimit(config)], "l", &stats().downstream).is_none());
        assert!(ConnectionFilters::new(&[], "l", &stats().downstream).is_none());
    }

    #[test]
    fn limit_frees_slot_on_drop() {
        let stats = stats();
        let filters = ConnectionFilters::new(&[limit(2)], "l", &stats.downstream).unwrap();
        let now = Instant::now();
        let first = filters.admit(now).unwrap();
        let second = filters.admit(now).unwrap();
        assert!(first.is_some());
        assert!(second.is_some());
        let rejected = filters.admit(now).map(|_| ()).unwrap_err();
        assert_eq!(rejected, Rejection::OverLimit { stat_prefix: "cap".into(), delay: None });
        drop(first);
        assert!(filters.admit(now).is_ok(), "a closed connection frees its slot");
        assert_eq!(stats.downstream.connections_limited("l", "cap").get(), 1);
    }

    #[test]
    fn limit_exact_across_threads() {
        let stats = stats();
        let filters = ConnectionFilters::new(&[limit(100)], "l", &stats.downstream).unwrap();
        let slots = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let filters = filters.clone();
                let slots = slots.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if let Ok(slot) = filters.admit(Instant::now()) {
                            slots.lock().unwrap().push(slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(slots.lock().unwrap().len(), 100);
        assert_eq!(stats.downstream.connection_limit_active("l", "cap").get(), 100);
        slots.lock().unwrap().clear();
        assert_eq!(stats.downstream.connection_limit_active("l", "cap").get(), 0);
    }

    #[test]
    fn rate_limit_before_limit_takes_no_slot() {
        let stats = stats();
        let filters = ConnectionFilters::new(&[rate_limit(1), limit(5)], "l", &stats.downstream).unwrap();
        let now = Instant::now();
        let admitted = filters.admit(now).unwrap();
        assert!(admitted.is_some());
        assert_eq!(filters.admit(now).map(|_| ()).unwrap_err(), Rejection::RateLimited { stat_prefix: "rate".into() });
        assert_eq!(stats.downstream.connection_limit_active("l", "cap").get(), 1, "the rejected connection holds no slot");
        assert_eq!(stats.downstream.connections_rate_limited("l", "rate").get(), 1);
    }
}
