//! One incremental (delta) ADS stream: subscriptions by name or wildcard,
//! per-resource versions, and removals, following the delta rules of Envoy's
//! xDS protocol.
//!
//! A resource's version is a hash of its packed bytes, so every replica and
//! every restart gives it the same version. A proxy that already has a
//! resource at that version is not sent it again, on this stream or after a
//! reconnect that lists it in `initial_resource_versions`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use legate_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use legate_config::ResourceType;
use tokio::sync::mpsc;
use tonic::Status;

use super::serve::{Ended, StreamHandler, StreamView};
use super::stream::REMOVAL_ORDER;
use crate::proxies::ProxyHandle;
use crate::snapshot::{ResourceKey, Snapshot};

/// The name that subscribes to every resource of a type.
const WILDCARD: &str = "*";

/// Responses of one type awaiting an ACK or NACK. Older ones are forgotten,
/// so an ACK or NACK of them is logged and ignored.
const MAX_PENDING: usize = 16;

pub(crate) type DeltaSender = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// One resource type on one delta stream.
#[derive(Debug, Default)]
struct DeltaType {
    wildcard: bool,
    /// Names subscribed explicitly, besides the wildcard.
    names: BTreeSet<String>,
    /// Version of each resource the proxy has, as far as this stream can tell:
    /// the `initial_resource_versions` of the first request, then every
    /// resource sent. A version that is not a hexadecimal digest never matches.
    known: HashMap<String, Option<u64>>,
    /// Subscribed names that do not exist and whose removal was sent, so it
    /// is sent once.
    absent: BTreeSet<String>,
    /// Nonces of responses not yet ACKed or NACKed, with the type version each sent.
    pending: VecDeque<(String, String)>,
}

impl DeltaType {
    /// Reads the first request of a type: an empty subscription list or `*`
    /// subscribes to every resource, and the initial versions tell what the
    /// proxy kept from an earlier stream.
    fn start(request: &DeltaDiscoveryRequest) -> Self {
        let wildcard = request.resource_names_subscribe.is_empty() || request.resource_names_subscribe.iter().any(|name| name == WILDCARD);
        let known = request.initial_resource_versions.iter().map(|(name, version)| (name.clone(), parse_digest(version))).collect();
        DeltaType { wildcard, known, ..Default::default() }
    }

