//! One ADS stream: responds to the proxy's requests and pushes each new snapshot
//! in an order that never leaves a reference dangling.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_config::ResourceType;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::subscription::{classify, with_removals_held, Content, RequestKind, TypeState};
use crate::proxies::ProxyHandle;
use crate::targets::{view_for, NodeInfo};
use crate::snapshot::Snapshot;

/// Order in which removals reach a proxy: a resource goes only after
/// everything that refers to it (listeners name route configurations, routes
/// name clusters, clusters name their endpoints, listeners and clusters name
/// secrets).
pub(super) const REMOVAL_ORDER: [ResourceType; 5] = [
    ResourceType::Listener,
    ResourceType::RouteConfiguration,
    ResourceType::Cluster,
    ResourceType::ClusterLoadAssignment,
    ResourceType::Secret,
];

pub(crate) type ResponseSender = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Reason a stream ended.
#[derive(Debug)]
pub(crate) enum Ended {
    ProxyClosed,
    ProxyError(Status),
    ResponseDropped,
    ShuttingDown,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::ProxyClosed => f.write_str("proxy closed the stream"),
            Ended::ProxyError(status) => write!(f, "stream failed: {}", status.message()),
            Ended::ResponseDropped => f.write_str("proxy stopped reading responses"),
            Ended::ShuttingDown => f.write_str("control plane is shutting down"),
        }
    }
}

/// Sources a stream waits on besides its own requests.
pub(crate) struct StreamInputs {
    pub(crate) requests: Streaming<DiscoveryRequest>,
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

pub(crate) struct AdsStream {
    id: u64,
    proxy: ProxyHandle,
    /// The snapshot in force, for every proxy.
    base: Arc<Snapshot>,
    /// What this stream's proxy receives: `base` with the overlays whose
    /// target matches its node.
    snapshot: Arc<Snapshot>,
    node: Option<NodeInfo>,
    types: BTreeMap<ResourceType, TypeState>,
    responses_sent: u64,
    node_seen: bool,
    responses: ResponseSender,
}

impl AdsStream {
    pub(crate) fn new(id: u64, proxy: ProxyHandle, snapshot: Arc<Snapshot>, responses: ResponseSender) -> Self {
        proxy.record_config_version(snapshot.version());
        let base = snapshot.clone();
        AdsStream { id, proxy, base, snapshot, node: None, types: BTreeMap::new(), responses_sent: 0, node_seen: false, responses }
    }

    /// Serves the stream until the proxy leaves or the server shuts down.
    pub(crate) async fn run(mut self, mut inputs: StreamInputs) {
        let ended = self.serve(&mut inputs).await;
        if matches!(ended, Ended::ShuttingDown) {
            // UNAVAILABLE makes the proxy reconnect, possibly to another
            // control plane. If the channel is full, the stream just ends.
            let _ = self.responses.try_send(Err(Status::unavailable("control plane is shutting down")));
        }
        tracing::info!(reason = %ended, "ADS stream ended");
    }

