//! An independent ADS server, built on the `envoy-types` crate's generated
//! service, drives a Legate proxy over delta xDS, and over state-of-the-world
//! when it does not offer delta.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::support::scripted_ads::{cluster, listener, CLUSTER_TYPE, LISTENER_TYPE};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

/// One stream the proxy opened: its requests, and the sender of the
/// responses the test scripts.
struct Scripted<Req, Resp> {
    requests: mpsc::Receiver<Req>,
    responses: mpsc::Sender<Result<Resp, Status>>,
}

impl<Req: std::fmt::Debug, Resp> Scripted<Req, Resp> {
    async fn next(&mut self) -> Req {
        tokio::time::timeout(WAIT, self.requests.recv()).await.expect("a request within the wait").expect("stream open")
    }

    async fn send(&self, response: Resp) {
        self.responses.send(Ok(response)).await.expect("stream open");
    }

    async fn assert_silent(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(500), self.requests.recv()).await;
        assert!(next.is_err(), "unexpected request: {next:?}");
    }
}

type DeltaScripted = Scripted<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
type SotwScripted = Scripted<DiscoveryRequest, DiscoveryResponse>;

/// The server: hands each new stream to the test.
struct IndependentAds {
    offer_delta: bool,
    delta_streams: mpsc::Sender<DeltaScripted>,
    sotw_streams: mpsc::Sender<SotwScripted>,
}

fn forward<Req: Send + 'static>(mut incoming: Streaming<Req>) -> mpsc::Receiver<Req> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(request)) = incoming.message().await {
            if sender.send(request).await.is_err() {
                return;
            }
        }
    });
    receiver
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for IndependentAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (responses, receiver) = mpsc::channel(64);
        let stream = Scripted { requests: forward(request.into_inner()), responses };
        self.sotw_streams.send(stream).await.map_err(|_| Status::unavailable("test ended"))?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if !self.offer_delta {
            return Err(Status::unimplemented("delta xDS is not offered"));
        }
        let (responses, receiver) = mpsc::channel(64);
        let stream = Scripted { requests: forward(request.into_inner()), responses };
        self.delta_streams.send(stream).await.map_err(|_| Status::unavailable("test ended"))?;
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

async fn start_independent_ads(offer_delta: bool) -> (SocketAddr, mpsc::Receiver<DeltaScripted>, mpsc::Receiver<SotwScripted>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let (delta_streams, delta_receiver) = mpsc::channel(4);
    let (sotw_streams, sotw_receiver) = mpsc::channel(4);
    let service = IndependentAds { offer_delta, delta_streams, sotw_streams };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(socket)),
    );
    (address, delta_receiver, sotw_receiver)
}

async fn next_stream<T>(streams: &mut mpsc::Receiver<T>) -> T {
    tokio::time::timeout(WAIT, streams.recv()).await.expect("the proxy opens a stream").expect("server running")
}

fn any(packed: prost_types::Any) -> Any {
    Any { type_url: packed.type_url, value: packed.value }
}

fn resource(name: &str, version: &str, packed: prost_types::Any) -> Resource {
    Resource { name: name.into(), version: version.into(), resource: Some(any(packed)), ..Default::default() }
}

