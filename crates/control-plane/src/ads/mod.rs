//! Envoy's aggregated discovery service, state-of-the-world and incremental
//! (delta) variants: one task per proxy stream, each fed by the store's
//! published snapshots.
//!
//! A slow proxy cannot hold up the others: each stream reads snapshots from
//! its own `watch` receiver, which keeps only the newest, and waits alone
//! when its bounded response queue is full. A stream that falls behind skips
//! the versions published meanwhile and sends the difference to the newest.

mod delta;
mod serve;
mod stream;
mod subscription;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use legate_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::proxies::{ProxyHandle, ProxyRegistry};
use crate::snapshot::Snapshot;
use crate::store::Store;
use delta::DeltaStream;
use serve::{StreamHandler, StreamInputs};
use stream::AdsStream;

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

impl AdsServer {
    /// Starts the task serving one stream and returns its responses.
    /// `variant` is `sotw` or `delta`; `build` makes the stream's handler.
    fn start<H: StreamHandler + 'static>(
        &self,
        request: Request<Streaming<H::Request>>,
        variant: &'static str,
        build: impl FnOnce(u64, ProxyHandle, Arc<Snapshot>, mpsc::Sender<Result<H::Response, Status>>) -> H,
    ) -> Response<ReceiverStream<Result<H::Response, Status>>> {
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let peer = request.remote_addr();
        let client = peer.map(|address| address.to_string()).unwrap_or_default();
        let span = tracing::info_span!("ads", variant, stream.id = stream_id, client.addr = %client, node.id = tracing::field::Empty);

        let mut snapshots = self.store.subscribe();
        let snapshot = snapshots.borrow_and_update().clone();
        let proxy = self.proxies.register(stream_id, peer);
        let (responses, receiver) = mpsc::channel(RESPONSE_QUEUE);

        let inputs = StreamInputs { requests: request.into_inner(), snapshots, shutdown: self.shutdown.clone() };
        let handler = build(stream_id, proxy, snapshot, responses);
        tokio::spawn(serve::run(handler, inputs).instrument(span));
        Response::new(ReceiverStream::new(receiver))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.start(request, "sotw", AdsStream::new))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.start(request, "delta", DeltaStream::new))
    }
}
