//! The ADS stream loop with reconnects.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{info, info_span, warn, Instrument};

use legate_api::envoy::config::core::v3::Node;
use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_config::model::{self, AdsConfig};
use legate_config::resource::{decode_any, resource_name};
use legate_config::{Resource, ResourceType};

use super::delta::DeltaSubscription;
use super::subscription::Subscription;
use crate::manager::{ConfigManager, Rejected};
use crate::tls::UpstreamConnector;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Largest discovery response accepted, in bytes.
pub(super) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Starts the ADS client task. It runs until the process ends, reconnecting
/// with jittered exponential backoff and serving the last good config while
/// the control plane is away.
pub fn spawn(ads: AdsConfig, servers: Vec<String>, tls: Option<Arc<UpstreamConnector>>, node: model::Node, manager: Arc<ConfigManager>) {
    let span = info_span!("xds", cluster = %ads.cluster_name);
    tokio::spawn(
        async move {
            let mut client = AdsClient {
                ads,
                tls,
                node,
                manager,
                subscriptions: HashMap::new(),
                delta: HashMap::new(),
                sotw_only: HashSet::new(),
            };
            let mut backoff = MIN_BACKOFF;
            let first = fastrand::usize(..servers.len().max(1));
            let mut attempt = 0usize;
            loop {
                let Some(server) = servers.get(endpoint_index(first, attempt, servers.len())).cloned() else {
                    warn!("the ADS cluster has no endpoint; dynamic config is disabled");
                    return;
                };
                attempt += 1;
                match client.run_stream(&server).await {
                    Ok(()) => {
                        info!(server = %server, "ADS stream closed by the control plane");
                        backoff = MIN_BACKOFF;
                    }
                    Err(StreamEnd::Connected(error)) => {
                        warn!(server = %server, %error, "ADS stream failed");
                        backoff = MIN_BACKOFF;
                    }
                    Err(StreamEnd::NeverConnected(error)) => {
                        let retry_in_ms = backoff.as_millis() as u64;
                        if error.code() == tonic::Code::Unauthenticated {
                            warn!(server = %server, error = %error.message(), retry_in_ms, "the control plane rejected the ADS credentials; check --ads-token-file");
                        } else {
                            warn!(server = %server, %error, retry_in_ms, "cannot reach the control plane");
                        }
                    }
                }
                let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        .instrument(span),
    );
}

/// Returns the index of the ADS endpoint for connection attempt `attempt`. Each proxy starts at a
/// random `first` endpoint so that proxies spread over the control-plane replicas, then goes on in
/// order and wraps, so every endpoint is tried once in `count` attempts.
fn endpoint_index(first: usize, attempt: usize, count: usize) -> usize {
    (first + attempt) % count.max(1)
}

/// Reads the ADS bearer token as an `authorization` value.
fn read_token(path: &std::path::Path) -> Result<tonic::metadata::AsciiMetadataValue, tonic::Status> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| tonic::Status::unauthenticated(format!("failed to read the ADS token {}: {error}", path.display())))?;
    format!("Bearer {}", text.trim())
        .parse()
        .map_err(|_| tonic::Status::unauthenticated(format!("the ADS token in {} is not valid header text", path.display())))
}

pub(super) enum StreamEnd {
    NeverConnected(tonic::Status),
    Connected(tonic::Status),
}

pub(super) struct AdsClient {
    pub(super) ads: AdsConfig,
    /// TLS to the control plane, from the ADS cluster's transport socket.
    tls: Option<Arc<UpstreamConnector>>,
    pub(super) node: model::Node,
    pub(super) manager: Arc<ConfigManager>,
    subscriptions: HashMap<ResourceType, Subscription>,
    /// Delta subscriptions, kept across streams for `initial_resource_versions`.
    pub(super) delta: HashMap<ResourceType, DeltaSubscription>,
    /// Control planes that rejected the delta stream with UNIMPLEMENTED, so
    /// the proxy uses state-of-the-world with them until it restarts.
    sotw_only: HashSet<String>,
}

