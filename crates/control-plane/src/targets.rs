//! Targeted config: resources that only the proxies matching a selector
//! (node id, node cluster, node metadata) receive, and the per-proxy views
//! that lay them over the untargeted resources.
//!
//! A view is built once per snapshot and distinct set of matching overlays,
//! then shared by every stream whose proxy matches the same set.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use legate_api::envoy::config::core::v3::Node;
use legate_api::legate::config::v1::{ResourceRef, TargetSelector, TargetedResources};
use legate_config::error::ErrorKind;
use legate_config::{validate, ConfigError, ResourceType};

use crate::snapshot::{ResourceKey, Snapshot, StoredResource};
use crate::store::{removal_error, Changes};

/// The proxies a targeted apply reaches. Every condition that is set must
/// hold, and a set of ids or clusters matches when any entry does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub node_ids: BTreeSet<String>,
    pub node_clusters: BTreeSet<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A selector without any condition, which would match every proxy.
#[derive(Debug, thiserror::Error)]
#[error("a target needs at least one node id, node cluster or metadata entry")]
pub struct EmptySelector;

impl Selector {
    pub fn from_proto(proto: &TargetSelector) -> Result<Self, EmptySelector> {
        let selector = Selector {
            node_ids: proto.node_ids.iter().cloned().collect(),
            node_clusters: proto.node_clusters.iter().cloned().collect(),
            metadata: proto.metadata.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
        };
        if selector.node_ids.is_empty() && selector.node_clusters.is_empty() && selector.metadata.is_empty() {
            return Err(EmptySelector);
        }
        Ok(selector)
    }

    pub fn to_proto(&self) -> TargetSelector {
        TargetSelector {
            node_ids: self.node_ids.iter().cloned().collect(),
            node_clusters: self.node_clusters.iter().cloned().collect(),
            metadata: self.metadata.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
        }
    }

    pub fn matches(&self, node: &NodeInfo) -> bool {
        (self.node_ids.is_empty() || self.node_ids.contains(&node.id))
            && (self.node_clusters.is_empty() || self.node_clusters.contains(&node.cluster))
            && self.metadata.iter().all(|(key, value)| node.metadata.get(key) == Some(value))
    }
}

impl Selector {
    /// Returns the selector of the nodes that match both `self` and
    /// `other`, or `None` when no node can: their node ids or node clusters
    /// have nothing in common, or they need different values of one
    /// metadata key.
    fn intersect(&self, other: &Selector) -> Option<Selector> {
        let node_ids = intersect_sets(&self.node_ids, &other.node_ids)?;
        let node_clusters = intersect_sets(&self.node_clusters, &other.node_clusters)?;
        let mut metadata = self.metadata.clone();
        for (key, value) in &other.metadata {
            if metadata.insert(key.clone(), value.clone()).is_some_and(|previous| &previous != value) {
                return None;
            }
        }
        Some(Selector { node_ids, node_clusters, metadata })
    }
}

/// Intersects two sets of allowed values, where an empty set allows any
/// value. Returns `None` when no value is allowed by both.
fn intersect_sets(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => Some(b.clone()),
        (_, true) => Some(a.clone()),
        _ => Some(a.intersection(b).cloned().collect::<BTreeSet<String>>()).filter(|common| !common.is_empty()),
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        parts.extend(self.node_ids.iter().map(|id| format!("node={id}")));
        parts.extend(self.node_clusters.iter().map(|cluster| format!("cluster={cluster}")));
        parts.extend(self.metadata.iter().map(|(key, value)| format!("metadata.{key}={value}")));
        f.write_str(&parts.join(","))
    }
}

/// A proxy's identity, from the node of its first ADS request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub cluster: String,
    /// Top-level metadata fields with string, number or bool values, as text.
    pub metadata: BTreeMap<String, String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Self {
        use prost_types::value::Kind;

        let fields = node.metadata.iter().flat_map(|metadata| &metadata.fields);
        let metadata = fields
            .filter_map(|(key, value)| {
                let text = match value.kind.as_ref()? {
                    Kind::StringValue(text) => text.clone(),
                    Kind::NumberValue(number) => number.to_string(),
                    Kind::BoolValue(flag) => flag.to_string(),
                    _ => return None,
                };
                Some((key.clone(), text))
            })
            .collect();
        NodeInfo { id: node.id.clone(), cluster: node.cluster.clone(), metadata }
    }
}

