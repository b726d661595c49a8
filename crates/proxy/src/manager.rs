//! The config manager: stores every listener, route configuration, cluster
//! and endpoint set the proxy knows, decides which are warm, and publishes
//! the warm ones as one snapshot.
//!
//! Warming follows Envoy: a cluster takes traffic only once it has its
//! endpoints (EDS or first DNS round) and its SDS secrets, and a listener
//! only once it has its route configuration and its SDS secrets. Until then
//! the previous version keeps serving.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use legate_config::model::{
    Bootstrap, Cluster, ClusterLoadAssignment, DiscoveryType, EndpointAddress, LbEndpoint, Listener, RouteConfiguration,
    RouteSource, Secret, SecretLookupError, Secrets,
};
use legate_config::ResourceType;

use crate::listener::ListenerSet;
use crate::router::RouteTable;
use crate::snapshot::{ActiveListener, ListenerRoutes, Snapshot, SnapshotStore};
use crate::stats::ProxyStats;
use crate::upstream::{spawn_resolver, ClusterHandle, Resolved};

/// Version label of resources from the bootstrap file.
const STATIC_VERSION: &str = "static";

pub struct ConfigManager {
    store: SnapshotStore,
    stats: Arc<ProxyStats>,
    log_writers: crate::access_log::LogWriters,
    state: Mutex<State>,
    dns_results: mpsc::Sender<Resolved>,
    listeners: ListenerSet,
}

#[derive(Default)]
struct State {
    clusters: HashMap<String, ClusterEntry>,
    assignments: HashMap<String, Versioned<Arc<ClusterLoadAssignment>>>,
    route_configs: HashMap<String, Versioned<Arc<RouteTable>>>,
    secrets: HashMap<String, Versioned<Arc<Secret>>>,
    listeners: HashMap<String, ListenerEntry>,
    active_clusters: HashMap<Arc<str>, ActiveCluster>,
    /// The handles of `active_clusters`, as the last snapshot contains them.
    published_clusters: Arc<HashMap<Arc<str>, Arc<ClusterHandle>>>,
    /// Whether a cluster, its endpoints or its TLS changed since the last
    /// publish. Without such a change, a publish (after a route or listener
    /// update) reuses the active clusters instead of checking each again.
    clusters_changed: bool,
    active_listeners: HashMap<Arc<str>, ActiveListener>,
    generation: u64,
    ready: bool,
    /// Whether the first full response of each wildcard type has arrived.
    awaiting_first: HashSet<&'static str>,
    /// When each resource received over xDS last changed, for the config
    /// dump: a hash of its bytes and the time they first arrived.
    updated: HashMap<(ResourceType, String), (u64, SystemTime)>,
    /// Resources whose latest version was rejected, with the error.
    rejected: BTreeMap<(ResourceType, String), RejectedEntry>,
}

/// A resource version the proxy rejected, kept for the config dump until a
/// later version of it is accepted.
#[derive(Debug, Clone)]
pub struct RejectedEntry {
    pub version: String,
    pub error: String,
    pub at: SystemTime,
}

struct Versioned<T> {
    value: T,
    version: String,
    raw: Option<prost_types::Any>,
}

struct ClusterEntry {
    config: Arc<Cluster>,
    version: String,
    raw: Option<prost_types::Any>,
    is_static: bool,
    generation: u64,
    /// Latest DNS round of a STRICT_DNS cluster, and the handle that stops
    /// its resolver when the entry is dropped.
    resolved: Option<Vec<(SocketAddr, LbEndpoint)>>,
    _stop_resolver: Option<oneshot::Sender<()>>,
    /// Built once per cluster version and secret version, so pools survive
    /// endpoint changes; `None` while an SDS secret it needs is missing.
    tls: Option<Arc<crate::tls::UpstreamConnector>>,
    /// The secrets `tls` was built from, in the order the cluster names them.
    tls_secrets: Vec<Arc<Secret>>,
}

struct ListenerEntry {
    config: Arc<Listener>,
    version: String,
    raw: Option<prost_types::Any>,
    is_static: bool,
    /// Per filter chain, in config order.
    chains: Vec<ChainEntry>,
    /// `None` for a plaintext listener, and while an SDS secret it needs is missing.
    tls: Option<Arc<crate::tls::ServerChains>>,
    /// The secrets `tls` was built from, in the order the listener names them.
    tls_secrets: Vec<Arc<Secret>>,
}

/// The parts of a filter chain's connection manager built once at load.
struct ChainEntry {
    /// Route table of an inline route configuration.
    inline_routes: Option<Arc<RouteTable>>,
    filters: Arc<crate::http::FilterPlan>,
    access_logs: Arc<crate::access_log::AccessLoggers>,
    connection_filters: Option<Arc<crate::connection_filters::ConnectionFilters>>,
}

struct ActiveCluster {
    handle: Arc<ClusterHandle>,
    endpoints: Vec<(SocketAddr, LbEndpoint)>,
    /// The connector `handle` was built with.
    tls: Option<Arc<crate::tls::UpstreamConnector>>,
}

