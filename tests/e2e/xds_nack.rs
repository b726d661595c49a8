//! A scripted ADS server drives the proxy through invalid resources: the
//! proxy NACKs with the last accepted version and an error naming the
//! problem, keeps routing, and ACKs the next valid version.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::support::*;

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// An ADS server whose responses the test sends by hand and whose requests
/// the test reads.
struct ScriptedAds {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: std::sync::Mutex<Option<mpsc::Receiver<Result<DiscoveryResponse, Status>>>>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for ScriptedAds {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let responses = self.responses.lock().unwrap().take().ok_or_else(|| Status::unavailable("one stream only"))?;
        let mut incoming = request.into_inner();
        let requests = self.requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = incoming.message().await {
                if requests.send(request).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

fn pack(type_url: &str, yaml: &str) -> prost_types::Any {
    let message_name = type_url.rsplit('/').next().unwrap();
    let bytes = match message_name {
        "envoy.config.cluster.v3.Cluster" => {
            legate_config::text::parse::<legate_api::envoy::config::cluster::v3::Cluster>(yaml, message_name).unwrap().encode_to_vec()
        }
        "envoy.config.listener.v3.Listener" => {
            legate_config::text::parse::<legate_api::envoy::config::listener::v3::Listener>(yaml, message_name).unwrap().encode_to_vec()
        }
        other => panic!("no packer for {other}"),
    };
    prost_types::Any { type_url: type_url.to_string(), value: bytes }
}

fn cluster(name: &str, upstream: SocketAddr, lb_policy: &str) -> prost_types::Any {
    pack(
        CLUSTER_TYPE,
        &format!(
            "name: {name}\nconnect_timeout: 1s\nlb_policy: {lb_policy}\nload_assignment: {{ cluster_name: {name}, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}] }}",
            upstream.port()
        ),
    )
}

fn listener() -> prost_types::Any {
    pack(
        LISTENER_TYPE,
        r#"
name: http
address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: test
      route_config:
        name: inline
        virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: backend } }] }]
      http_filters: [{ name: envoy.filters.http.router }]
"#,
    )
}

fn response(type_url: &str, version: &str, nonce: &str, resources: Vec<prost_types::Any>) -> Result<DiscoveryResponse, Status> {
    Ok(DiscoveryResponse { version_info: version.into(), resources, canary: false, type_url: type_url.into(), nonce: nonce.into() })
}

/// Requests from the proxy, read by type; requests of other types wait in
/// a buffer until asked for.
struct Requests {
    receiver: mpsc::Receiver<DiscoveryRequest>,
    buffered: Vec<DiscoveryRequest>,
}

impl Requests {
    async fn next(&mut self, type_url: &str) -> DiscoveryRequest {
        if let Some(index) = self.buffered.iter().position(|r| r.type_url == type_url) {
            return self.buffered.remove(index);
        }
        loop {
            let request = tokio::time::timeout(Duration::from_secs(20), self.receiver.recv())
                .await
                .unwrap_or_else(|_| panic!("no {type_url} request in time"))
                .expect("stream open");
            if request.type_url == type_url {
                return request;
            }
            self.buffered.push(request);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cluster_is_nacked_without_loop() {
    let dir = temp_dir("nack");
    let backend = Upstream::start("backend").await;

    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ads_address = socket.local_addr().unwrap();
    let (request_sender, receiver) = mpsc::channel(64);
    let mut requests = Requests { receiver, buffered: Vec::new() };
    let (responses, response_receiver) = mpsc::channel(64);
    let service = ScriptedAds { requests: request_sender, responses: std::sync::Mutex::new(Some(response_receiver)) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(socket)),
    );

    let proxy = Proxy::start(&ads_bootstrap("nack-proxy", ads_address), &dir);

    let first = requests.next(CLUSTER_TYPE).await;
    assert_eq!(first.node.as_ref().map(|n| n.id.as_str()), Some("nack-proxy"), "node on the first request");
    responses.send(response(CLUSTER_TYPE, "1", "n1", vec![cluster("backend", backend.address, "ROUND_ROBIN")])).await.unwrap();
    let ack = requests.next(CLUSTER_TYPE).await;
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("1", "n1"));
    assert!(ack.error_detail.is_none());

    requests.next(LISTENER_TYPE).await;
    responses.send(response(LISTENER_TYPE, "1", "l1", vec![listener()])).await.unwrap();
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;
    assert_eq!(http1_get(address, "a", "/x").await.unwrap().0, 200);

    // lb_policy 42 is a number the schema does not declare.
    let bad = cluster("backend", backend.address, "42");
    for nonce in ["n2", "n3"] {
        responses.send(response(CLUSTER_TYPE, "2", nonce, vec![bad.clone()])).await.unwrap();
        let nack = requests.next(CLUSTER_TYPE).await;
        assert_eq!(nack.version_info, "1", "NACK keeps the last accepted version");
        assert_eq!(nack.response_nonce, nonce);
        let detail = nack.error_detail.expect("NACK carries error_detail").message;
        assert!(detail.contains("backend") && detail.contains("lb_policy"), "error names cluster and field: {detail}");
        assert_eq!(http1_get(address, "a", "/x").await.unwrap().0, 200, "version 1 keeps serving");
    }

    responses.send(response(CLUSTER_TYPE, "3", "n4", vec![cluster("backend", backend.address, "LEAST_REQUEST")])).await.unwrap();
    let ack = requests.next(CLUSTER_TYPE).await;
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("3", "n4"));
    assert!(ack.error_detail.is_none());

    // Nothing else is requested for clusters: a NACK never loops.
    let extra = tokio::time::timeout(Duration::from_millis(500), requests.next(CLUSTER_TYPE)).await;
    assert!(extra.is_err(), "unexpected request: {extra:?}");
}
