//! A scripted ADS server: the test sends each response by hand and reads
//! the proxy's requests by type.

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use legate_api::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// Starts a scripted ADS server on loopback for one stream; returns its
/// address, the sender for responses and the proxy's requests.
pub async fn start_scripted_ads() -> (SocketAddr, mpsc::Sender<Result<DiscoveryResponse, Status>>, Requests) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let (request_sender, receiver) = mpsc::channel(64);
    let (responses, response_receiver) = mpsc::channel(64);
    let service = ScriptedAds { requests: request_sender, responses: std::sync::Mutex::new(Some(response_receiver)) };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(socket)),
    );
    (address, responses, Requests { receiver, buffered: Vec::new() })
}

/// An ADS server whose responses the test sends by hand and whose requests
/// the test reads.
pub struct ScriptedAds {
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

    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    /// Rejects delta ADS with UNIMPLEMENTED, as a server that offers only
    /// state-of-the-world ADS does.
    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta ADS is not offered"))
    }
}

pub fn pack(type_url: &str, yaml: &str) -> prost_types::Any {
    let message_name = type_url.rsplit('/').next().unwrap();
    let bytes = match message_name {
        "envoy.config.cluster.v3.Cluster" => {
            legate_config::text::parse::<legate_api::envoy::config::cluster::v3::Cluster>(yaml, message_name).unwrap().encode_to_vec()
        }
        "envoy.config.listener.v3.Listener" => {
            legate_config::text::parse::<legate_api::envoy::config::listener::v3::Listener>(yaml, message_name).unwrap().encode_to_vec()
        }
        "envoy.config.endpoint.v3.ClusterLoadAssignment" => legate_config::text::parse::<
            legate_api::envoy::config::endpoint::v3::ClusterLoadAssignment,
        >(yaml, message_name)
        .unwrap()
        .encode_to_vec(),
        other => panic!("no packer for {other}"),
    };
    prost_types::Any { type_url: type_url.to_string(), value: bytes }
}

pub fn cluster(name: &str, upstream: SocketAddr, lb_policy: &str) -> prost_types::Any {
    pack(
        CLUSTER_TYPE,
        &format!(
            "name: {name}\nconnect_timeout: 1s\nlb_policy: {lb_policy}\nload_assignment: {{ cluster_name: {name}, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}] }}",
            upstream.port()
        ),
    )
}

/// A listener `http` on a free loopback port whose inline routes send
/// everything to `cluster`.
pub fn listener(cluster: &str) -> prost_types::Any {
    let yaml = r#"
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
        virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: CLUSTER } }] }]
      http_filters: [{ name: envoy.filters.http.router }]
"#;
    pack(LISTENER_TYPE, &yaml.replace("CLUSTER", cluster))
}

pub fn response(type_url: &str, version: &str, nonce: &str, resources: Vec<prost_types::Any>) -> Result<DiscoveryResponse, Status> {
    Ok(DiscoveryResponse { version_info: version.into(), resources, canary: false, type_url: type_url.into(), nonce: nonce.into() })
}

/// Requests from the proxy, read by type; requests of other types wait in
/// a buffer until asked for.
pub struct Requests {
    receiver: mpsc::Receiver<DiscoveryRequest>,
    buffered: Vec<DiscoveryRequest>,
}

impl Requests {
    pub async fn next(&mut self, type_url: &str) -> DiscoveryRequest {
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