/// A resource of an xDS response that could not be applied.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub name: String,
    /// What is wrong, naming the resource.
    pub reason: String,
}

impl ConfigManager {
    /// Creates the manager and starts the task that applies DNS results.
    pub fn new(store: SnapshotStore, listeners: ListenerSet, stats: Arc<ProxyStats>) -> Arc<Self> {
        let (dns_results, mut results) = mpsc::channel(64);
        let state = Mutex::new(State::default());
        let log_writers = crate::access_log::LogWriters::default();
        let manager = Arc::new(ConfigManager { store, stats, log_writers, state, dns_results, listeners });

        let weak = Arc::downgrade(&manager);
        tokio::spawn(async move {
            while let Some(round) = results.recv().await {
                let Some(manager) = weak.upgrade() else { return };
                manager.apply_dns(round);
            }
        });
        manager
    }

    /// Loads the bootstrap's static resources; a listener that cannot bind
    /// is an error, because start-up cannot go on without it.
    pub fn load_static(&self, bootstrap: &Bootstrap) -> Result<(), Rejected> {
        let mut state = self.lock();
        if let Some(ads) = &bootstrap.ads {
            if ads.cds {
                state.awaiting_first.insert(legate_config::ResourceType::Cluster.type_url());
            }
            if ads.lds {
                state.awaiting_first.insert(legate_config::ResourceType::Listener.type_url());
            }
        }
        for (index, cluster) in bootstrap.clusters.iter().enumerate() {
            let raw = bootstrap.raw_clusters.get(index).cloned();
            self.insert_cluster(&mut state, cluster.clone(), STATIC_VERSION, raw, true)?;
        }
        for (index, listener) in bootstrap.listeners.iter().enumerate() {
            let raw = bootstrap.raw_listeners.get(index).cloned();
            self.insert_listener(&mut state, listener.clone(), STATIC_VERSION, raw, true)?;
        }
        self.publish(&mut state);
        Ok(())
    }

    /// Applies a CDS response: `clusters` are the valid ones, `named` every
    /// name in the response, so that only clusters absent from it are
    /// removed and an invalid one keeps its previous version.
    pub fn update_clusters(
        &self,
        clusters: Vec<(Cluster, prost_types::Any)>,
        named: &HashSet<String>,
        version: &str,
    ) -> Vec<Rejected> {
        let mut state = self.lock();
        let mut rejected = Vec::new();

        let known = state.clusters.len();
        state.clusters.retain(|name, entry| entry.is_static || named.contains(name));
        state.clusters_changed |= state.clusters.len() != known;
        for (cluster, raw) in clusters {
            if state.clusters.get(&cluster.name).is_some_and(|entry| entry.is_static) {
                rejected.push(static_conflict(&cluster.name, "cluster"));
                continue;
            }
            let unchanged = state.clusters.get(&cluster.name).is_some_and(|entry| *entry.config == cluster);
            if unchanged {
                if let Some(entry) = state.clusters.get_mut(&cluster.name) {
                    entry.version = version.to_string();
                    entry.raw = Some(raw);
                }
                continue;
            }
            if let Err(error) = self.insert_cluster(&mut state, cluster, version, Some(raw), false) {
                rejected.push(error);
            }
        }

        state.awaiting_first.remove(legate_config::ResourceType::Cluster.type_url());
        self.publish(&mut state);
        rejected
    }

    /// Tells, for each resource of `resource_type` in a response, whether its
    /// bytes equal those of the accepted resource of the same name, and
    /// marks those as accepted at `version`: they need no decoding and no
    /// rebuild. Static resources never match, so a response naming one is
    /// still rejected.
    pub fn keep_unchanged(&self, resource_type: ResourceType, resources: &[(&str, &prost_types::Any)], version: &str) -> Vec<bool> {
        let mut state = self.lock();
        resources
            .iter()
            .map(|(name, any)| {
                let accepted = match resource_type {
                    ResourceType::Cluster => state.clusters.get_mut(*name).filter(|entry| !entry.is_static).map(|entry| (&entry.raw, &mut entry.version)),
                    ResourceType::Listener => state.listeners.get_mut(*name).filter(|entry| !entry.is_static).map(|entry| (&entry.raw, &mut entry.version)),
                    ResourceType::RouteConfiguration => state.route_configs.get_mut(*name).map(|entry| (&entry.raw, &mut entry.version)),
                    ResourceType::ClusterLoadAssignment => state.assignments.get_mut(*name).map(|entry| (&entry.raw, &mut entry.version)),
                    ResourceType::Secret => state.secrets.get_mut(*name).map(|entry| (&entry.raw, &mut entry.version)),
                };
                match accepted {
                    Some((Some(raw), accepted_version)) if raw.type_url == any.type_url && raw.value == any.value => {
                        *accepted_version = version.to_string();
                        true
                    }
                    _ => false,
                }
            })
            .collect()
    }