    /// Applies the request's subscription changes and returns whether it
    /// subscribed to anything new, which calls for a response.
    fn change_subscriptions(&mut self, request: &DeltaDiscoveryRequest) -> bool {
        let mut added = false;
        for name in &request.resource_names_subscribe {
            if name == WILDCARD {
                added |= !self.wildcard;
                self.wildcard = true;
            } else {
                added |= self.names.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
                continue;
            }
            self.names.remove(name);
            self.absent.remove(name);
            // The proxy drops an unsubscribed resource, so a later subscription
            // must send it again.
            if !self.wildcard {
                self.known.remove(name);
            }
        }
        added
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Returns the resources `snapshot` has that the proxy wants and does not
    /// have at their current version, among the names in `only` if given.
    fn updates(&self, resource_type: ResourceType, snapshot: &Snapshot, only: Option<&BTreeSet<String>>) -> Vec<Resource> {
        let outdated = |name: &str, digest: u64| self.known.get(name) != Some(&Some(digest));
        let to_resource = |stored: &crate::snapshot::StoredResource| Resource {
            name: stored.resource.name().to_string(),
            version: format_digest(stored.digest),
            // A reference to the bytes encoded once at apply time; gRPC still
            // copies them into each stream's frame.
            resource: stored.encoded.clone(),
        };

        if let Some(only) = only {
            return only
                .iter()
                .filter(|name| self.wants(name))
                .filter_map(|name| snapshot.get(&ResourceKey::new(resource_type, name.as_str())))
                .filter(|stored| outdated(stored.resource.name(), stored.digest))
                .map(to_resource)
                .collect();
        }
        if self.wildcard {
            return snapshot
                .resources_of(resource_type)
                .filter(|stored| outdated(stored.resource.name(), stored.digest))
                .map(to_resource)
                .collect();
        }
        self.names
            .iter()
            .filter_map(|name| snapshot.get(&ResourceKey::new(resource_type, name.as_str())))
            .filter(|stored| outdated(stored.resource.name(), stored.digest))
            .map(to_resource)
            .collect()
    }

    /// Returns the names to send as removed, each once: resources the proxy
    /// has that are gone, and subscribed names that never existed. With
    /// `only`, the names are taken from that set alone.
    fn removals(&self, resource_type: ResourceType, snapshot: &Snapshot, only: Option<&BTreeSet<String>>) -> Vec<String> {
        let missing = |name: &str| snapshot.get(&ResourceKey::new(resource_type, name)).is_none();
        if let Some(only) = only {
            let held_or_unreported = |name: &String| self.known.contains_key(name) || (self.names.contains(name) && !self.absent.contains(name));
            return only.iter().filter(|name| self.wants(name) && missing(name) && held_or_unreported(name)).cloned().collect();
        }
        let mut removed: BTreeSet<String> =
            self.known.keys().filter(|name| self.wants(name) && missing(name)).cloned().collect();
        removed.extend(self.names.iter().filter(|name| !self.absent.contains(*name) && missing(name)).cloned());
        removed.into_iter().collect()
    }

    /// Records what a response carried, so the next diff starts from it.
    fn record_sent(&mut self, resources: &[Resource], removed: &[String], nonce: String, version: String) {
        for resource in resources {
            self.known.insert(resource.name.clone(), parse_digest(&resource.version));
            self.absent.remove(&resource.name);
        }
        for name in removed {
            self.known.remove(name);
            if self.names.contains(name) {
                self.absent.insert(name.clone());
            }
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((nonce, version));
    }

    /// Takes the pending response with `nonce`, returning the type version it sent.
    fn take_pending(&mut self, nonce: &str) -> Option<String> {
        let index = self.pending.iter().position(|(pending, _)| pending == nonce)?;
        self.pending.remove(index).map(|(_, version)| version)
    }
}

/// Returns the names of `resource_type` whose resource `next` adds, removes
/// or replaces compared with `previous`. Snapshots share unchanged resources,
/// so this compares pointers, which keeps a push cheap on every stream however
/// many resources there are.
fn changed_names(previous: &Snapshot, next: &Snapshot, resource_type: ResourceType) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    let mut old = previous.resources_of(resource_type).peekable();
    let mut new = next.resources_of(resource_type).peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.resource.name().cmp(b.resource.name()),
        };
        match order {
            std::cmp::Ordering::Less => changed.extend(old.next().map(|stored| stored.resource.name().to_string())),
            std::cmp::Ordering::Greater => changed.extend(new.next().map(|stored| stored.resource.name().to_string())),
            std::cmp::Ordering::Equal => {
                let (Some(a), Some(b)) = (old.next(), new.next()) else { break };
                if !std::ptr::eq(a, b) && a.digest != b.digest {
                    changed.insert(b.resource.name().to_string());
                }
            }
        }
    }
    changed
}

fn format_digest(digest: u64) -> String {
    format!("{digest:016x}")
}

fn parse_digest(version: &str) -> Option<u64> {
    u64::from_str_radix(version, 16).ok()
}

/// The part of a diff that a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Added and modified resources only, so a push never removes a resource
    /// before what refers to it has changed.
    Updates,
    Removals,
    /// Both, for a response to a subscription.
    All,
}

pub(crate) struct DeltaStream {
    id: u64,
    proxy: ProxyHandle,
    view: StreamView,
    types: BTreeMap<ResourceType, DeltaType>,
    responses_sent: u64,
    responses: DeltaSender,
}

impl DeltaStream {
    pub(crate) fn new(id: u64, proxy: ProxyHandle, snapshot: Arc<Snapshot>, responses: DeltaSender) -> Self {
        proxy.record_config_version(snapshot.version());
        DeltaStream { id, proxy, view: StreamView::new(snapshot), types: BTreeMap::new(), responses_sent: 0, responses }
    }

    fn record_answer(&self, resource_type: ResourceType, request: &DeltaDiscoveryRequest, version: &str) {
        match &request.error_detail {
            Some(status) => {
                tracing::warn!(type_url = %request.type_url, nonce = %request.response_nonce, version, error = %status.message, "proxy rejected config");
                self.proxy.record_nack(resource_type, version, &status.message);
            }
            None => {
                tracing::debug!(type_url = %request.type_url, nonce = %request.response_nonce, version, "proxy accepted config");
                self.proxy.record_ack(resource_type, version);
            }
        }
    }