    async fn serve(&mut self, inputs: &mut StreamInputs) -> Ended {
        loop {
            let step = tokio::select! {
                request = inputs.requests.message() => match request {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => Err(Ended::ProxyClosed),
                    Err(status) => Err(Ended::ProxyError(status)),
                },
                changed = inputs.snapshots.changed() => match changed {
                    Ok(()) => {
                        let snapshot = inputs.snapshots.borrow_and_update().clone();
                        self.on_snapshot(snapshot).await
                    }
                    Err(_) => Err(Ended::ShuttingDown),
                },
                _ = inputs.shutdown.changed() => Err(Ended::ShuttingDown),
                () = self.responses.closed() => Err(Ended::ResponseDropped),
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Ended> {
        self.note_node(&request);
        self.proxy.record_seen();

        let Some(resource_type) = ResourceType::from_type_url(&request.type_url) else {
            tracing::warn!(type_url = %request.type_url, "ignored request for a resource type Legate does not serve");
            return Ok(());
        };

        let kind = classify(&request, self.types.get(&resource_type));
        match kind {
            RequestKind::Stale => {
                tracing::debug!(type_url = %request.type_url, nonce = %request.response_nonce, "ignored stale request");
                return Ok(());
            }
            RequestKind::Nack(error) => self.record_nack(resource_type, &request, error),
            RequestKind::Ack => self.record_ack(resource_type, &request),
            RequestKind::Subscribe => {}
        }

        let first = !self.types.contains_key(&resource_type);
        let state = self.types.entry(resource_type).or_insert_with(|| TypeState::new(resource_type));
        let names_changed = state.set_names(&request.resource_names);
        if first || names_changed {
            let content = state.content(&self.snapshot);
            self.send(resource_type, content).await?;
        }
        Ok(())
    }

    /// Records the node on the first request that carries one; Envoy sends
    /// it only on the first request of a stream.
    fn note_node(&mut self, request: &DiscoveryRequest) {
        if self.node_seen {
            return;
        }
        self.node_seen = true;

        let node = request.node.clone().unwrap_or_default();
        tracing::Span::current().record("node.id", node.id.as_str());
        let info = NodeInfo::from_node(&node);
        self.proxy.set_node(&info);
        self.snapshot = view_for(&self.base, Some(&info));
        self.node = Some(info);
        tracing::info!(node.cluster = %node.cluster, "ADS stream started");
    }

    fn record_nack(&self, resource_type: ResourceType, request: &DiscoveryRequest, error: &str) {
        // The request's version_info is the last version the proxy accepted;
        // the rejected one is what was sent with the nonce.
        let rejected = self.types.get(&resource_type).map(|state| state.last_version.as_str()).unwrap_or_default();
        tracing::warn!(
            type_url = %request.type_url,
            nonce = %request.response_nonce,
            version = %rejected,
            error,
            "proxy rejected config"
        );
        self.proxy.record_nack(resource_type, rejected, error);
    }

    fn record_ack(&self, resource_type: ResourceType, request: &DiscoveryRequest) {
        tracing::debug!(
            type_url = %request.type_url,
            nonce = %request.response_nonce,
            version = %request.version_info,
            "proxy accepted config"
        );
        self.proxy.record_ack(resource_type, &request.version_info);
    }

    /// Pushes a new snapshot in two passes. The first, in push order
    /// (clusters, endpoints, listeners, route configurations), adds and
    /// modifies while still holding removed resources. The second, in
    /// `REMOVAL_ORDER`, drops them. A type whose content for this stream is
    /// unchanged is skipped in both passes.
    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Result<(), Ended> {
        self.snapshot = view_for(&snapshot, self.node.as_ref());
        self.base = snapshot;

        // NOTE: both passes send the new type version, so an ACK of the
        // first pass is recorded as that version while removals are pending.

        for resource_type in ResourceType::ALL {
            self.send_if_changed(resource_type, |state, snapshot| with_removals_held(&state.sent, &state.content(snapshot)))
                .await?;
        }
        for resource_type in REMOVAL_ORDER {
            self.send_if_changed(resource_type, |state, snapshot| state.content(snapshot)).await?;
        }
        self.proxy.record_config_version(self.snapshot.version());
        Ok(())
    }

    async fn send_if_changed(
        &mut self,
        resource_type: ResourceType,
        next: impl FnOnce(&TypeState, &Snapshot) -> Content,
    ) -> Result<(), Ended> {
        let Some(state) = self.types.get(&resource_type) else {
            return Ok(());
        };

        let content = next(state, &self.snapshot);
        if content == state.sent {
            return Ok(());
        }
        self.send(resource_type, content).await
    }

    async fn send(&mut self, resource_type: ResourceType, content: Content) -> Result<(), Ended> {
        self.responses_sent += 1;
        let nonce = format!("{}-{}", self.id, self.responses_sent);
        let version = self.snapshot.type_version(resource_type).to_string();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: content.values().cloned().collect(),
            type_url: resource_type.type_url().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };

        self.responses.send(Ok(response)).await.map_err(|_| Ended::ResponseDropped)?;
        tracing::debug!(
            type_url = resource_type.type_url(),
            version = %version,
            nonce = %nonce,
            resources = content.len(),
            "sent discovery response"
        );

        self.proxy.record_sent(resource_type, &version);
        if let Some(state) = self.types.get_mut(&resource_type) {
            state.last_nonce = nonce;
            state.last_version = version;
            state.sent = content;
        }
        Ok(())
    }
}