/// Resources applied with one selector.
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub selector: Selector,
    pub resources: BTreeMap<ResourceKey, Arc<StoredResource>>,
}

impl Overlay {
    pub fn to_stored(&self) -> TargetedResources {
        TargetedResources {
            target: Some(self.selector.to_proto()),
            resources: self.resources.values().map(|stored| stored.any.clone()).collect(),
        }
    }
}

/// Views already built for one snapshot, by the indexes of the overlays
/// they include.
#[derive(Debug, Clone, Default)]
pub struct ViewCache(Arc<Mutex<HashMap<Vec<usize>, Arc<Snapshot>>>>);

/// Returns what a proxy with `node` receives from `snapshot`: the snapshot
/// itself when no overlay matches, or else the shared view with the matching
/// overlays laid over it in selector order.
pub fn view_for(snapshot: &Arc<Snapshot>, node: Option<&NodeInfo>) -> Arc<Snapshot> {
    let Some(node) = node else {
        return snapshot.clone();
    };
    let matching: Vec<usize> =
        snapshot.overlays().iter().enumerate().filter(|(_, overlay)| overlay.selector.matches(node)).map(|(index, _)| index).collect();
    if matching.is_empty() {
        return snapshot.clone();
    }

    let mut views = snapshot.views().0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    views.entry(matching).or_insert_with_key(|matching| Arc::new(build_view(snapshot, matching))).clone()
}

fn build_view(snapshot: &Snapshot, matching: &[usize]) -> Snapshot {
    let mut resources = snapshot.entries().clone();
    for index in matching {
        for (key, stored) in &snapshot.overlays()[*index].resources {
            resources.insert(key.clone(), stored.clone());
        }
    }
    Snapshot::view(snapshot, resources)
}

/// Builds the config after a change for the proxies `selector` matches: only
/// its overlay changes, and removals name resources of that overlay.
pub(crate) fn build_targeted(
    current: &Snapshot,
    selector: &Selector,
    decoded: BTreeMap<ResourceKey, Arc<StoredResource>>,
    removals: &[ResourceRef],
    errors: &mut Vec<ConfigError>,
) -> (Changes, Snapshot) {
    let version = current.version() + 1;
    let mut overlays = current.overlays().to_vec();
    let index = overlays.iter().position(|overlay| &overlay.selector == selector).unwrap_or_else(|| {
        overlays.push(Overlay { selector: selector.clone(), ..Default::default() });
        overlays.len() - 1
    });
    let overlay = &mut overlays[index];

    let mut changes = Changes::default();
    for removal in removals {
        let key = ResourceType::from_type_url(&removal.type_url).map(|resource_type| ResourceKey::new(resource_type, removal.name.clone()));
        match key {
            Some(key) if overlay.resources.remove(&key).is_some() => changes.removed.push(key),
            _ => errors.push(removal_error(
                ErrorKind::UnknownReference,
                format!("cannot remove {:?} of type {:?}: target {selector} has no such resource", removal.name, removal.type_url),
            )),
        }
    }
    for (key, resource) in decoded {
        match overlay.resources.get(&key) {
            Some(existing) if existing.same_bytes(&resource) => continue,
            Some(_) => changes.modified.push(key.clone()),
            None => changes.added.push(key.clone()),
        }
        overlay.resources.insert(key, crate::store::at_version(resource, version));
    }

    let mut type_versions = current.type_versions().clone();
    for resource_type in changes.changed_types() {
        type_versions.insert(resource_type, version);
    }
    let candidate = Snapshot::new(version, type_versions, current.entries().clone()).with_overlays(overlays).with_target(Some(selector.clone()));
    (changes, candidate)
}

