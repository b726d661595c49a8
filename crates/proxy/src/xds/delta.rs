//! The incremental (delta) ADS stream: subscribes by name or wildcard,
//! applies only the resources a response adds, changes or removes, and
//! reports the versions it accepted when it reconnects.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use legate_api::envoy::config::core::v3::Node;
use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use legate_api::google::rpc::Status;
use legate_config::ResourceType;

use prost::Message;

use super::client::{apply, is_large_update, off_worker, AdsClient, StreamEnd, MAX_RESPONSE_BYTES};
use crate::manager::Rejected;

/// Subscription state of one resource type, kept across streams.
#[derive(Debug, Default, Clone)]
pub struct DeltaSubscription {
    /// Names subscribed on the current stream; unused for wildcard types.
    names: BTreeSet<String>,
    /// Whether the type was subscribed on the current stream.
    started: bool,
    /// Version of each resource accepted, by name. A reconnect sends these as
    /// `initial_resource_versions`, so the control plane skips them.
    accepted: BTreeMap<String, String>,
}

impl DeltaSubscription {
    /// Returns the first request of a stream for `resource_type`: the names
    /// (none for a wildcard type) and the versions accepted earlier.
    fn initial_request(&mut self, resource_type: ResourceType, names: BTreeSet<String>, node: Option<Node>) -> DeltaDiscoveryRequest {
        let wildcard = resource_type.is_wildcard();
        // Versions of resources no longer needed would make the server send
        // their removal; dropping them here is simpler.
        self.accepted.retain(|name, _| wildcard || names.contains(name));
        self.started = true;
        self.names = names;
        DeltaDiscoveryRequest {
            node,
            type_url: resource_type.type_url().to_string(),
            resource_names_subscribe: self.names.iter().cloned().collect(),
            initial_resource_versions: self.accepted.iter().map(|(name, version)| (name.clone(), version.clone())).collect(),
            ..Default::default()
        }
    }

