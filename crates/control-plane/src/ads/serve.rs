//! The parts every ADS stream shares, state-of-the-world or delta: the loop
//! over requests, new snapshots and shutdown, and the proxy's view of the config.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use legate_api::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use crate::proxies::ProxyHandle;
use crate::snapshot::Snapshot;
use crate::targets::{view_for, NodeInfo};

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
pub(crate) struct StreamInputs<Request> {
    pub(crate) requests: Streaming<Request>,
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// One variant of the ADS protocol on one stream.
pub(crate) trait StreamHandler: Send {
    type Request: Send + 'static;
    type Response: Send + 'static;

    /// Returns the queue of responses to the proxy.
    fn responses(&self) -> &mpsc::Sender<Result<Self::Response, Status>>;

    fn on_request(&mut self, request: Self::Request) -> impl Future<Output = Result<(), Ended>> + Send;

    /// Pushes what a new snapshot changes for the proxy.
    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> impl Future<Output = Result<(), Ended>> + Send;
}

/// Serves a stream until the proxy leaves or the server shuts down.
pub(crate) async fn run<H: StreamHandler>(mut handler: H, mut inputs: StreamInputs<H::Request>) {
    let ended = serve(&mut handler, &mut inputs).await;
    match &ended {
        // UNAVAILABLE makes the proxy reconnect, possibly to another control
        // plane. If the response queue is full, the stream just ends.
        Ended::ShuttingDown => {
            let _ = handler.responses().try_send(Err(Status::unavailable("control plane is shutting down")));
        }
        // A request that cannot be decoded ends the stream with an error,
        // never with OK. A proxy that went away reads nothing.
        Ended::ProxyError(status) => {
            let message = format!("the request stream could not be read: {}", status.message());
            let _ = handler.responses().try_send(Err(Status::invalid_argument(message)));
        }
        Ended::ProxyClosed | Ended::ResponseDropped => {}
    }
    tracing::info!(reason = %ended, "ADS stream ended");
}

async fn serve<H: StreamHandler>(handler: &mut H, inputs: &mut StreamInputs<H::Request>) -> Ended {
    loop {
        let step = tokio::select! {
            request = inputs.requests.message() => match request {
                Ok(Some(request)) => handler.on_request(request).await,
                Ok(None) => Err(Ended::ProxyClosed),
                Err(status) => Err(Ended::ProxyError(status)),
            },
            changed = inputs.snapshots.changed() => match changed {
                Ok(()) => {
                    let snapshot = inputs.snapshots.borrow_and_update().clone();
                    handler.on_snapshot(snapshot).await
                }
                Err(_) => Err(Ended::ShuttingDown),
            },
            _ = inputs.shutdown.changed() => Err(Ended::ShuttingDown),
            () = handler.responses().closed() => Err(Ended::ResponseDropped),
        };
        if let Err(ended) = step {
            return ended;
        }
    }
}

/// The config a stream serves: the snapshot in force, seen through the
/// targets its proxy's node matches.
pub(crate) struct StreamView {
    /// The snapshot in force, for every proxy.
    base: Arc<Snapshot>,
    /// `base` with the overlays whose target matches the node.
    pub(crate) current: Arc<Snapshot>,
    node: Option<NodeInfo>,
}

impl StreamView {
    pub(crate) fn new(snapshot: Arc<Snapshot>) -> Self {
        StreamView { base: snapshot.clone(), current: snapshot, node: None }
    }

    /// Records the node on the first request; Envoy sends it only on the
    /// first request of a stream, and later ones change nothing.
    pub(crate) fn note_node(&mut self, node: Option<&Node>, proxy: &ProxyHandle) {
        if self.node.is_some() {
            return;
        }

        let node = node.cloned().unwrap_or_default();
        tracing::Span::current().record("node.id", node.id.as_str());
        let info = NodeInfo::from_node(&node);
        proxy.set_node(&info);
        self.current = view_for(&self.base, Some(&info));
        self.node = Some(info);
        tracing::info!(node.cluster = %node.cluster, "ADS stream started");
    }

    pub(crate) fn update(&mut self, snapshot: Arc<Snapshot>) {
        self.current = view_for(&snapshot, self.node.as_ref());
        self.base = snapshot;
    }
}