/// Puts `restored`'s overlays in place of those of `candidate`, the config
/// that a rollback builds from `current`, so that every target gets what it
/// had in the restored version. Overlays are added, changed and removed as
/// needed, and each type that any overlay changes gets the new version.
pub(crate) fn restore_overlays(current: &Snapshot, candidate: Snapshot, restored: &[Overlay]) -> (Changes, Snapshot) {
    let version = candidate.version();
    let mut changes = Changes::default();
    let mut overlays = Vec::with_capacity(restored.len());
    for overlay in restored {
        let in_force = current.overlays().iter().find(|in_force| in_force.selector == overlay.selector);
        let empty = BTreeMap::new();
        let in_force = in_force.map_or(&empty, |in_force| &in_force.resources);
        let mut resources = BTreeMap::new();
        for (key, stored) in &overlay.resources {
            let resource = match in_force.get(key) {
                Some(existing) if existing.same_bytes(stored) => existing.clone(),
                Some(_) => restamped(stored, version, key, &mut changes.modified),
                None => restamped(stored, version, key, &mut changes.added),
            };
            resources.insert(key.clone(), resource);
        }
        overlays.push(Overlay { selector: overlay.selector.clone(), resources });
    }
    for in_force in current.overlays() {
        let restored = restored.iter().find(|overlay| overlay.selector == in_force.selector);
        let removed = in_force.resources.keys().filter(|key| restored.is_none_or(|overlay| !overlay.resources.contains_key(*key)));
        changes.removed.extend(removed.cloned());
    }

    let mut type_versions = candidate.type_versions().clone();
    for resource_type in changes.changed_types() {
        type_versions.insert(resource_type, version);
    }
    let restored = Snapshot::new(version, type_versions, candidate.entries().clone()).with_overlays(overlays);
    (changes, restored)
}

/// Copies `stored` at config version `version` and records `key` as changed.
fn restamped(stored: &Arc<StoredResource>, version: u64, key: &ResourceKey, changed: &mut Vec<ResourceKey>) -> Arc<StoredResource> {
    changed.push(key.clone());
    let mut resource = StoredResource::clone(stored);
    resource.version = version;
    Arc::new(resource)
}

/// Most combinations of two or more overlapping targets that one apply
/// validates. Each costs a validation of the whole config.
const MAX_COMBINATIONS: usize = 256;

/// Checks each overlay laid over the untargeted resources, then each
/// combination of overlays whose targets some proxy could match together,
/// naming the targets in each error. Combinations are checked only once
/// every overlay is valid alone, so that one fault is not reported again
/// for each combination that includes it.
pub(crate) fn validate_overlays(snapshot: &Snapshot) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for index in 0..snapshot.overlays().len() {
        errors.extend(validate_view(snapshot, &[index]));
    }
    if !errors.is_empty() {
        return errors;
    }

    let combinations = overlapping_combinations(snapshot.overlays());
    if combinations.len() >= MAX_COMBINATIONS {
        // NOTE: past this bound, further combinations are served unchecked.
        tracing::warn!(checked = MAX_COMBINATIONS, "too many overlapping targets; only the first combinations are validated");
    }
    for combination in combinations {
        errors.extend(validate_view(snapshot, &combination));
    }
    errors
}

/// Validates the view that the overlays at `indexes` make together.
fn validate_view(snapshot: &Snapshot, indexes: &[usize]) -> Vec<ConfigError> {
    let view = build_view(snapshot, indexes);
    let targets: Vec<String> = indexes.iter().map(|index| snapshot.overlays()[*index].selector.to_string()).collect();
    let label = match targets.as_slice() {
        [single] => format!("for target {single}"),
        _ => format!("for a proxy matching targets {} together", targets.join(" and ")),
    };
    let mut errors = validate::snapshot(view.entries().values().map(|stored| &stored.resource)).0;
    for error in &mut errors {
        error.message = format!("{label}: {}", error.message);
    }
    errors
}

/// Lists, as ascending overlay indexes, every set of two or more overlays
/// whose selectors one node could match at once, up to [`MAX_COMBINATIONS`].
fn overlapping_combinations(overlays: &[Overlay]) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for (index, overlay) in overlays.iter().enumerate() {
        extend_combination(overlays, &mut vec![index], &overlay.selector, &mut found);
    }
    found
}