    /// Sends what the proxy lacks of one subscribed type; `always` sends a
    /// response even when there is nothing to send.
    async fn send_diff(&mut self, resource_type: ResourceType, part: Part, only: Option<&BTreeSet<String>>, always: bool) -> Result<(), Ended> {
        let Some(state) = self.types.get(&resource_type) else {
            return Ok(());
        };

        let current = &self.view.current;
        let resources = if part == Part::Removals { Vec::new() } else { state.updates(resource_type, current, only) };
        let removed = if part == Part::Updates { Vec::new() } else { state.removals(resource_type, current, only) };
        if resources.is_empty() && removed.is_empty() && !always {
            return Ok(());
        }
        self.send(resource_type, resources, removed).await
    }

    async fn send(&mut self, resource_type: ResourceType, resources: Vec<Resource>, removed: Vec<String>) -> Result<(), Ended> {
        self.responses_sent += 1;
        let nonce = format!("{}-{}", self.id, self.responses_sent);
        let version = self.view.current.type_version(resource_type).to_string();
        if let Some(state) = self.types.get_mut(&resource_type) {
            state.record_sent(&resources, &removed, nonce.clone(), version.clone());
        }

        let (sent, removed_count) = (resources.len(), removed.len());
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources,
            type_url: resource_type.type_url().to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
        };
        self.responses.send(Ok(response)).await.map_err(|_| Ended::ResponseDropped)?;
        tracing::debug!(
            type_url = resource_type.type_url(),
            version = %version,
            nonce = %nonce,
            resources = sent,
            removed = removed_count,
            "sent delta discovery response"
        );
        self.proxy.record_sent(resource_type, &version);
        Ok(())
    }
}

impl StreamHandler for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn responses(&self) -> &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>> {
        &self.responses
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Ended> {
        self.view.note_node(request.node.as_ref(), &self.proxy);
        self.proxy.record_seen();

        let Some(resource_type) = ResourceType::from_type_url(&request.type_url) else {
            tracing::warn!(type_url = %request.type_url, "ignored delta request for a resource type Legate does not serve");
            return Ok(());
        };

        let first = !self.types.contains_key(&resource_type);
        let state = self.types.entry(resource_type).or_insert_with(|| DeltaType::start(&request));
        if !request.response_nonce.is_empty() {
            match state.take_pending(&request.response_nonce) {
                Some(version) => self.record_answer(resource_type, &request, &version),
                None => tracing::debug!(type_url = %request.type_url, nonce = %request.response_nonce, "ignored ACK or NACK of an unknown nonce"),
            }
        }

        let Some(state) = self.types.get_mut(&resource_type) else {
            return Ok(());
        };
        let subscribed = state.change_subscriptions(&request);
        if first || subscribed {
            // The first request always gets a response, even an empty one, so
            // the proxy can tell that its initial view is complete.
            self.send_diff(resource_type, Part::All, None, first).await?;
        }
        Ok(())
    }