    /// Applies an EDS response. Assignments absent from it stay, because
    /// state-of-the-world responses for non-wildcard types are not complete
    /// sets.
    pub fn update_assignments(&self, assignments: Vec<(ClusterLoadAssignment, prost_types::Any)>, version: &str) {
        let mut state = self.lock();
        for (assignment, raw) in assignments {
            let entry = Versioned { value: Arc::new(assignment), version: version.to_string(), raw: Some(raw) };
            state.assignments.insert(entry.value.cluster_name.clone(), entry);
            state.clusters_changed = true;
        }
        self.publish(&mut state);
    }

    /// Applies an LDS response, like `update_clusters`. A listener whose
    /// address cannot be bound is rejected.
    pub fn update_listeners(
        &self,
        listeners: Vec<(Listener, prost_types::Any)>,
        named: &HashSet<String>,
        version: &str,
    ) -> Vec<Rejected> {
        let mut state = self.lock();
        let mut rejected = Vec::new();

        state.listeners.retain(|name, entry| entry.is_static || named.contains(name));
        for (listener, raw) in listeners {
            if state.listeners.get(&listener.name).is_some_and(|entry| entry.is_static) {
                rejected.push(static_conflict(&listener.name, "listener"));
                continue;
            }
            if let Some(entry) = state.listeners.get_mut(&listener.name) {
                if *entry.config == listener {
                    entry.version = version.to_string();
                    entry.raw = Some(raw);
                    continue;
                }
            }
            if let Err(error) = self.insert_listener(&mut state, listener, version, Some(raw), false) {
                rejected.push(error);
            }
        }

        state.awaiting_first.remove(legate_config::ResourceType::Listener.type_url());
        self.publish(&mut state);
        rejected
    }

    /// Applies an RDS response.
    pub fn update_route_configs(&self, route_configs: Vec<(Arc<RouteConfiguration>, prost_types::Any)>, version: &str) {
        let mut state = self.lock();
        for (config, raw) in route_configs {
            let name = config.name.clone();
            let table = Arc::new(RouteTable::new(config, &self.stats.http));
            let entry = Versioned { value: table, version: version.to_string(), raw: Some(raw) };
            state.route_configs.insert(name, entry);
        }
        self.publish(&mut state);
    }

    /// Applies an SDS response. Secrets absent from it stay, as for EDS, and
    /// a secret whose certificate, key or CA does not load is rejected and
    /// keeps its previous version. The listeners and clusters that use a
    /// changed secret get new TLS configs, which new handshakes use while
    /// open connections keep the old ones. One that fails to build keeps its
    /// previous config and is returned.
    pub fn update_secrets(&self, secrets: Vec<(Arc<Secret>, prost_types::Any)>, version: &str) -> Vec<Rejected> {
        let mut state = self.lock();
        let mut rejected = Vec::new();
        for (secret, raw) in secrets {
            if let Err(reason) = crate::tls::check_secret(&secret.kind) {
                rejected.push(Rejected { name: secret.name.clone(), reason: format!("secret {:?} is invalid: {reason}", secret.name) });
                continue;
            }
            let entry = Versioned { value: secret, version: version.to_string(), raw: Some(raw) };
            state.secrets.insert(entry.value.name.clone(), entry);
        }
        rejected.extend(self.refresh_secret_tls(&mut state));
        self.publish(&mut state);
        rejected
    }

    /// Names of the SDS secrets the known listeners and clusters need.
    pub fn sds_names(&self) -> BTreeSet<String> {
        let state = self.lock();
        let listeners = state.listeners.values().flat_map(|entry| entry.config.secret_names());
        let clusters = state.clusters.values().flat_map(|entry| entry.config.secret_names());
        listeners.chain(clusters).map(str::to_owned).collect()
    }

    /// Names of the ClusterLoadAssignments the known EDS clusters need.
    pub fn eds_names(&self) -> BTreeSet<String> {
        let state = self.lock();
        state.clusters.values().filter_map(|entry| entry.config.eds_service_name().map(str::to_owned)).collect()
    }

    /// Names of the route configurations the known listeners fetch over RDS.
    pub fn rds_names(&self) -> BTreeSet<String> {
        let state = self.lock();
        state
            .listeners
            .values()
            .flat_map(|entry| &entry.config.filter_chains)
            .filter_map(|chain| match &chain.http.routes {
                RouteSource::Rds(name) => Some(name.clone()),
                RouteSource::Inline(_) => None,
            })
            .collect()
    }

    /// Returns whether the first full config is applied and warm. Once true,
    /// it stays true.
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// Every resource in force with its version, for the admin endpoint.
    /// Records what an xDS response brought: the time each resource whose
    /// bytes changed arrived, and which ones were rejected. A rejection is
    /// forgotten once a later version of that resource is accepted.
    pub fn note_response(&self, resource_type: ResourceType, version: &str, resources: &[prost_types::Any], rejected: &[Rejected]) {
        let now = SystemTime::now();
        let mut state = self.lock();
        for any in resources {
            let Some(name) = legate_config::resource::resource_name(any) else { continue };
            let key = (resource_type, name);
            if let Some(failure) = rejected.iter().find(|failure| failure.name == key.1) {
                let entry = RejectedEntry { version: version.to_string(), error: failure.reason.clone(), at: now };
                state.rejected.insert(key, entry);
                continue;
            }
            state.rejected.remove(&key);
            let hash = xxhash_rust::xxh64::xxh64(&any.value, 0);
            match state.updated.get(&key) {
                Some((known, _)) if *known == hash => {}
                _ => {
                    state.updated.insert(key, (hash, now));
                }
            }
        }
    }