impl AdsClient {
    async fn run_stream(&mut self, server: &str) -> Result<(), StreamEnd> {
        let channel = super::connect::channel(server, self.tls.as_ref()).await.map_err(StreamEnd::NeverConnected)?;

        if self.ads.delta && !self.sotw_only.contains(server) {
            match self.run_delta_stream(channel.clone(), server).await {
                Err(StreamEnd::NeverConnected(status)) if status.code() == tonic::Code::Unimplemented => {
                    warn!(server = %server, error = %status.message(), "the control plane does not offer delta ADS; using state-of-the-world");
                    self.sotw_only.insert(server.to_string());
                }
                ended => return ended,
            }
        }
        self.run_sotw_stream(channel, server).await
    }

    async fn run_sotw_stream(&mut self, channel: tonic::transport::Channel, server: &str) -> Result<(), StreamEnd> {
        let (requests, outgoing) = mpsc::channel::<DiscoveryRequest>(16);
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        self.send_initial(&requests).await;
        let request = self.authorized(ReceiverStream::new(outgoing))?;
        let mut responses = client
            .stream_aggregated_resources(request)
            .await
            .map_err(StreamEnd::NeverConnected)?
            .into_inner();
        info!(server = %server, node = %self.node.id, "ADS stream established");
        let xds_stats = &self.manager.stats().xds;
        xds_stats.connected.set(1);
        let result = self.read_responses(&mut responses, &requests).await;
        self.manager.stats().xds.connected.set(0);
        result
    }

    async fn read_responses(
        &mut self,
        responses: &mut tonic::Streaming<DiscoveryResponse>,
        requests: &mpsc::Sender<DiscoveryRequest>,
    ) -> Result<(), StreamEnd> {
        while let Some(response) = responses.next().await {
            let response = response.map_err(StreamEnd::Connected)?;
            self.handle_response(response, requests).await;
        }
        Ok(())
    }

    /// Wraps a request stream with the ADS bearer token, if one is set.
    pub(super) fn authorized<T>(&self, stream: T) -> Result<tonic::Request<T>, StreamEnd> {
        let mut request = tonic::Request::new(stream);
        if let Some(path) = &self.ads.token_file {
            let token = read_token(path).map_err(StreamEnd::NeverConnected)?;
            request.metadata_mut().insert("authorization", token);
        }
        Ok(request)
    }

    /// Returns the types the proxy needs now, in push order.
    pub(super) fn needed_types(&self) -> Vec<ResourceType> {
        let mut wanted = Vec::new();
        if !self.manager.sds_names().is_empty() {
            wanted.push(ResourceType::Secret);
        }
        if self.ads.cds {
            wanted.push(ResourceType::Cluster);
        }
        if !self.manager.eds_names().is_empty() {
            wanted.push(ResourceType::ClusterLoadAssignment);
        }
        if self.ads.lds {
            wanted.push(ResourceType::Listener);
        }
        if !self.manager.rds_names().is_empty() {
            wanted.push(ResourceType::RouteConfiguration);
        }
        wanted
    }

    /// Subscribes to every type the proxy needs; the node goes on the first
    /// request of each stream only.
    async fn send_initial(&mut self, requests: &mpsc::Sender<DiscoveryRequest>) {
        for subscription in self.subscriptions.values_mut() {
            subscription.nonce.clear();
        }
        let mut node = Some(self.node_message());
        for resource_type in self.needed_types() {
            let names = self.names_for(resource_type);
            let subscription = self.subscriptions.entry(resource_type).or_default();
            subscription.names = names;
            let _ = requests.send(subscription.request(resource_type, node.take())).await;
        }
    }

    pub(super) fn node_message(&self) -> Node {
        Node {
            id: self.node.id.clone(),
            cluster: self.node.cluster.clone(),
            metadata: self.node.metadata.clone(),
            user_agent_name: "legate".into(),
            ..Default::default()
        }
    }

    pub(super) fn names_for(&self, resource_type: ResourceType) -> BTreeSet<String> {
        match resource_type {
            ResourceType::ClusterLoadAssignment => self.manager.eds_names(),
            ResourceType::RouteConfiguration => self.manager.rds_names(),
            ResourceType::Secret => self.manager.sds_names(),
            ResourceType::Cluster | ResourceType::Listener => BTreeSet::new(),
        }
    }