    /// Pushes a new snapshot in two passes: first the added and modified
    /// resources in push order, then the removals in `REMOVAL_ORDER`. A type
    /// with nothing new for this stream gets no response.
    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Result<(), Ended> {
        let previous = self.view.current.clone();
        self.view.update(snapshot);
        let changed: BTreeMap<ResourceType, BTreeSet<String>> = ResourceType::ALL
            .into_iter()
            .filter(|resource_type| self.types.contains_key(resource_type))
            .map(|resource_type| (resource_type, changed_names(&previous, &self.view.current, resource_type)))
            .collect();

        for resource_type in ResourceType::ALL {
            if let Some(names) = changed.get(&resource_type).filter(|names| !names.is_empty()) {
                self.send_diff(resource_type, Part::Updates, Some(names), false).await?;
            }
        }
        for resource_type in REMOVAL_ORDER {
            if let Some(names) = changed.get(&resource_type).filter(|names| !names.is_empty()) {
                self.send_diff(resource_type, Part::Removals, Some(names), false).await?;
            }
        }
        self.proxy.record_config_version(self.view.current.version());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_api::envoy::config::cluster::v3::Cluster;
    use legate_api::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;

    use crate::snapshot::StoredResource;

    fn assignment(name: &str) -> ClusterLoadAssignment {
        ClusterLoadAssignment { cluster_name: name.into(), ..Default::default() }
    }

    fn cluster(name: &str) -> (ResourceKey, Arc<StoredResource>) {
        let proto = Cluster { name: name.into(), connect_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }), load_assignment: Some(assignment(name)), ..Default::default() };
        let any = prost_types::Any { type_url: ResourceType::Cluster.type_url().into(), value: proto.encode_to_vec() };
        let resource = legate_config::resource::decode_any(&any).expect("cluster decodes").value;
        (ResourceKey::new(ResourceType::Cluster, name), Arc::new(StoredResource::new(any, resource)))
    }

    fn snapshot(names: &[&str]) -> Snapshot {
        Snapshot::new(1, BTreeMap::new(), names.iter().map(|name| cluster(name)).collect())
    }

    fn request(subscribe: &[&str], initial: &[(&str, &str)]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: ResourceType::Cluster.type_url().into(),
            resource_names_subscribe: subscribe.iter().map(|name| name.to_string()).collect(),
            initial_resource_versions: initial.iter().map(|(name, version)| (name.to_string(), version.to_string())).collect(),
            ..Default::default()
        }
    }

    fn names(resources: &[Resource]) -> Vec<&str> {
        resources.iter().map(|resource| resource.name.as_str()).collect()
    }

    #[test]
    fn changed_names_compare_shared_resources() {
        let (web_key, web) = cluster("web");
        let (api_key, api) = cluster("api");
        let (gone_key, gone) = cluster("gone");
        let previous = Snapshot::new(1, BTreeMap::new(), BTreeMap::from([(web_key.clone(), web.clone()), (gone_key, gone)]));
        let next = Snapshot::new(2, BTreeMap::new(), BTreeMap::from([(web_key, web), (api_key, api)]));

        let changed = changed_names(&previous, &next, ResourceType::Cluster);
        assert_eq!(changed.iter().map(String::as_str).collect::<Vec<_>>(), ["api", "gone"]);
        assert!(changed_names(&next, &next, ResourceType::Cluster).is_empty());
    }

    #[test]
    fn first_request_chooses_wildcard() {
        assert!(DeltaType::start(&request(&[], &[])).wildcard);
        assert!(DeltaType::start(&request(&["*", "a"], &[])).wildcard);
        assert!(!DeltaType::start(&request(&["a"], &[])).wildcard);
    }

    #[test]
    fn held_versions_are_skipped_and_gone_ones_removed() {
        let snapshot = snapshot(&["api", "web"]);
        let web_version = format_digest(cluster("web").1.digest);
        let state = DeltaType::start(&request(&[], &[("web", &web_version), ("gone", "1")]));

        assert_eq!(names(&state.updates(ResourceType::Cluster, &snapshot, None)), ["api"]);
        assert_eq!(state.removals(ResourceType::Cluster, &snapshot, None), ["gone"]);
    }

    #[test]
    fn absent_name_is_removed_once() {
        let snapshot = snapshot(&["web"]);
        let mut state = DeltaType::start(&request(&["web", "missing"], &[]));
        state.change_subscriptions(&request(&["web", "missing"], &[]));

        let updates = state.updates(ResourceType::Cluster, &snapshot, None);
        let removed = state.removals(ResourceType::Cluster, &snapshot, None);
        assert_eq!(names(&updates), ["web"]);
        assert_eq!(removed, ["missing"]);

        state.record_sent(&updates, &removed, "n1".into(), "1".into());
        assert!(state.updates(ResourceType::Cluster, &snapshot, None).is_empty());
        assert!(state.removals(ResourceType::Cluster, &snapshot, None).is_empty());
        assert_eq!(state.take_pending("n1").as_deref(), Some("1"));
        assert_eq!(state.take_pending("n1"), None);
    }

    #[test]
    fn unsubscribed_name_is_sent_again_on_resubscribe() {
        let snapshot = snapshot(&["web"]);
        let mut state = DeltaType::start(&request(&["web"], &[]));
        state.change_subscriptions(&request(&["web"], &[]));
        let updates = state.updates(ResourceType::Cluster, &snapshot, None);
        state.record_sent(&updates, &[], "n1".into(), "1".into());

        let unsubscribe = DeltaDiscoveryRequest { resource_names_unsubscribe: vec!["web".into()], ..request(&[], &[]) };
        assert!(!state.change_subscriptions(&unsubscribe));
        assert!(state.updates(ResourceType::Cluster, &snapshot, None).is_empty());
        assert!(state.change_subscriptions(&request(&["web"], &[])));
        assert_eq!(names(&state.updates(ResourceType::Cluster, &snapshot, None)), ["web"]);
    }
}
