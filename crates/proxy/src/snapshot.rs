//! The routing snapshot: everything a request needs, published in one atomic
//! swap. A request loads the snapshot once when its headers arrive and keeps
//! it to the end, so a config change never affects a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use legate_config::model::HttpConnectionManager;

use crate::router::RouteTable;
use crate::upstream::ClusterHandle;

/// One consistent view of listeners' routes and clusters.
#[derive(Default)]
pub struct Snapshot {
    /// Active listeners by name, each filter chain with its route table
    /// already resolved (inline or from RDS).
    pub listeners: HashMap<Arc<str>, ActiveListener>,
    /// Warm clusters by name, shared by the snapshots between two cluster
    /// changes.
    pub clusters: Arc<HashMap<Arc<str>, Arc<ClusterHandle>>>,
}

/// A listener's filter chains and, when they terminate TLS, their server
/// configs.
#[derive(Clone)]
pub struct ActiveListener {
    /// Indexed as the listener's `filter_chains`.
    pub chains: Arc<[ListenerRoutes]>,
    pub tls: Option<Arc<crate::tls::ServerChains>>,
}

/// A filter chain's HTTP settings and the route table it uses.
#[derive(Clone)]
pub struct ListenerRoutes {
    /// The filter chain's identity across updates (`FilterChain::key`).
    pub key: Arc<str>,
    pub http: Arc<HttpConnectionManager>,
    pub routes: Arc<RouteTable>,
    pub filters: Arc<crate::http::FilterPlan>,
    pub access_logs: Arc<crate::access_log::AccessLoggers>,
    /// `None` when the chain has no enabled connection filter.
    pub connection_filters: Option<Arc<crate::connection_filters::ConnectionFilters>>,
}

/// Shared handle through which the config manager publishes snapshots and
/// connections load them.
pub type SnapshotStore = Arc<ArcSwap<Snapshot>>;

pub fn new_store() -> SnapshotStore {
    Arc::new(ArcSwap::from_pointee(Snapshot::default()))
}
