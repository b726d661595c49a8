//! Shared test fixtures: Envoy resources, a control plane served on a
//! loopback port, gRPC clients for both services, and temporary data
//! directories.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use legate_api::envoy::config::core::v3::Node;
use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use legate_api::google::rpc::Status as RpcStatus;
use legate_api::legate::config::v1::config_service_client::ConfigServiceClient;
use legate_api::legate::config::v1::{ApplyRequest, ApplyResponse, ResourceRef};
use legate_config::ResourceType;
use legate_control_plane::{ControlPlane, ServeError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

/// How long a test waits for a response it expects.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a test waits to be sure that no response comes.
pub const SILENCE: Duration = Duration::from_millis(400);

pub const CDS: ResourceType = ResourceType::Cluster;
pub const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
pub const LDS: ResourceType = ResourceType::Listener;
pub const RDS: ResourceType = ResourceType::RouteConfiguration;

pub fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            }}}]}]
        }
    })
}

pub fn eds_cluster(name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": { "eds_config": { "ads": {} } }
    })
}

pub fn assignment(cluster: &str, port: u16) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster,
        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
            "socket_address": { "address": "127.0.0.1", "port_value": port }
        }}}]}]
    })
}

/// Builds a listener whose routes come over RDS from `route_config`.
pub fn listener(name: &str, port: u16, route_config: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress",
                "rds": { "route_config_name": route_config, "config_source": { "ads": {} } },
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                }]
            }
        }]}]
    })
}

/// Builds a route configuration with one virtual host and a `/<cluster>` prefix
/// route per cluster.
pub fn route_config(name: &str, clusters: &[&str]) -> Value {
    let routes: Vec<Value> = clusters
        .iter()
        .map(|cluster| json!({ "match": { "prefix": format!("/{cluster}") }, "route": { "cluster": cluster } }))
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }]
    })
}

/// Packs resources as `legate apply` does, from the JSON of a `resources`
/// file.
pub fn pack(resources: &[Value]) -> Vec<prost_types::Any> {
    let text = json!({ "resources": resources }).to_string();
    legate_config::text::parse_resources(&text).expect("test resources parse")
}

pub fn removal(resource_type: ResourceType, name: &str) -> ResourceRef {
    ResourceRef { type_url: resource_type.type_url().to_string(), name: name.to_string() }
}

/// Names of the packed resources, in order.
pub fn names(resources: &[prost_types::Any]) -> Vec<String> {
    resources.iter().map(|any| legate_config::resource::resource_name(any).unwrap_or_default()).collect()
}

/// A control plane served on an ephemeral loopback port.
pub struct TestServer {
    pub address: SocketAddr,
    pub plane: ControlPlane,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    pub async fn start(plane: ControlPlane) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();

        let serving = plane.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        TestServer { address, plane, stop: Some(stop), task }
    }

    pub async fn config_client(&self) -> ConfigServiceClient<Channel> {
        ConfigServiceClient::connect(format!("http://{}", self.address)).await.expect("connect to config API")
    }

    pub async fn apply(&self, resources: &[Value], remove: Vec<ResourceRef>) -> Result<ApplyResponse, tonic::Status> {
        let request = ApplyRequest { resources: pack(resources), remove, ..Default::default() };
        self.config_client().await.apply(request).await.map(tonic::Response::into_inner)
    }

    pub async fn ads_client(&self, node_id: &str) -> AdsClient {
        AdsClient::connect(self.address, node_id).await
    }

    /// Stops the server and waits until it has shut down.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(RESPONSE_TIMEOUT, self.task)
            .await
            .expect("server shuts down in time")
            .expect("server task does not panic")
    }
}

/// A fake proxy: one ADS stream driven request by request.
pub struct AdsClient {
    node: Node,
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl AdsClient {
    pub async fn connect(address: SocketAddr, node_id: &str) -> Self {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://{address}")).await.expect("connect to ADS");
        let (requests, receiver) = mpsc::channel(16);
        let responses =
            client.stream_aggregated_resources(ReceiverStream::new(receiver)).await.expect("open ADS stream").into_inner();
        let node = Node { id: node_id.to_string(), cluster: "test-cluster".to_string(), ..Default::default() };
        AdsClient { node, requests, responses }
    }

    pub async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.expect("ADS stream open");
    }

    /// Sends a first request for `resource_type`, without a nonce.
    pub async fn subscribe(&self, resource_type: ResourceType, names: &[&str]) {
        self.send(self.request(resource_type, names, "", "")).await;
    }

    /// Accepts `response`, staying subscribed to `names`.
    pub async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        let resource_type = response_type(response);
        self.send(self.request(resource_type, names, &response.version_info, &response.nonce)).await;
    }

    /// Rejects `response` with `error`, reporting `accepted_version` as the
    /// last version accepted.
    pub async fn nack(&self, response: &DiscoveryResponse, names: &[&str], accepted_version: &str, error: &str) {
        let resource_type = response_type(response);
        let mut request = self.request(resource_type, names, accepted_version, &response.nonce);
        request.error_detail = Some(RpcStatus { code: 3, message: error.to_string(), details: Vec::new() });
        self.send(request).await;
    }

    pub fn request(&self, resource_type: ResourceType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.to_string(),
            node: Some(self.node.clone()),
            resource_names: names.iter().map(|name| name.to_string()).collect(),
            type_url: resource_type.type_url().to_string(),
            response_nonce: nonce.to_string(),
            error_detail: None,
        }
    }

    /// Returns the next response, failing the test if none comes in time.
    pub async fn next(&mut self) -> DiscoveryResponse {
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.responses.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => panic!("ADS stream ended while a response was expected"),
            Ok(Err(status)) => panic!("ADS stream failed: {status}"),
            Err(_) => panic!("no ADS response within {RESPONSE_TIMEOUT:?}"),
        }
    }

    /// Returns the next response, which must be for `resource_type`.
    pub async fn next_of(&mut self, resource_type: ResourceType) -> DiscoveryResponse {
        let response = self.next().await;
        assert_eq!(response_type(&response), resource_type, "unexpected response type");
        response
    }

    /// Fails the test if a response arrives within `SILENCE`.
    pub async fn expect_silence(&mut self) {
        if let Ok(Ok(Some(response))) = tokio::time::timeout(SILENCE, self.responses.message()).await {
            panic!(
                "expected no response, got {} version {} with {:?}",
                response.type_url,
                response.version_info,
                names(&response.resources)
            );
        }
    }

    /// Waits for the stream to end and returns its final status.
    pub async fn end_status(&mut self) -> Option<tonic::Status> {
        loop {
            match tokio::time::timeout(RESPONSE_TIMEOUT, self.responses.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => return Some(status),
                Err(_) => panic!("ADS stream still open after {RESPONSE_TIMEOUT:?}"),
            }
        }
    }
}

pub fn response_type(response: &DiscoveryResponse) -> ResourceType {
    ResourceType::from_type_url(&response.type_url).expect("response has a known type URL")
}

/// A directory under the system temporary directory, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates an empty directory named after `test` and this process.
    pub fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("legate-control-plane-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