    /// Returns the rejected resources, by type and name.
    pub fn rejected(&self) -> Vec<((ResourceType, String), RejectedEntry)> {
        self.lock().rejected.iter().map(|(key, entry)| (key.clone(), entry.clone())).collect()
    }

    pub fn config_dump(&self) -> Vec<DumpEntry> {
        let state = self.lock();
        let mut entries = Vec::new();
        for (name, entry) in &state.listeners {
            let active = state.active_listeners.contains_key(name.as_str());
            entries.push(DumpEntry::new(ResourceType::Listener, name, &entry.version, entry.raw.clone(), active));
        }
        for (name, entry) in &state.route_configs {
            entries.push(DumpEntry::new(ResourceType::RouteConfiguration, name, &entry.version, entry.raw.clone(), true));
        }
        for (name, entry) in &state.clusters {
            let active = state.active_clusters.contains_key(name.as_str());
            entries.push(DumpEntry::new(ResourceType::Cluster, name, &entry.version, entry.raw.clone(), active));
        }
        for (name, entry) in &state.assignments {
            entries.push(DumpEntry::new(ResourceType::ClusterLoadAssignment, name, &entry.version, entry.raw.clone(), true));
        }
        for (name, entry) in &state.secrets {
            entries.push(DumpEntry::new(ResourceType::Secret, name, &entry.version, entry.raw.clone(), true));
        }
        entries.sort_by(|a, b| (a.kind(), &a.name).cmp(&(b.kind(), &b.name)));
        for entry in &mut entries {
            entry.last_updated = state.updated.get(&(entry.resource_type, entry.name.clone())).map(|(_, at)| *at);
        }
        entries
    }

    /// Lists the warm clusters and their endpoints' state, for the admin page.
    pub fn clusters_view(&self) -> serde_json::Value {
        let state = self.lock();
        let mut names: Vec<&Arc<str>> = state.active_clusters.keys().collect();
        names.sort();
        let clusters: Vec<serde_json::Value> = names
            .into_iter()
            .map(|name| {
                let handle = &state.active_clusters[name].handle;
                let endpoints: Vec<serde_json::Value> = handle
                    .balancer
                    .members()
                    .map(|(pool, endpoint)| {
                        let health = &pool.membership().health;
                        serde_json::json!({
                            "address": pool.address().to_string(),
                            "weight": endpoint.weight,
                            "priority": endpoint.priority,
                            "eds_health": format!("{:?}", endpoint.health),
                            "ejected": health.is_ejected_now(),
                            "failed_active_health_check": health.fails_checks(),
                            "active_requests": pool.active_requests(),
                        })
                    })
                    .collect();
                serde_json::json!({ "name": name.as_ref(), "endpoints": endpoints })
            })
            .collect();
        serde_json::Value::Array(clusters)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Addresses the listeners are bound to, for the admin endpoint and the
    /// start-up output.
    pub fn bound_listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.bound()
    }

    /// Drains every listener's connections, and stops the listeners from
    /// accepting once `accept_window` has passed.
    pub fn drain_listeners(&self, accept_window: std::time::Duration, grace: std::time::Duration) {
        self.listeners.drain_all(accept_window, grace);
    }

    /// Returns the maximum drain timeout among the listeners.
    pub fn longest_drain_timeout(&self) -> std::time::Duration {
        self.listeners.longest_drain_timeout()
    }