fn delta_response(type_url: &str, nonce: &str, resources: Vec<Resource>, removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: nonce.into(),
        resources,
        type_url: type_url.into(),
        removed_resources: removed.iter().map(|name| name.to_string()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn delta_bootstrap(node_id: &str, ads: SocketAddr) -> String {
    ads_bootstrap(node_id, ads).replace("api_type: GRPC", "api_type: DELTA_GRPC")
}

async fn assert_acked(stream: &mut DeltaScripted, nonce: &str) {
    let ack = stream.next().await;
    assert_eq!(ack.response_nonce, nonce);
    assert!(ack.error_detail.is_none(), "unexpected NACK: {:?}", ack.error_detail);
}

async fn has_cluster(proxy: &Proxy, name: &str) -> bool {
    http1_get(proxy.admin, "admin", "/clusters").await.map(|(_, body)| body.contains(&format!("\"{name}\""))).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_delta_server_drives_proxy() {
    let dir = temp_dir("independent-delta");
    let backend = Upstream::start("backend").await;
    let (address, mut delta_streams, _sotw_streams) = start_independent_ads(true).await;
    let proxy = Proxy::start(&delta_bootstrap("independent-delta", address), &dir);

    let mut stream = next_stream(&mut delta_streams).await;
    let first = stream.next().await;
    assert_eq!(first.type_url, CLUSTER_TYPE);
    assert_eq!(first.node.as_ref().map(|node| node.id.as_str()), Some("independent-delta"));
    assert!(first.resource_names_subscribe.is_empty(), "clusters are a wildcard subscription");
    assert!(first.initial_resource_versions.is_empty());
    let listeners = stream.next().await;
    assert_eq!(listeners.type_url, LISTENER_TYPE);
    assert!(listeners.node.is_none(), "the node goes on the first request only");

    let backend_cluster = resource("backend", "b1", cluster("backend", backend.address, "ROUND_ROBIN"));
    let spare = resource("spare", "s1", cluster("spare", backend.address, "ROUND_ROBIN"));
    stream.send(delta_response(CLUSTER_TYPE, "c1", vec![backend_cluster, spare], &[])).await;
    assert_acked(&mut stream, "c1").await;
    stream.send(delta_response(LISTENER_TYPE, "l1", vec![resource("http", "h1", listener("backend"))], &[])).await;
    assert_acked(&mut stream, "l1").await;
    proxy.wait_ready().await;
    let http = proxy.listener("http").await;
    assert_eq!(http1_get(http, "a", "/x").await.unwrap(), (200, "backend /x 0".to_string()));

    // lb_policy 42 is a number the schema does not declare.
    let bad = resource("broken", "x1", cluster("broken", backend.address, "42"));
    stream.send(delta_response(CLUSTER_TYPE, "c2", vec![bad], &[])).await;
    let nack = stream.next().await;
    assert_eq!(nack.response_nonce, "c2");
    let detail = nack.error_detail.expect("NACK carries error_detail").message;
    assert!(detail.contains("broken"), "the error names the cluster: {detail}");
    assert!(detail.contains("lb_policy"), "the error names the field: {detail}");
    assert_eq!(http1_get(http, "a", "/x").await.unwrap().0, 200, "the accepted config keeps serving");

    stream.send(delta_response(CLUSTER_TYPE, "c3", vec![], &["spare"])).await;
    assert_acked(&mut stream, "c3").await;
    assert!(eventually(WAIT, || async { !has_cluster(&proxy, "spare").await }).await, "the removed cluster is gone");
    assert!(has_cluster(&proxy, "backend").await);
    stream.assert_silent().await;

    // The proxy reconnects with the versions it accepted, and not the
    // rejected or removed ones.
    drop(stream);
    let mut stream = next_stream(&mut delta_streams).await;
    let first = stream.next().await;
    assert_eq!(first.type_url, CLUSTER_TYPE);
    let versions: Vec<(&str, &str)> =
        first.initial_resource_versions.iter().map(|(name, version)| (name.as_str(), version.as_str())).collect();
    assert_eq!(versions, [("backend", "b1")]);
    let listeners = stream.next().await;
    assert_eq!(listeners.initial_resource_versions.get("http").map(String::as_str), Some("h1"));
    assert_eq!(http1_get(http, "a", "/x").await.unwrap().0, 200, "traffic continues across the reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_falls_back_to_sotw() {
    let dir = temp_dir("independent-sotw");
    let backend = Upstream::start("backend").await;
    let (address, _delta_streams, mut sotw_streams) = start_independent_ads(false).await;
    let proxy = Proxy::start(&delta_bootstrap("independent-sotw", address), &dir);

    let mut stream = next_stream(&mut sotw_streams).await;
    let first = stream.next().await;
    assert_eq!(first.type_url, CLUSTER_TYPE);
    assert_eq!(first.node.as_ref().map(|node| node.id.as_str()), Some("independent-sotw"));
    let clusters = DiscoveryResponse {
        version_info: "1".into(),
        resources: vec![any(cluster("backend", backend.address, "ROUND_ROBIN"))],
        type_url: CLUSTER_TYPE.into(),
        nonce: "c1".into(),
        ..Default::default()
    };
    stream.send(clusters).await;

    let mut acked = false;
    for _ in 0..2 {
        let request = stream.next().await;
        if request.type_url == LISTENER_TYPE {
            let listeners = DiscoveryResponse {
                version_info: "1".into(),
                resources: vec![any(listener("backend"))],
                type_url: LISTENER_TYPE.into(),
                nonce: "l1".into(),
                ..Default::default()
            };
            stream.send(listeners).await;
        } else {
            assert_eq!((request.version_info.as_str(), request.response_nonce.as_str()), ("1", "c1"));
            acked = true;
        }
    }
    assert!(acked, "the cluster response is ACKed");
    let ack = stream.next().await;
    assert_eq!((ack.type_url.as_str(), ack.response_nonce.as_str()), (LISTENER_TYPE, "l1"));
    assert!(ack.error_detail.is_none());

    proxy.wait_ready().await;
    let http = proxy.listener("http").await;
    assert_eq!(http1_get(http, "a", "/x").await.unwrap(), (200, "backend /x 0".to_string()));
}