    async fn handle_response(&mut self, response: DiscoveryResponse, requests: &mpsc::Sender<DiscoveryRequest>) {
        let Some(resource_type) = ResourceType::from_type_url(&response.type_url) else {
            warn!(type_url = %response.type_url, "response for a type Legate does not use");
            return;
        };
        let manager = self.manager.clone();
        let response_bytes = response.resources.iter().map(|any| any.value.len()).sum();
        let previous_bytes = std::mem::replace(&mut self.subscriptions.entry(resource_type).or_default().last_bytes, response_bytes);
        let (response, rejected) = off_worker(is_large_update(response_bytes.max(previous_bytes)), move || {
            let rejected = apply(&manager, resource_type, &response.resources, &HashSet::new(), &response.version_info);
            (response, rejected)
        })
        .await;

        let subscription = self.subscriptions.entry(resource_type).or_default();
        subscription.nonce = response.nonce.clone();
        let stats = &self.manager.stats().xds;
        stats.count_update(resource_type.short_name(), rejected.is_empty());
        stats.count_resources(resource_type.short_name(), response.resources.len());
        let previous_version = subscription.accepted_version.clone();
        let reply = if rejected.is_empty() {
            stats.set_version(resource_type.short_name(), &response.version_info);
            subscription.accepted_version = response.version_info.clone();
            let changes = subscription.applied.replace(&response.resources);
            info!(
                resource_type = resource_type.short_name(),
                version = %response.version_info,
                resources = response.resources.len(),
                previous_version = %previous_version,
                changes = %changes,
                "config applied"
            );
            subscription.request(resource_type, None)
        } else {
            let detail = rejected.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>().join("; ");
            warn!(type_url = %response.type_url, version = %response.version_info, nonce = %response.nonce, error = %detail, "config rejected");
            subscription.nack(resource_type, detail)
        };
        let _ = requests.send(reply).await;

        self.follow_dependencies(resource_type, requests).await;
    }

    /// After CDS or LDS, subscribes to the EDS or RDS names and the SDS
    /// secrets the new clusters and listeners need, if they changed.
    async fn follow_dependencies(&mut self, resource_type: ResourceType, requests: &mpsc::Sender<DiscoveryRequest>) {
        let dependent = match resource_type {
            ResourceType::Cluster => ResourceType::ClusterLoadAssignment,
            ResourceType::Listener => ResourceType::RouteConfiguration,
            _ => return,
        };
        self.follow(ResourceType::Secret, requests).await;
        self.follow(dependent, requests).await;
    }

    /// Sends a new request for `dependent` when the names it needs changed.
    async fn follow(&mut self, dependent: ResourceType, requests: &mpsc::Sender<DiscoveryRequest>) {
        let names = self.names_for(dependent);
        let subscription = self.subscriptions.entry(dependent).or_default();
        if subscription.names == names && !(names.is_empty() && subscription.nonce.is_empty()) {
            return;
        }
        if names.is_empty() && subscription.names.is_empty() {
            return;
        }
        subscription.names = names;
        let _ = requests.send(subscription.request(dependent, None)).await;
    }
}

/// Smallest update, in packed resource bytes, after which the freed heap
/// goes back to the kernel. Trimming locks each malloc arena in turn, the
/// workers' too, and the workers then fault the released pages in again.
/// Smaller updates leave their freed chunks to the next one.
const TRIM_AFTER_BYTES: usize = 1024 * 1024;

/// Tells whether an update of `bytes` packed resource bytes (the larger of
/// the old and the new config where one replaces the other) is large enough
/// to trim the heap after it.
pub(super) fn is_large_update(bytes: usize) -> bool {
    bytes >= TRIM_AFTER_BYTES
}