    /// Downstream connections and upgraded pipes still open.
    pub fn open_connections(&self) -> usize {
        self.listeners.open_connections()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert_cluster(
        &self,
        state: &mut State,
        cluster: Cluster,
        version: &str,
        raw: Option<prost_types::Any>,
        is_static: bool,
    ) -> Result<(), Rejected> {
        let (tls, tls_secrets) = match cluster_tls(&cluster, &secret_map(state)) {
            Ok(Some((tls, secrets))) => (Some(tls), secrets),
            Ok(None) => (None, Vec::new()),
            Err(TlsBuildError::Secret(error)) => {
                info!(cluster = %cluster.name, reason = %error, "cluster warming until its SDS secrets arrive");
                (None, Vec::new())
            }
            Err(TlsBuildError::Load(reason)) => {
                return Err(Rejected { name: cluster.name.clone(), reason: format!("TLS config of cluster {:?} is invalid: {reason}", cluster.name) })
            }
        };
        state.generation += 1;
        let generation = state.generation;

        let stop_resolver = match &cluster.discovery {
            DiscoveryType::StrictDns { refresh_rate } => {
                let (stop, stopped) = oneshot::channel();
                let endpoints = cluster.load_assignment.as_ref().map(|a| a.endpoints.clone()).unwrap_or_default();
                spawn_resolver(cluster.name.clone(), generation, endpoints, *refresh_rate, self.dns_results.clone(), stopped);
                Some(stop)
            }
            _ => None,
        };

        let entry = ClusterEntry {
            config: Arc::new(cluster),
            version: version.to_string(),
            raw,
            is_static,
            generation,
            resolved: None,
            _stop_resolver: stop_resolver,
            tls,
            tls_secrets,
        };
        state.clusters.insert(entry.config.name.clone(), entry);
        state.clusters_changed = true;
        Ok(())
    }

    fn insert_listener(
        &self,
        state: &mut State,
        listener: Listener,
        version: &str,
        raw: Option<prost_types::Any>,
        is_static: bool,
    ) -> Result<(), Rejected> {
        let (tls, tls_secrets) = match listener_tls(&listener, &secret_map(state)) {
            Ok(Some((tls, secrets))) => (Some(tls), secrets),
            Ok(None) => (None, Vec::new()),
            Err(TlsBuildError::Secret(error)) => {
                info!(listener = %listener.name, reason = %error, "listener warming until its SDS secrets arrive");
                (None, Vec::new())
            }
            Err(TlsBuildError::Load(reason)) => {
                return Err(Rejected { name: listener.name.clone(), reason: format!("TLS config of listener {:?} is invalid: {reason}", listener.name) })
            }
        };
        self.listeners
            .prepare(&listener)
            .map_err(|error| Rejected { name: listener.name.clone(), reason: format!("{error}: {}", error.source) })?;

        // A chain's previous parts are found by its key, wherever it moved.
        let previous = state.listeners.get(&listener.name);
        let previous_chain = |key: &str| {
            let entry = previous?;
            let index = entry.config.filter_chains.iter().position(|chain| &*chain.key == key)?;
            entry.chains.get(index)
        };
        let chains = listener.filter_chains.iter().map(|chain| self.chain_entry(&listener.name, chain, previous_chain(&chain.key))).collect();
        let entry = ListenerEntry { config: Arc::new(listener), version: version.to_string(), raw, is_static, chains, tls, tls_secrets };
        state.listeners.insert(entry.config.name.clone(), entry);
        Ok(())
    }

    /// Builds a chain's parts. The connection filters of `previous`, the
    /// chain at the same index before this update, are kept when their
    /// config is unchanged, so the bucket and the open count carry over.
    fn chain_entry(&self, listener: &str, chain: &legate_config::model::FilterChain, previous: Option<&ChainEntry>) -> ChainEntry {
        let http = &chain.http;
        let inline_routes = match &http.routes {
            RouteSource::Inline(config) => Some(Arc::new(RouteTable::new(config.clone(), &self.stats.http))),
            RouteSource::Rds(_) => None,
        };
        let filters = crate::http::FilterPlan::new(&http.http_filters, &self.stats);
        let access_logs = Arc::new(crate::access_log::AccessLoggers::new(&http.access_logs, &self.log_writers, &self.stats));
        let kept = previous
            .and_then(|entry| entry.connection_filters.as_ref())
            .filter(|filters| filters.is_built_from(&chain.connection_filters))
            .cloned();
        let connection_filters =
            kept.or_else(|| crate::connection_filters::ConnectionFilters::new(&chain.connection_filters, listener, &self.stats.downstream));
        ChainEntry { inline_routes, filters, access_logs, connection_filters }
    }

    /// Rebuilds the TLS configs of listeners and clusters whose SDS secrets
    /// arrived or changed. One that fails keeps its previous config.
    fn refresh_secret_tls(&self, state: &mut State) -> Vec<Rejected> {
        let secrets = secret_map(state);
        let mut rejected = Vec::new();
        for (name, entry) in &mut state.listeners {
            if !needs_rebuild(entry.config.secret_names(), &entry.tls_secrets, &secrets) {
                continue;
            }
            match listener_tls(&entry.config, &secrets) {
                Ok(Some((tls, used))) => {
                    info!(listener = %name, "TLS config rebuilt from updated secrets");
                    entry.tls = Some(tls);
                    entry.tls_secrets = used;
                }
                Ok(None) | Err(TlsBuildError::Secret(_)) => {}
                Err(TlsBuildError::Load(reason)) => {
                    warn!(listener = %name, error = %reason, "failed to build TLS from updated secrets; keeping the previous TLS config");
                    rejected.push(Rejected { name: name.clone(), reason: format!("TLS config of listener {name:?} is invalid: {reason}") });
                }
            }
        }
        for (name, entry) in &mut state.clusters {
            if !needs_rebuild(entry.config.secret_names(), &entry.tls_secrets, &secrets) {
                continue;
            }
            match cluster_tls(&entry.config, &secrets) {
                Ok(Some((tls, used))) => {
                    info!(cluster = %name, "TLS config rebuilt from updated secrets");
                    entry.tls = Some(tls);
                    entry.tls_secrets = used;
                    state.clusters_changed = true;
                }
                Ok(None) | Err(TlsBuildError::Secret(_)) => {}
                Err(TlsBuildError::Load(reason)) => {
                    warn!(cluster = %name, error = %reason, "failed to build TLS from updated secrets; keeping the previous TLS config");
                    rejected.push(Rejected { name: name.clone(), reason: format!("TLS config of cluster {name:?} is invalid: {reason}") });
                }
            }
        }
        rejected
    }

    fn apply_dns(&self, round: Resolved) {
        let mut state = self.lock();
        let Some(entry) = state.clusters.get_mut(&round.cluster) else { return };
        if entry.generation != round.generation || entry.resolved.as_ref() == Some(&round.endpoints) {
            return;
        }
        entry.resolved = Some(round.endpoints);
        state.clusters_changed = true;
        self.publish(&mut state);
    }

    /// Builds the snapshot from every warm resource, keeping the previous
    /// version of anything still warming, and publishes it.
    fn publish(&self, state: &mut State) {
        if std::mem::take(&mut state.clusters_changed) {
            self.publish_clusters(state);
        }

        let mut listeners = HashMap::new();
        for (name, entry) in &state.listeners {
            let name: Arc<str> = Arc::from(name.as_str());
            match active_listener(entry, &state.route_configs) {
                Some(active) => {
                    listeners.insert(name, active);
                }
                None => {
                    if let Some(previous) = state.active_listeners.get(&name) {
                        listeners.insert(name, previous.clone());
                    }
                }
            }
        }
        state.active_listeners = listeners;

        let snapshot = Snapshot { listeners: state.active_listeners.clone(), clusters: state.published_clusters.clone() };
        self.store.store(Arc::new(snapshot));

        let active: Vec<Arc<Listener>> = state
            .listeners
            .iter()
            .filter(|(name, _)| state.active_listeners.contains_key(name.as_str()))
            .map(|(_, entry)| entry.config.clone())
            .collect();
        let desired: HashSet<&str> = state.listeners.keys().map(String::as_str).collect();
        self.listeners.sync(&active, &desired);
        self.update_ready(state);
    }

    /// Rebuilds the active clusters and the map the snapshots share.
    fn publish_clusters(&self, state: &mut State) {
        let clusters = self.warm_clusters(state);
        for name in state.active_clusters.keys().filter(|name| !clusters.contains_key(*name)) {
            self.stats.upstream.remove_cluster(name);
        }
        state.active_clusters = clusters;
        let handles = state.active_clusters.iter().map(|(name, active)| (name.clone(), active.handle.clone())).collect();
        state.published_clusters = Arc::new(handles);
    }

    fn warm_clusters(&self, state: &mut State) -> HashMap<Arc<str>, ActiveCluster> {
        let mut warm = HashMap::new();
        for (name, entry) in &state.clusters {
            let key: Arc<str> = Arc::from(name.as_str());
            let previous = state.active_clusters.get(&key);
            let tls_ready = entry.config.tls.is_none() || entry.tls.is_some();
            let Some(endpoints) = endpoints_of(entry, &state.assignments).filter(|_| tls_ready) else {
                if let Some(previous) = previous {
                    let previous_version = ActiveCluster { handle: previous.handle.clone(), endpoints: previous.endpoints.clone(), tls: previous.tls.clone() };
                    warm.insert(key, previous_version);
                }
                continue;
            };

            let reusable = previous.filter(|p| {
                Arc::ptr_eq(&p.handle.config, &entry.config) && same_connector(&p.tls, &entry.tls) && p.endpoints == endpoints
            });
            let handle = match reusable {
                Some(previous) => previous.handle.clone(),
                None => {
                    let old = previous.map(|p| p.handle.as_ref());
                    let handle = Arc::new(ClusterHandle::new(entry.config.clone(), entry.tls.clone(), &endpoints, old, &self.stats.upstream));
                    handle.start_health_tasks();
                    handle
                }
            };
            warm.insert(key, ActiveCluster { handle, endpoints, tls: entry.tls.clone() });
        }
        warm
    }

    fn update_ready(&self, state: &mut State) {
        if state.ready || !state.awaiting_first.is_empty() {
            return;
        }
        let clusters_warm = state.clusters.keys().all(|name| state.active_clusters.contains_key(name.as_str()));
        let listeners_warm = state.listeners.keys().all(|name| state.active_listeners.contains_key(name.as_str()));
        if clusters_warm && listeners_warm {
            state.ready = true;
            info!(listeners = state.listeners.len(), clusters = state.clusters.len(), "initial config applied, proxy is ready");
        }
    }
}

/// A TLS config that could not be built: a secret is missing or of the
/// wrong kind (the resource warms), or the certificates do not load.
enum TlsBuildError {
    Secret(SecretLookupError),
    Load(String),
}

fn secret_map(state: &State) -> Secrets {
    state.secrets.iter().map(|(name, entry)| (name.clone(), entry.value.clone())).collect()
}

/// Returns the secrets that `names` refer to, in order, or `None` when one is missing.
fn secrets_in_use<'a>(names: impl Iterator<Item = &'a str>, secrets: &Secrets) -> Option<Vec<Arc<Secret>>> {
    names.map(|name| secrets.get(name).cloned()).collect()
}

