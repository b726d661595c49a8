//! Envoy's aggregated discovery service, state-of-the-world variant: one
//! task per proxy stream, each fed by the store's published snapshots.

mod stream;
mod subscription;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::proxies::ProxyRegistry;
use crate::store::Store;
use stream::{AdsStream, StreamInputs};

/// Responses a stream may queue before it waits for the proxy to read. One
/// snapshot change produces at most eight (two passes over four types).
const RESPONSE_QUEUE: usize = 16;

/// The ADS gRPC service.
#[derive(Debug, Clone)]
pub struct AdsServer {
    store: Arc<Store>,
    proxies: ProxyRegistry,
    shutdown: watch::Receiver<bool>,
    next_stream_id: Arc<AtomicU64>,
}

impl AdsServer {
    /// Serves `store`'s snapshots and records each stream in `proxies`. Every
    /// stream ends once `shutdown` changes, so a graceful server shutdown is
    /// not held up by streams that would otherwise stay open forever.
    pub fn new(store: Arc<Store>, proxies: ProxyRegistry, shutdown: watch::Receiver<bool>) -> Self {
        AdsServer { store, proxies, shutdown, next_stream_id: Arc::new(AtomicU64::new(1)) }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr();
        let span = tracing::info_span!(
            "ads",
            stream.id = stream_id,
            client.addr = %peer.map(|address| address.to_string()).unwrap_or_default(),
            node.id = tracing::field::Empty,
        );

        let mut snapshots = self.store.subscribe();
        let snapshot = snapshots.borrow_and_update().clone();
        let proxy = self.proxies.register(stream_id, peer);
        let (responses, receiver) = mpsc::channel(RESPONSE_QUEUE);

        let inputs = StreamInputs { requests: request.into_inner(), snapshots, shutdown: self.shutdown.clone() };
        let stream = AdsStream::new(stream_id, proxy, snapshot, responses);
        tokio::spawn(stream.run(inputs).instrument(span));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