/// Runs `work` (decoding and applying an update) on a blocking thread, then
/// returns the freed heap pages to the kernel when `trim` is set. On a
/// worker, a large update would stall the requests, all of them with one
/// worker thread.
pub(super) async fn off_worker<T: Send + 'static>(trim: bool, work: impl FnOnce() -> T + Send + 'static) -> T {
    let span = tracing::Span::current();
    let work = move || {
        let output = span.in_scope(work);
        if trim {
            crate::memory::release_free_heap();
        }
        output
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(output) => output,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Decodes every resource; applies the valid ones and returns the rejected
/// ones with their reasons. Listeners and clusters named neither in
/// `resources` nor in `retained` are removed.
pub(super) fn apply(
    manager: &ConfigManager,
    resource_type: ResourceType,
    resources: &[prost_types::Any],
    retained: &HashSet<String>,
    version: &str,
) -> Vec<Rejected> {
    let mut rejected = Vec::new();
    let mut named = retained.clone();
    let mut valid = Vec::new();

    // A state-of-the-world response repeats every resource of its type, so
    // those whose bytes did not change skip decoding: a change to 1 of
    // 10,000 clusters decodes 1.
    let names: Vec<String> = resources.iter().map(|any| resource_name(any).unwrap_or_else(|| "<unnamed>".to_string())).collect();
    let pairs: Vec<(&str, &prost_types::Any)> = names.iter().map(String::as_str).zip(resources).collect();
    let unchanged = manager.keep_unchanged(resource_type, &pairs, version);

    for ((any, name), unchanged) in resources.iter().zip(names).zip(unchanged) {
        named.insert(name.clone());
        if any.type_url != resource_type.type_url() {
            let reason = format!("{name:?}: resource type {} does not match the response type", any.type_url);
            rejected.push(Rejected { name, reason });
            continue;
        }
        if unchanged {
            continue;
        }
        match decode_any(any) {
            Ok(decoded) => valid.push((decoded.value, any.clone())),
            Err(errors) => rejected.push(Rejected { name, reason: errors.to_string() }),
        }
    }

    match resource_type {
        ResourceType::Cluster => {
            let clusters = valid.into_iter().filter_map(|(r, any)| match r {
                Resource::Cluster(cluster) => Some((cluster, any)),
                _ => None,
            });
            rejected.extend(manager.update_clusters(clusters.collect(), &named, version));
        }
        ResourceType::ClusterLoadAssignment => {
            let assignments = valid.into_iter().filter_map(|(r, any)| match r {
                Resource::ClusterLoadAssignment(assignment) => Some((assignment, any)),
                _ => None,
            });
            manager.update_assignments(assignments.collect(), version);
        }
        ResourceType::Listener => {
            let listeners = valid.into_iter().filter_map(|(r, any)| match r {
                Resource::Listener(listener) => Some((listener, any)),
                _ => None,
            });
            rejected.extend(manager.update_listeners(listeners.collect(), &named, version));
        }
        ResourceType::RouteConfiguration => {
            let routes = valid.into_iter().filter_map(|(r, any)| match r {
                Resource::RouteConfiguration(routes) => Some((routes, any)),
                _ => None,
            });
            manager.update_route_configs(routes.collect(), version);
        }
        ResourceType::Secret => {
            let secrets = valid.into_iter().filter_map(|(r, any)| match r {
                Resource::Secret(secret) => Some((secret, any)),
                _ => None,
            });
            rejected.extend(manager.update_secrets(secrets.collect(), version));
        }
    }
    manager.note_response(resource_type, version, resources, &rejected);
    rejected
}

#[cfg(test)]
mod tests {
    use super::endpoint_index;

    #[test]
    fn endpoint_order_starts_at_first_and_wraps() {
        let order: Vec<usize> = (0..4).map(|attempt| endpoint_index(2, attempt, 3)).collect();
        assert_eq!(order, vec![2, 0, 1, 2]);
    }

    #[test]
    fn endpoint_order_covers_every_endpoint() {
        for first in 0..3 {
            let mut seen: Vec<usize> = (0..3).map(|attempt| endpoint_index(first, attempt, 3)).collect();
            seen.sort_unstable();
            assert_eq!(seen, vec![0, 1, 2], "start at {first}");
        }
    }

    #[test]
    fn endpoint_order_single_endpoint() {
        assert_eq!(endpoint_index(0, 5, 1), 0);
    }
}