/// Returns whether every secret the resource names is present and one of
/// them differs in content from those its TLS config was built from, so a
/// new SDS version with the same content rebuilds nothing.
fn needs_rebuild<'a>(names: impl Iterator<Item = &'a str>, built_from: &[Arc<Secret>], secrets: &Secrets) -> bool {
    let Some(current) = secrets_in_use(names, secrets) else { return false };
    !current.is_empty() && current != built_from
}

/// A TLS config built from SDS secrets, with the secrets it was built from,
/// so that a later secret update can tell whether it needs a rebuild.
type BuiltTls<T> = (Arc<T>, Vec<Arc<Secret>>);

/// Builds a listener's server TLS configs with its SDS secrets filled in.
fn listener_tls(listener: &Listener, secrets: &Secrets) -> Result<Option<BuiltTls<crate::tls::ServerChains>>, TlsBuildError> {
    let used = secrets_in_use(listener.secret_names(), secrets).unwrap_or_default();
    let mut resolved = listener.clone();
    for chain in &mut resolved.filter_chains {
        if let Some(tls) = &chain.tls {
            chain.tls = Some(Arc::new(tls.resolve(secrets).map_err(TlsBuildError::Secret)?));
        }
    }
    let chains = crate::tls::ServerChains::new(&resolved).map_err(|error| TlsBuildError::Load(crate::tls::error_chain(&error)))?;
    Ok(chains.map(|chains| (chains, used)))
}

