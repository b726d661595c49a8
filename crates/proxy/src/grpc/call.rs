//! Per-method statistics of gRPC calls: which series a call counts under,
//! and the record of one call from its headers to its status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::time::Instant;

use legate_config::model::GrpcStatsConfig;

use super::status::Code;
use crate::stats::{GrpcMethodStats, GrpcStats, OTHER_METHOD};

/// Largest number of methods that get their own series with
/// `stats_for_all_methods`; later ones count under `other`.
const MAX_DYNAMIC_METHODS: usize = 1000;

/// Methods met so far under `stats_for_all_methods`, by `service/method`.
type DynamicMethods = RwLock<HashMap<Box<str>, Arc<GrpcMethodStats>>>;

/// The series of each method for one `grpc_stats` filter, built at config
/// load for an allowlist.
pub struct MethodTable {
    /// `service/method` to its handles.
    known: HashMap<Box<str>, Arc<GrpcMethodStats>>,
    /// With `stats_for_all_methods`: methods met so far. Looked up under a
    /// read lock of this filter only; written once per new method.
    dynamic: Option<(Arc<GrpcStats>, DynamicMethods)>,
    other: Arc<GrpcMethodStats>,
}

impl MethodTable {
    pub fn new(config: &GrpcStatsConfig, stats: &Arc<GrpcStats>) -> MethodTable {
        let mut known = HashMap::new();
        let mut dynamic = None;
        match config {
            GrpcStatsConfig::AllMethods => dynamic = Some((stats.clone(), RwLock::new(HashMap::new()))),
            GrpcStatsConfig::Allowlist(services) => {
                for (service, methods) in services {
                    for method in methods {
                        known.insert(format!("{service}/{method}").into_boxed_str(), stats.method(service, method));
                    }
                }
            }
            GrpcStatsConfig::None => {}
        }
        MethodTable { known, dynamic, other: stats.method(OTHER_METHOD, OTHER_METHOD) }
    }

    /// Returns the series of calls that count under `other`.
    pub fn other(&self) -> Arc<GrpcMethodStats> {
        self.other.clone()
    }

    /// Finds the handles for a request path `/service/method`.
    pub fn lookup(&self, path: &str) -> Arc<GrpcMethodStats> {
        let Some((service, method)) = super::split_path(path) else { return self.other.clone() };
        let key = &path[1..];
        if let Some(found) = self.known.get(key) {
            return found.clone();
        }
        let Some((families, seen)) = &self.dynamic else { return self.other.clone() };
        if let Some(found) = seen.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key) {
            return found.clone();
        }
        let mut seen = seen.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() >= MAX_DYNAMIC_METHODS {
            return self.other.clone();
        }
        seen.entry(key.into()).or_insert_with(|| families.method(service, method)).clone()
    }
}

/// One gRPC call being counted. The request body adds received messages,
/// the response body sent ones, and the first status seen ends the call.
pub struct GrpcCall {
    stats: Arc<GrpcMethodStats>,
    start: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    finished: AtomicBool,
}

impl GrpcCall {
    pub fn start(stats: Arc<GrpcMethodStats>, start: Instant) -> Arc<GrpcCall> {
        stats.started.inc();
        Arc::new(GrpcCall { stats, start, received: AtomicU64::new(0), sent: AtomicU64::new(0), finished: AtomicBool::new(false) })
    }

    pub fn add_received(&self, messages: u64) {
        self.received.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn add_sent(&self, messages: u64) {
        self.sent.fetch_add(messages, Ordering::Relaxed);
    }

    /// Records the call's status once; later calls do nothing.
    pub fn finish(&self, code: Code) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        let received = self.received.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let call_type = match (received > 1, sent > 1) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        self.stats.record(call_type, code as usize, self.start.elapsed().as_secs_f64(), received, sent);
    }
}