    /// Returns the request that moves the subscription to `names`, or none
    /// when they did not change.
    fn resubscribe(&mut self, resource_type: ResourceType, names: BTreeSet<String>) -> Option<DeltaDiscoveryRequest> {
        if names == self.names {
            return None;
        }
        let subscribe = names.difference(&self.names).cloned().collect();
        let unsubscribe: Vec<String> = self.names.difference(&names).cloned().collect();
        for name in &unsubscribe {
            self.accepted.remove(name);
        }
        self.names = names;
        Some(DeltaDiscoveryRequest {
            type_url: resource_type.type_url().to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }

    /// Names held after `response`: those accepted before, plus the
    /// response's, minus its removals.
    fn names_after(&self, response: &DeltaDiscoveryResponse) -> HashSet<String> {
        let mut names: HashSet<String> = self.accepted.keys().cloned().collect();
        names.extend(response.resources.iter().map(|resource| resource.name.clone()));
        for name in &response.removed_resources {
            names.remove(name);
        }
        names
    }
}

/// Decodes the `Any` of each resource; one that does not decode is rejected.
fn decode_resources(response: &DeltaDiscoveryResponse) -> (Vec<prost_types::Any>, Vec<Rejected>) {
    let mut decoded = Vec::with_capacity(response.resources.len());
    let mut rejected = Vec::new();
    for resource in &response.resources {
        match prost_types::Any::decode(resource.resource.clone()) {
            Ok(any) => decoded.push(any),
            Err(error) => {
                rejected.push(Rejected { name: resource.name.clone(), reason: format!("{:?}: invalid resource: {error}", resource.name) })
            }
        }
    }
    (decoded, rejected)
}

/// Removals in one delta response from which it counts as a large update,
/// because the config it frees may be large although the response is not.
const TRIM_AFTER_REMOVALS: usize = 100;

/// Tells whether a delta response is large enough to trim the heap after
/// it: by its packed resource bytes, or by the resources it removes.
fn is_large_delta(response: &DeltaDiscoveryResponse) -> bool {
    let bytes = response.resources.iter().map(|resource| resource.resource.len()).sum();
    response.removed_resources.len() >= TRIM_AFTER_REMOVALS || is_large_update(bytes)
}

impl AdsClient {
    /// Runs one delta stream. UNIMPLEMENTED from the server comes back as
    /// `StreamEnd::NeverConnected`, so the caller can fall back.
    pub(super) async fn run_delta_stream(&mut self, channel: tonic::transport::Channel, server: &str) -> Result<(), StreamEnd> {
        let (requests, outgoing) = mpsc::channel::<DeltaDiscoveryRequest>(16);
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        self.send_initial_delta(&requests).await;
        let request = self.authorized(ReceiverStream::new(outgoing))?;
        let mut responses = client.delta_aggregated_resources(request).await.map_err(StreamEnd::NeverConnected)?.into_inner();
        info!(server = %server, node = %self.node.id, "delta ADS stream established");

        self.manager.stats().xds.connected.set(1);
        let result = self.read_delta_responses(&mut responses, &requests).await;
        self.manager.stats().xds.connected.set(0);
        result
    }

    async fn read_delta_responses(
        &mut self,
        responses: &mut tonic::Streaming<DeltaDiscoveryResponse>,
        requests: &mpsc::Sender<DeltaDiscoveryRequest>,
    ) -> Result<(), StreamEnd> {
        while let Some(response) = responses.next().await {
            let response = response.map_err(StreamEnd::Connected)?;
            self.handle_delta_response(response, requests).await;
        }
        Ok(())
    }

    /// Subscribes to every type the proxy needs, with the versions it has;
    /// the node goes on the first request of the stream only.
    async fn send_initial_delta(&mut self, requests: &mpsc::Sender<DeltaDiscoveryRequest>) {
        for subscription in self.delta.values_mut() {
            subscription.started = false;
        }
        let mut node = Some(self.node_message());
        for resource_type in self.needed_types() {
            let names = self.names_for(resource_type);
            let request = self.delta.entry(resource_type).or_default().initial_request(resource_type, names, node.take());
            let _ = requests.send(request).await;
        }
    }

    async fn handle_delta_response(&mut self, response: DeltaDiscoveryResponse, requests: &mpsc::Sender<DeltaDiscoveryRequest>) {
        let Some(resource_type) = ResourceType::from_type_url(&response.type_url) else {
            warn!(type_url = %response.type_url, "delta response for a type Legate does not use");
            return;
        };

        let retained = self.delta.entry(resource_type).or_default().names_after(&response);
        let manager = self.manager.clone();
        let (response, rejected) = off_worker(is_large_delta(&response), move || {
            let (resources, mut rejected) = decode_resources(&response);
            rejected.extend(apply(&manager, resource_type, &resources, &retained, &response.system_version_info));
            (response, rejected)
        })
        .await;

        let stats = &self.manager.stats().xds;
        stats.count_update(resource_type.short_name(), rejected.is_empty());
        stats.count_resources(resource_type.short_name(), response.resources.len());
        let subscription = self.delta.entry(resource_type).or_default();
        for resource in &response.resources {
            if !rejected.iter().any(|failure| failure.name == resource.name) {
                subscription.accepted.insert(resource.name.clone(), resource.version.clone());
            }
        }
        for name in &response.removed_resources {
            subscription.accepted.remove(name);
        }

        let mut reply = DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        if rejected.is_empty() {
            stats.set_version(resource_type.short_name(), &response.system_version_info);
            info!(
                resource_type = resource_type.short_name(),
                version = %response.system_version_info,
                resources = response.resources.len(),
                removed = response.removed_resources.len(),
                "delta config applied"
            );
        } else {
            let detail = rejected.iter().map(|failure| failure.reason.as_str()).collect::<Vec<_>>().join("; ");
            warn!(type_url = %response.type_url, version = %response.system_version_info, nonce = %response.nonce, error = %detail, "config rejected");
            reply.error_detail = Some(Status { code: tonic::Code::InvalidArgument as i32, message: detail, details: Vec::new() });
        }
        let _ = requests.send(reply).await;

        self.follow_delta_dependencies(resource_type, requests).await;
    }

    /// After CDS or LDS, subscribes to the EDS or RDS names and the SDS
    /// secrets the new clusters and listeners need, and unsubscribes from
    /// those they no longer need.
    async fn follow_delta_dependencies(&mut self, resource_type: ResourceType, requests: &mpsc::Sender<DeltaDiscoveryRequest>) {
        let dependent = match resource_type {
            ResourceType::Cluster => ResourceType::ClusterLoadAssignment,
            ResourceType::Listener => ResourceType::RouteConfiguration,
            _ => return,
        };
        for resource_type in [ResourceType::Secret, dependent] {
            let names = self.names_for(resource_type);
            let subscription = self.delta.entry(resource_type).or_default();
            let request = if subscription.started {
                subscription.resubscribe(resource_type, names)
            } else {
                (!names.is_empty()).then(|| subscription.initial_request(resource_type, names, None))
            };
            if let Some(request) = request {
                let _ = requests.send(request).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_request_sends_only_needed_versions() {
        let mut subscription = DeltaSubscription::default();
        subscription.accepted.insert("a".into(), "3".into());
        subscription.accepted.insert("b".into(), "4".into());

        let names = BTreeSet::from(["a".to_string(), "c".to_string()]);
        let request = subscription.initial_request(ResourceType::ClusterLoadAssignment, names, None);

        assert_eq!(request.resource_names_subscribe, ["a", "c"]);
        assert_eq!(request.initial_resource_versions.len(), 1);
        assert_eq!(request.initial_resource_versions["a"], "3");
    }

    #[test]
    fn wildcard_initial_request_names_nothing() {
        let mut subscription = DeltaSubscription::default();
        subscription.accepted.insert("a".into(), "3".into());

        let request = subscription.initial_request(ResourceType::Cluster, BTreeSet::new(), None);

        assert!(request.resource_names_subscribe.is_empty());
        assert_eq!(request.initial_resource_versions["a"], "3");
    }

    #[test]
    fn resubscribe_sends_the_difference() {
        let mut subscription = DeltaSubscription::default();
        subscription.initial_request(ResourceType::RouteConfiguration, BTreeSet::from(["a".to_string(), "b".to_string()]), None);
        subscription.accepted.insert("a".into(), "1".into());

        let request = subscription
            .resubscribe(ResourceType::RouteConfiguration, BTreeSet::from(["b".to_string(), "c".to_string()]))
            .expect("names changed");

        assert_eq!(request.resource_names_subscribe, ["c"]);
        assert_eq!(request.resource_names_unsubscribe, ["a"]);
        assert!(!subscription.accepted.contains_key("a"));
        assert!(subscription.resubscribe(ResourceType::RouteConfiguration, BTreeSet::from(["b".to_string(), "c".to_string()])).is_none());
    }
}
