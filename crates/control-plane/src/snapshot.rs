//! One immutable, validated config version: the unit the store publishes and
//! every ADS stream reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use legate_api::legate::config::v1::{ResourceRef, StoredConfig};
use legate_config::{Resource, ResourceType};

use crate::targets::{Overlay, Selector, ViewCache};

/// Identity of a resource: its type and name. Ordering is by type in push
/// order, then by name, so a sorted map lists resources in push order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub resource_type: ResourceType,
    pub name: String,
}

impl ResourceKey {
    pub fn new(resource_type: ResourceType, name: impl Into<String>) -> Self {
        ResourceKey { resource_type, name: name.into() }
    }

    pub fn to_ref(&self) -> ResourceRef {
        ResourceRef { type_url: self.resource_type.type_url().to_string(), name: self.name.clone() }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.resource_type.message_name(), self.name)
    }
}

/// A resource in force: the packed bytes proxies receive, the decoded model
/// used for validation, and the config version at which it last changed.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub any: prost_types::Any,
    pub resource: Resource,
    pub version: u64,
    /// xxHash64 of the packed bytes: the resource's version in delta xDS. It
    /// depends only on the bytes, so it is the same after a restart and on
    /// every replica, unlike `version`.
    pub digest: u64,
    /// `any` encoded, shared by every delta response that carries it.
    pub encoded: bytes::Bytes,
    /// Fields of the resource that Legate accepts but does not use, as
    /// decoding reported them.
    pub ignored: Vec<String>,
}

impl StoredResource {
    /// Wraps a decoded resource that has no config version yet.
    pub fn new(any: prost_types::Any, resource: Resource) -> Self {
        let digest = xxhash_rust::xxh64::xxh64(&any.value, 0);
        let encoded = prost::Message::encode_to_vec(&any).into();
        StoredResource { any, resource, version: 0, digest, encoded, ignored: Vec::new() }
    }

    /// Keeps the fields that decoding reported as ignored.
    pub fn with_ignored(mut self, ignored: Vec<String>) -> Self {
        self.ignored = ignored;
        self
    }

    /// Returns whether both resources would reach a proxy as the same bytes.
    pub fn same_bytes(&self, other: &StoredResource) -> bool {
        self.any.type_url == other.any.type_url && self.any.value == other.any.value
    }
}

/// The origin of a version: when it was applied, its author, and the
/// earlier version it restored, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub applied_at: SystemTime,
    /// The author of the change, as the client gave it. Empty when unknown.
    pub applied_by: String,
    pub rolled_back_to: Option<u64>,
}

impl Default for Origin {
    fn default() -> Self {
        Origin { applied_at: SystemTime::UNIX_EPOCH, applied_by: String::new(), rolled_back_to: None }
    }
}

/// A complete config at one version. Snapshots are never changed in place:
/// the store builds a new one and publishes it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    version: u64,
    type_versions: BTreeMap<ResourceType, u64>,
    resources: BTreeMap<ResourceKey, Arc<StoredResource>>,
    origin: Origin,
    /// Targeted resources, sorted by selector. A targeted apply sets the
    /// version of each type it changes, as an untargeted apply does.
    overlays: Arc<Vec<Overlay>>,
    views: ViewCache,
    /// The target of the apply that made this version, if it had one.
    target: Option<Selector>,
}

impl Snapshot {
    pub(crate) fn new(
        version: u64,
        type_versions: BTreeMap<ResourceType, u64>,
        resources: BTreeMap<ResourceKey, Arc<StoredResource>>,
    ) -> Self {
        Snapshot { version, type_versions, resources, ..Default::default() }
    }

    /// Returns the view of `base` that one set of overlays makes: `resources`
    /// in place of the untargeted ones, at the same versions.
    pub(crate) fn view(base: &Snapshot, resources: BTreeMap<ResourceKey, Arc<StoredResource>>) -> Self {
        Snapshot {
            version: base.version,
            type_versions: base.type_versions.clone(),
            resources,
            origin: base.origin.clone(),
            target: base.target.clone(),
            ..Default::default()
        }
    }

    pub(crate) fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    pub(crate) fn with_overlays(mut self, mut overlays: Vec<Overlay>) -> Self {
        overlays.retain(|overlay| !overlay.resources.is_empty());
        overlays.sort_by(|a, b| a.selector.cmp(&b.selector));
        self.overlays = Arc::new(overlays);
        self
    }

    pub(crate) fn with_target(mut self, target: Option<Selector>) -> Self {
        self.target = target;
        self
    }

    pub fn overlays(&self) -> &[Overlay] {
        &self.overlays
    }

    pub(crate) fn views(&self) -> &ViewCache {
        &self.views
    }

    /// Returns the target of the apply that made this version. It is `None`
    /// when the version reached every proxy.
    pub fn target(&self) -> Option<&Selector> {
        self.target.as_ref()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Config version; 0 is the empty config before any apply.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Config version at which resources of `resource_type` last changed, or
    /// 0 if they never did. ADS sends it as `version_info`.
    pub fn type_version(&self, resource_type: ResourceType) -> u64 {
        self.type_versions.get(&resource_type).copied().unwrap_or(0)
    }

    pub(crate) fn type_versions(&self) -> &BTreeMap<ResourceType, u64> {
        &self.type_versions
    }

    pub(crate) fn entries(&self) -> &BTreeMap<ResourceKey, Arc<StoredResource>> {
        &self.resources
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&StoredResource> {
        self.resources.get(key).map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Resources of one type, sorted by name.
    pub fn resources_of(&self, resource_type: ResourceType) -> impl Iterator<Item = &StoredResource> {
        // Keys sort by type first, so one type's resources are one range.
        self.resources
            .range(ResourceKey::new(resource_type, String::new())..)
            .take_while(move |(key, _)| key.resource_type == resource_type)
            .map(|(_, stored)| stored.as_ref())
    }

    /// Returns every resource packed, in push order (clusters, endpoints, listeners,
    /// route configurations), each type sorted by name.
    pub fn packed_in_push_order(&self) -> Vec<prost_types::Any> {
        self.resources.values().map(|stored| stored.any.clone()).collect()
    }

    /// Returns the state file's message without its untargeted resources,
    /// and those resources in push order, so that the state file can reuse
    /// their encoded bytes.
    pub fn to_stored_parts(&self) -> (StoredConfig, Vec<Arc<StoredResource>>) {
        (self.stored_without_resources(), self.resources.values().cloned().collect())
    }

    /// Converts this snapshot to the state file's message.
    pub fn to_stored_config(&self) -> StoredConfig {
        StoredConfig { resources: self.packed_in_push_order(), ..self.stored_without_resources() }
    }

    fn stored_without_resources(&self) -> StoredConfig {
        StoredConfig {
            version: self.version,
            resources: Vec::new(),
            type_versions: self
                .type_versions
                .iter()
                .map(|(resource_type, version)| (resource_type.type_url().to_string(), *version))
                .collect(),
            applied_at: (self.origin.applied_at != SystemTime::UNIX_EPOCH).then(|| self.origin.applied_at.into()),
            applied_by: self.origin.applied_by.clone(),
            rolled_back_to: self.origin.rolled_back_to.unwrap_or(0),
            targeted: self.overlays.iter().map(Overlay::to_stored).collect(),
            target: self.target.as_ref().map(Selector::to_proto),
            checksum: 0,
        }
    }
}