/// Builds a cluster's upstream TLS connector with its SDS secrets filled in.
fn cluster_tls(cluster: &Cluster, secrets: &Secrets) -> Result<Option<BuiltTls<crate::tls::UpstreamConnector>>, TlsBuildError> {
    let Some(tls) = &cluster.tls else { return Ok(None) };
    let used = secrets_in_use(cluster.secret_names(), secrets).unwrap_or_default();
    let resolved = tls.resolve(secrets).map_err(TlsBuildError::Secret)?;
    let connector = crate::tls::UpstreamConnector::new(&resolved).map_err(|error| TlsBuildError::Load(crate::tls::error_chain(&error)))?;
    Ok(Some((connector, used)))
}

fn same_connector(a: &Option<Arc<crate::tls::UpstreamConnector>>, b: &Option<Arc<crate::tls::UpstreamConnector>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Returns the endpoints of a cluster, or `None` while it is still warming.
fn endpoints_of(
    entry: &ClusterEntry,
    assignments: &HashMap<String, Versioned<Arc<ClusterLoadAssignment>>>,
) -> Option<Vec<(SocketAddr, LbEndpoint)>> {
    match &entry.config.discovery {
        DiscoveryType::Static => Some(socket_endpoints(entry.config.load_assignment.as_ref())),
        DiscoveryType::StrictDns { .. } => entry.resolved.clone(),
        DiscoveryType::Eds { service_name } => {
            assignments.get(service_name).map(|assignment| socket_endpoints(Some(&assignment.value)))
        }
    }
}

fn socket_endpoints(assignment: Option<&ClusterLoadAssignment>) -> Vec<(SocketAddr, LbEndpoint)> {
    let Some(assignment) = assignment else { return Vec::new() };
    let mut endpoints: Vec<_> = assignment
        .endpoints
        .iter()
        .filter_map(|endpoint| match endpoint.address {
            EndpointAddress::Socket(address) => Some((address, endpoint.clone())),
            EndpointAddress::Dns { .. } => None,
        })
        .collect();
    // The list lives as long as the cluster, and `collect` reserves room
    // for at least four entries.
    endpoints.shrink_to_fit();
    endpoints
}

fn static_conflict(name: &str, kind: &str) -> Rejected {
    Rejected { name: name.to_string(), reason: format!("{kind} {name:?} is defined in the bootstrap and cannot be changed over xDS") }
}

/// One resource in the admin config dump.
pub struct DumpEntry {
    pub resource_type: ResourceType,
    pub name: String,
    pub version: String,
    pub raw: Option<prost_types::Any>,
    /// False while the resource is warming.
    pub active: bool,
    /// When its current bytes arrived over xDS; `None` for static resources.
    pub last_updated: Option<SystemTime>,
}

impl DumpEntry {
    fn new(resource_type: ResourceType, name: &str, version: &str, raw: Option<prost_types::Any>, active: bool) -> Self {
        DumpEntry { resource_type, name: name.to_string(), version: version.to_string(), raw, active, last_updated: None }
    }

    /// Returns the entry's kind as the config dump names it.
    pub fn kind(&self) -> &'static str {
        match self.resource_type {
            ResourceType::Listener => "listener",
            ResourceType::RouteConfiguration => "route_config",
            ResourceType::Cluster => "cluster",
            ResourceType::ClusterLoadAssignment => "endpoint",
            ResourceType::Secret => "secret",
        }
    }
}

