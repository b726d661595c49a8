//! One ADS stream: responds to the proxy's requests and pushes each new snapshot
//! in an order that never leaves a reference dangling.

use std::collections::BTreeMap;
use std::sync::Arc;

use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_config::ResourceType;
use tokio::sync::mpsc;
use tonic::Status;

use super::serve::{Ended, StreamHandler, StreamView};
use super::subscription::{classify, with_removals_held, Content, RequestKind, TypeState};
use crate::proxies::ProxyHandle;
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

pub(crate) struct AdsStream {
    id: u64,
    proxy: ProxyHandle,
    view: StreamView,
    types: BTreeMap<ResourceType, TypeState>,
    responses_sent: u64,
    responses: ResponseSender,
}

impl AdsStream {
    pub(crate) fn new(id: u64, proxy: ProxyHandle, snapshot: Arc<Snapshot>, responses: ResponseSender) -> Self {
        proxy.record_config_version(snapshot.version());
        AdsStream { id, proxy, view: StreamView::new(snapshot), types: BTreeMap::new(), responses_sent: 0, responses }
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

    async fn send_if_changed(
        &mut self,
        resource_type: ResourceType,
        next: impl FnOnce(&TypeState, &Snapshot) -> Content,
    ) -> Result<(), Ended> {
        let Some(state) = self.types.get(&resource_type) else {
            return Ok(());
        };

        let content = next(state, &self.view.current);
        if content == state.sent {
            return Ok(());
        }
        self.send(resource_type, content).await
    }

    async fn send(&mut self, resource_type: ResourceType, content: Content) -> Result<(), Ended> {
        self.responses_sent += 1;
        let nonce = format!("{}-{}", self.id, self.responses_sent);
        let version = self.view.current.type_version(resource_type).to_string();
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

impl StreamHandler for AdsStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn responses(&self) -> &mpsc::Sender<Result<DiscoveryResponse, Status>> {
        &self.responses
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Ended> {
        self.view.note_node(request.node.as_ref(), &self.proxy);
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
            let content = state.content(&self.view.current);
            self.send(resource_type, content).await?;
        }
        Ok(())
    }

    /// Pushes a new snapshot in two passes. The first, in push order
    /// (clusters, endpoints, listeners, route configurations), adds and
    /// modifies while still holding removed resources. The second, in
    /// `REMOVAL_ORDER`, drops them. A type whose content for this stream is
    /// unchanged is skipped in both passes.
    async fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Result<(), Ended> {
        self.view.update(snapshot);

        // NOTE: both passes send the new type version, so an ACK of the
        // first pass is recorded as that version while removals are pending.

        for resource_type in ResourceType::ALL {
            self.send_if_changed(resource_type, |state, snapshot| with_removals_held(&state.sent, &state.content(snapshot)))
                .await?;
        }
        for resource_type in REMOVAL_ORDER {
            self.send_if_changed(resource_type, |state, snapshot| state.content(snapshot)).await?;
        }
        self.proxy.record_config_version(self.view.current.version());
        Ok(())
    }
}