/// Adds to `found` each overlay after the last in `members` that can join
/// it, given `joint`, the selector of the nodes that match every member.
fn extend_combination(overlays: &[Overlay], members: &mut Vec<usize>, joint: &Selector, found: &mut Vec<Vec<usize>>) {
    let next = members.last().map_or(0, |last| last + 1);
    for index in next..overlays.len() {
        if found.len() >= MAX_COMBINATIONS {
            return;
        }
        let Some(narrower) = joint.intersect(&overlays[index].selector) else {
            continue;
        };
        members.push(index);
        found.push(members.clone());
        extend_combination(overlays, members, &narrower, found);
        members.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_api::envoy::config::cluster::v3::Cluster;
    use legate_api::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use legate_config::ResourceType;
    use prost::Message;

    fn node(id: &str, cluster: &str, metadata: &[(&str, &str)]) -> NodeInfo {
        let metadata = metadata.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        NodeInfo { id: id.into(), cluster: cluster.into(), metadata }
    }

    fn selector(ids: &[&str], clusters: &[&str], metadata: &[(&str, &str)]) -> Selector {
        Selector {
            node_ids: ids.iter().map(|id| id.to_string()).collect(),
            node_clusters: clusters.iter().map(|cluster| cluster.to_string()).collect(),
            metadata: metadata.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        }
    }

    fn assignment(name: &str) -> ClusterLoadAssignment {
        ClusterLoadAssignment { cluster_name: name.into(), ..Default::default() }
    }

    /// Builds a cluster whose connect timeout is `seconds`, to tell versions apart.
    fn cluster(name: &str, seconds: i64) -> (ResourceKey, Arc<StoredResource>) {
        let proto = Cluster { name: name.into(), connect_timeout: Some(prost_types::Duration { seconds, nanos: 0 }), load_assignment: Some(assignment(name)), ..Default::default() };
        let any = prost_types::Any { type_url: ResourceType::Cluster.type_url().into(), value: proto.encode_to_vec() };
        let resource = legate_config::resource::decode_any(&any).expect("cluster decodes").value;
        (ResourceKey::new(ResourceType::Cluster, name), Arc::new(StoredResource::new(any, resource)))
    }

    fn digest_of(snapshot: &Snapshot, name: &str) -> Option<u64> {
        snapshot.get(&ResourceKey::new(ResourceType::Cluster, name)).map(|stored| stored.digest)
    }

    #[test]
    fn selector_requires_every_condition() {
        let canary = selector(&[], &["canary"], &[("track", "blue")]);
        assert!(canary.matches(&node("a", "canary", &[("track", "blue"), ("zone", "x")])));
        assert!(!canary.matches(&node("a", "canary", &[("track", "green")])));
        assert!(!canary.matches(&node("a", "stable", &[("track", "blue")])));

        let nodes = selector(&["a", "b"], &[], &[]);
        assert!(nodes.matches(&node("b", "any", &[])));
        assert!(!nodes.matches(&node("c", "any", &[])));
    }

    #[test]
    fn empty_selector_is_rejected() {
        assert!(Selector::from_proto(&TargetSelector::default()).is_err());
    }

    #[test]
    fn views_are_shared_per_matching_set() {
        let base = Snapshot::new(2, BTreeMap::new(), BTreeMap::from([cluster("web", 1), cluster("api", 1)]));
        let overlay = Overlay { selector: selector(&[], &["canary"], &[]), resources: BTreeMap::from([cluster("web", 2)]) };
        let snapshot = Arc::new(base.with_overlays(vec![overlay]));

        let first = view_for(&snapshot, Some(&node("a", "canary", &[])));
        let second = view_for(&snapshot, Some(&node("b", "canary", &[])));
        let other = view_for(&snapshot, Some(&node("c", "stable", &[])));

        assert!(Arc::ptr_eq(&first, &second), "proxies matching the same overlays share one view");
        assert!(Arc::ptr_eq(&other, &snapshot), "a proxy matching nothing gets the snapshot itself");
        assert_eq!(digest_of(&first, "web"), Some(cluster("web", 2).1.digest));
        assert_eq!(digest_of(&other, "web"), Some(cluster("web", 1).1.digest));
        assert_eq!(first.len(), 2);
        assert_eq!(first.version(), 2);
    }

    fn overlays_for(selectors: Vec<Selector>) -> Vec<Overlay> {
        selectors.into_iter().map(|selector| Overlay { selector, resources: BTreeMap::from([cluster("web", 1)]) }).collect()
    }

    #[test]
    fn disjoint_selectors_do_not_intersect() {
        let canary = selector(&[], &["canary"], &[]);
        assert!(canary.intersect(&selector(&[], &["stable"], &[])).is_none(), "different clusters");
        assert!(selector(&["a"], &[], &[]).intersect(&selector(&["b"], &[], &[])).is_none(), "different node ids");
        let blue = selector(&[], &[], &[("track", "blue")]);
        assert!(blue.intersect(&selector(&[], &[], &[("track", "green")])).is_none(), "different metadata values");
    }

    #[test]
    fn overlapping_selectors_intersect() {
        let joint = selector(&[], &["canary"], &[]).intersect(&selector(&["a", "b"], &[], &[("track", "blue")]));
        assert_eq!(joint, Some(selector(&["a", "b"], &["canary"], &[("track", "blue")])));
        let joint = selector(&["a", "b"], &[], &[]).intersect(&selector(&["b", "c"], &[], &[]));
        assert_eq!(joint, Some(selector(&["b"], &[], &[])));
    }

    #[test]
    fn combinations_need_every_member_to_overlap() {
        // 0 and 1 overlap, 1 and 2 overlap, but 0 and 2 need different clusters.
        let overlays = overlays_for(vec![
            selector(&[], &["canary"], &[]),
            selector(&[], &[], &[("track", "blue")]),
            selector(&[], &["stable"], &[]),
        ]);
        assert_eq!(overlapping_combinations(&overlays), vec![vec![0, 1], vec![1, 2]]);

        let overlays = overlays_for(vec![
            selector(&[], &["canary"], &[]),
            selector(&[], &[], &[("track", "blue")]),
            selector(&["a"], &[], &[]),
        ]);
        assert_eq!(overlapping_combinations(&overlays), vec![vec![0, 1], vec![0, 1, 2], vec![0, 2], vec![1, 2]]);
    }

    #[test]
    fn combinations_are_bounded() {
        let overlays = overlays_for((0..12).map(|index| selector(&[], &[], &[(&format!("key{index}"), "x")])).collect());
        assert_eq!(overlapping_combinations(&overlays).len(), MAX_COMBINATIONS);
    }

    #[test]
    fn restore_overlays_adds_changes_and_removes() {
        let canary = selector(&[], &["canary"], &[]);
        let blue = selector(&[], &[], &[("track", "blue")]);
        let stable = selector(&[], &["stable"], &[]);
        let in_force = vec![
            Overlay { selector: canary.clone(), resources: BTreeMap::from([cluster("web", 2), cluster("api", 2)]) },
            Overlay { selector: blue.clone(), resources: BTreeMap::from([cluster("api", 3)]) },
        ];
        // Overlays sort by selector, so the blue one comes before the canary one.
        let current = Snapshot::new(6, BTreeMap::new(), BTreeMap::from([cluster("web", 1)])).with_overlays(in_force);
        let restored = vec![
            Overlay { selector: canary.clone(), resources: BTreeMap::from([cluster("web", 5), cluster("api", 2)]) },
            Overlay { selector: stable.clone(), resources: BTreeMap::from([cluster("web", 4)]) },
        ];
        let candidate = Snapshot::new(7, BTreeMap::new(), current.entries().clone());

        let (changes, snapshot) = restore_overlays(&current, candidate, &restored);

        let web = ResourceKey::new(ResourceType::Cluster, "web");
        let api = ResourceKey::new(ResourceType::Cluster, "api");
        assert_eq!(changes.modified, vec![web.clone()], "the canary's web changed");
        assert_eq!(changes.added, vec![web.clone()], "the stable overlay is added");
        assert_eq!(changes.removed, vec![api.clone()], "the blue overlay is removed");
        assert_eq!(snapshot.type_version(ResourceType::Cluster), 7);
        let selectors: Vec<&Selector> = snapshot.overlays().iter().map(|overlay| &overlay.selector).collect();
        assert_eq!(selectors, vec![&canary, &stable]);
        let restored_canary = &snapshot.overlays()[0].resources;
        assert_eq!(restored_canary[&web].digest, cluster("web", 5).1.digest);
        assert_eq!(restored_canary[&web].version, 7, "a changed resource gets the new version");
        assert!(Arc::ptr_eq(&restored_canary[&api], &current.overlays()[1].resources[&api]), "an unchanged resource keeps the copy in force");
    }
}
