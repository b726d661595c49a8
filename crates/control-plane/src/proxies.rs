//! Registry of the proxies connected over ADS and what each one was sent,
//! accepted and rejected, for `ListProxies`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::metrics::ControlPlaneStats;
use crate::targets::NodeInfo;

use legate_api::legate::config::v1::{ProxyStatus, TypeStatus};
use legate_config::ResourceType;

/// One proxy's record for one resource type. Versions are the
/// `version_info` strings of ADS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeRecord {
    /// When the last response was sent, for the push-to-ACK latency.
    pub sent_at: Option<Instant>,
    pub sent_version: String,
    pub acked_version: String,
    pub nacked_version: String,
    pub nack_error: String,
}

/// One connected ADS stream.
#[derive(Debug, Clone)]
pub struct ProxyEntry {
    pub node_id: String,
    pub node_cluster: String,
    /// Node metadata values as text, for matching targets.
    pub node_metadata: BTreeMap<String, String>,
    pub peer_address: Option<SocketAddr>,
    pub connected_at: SystemTime,
    /// When the proxy last sent a request on the stream.
    pub last_seen: SystemTime,
    /// The latest config version the stream has sent whatever it needed of.
    pub config_version: u64,
    pub types: BTreeMap<ResourceType, TypeRecord>,
}

impl ProxyEntry {
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo { id: self.node_id.clone(), cluster: self.node_cluster.clone(), metadata: self.node_metadata.clone() }
    }

    fn to_status(&self, replica: &str) -> ProxyStatus {
        ProxyStatus {
            replica: replica.to_string(),
            node_id: self.node_id.clone(),
            node_cluster: self.node_cluster.clone(),
            peer_address: self.peer_address.map(|address| address.to_string()).unwrap_or_default(),
            connected_at: Some(self.connected_at.into()),
            last_seen: Some(self.last_seen.into()),
            types: self.types.iter().map(|(resource_type, record)| type_status(*resource_type, record)).collect(),
            node_metadata: self.node_metadata.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
            config_version: self.config_version,
        }
    }

    /// Rebuilds the entry of a proxy that another replica serves from the
    /// status it published. Types Legate does not know are skipped.
    pub fn from_status(status: &ProxyStatus) -> Self {
        let time = |at: &Option<prost_types::Timestamp>| (*at).and_then(|at| SystemTime::try_from(at).ok()).unwrap_or(SystemTime::UNIX_EPOCH);
        let types = status
            .types
            .iter()
            .filter_map(|type_status| {
                let resource_type = ResourceType::from_type_url(&type_status.type_url)?;
                let record = TypeRecord {
                    sent_at: None,
                    sent_version: type_status.sent_version.clone(),
                    acked_version: type_status.acked_version.clone(),
                    nacked_version: type_status.nacked_version.clone(),
                    nack_error: type_status.nack_error.clone(),
                };
                Some((resource_type, record))
            })
            .collect();
        ProxyEntry {
            node_id: status.node_id.clone(),
            node_cluster: status.node_cluster.clone(),
            node_metadata: status.node_metadata.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
            peer_address: status.peer_address.parse().ok(),
            connected_at: time(&status.connected_at),
            last_seen: time(&status.last_seen),
            config_version: status.config_version,
            types,
        }
    }
}

fn type_status(resource_type: ResourceType, record: &TypeRecord) -> TypeStatus {
    TypeStatus {
        type_url: resource_type.type_url().to_string(),
        sent_version: record.sent_version.clone(),
        acked_version: record.acked_version.clone(),
        nacked_version: record.nacked_version.clone(),
        nack_error: record.nack_error.clone(),
    }
}

/// Connected proxies by stream id. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct ProxyRegistry {
    entries: Arc<Mutex<BTreeMap<u64, ProxyEntry>>>,
    stats: Arc<ControlPlaneStats>,
    /// Id of the control-plane replica serving these streams; empty when
    /// not set.
    replica: Arc<str>,
}

impl ProxyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a registry whose statuses name `replica` as the control
    /// plane serving each stream.
    pub fn for_replica(replica: &str) -> Self {
        ProxyRegistry { replica: Arc::from(replica), ..Self::default() }
    }

    /// Adds a stream; the entry is removed when the returned handle drops,
    /// however the stream ends.
    pub fn register(&self, stream_id: u64, peer_address: Option<SocketAddr>) -> ProxyHandle {
        let entry = ProxyEntry {
            node_id: String::new(),
            node_cluster: String::new(),
            node_metadata: BTreeMap::new(),
            peer_address,
            connected_at: SystemTime::now(),
            last_seen: SystemTime::now(),
            config_version: 0,
            types: BTreeMap::new(),
        };
        self.lock().insert(stream_id, entry);
        self.stats.connected.inc();
        ProxyHandle { registry: self.clone(), stream_id }
    }

    /// Returns the id of the replica serving these streams.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn stats(&self) -> &ControlPlaneStats {
        &self.stats
    }

    /// Returns every connected proxy, in connection order.
    pub fn list(&self) -> Vec<ProxyEntry> {
        self.lock().values().cloned().collect()
    }

    /// Returns every connected proxy in the config API's form.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        self.lock().values().map(|entry| entry.to_status(&self.replica)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ProxyEntry>> {
        // A panic while holding the lock cannot leave an entry half-written,
        // because every update is a single field assignment.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, stream_id: u64, change: impl FnOnce(&mut ProxyEntry)) {
        if let Some(entry) = self.lock().get_mut(&stream_id) {
            change(entry);
        }
    }
}

/// One stream's entry in the registry.
#[derive(Debug)]
pub struct ProxyHandle {
    registry: ProxyRegistry,
    stream_id: u64,
}

impl ProxyHandle {
    pub fn set_node(&self, node: &NodeInfo) {
        self.registry.update(self.stream_id, |entry| {
            entry.node_id = node.id.clone();
            entry.node_cluster = node.cluster.clone();
            entry.node_metadata = node.metadata.clone();
        });
    }

    /// Records a request from the proxy.
    pub fn record_seen(&self) {
        self.registry.update(self.stream_id, |entry| entry.last_seen = SystemTime::now());
    }

    /// Records that the stream has sent what config `version` changed for it.
    pub fn record_config_version(&self, version: u64) {
        self.registry.update(self.stream_id, |entry| entry.config_version = version);
    }

    pub fn record_sent(&self, resource_type: ResourceType, version: &str) {
        self.registry.stats.count_push(resource_type);
        self.update_type(resource_type, |record| {
            record.sent_version = version.to_string();
            record.sent_at = Some(Instant::now());
        });
    }

    pub fn record_ack(&self, resource_type: ResourceType, version: &str) {
        let stats = self.registry.stats.clone();
        self.update_type(resource_type, |record| {
            let latency = (record.sent_version == version).then(|| record.sent_at.take().map(|at| at.elapsed())).flatten();
            stats.count_ack(resource_type, latency);
            record.acked_version = version.to_string();
        });
    }

    /// Records a rejection of `version`, replacing any earlier one.
    pub fn record_nack(&self, resource_type: ResourceType, version: &str, error: &str) {
        self.registry.stats.count_nack(resource_type);
        self.update_type(resource_type, |record| {
            record.nacked_version = version.to_string();
            record.nack_error = error.to_string();
        });
    }

    fn update_type(&self, resource_type: ResourceType, change: impl FnOnce(&mut TypeRecord)) {
        self.registry.update(self.stream_id, |entry| change(entry.types.entry(resource_type).or_default()));
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.stream_id);
        self.registry.stats.connected.dec();
    }
}