/// Builds a listener's active form, or `None` while a filter chain still
/// waits for its route configuration.
fn active_listener(entry: &ListenerEntry, route_configs: &HashMap<String, Versioned<Arc<RouteTable>>>) -> Option<ActiveListener> {
    if entry.config.has_tls() && entry.tls.is_none() {
        return None;
    }
    let chains = entry
        .config
        .filter_chains
        .iter()
        .zip(&entry.chains)
        .map(|(chain, built)| {
            let routes = match &chain.http.routes {
                RouteSource::Inline(_) => built.inline_routes.clone(),
                RouteSource::Rds(route_name) => route_configs.get(route_name).map(|r| r.value.clone()),
            }?;
            Some(ListenerRoutes {
                key: chain.key.clone(),
                http: Arc::new(chain.http.clone()),
                routes,
                filters: built.filters.clone(),
                access_logs: built.access_logs.clone(),
                connection_filters: built.connection_filters.clone(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ActiveListener { chains: chains.into(), tls: entry.tls.clone() })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use legate_config::resource::decode_any;
    use legate_config::{Resource, ResourceType};

    use super::ConfigManager;
    use crate::listener::ListenerSet;
    use crate::stats::ProxyStats;

    fn cluster(timeout: &str) -> prost_types::Any {
        let yaml = format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: web\n  type: STATIC\n  connect_timeout: {timeout}\n"
        );
        legate_config::text::parse_resources(&yaml).expect("valid cluster").remove(0)
    }

    /// Decodes the one resource of a resources file in YAML.
    fn decoded(yaml: &str) -> (Resource, prost_types::Any) {
        let any = legate_config::text::parse_resources(yaml).expect("valid resource").remove(0);
        let Ok(decoded) = decode_any(&any) else { panic!("the resource decodes") };
        (decoded.value, any)
    }

    #[tokio::test]
    async fn cluster_map_rebuilt_on_cluster_changes() {
        let stats = ProxyStats::new();
        let store = crate::snapshot::new_store();
        let manager = ConfigManager::new(store.clone(), ListenerSet::new(store.clone(), stats.clone()), stats);
        let (Resource::Cluster(eds), eds_any) = decoded(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: eds\n  type: EDS\n  eds_cluster_config: { eds_config: { ads: {} } }\n",
        ) else {
            panic!("a cluster")
        };
        let (Resource::RouteConfiguration(routes), routes_any) = decoded(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration\n  name: routes\n  virtual_hosts: [{ name: all, domains: [\"*\"], routes: [{ match: { prefix: / }, route: { cluster: eds } }] }]\n",
        ) else {
            panic!("a route configuration")
        };
        let (Resource::ClusterLoadAssignment(assignment), assignment_any) = decoded(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: eds\n  endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } }] }]\n",
        ) else {
            panic!("an assignment")
        };

        let rejected = manager.update_clusters(vec![(eds, eds_any)], &HashSet::from(["eds".to_string()]), "1");
        assert!(rejected.is_empty(), "{rejected:?}");
        let warming = store.load_full();
        assert!(warming.clusters.is_empty(), "the cluster warms until its endpoints arrive");

        manager.update_route_configs(vec![(routes, routes_any)], "1");
        let after_routes = store.load_full();
        assert!(std::sync::Arc::ptr_eq(&warming.clusters, &after_routes.clusters), "a route update keeps the cluster map");

        manager.update_assignments(vec![(assignment, assignment_any)], "1");
        let warm = store.load_full();
        assert!(warm.clusters.contains_key("eds"), "the endpoints warm the cluster");

        let rejected = manager.update_clusters(Vec::new(), &HashSet::new(), "2");
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!(store.load_full().clusters.is_empty(), "a cluster absent from the response is removed");
    }

    #[tokio::test]
    async fn unchanged_bytes_need_no_decoding() {
        let stats = ProxyStats::new();
        let store = crate::snapshot::new_store();
        let manager = ConfigManager::new(store.clone(), ListenerSet::new(store, stats.clone()), stats);
        let accepted = cluster("1s");
        let Ok(decoded) = decode_any(&accepted) else { panic!("the cluster decodes") };
        let Resource::Cluster(model) = decoded.value else { panic!("a cluster") };
        let rejected = manager.update_clusters(vec![(model, accepted.clone())], &HashSet::from(["web".to_string()]), "1");
        assert!(rejected.is_empty(), "{rejected:?}");

        let same = manager.keep_unchanged(ResourceType::Cluster, &[("web", &accepted)], "2");
        assert_eq!(same, [true]);

        let changed = cluster("2s");
        let different = manager.keep_unchanged(ResourceType::Cluster, &[("web", &changed), ("other", &accepted)], "3");
        assert_eq!(different, [false, false]);

        let other_type = manager.keep_unchanged(ResourceType::Listener, &[("web", &accepted)], "4");
        assert_eq!(other_type, [false]);
    }
}
