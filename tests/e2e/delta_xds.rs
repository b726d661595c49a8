//! Incremental (delta) xDS against Legate's control plane: an independent
//! client built on the `envoy-types` crate counts the resources in each
//! response, and a Legate proxy counts what it receives in its metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const WAIT: Duration = Duration::from_secs(20);

/// Renders `count` static clusters named `c0000`, `c0001`, ...; the one
/// named `changed` gets a connect timeout of 2s instead of 1s.
fn many_clusters(count: usize, changed: Option<&str>) -> String {
    let mut text = String::from("resources:\n");
    for index in 0..count {
        let name = format!("c{index:04}");
        let timeout = if changed == Some(name.as_str()) { "2s" } else { "1s" };
        text.push_str(&format!(
            r#"- "@type": {CLUSTER_TYPE}
  name: {name}
  type: STATIC
  connect_timeout: {timeout}
  load_assignment:
    cluster_name: {name}
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9 }} }} }} }}] }}]
"#
        ));
    }
    text
}

fn applied(output: &std::process::Output) -> bool {
    if !output.status.success() {
        eprintln!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    output.status.success()
}

/// A delta ADS client speaking through `envoy-types`' generated stubs.
struct DeltaClient {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    async fn connect(address: SocketAddr, first: DeltaDiscoveryRequest) -> DeltaClient {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{address}")).await.expect("control plane accepts");
        let (requests, outgoing) = mpsc::channel(16);
        requests.send(first).await.unwrap();
        let responses = client.delta_aggregated_resources(ReceiverStream::new(outgoing)).await.expect("delta stream opens").into_inner();
        DeltaClient { requests, responses }
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        let message = tokio::time::timeout(WAIT, self.responses.message()).await.expect("a response within the wait");
        message.expect("stream is healthy").expect("stream stays open")
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest { type_url: response.type_url.clone(), response_nonce: response.nonce.clone(), ..Default::default() })
            .await;
    }

    /// Asserts that no response arrives for a while.
    async fn assert_silent(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(700), self.responses.message()).await;
        assert!(next.is_err(), "unexpected response: {next:?}");
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node { id: id.to_string(), cluster: "test".to_string(), ..Default::default() })
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|resource| resource.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_client_receives_only_changes() {
    let dir = temp_dir("delta-client");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(applied(&control_plane.apply(&many_clusters(1000, None))));

    let first = DeltaDiscoveryRequest { node: node("delta-client"), type_url: CLUSTER_TYPE.into(), ..Default::default() };
    let mut client = DeltaClient::connect(control_plane.address, first).await;
    let initial = client.next().await;
    assert_eq!(initial.type_url, CLUSTER_TYPE);
    assert_eq!(initial.resources.len(), 1000);
    assert!(initial.removed_resources.is_empty());
    assert!(!initial.nonce.is_empty());
    let mut versions_held: HashMap<String, String> =
        initial.resources.iter().map(|resource| (resource.name.clone(), resource.version.clone())).collect();
    client.ack(&initial).await;

    assert!(applied(&control_plane.apply(&many_clusters(1000, Some("c0500")))));
    let update = client.next().await;
    assert_eq!(names(&update), ["c0500"], "only the changed cluster is sent");
    assert!(update.removed_resources.is_empty());
    assert_ne!(update.resources[0].version, versions_held["c0500"], "the changed cluster has a new version");
    assert_ne!(update.nonce, initial.nonce);
    versions_held.insert("c0500".into(), update.resources[0].version.clone());
    client.ack(&update).await;

    let removal = legate(&["apply", "--delete", "cds/c0007", "--server", &control_plane.address.to_string()]);
    assert!(applied(&removal));
    let removed = client.next().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, ["c0007"]);
    versions_held.remove("c0007");
    client.ack(&removed).await;

    // A subscription to a name that does not exist gets a response listing it as removed.
    client
        .send(DeltaDiscoveryRequest { type_url: ENDPOINT_TYPE.into(), resource_names_subscribe: vec!["absent".into()], ..Default::default() })
        .await;
    let absent = client.next().await;
    assert_eq!(absent.type_url, ENDPOINT_TYPE);
    assert!(absent.resources.is_empty());
    assert_eq!(absent.removed_resources, ["absent"]);
    client.ack(&absent).await;
    client.assert_silent().await;
    drop(client);

    // After a reconnect, only a resource versions_held at an old version and one
    // that no longer exists are mentioned.
    let mut versions = versions_held.clone();
    versions.insert("c0001".into(), "0".into());
    versions.insert("c0007".into(), "0".into());
    let reconnect = DeltaDiscoveryRequest {
        node: node("delta-client"),
        type_url: CLUSTER_TYPE.into(),
        initial_resource_versions: versions,
        ..Default::default()
    };
    let mut client = DeltaClient::connect(control_plane.address, reconnect).await;
    let resumed = client.next().await;
    assert_eq!(names(&resumed), ["c0001"]);
    assert_eq!(resumed.resources[0].version, versions_held["c0001"]);
    assert_eq!(resumed.removed_resources, ["c0007"]);
    client.ack(&resumed).await;
    client.assert_silent().await;

    // A reconnect holding everything receives an empty response.
    drop(client);
    let reconnect = DeltaDiscoveryRequest {
        node: node("delta-client"),
        type_url: CLUSTER_TYPE.into(),
        initial_resource_versions: versions_held,
        ..Default::default()
    };
    let mut client = DeltaClient::connect(control_plane.address, reconnect).await;
    let resumed = client.next().await;
    assert!(resumed.resources.is_empty(), "{:?}", names(&resumed));
    assert!(resumed.removed_resources.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_nack_is_listed_per_proxy() {
    let dir = temp_dir("delta-nack");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(applied(&control_plane.apply(&many_clusters(3, None))));

    let first = DeltaDiscoveryRequest { node: node("delta-nacker"), type_url: CLUSTER_TYPE.into(), ..Default::default() };
    let mut client = DeltaClient::connect(control_plane.address, first).await;
    let initial = client.next().await;
    assert_eq!(initial.system_version_info, "1");
    client
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER_TYPE.into(),
            response_nonce: initial.nonce.clone(),
            error_detail: Some(Status { code: 3, message: "cluster c0001 is not liked".into(), details: vec![] }),
            ..Default::default()
        })
        .await;

    let server = control_plane.address.to_string();
    let listed = eventually(WAIT, || async {
        let output = legate(&["proxies", "--server", &server]);
        String::from_utf8_lossy(&output.stdout).contains("cluster c0001 is not liked")
    })
    .await;
    assert!(listed, "{}", String::from_utf8_lossy(&legate(&["proxies", "--server", &server]).stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_client_receives_full_state() {
    let dir = temp_dir("sotw-client");
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(applied(&control_plane.apply(&many_clusters(3, None))));

    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", control_plane.address)).await.unwrap();
    let (requests, outgoing) = mpsc::channel(16);
    requests.send(DiscoveryRequest { node: node("sotw-client"), type_url: CLUSTER_TYPE.into(), ..Default::default() }).await.unwrap();
    let mut responses = client.stream_aggregated_resources(ReceiverStream::new(outgoing)).await.unwrap().into_inner();
    let initial = next_sotw(&mut responses).await;
    assert_eq!(initial.version_info, "1");
    assert_eq!(initial.resources.len(), 3);
    requests
        .send(DiscoveryRequest {
            version_info: initial.version_info.clone(),
            type_url: CLUSTER_TYPE.into(),
            response_nonce: initial.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    assert!(applied(&control_plane.apply(&many_clusters(3, Some("c0002")))));
    let update = next_sotw(&mut responses).await;
    assert_eq!(update.version_info, "2");
    assert_eq!(update.resources.len(), 3, "state-of-the-world sends every cluster");
}

async fn next_sotw(responses: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(WAIT, responses.message()).await.expect("a response within the wait").unwrap().expect("stream stays open")
}

/// Bootstrap of a proxy that prefers delta ADS.
fn delta_bootstrap(node_id: &str, ads: SocketAddr) -> String {
    ads_bootstrap(node_id, ads).replace("api_type: GRPC", "api_type: DELTA_GRPC")
}

fn clusters_received(metrics: &str) -> f64 {
    sample(metrics, r#"legate_xds_resources_received_total{resource_type="CDS"}"#).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_over_delta_receives_only_changes() {
    let dir = temp_dir("delta-proxy");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let cp_dir = dir.join("cp");
    let mut control_plane = ControlPlane::start(&cp_dir);
    let config = format!("{}{}", two_cluster_config(&[web.address], api.address, "v1"), many_clusters(1000, None).trim_start_matches("resources:\n"));
    assert!(applied(&control_plane.apply(&config)));

    let proxy = Proxy::start(&delta_bootstrap("delta-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap(), (200, "api /v1/ok 0".to_string()));
    assert_eq!(clusters_received(&proxy.scrape().await), 1002.0);

    let changed = format!("{}{}", two_cluster_config(&[web.address], api.address, "v2"), many_clusters(1000, Some("c0500")).trim_start_matches("resources:\n"));
    assert!(applied(&control_plane.apply(&changed)));
    let routed = eventually(WAIT, || async { http1_get(listener, "x", "/api/ok").await.map(|(_, body)| body).unwrap_or_default() == "api /v2/ok 0" }).await;
    assert!(routed, "the changed route is in force");
    let metrics = proxy.scrape().await;
    assert_eq!(clusters_received(&metrics), 1003.0, "one changed cluster arrives");
    assert_eq!(sample(&metrics, r#"legate_xds_resources_received_total{resource_type="RDS"}"#), Some(2.0));

    // A restarted control plane keeps the config; the proxy reconnects with
    // the versions it has and receives none of them again.
    let address = control_plane.address.to_string();
    control_plane.process.kill();
    control_plane = ControlPlane::start_on(&cp_dir, &address);
    let reconnected = eventually(WAIT, || async {
        String::from_utf8_lossy(&legate(&["proxies", "--server", &address]).stdout).contains("delta-proxy")
    })
    .await;
    assert!(reconnected, "the proxy reconnects");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = proxy.scrape().await;
    assert_eq!(clusters_received(&metrics), 1003.0, "nothing is sent again after the reconnect");
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap().0, 200);
    drop(control_plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_over_delta_removes_cluster() {
    let dir = temp_dir("delta-proxy-removal");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let config = format!("{}{}", two_cluster_config(&[web.address], api.address, "v1"), many_clusters(2, None).trim_start_matches("resources:\n"));
    assert!(applied(&control_plane.apply(&config)));

    let proxy = Proxy::start(&delta_bootstrap("delta-removal", control_plane.address), &dir);
    proxy.wait_ready().await;
    let has_cluster = |name: &'static str| {
        let admin = proxy.admin;
        async move { http1_get(admin, "admin", "/clusters").await.map(|(_, body)| body.contains(name)).unwrap_or(false) }
    };
    assert!(has_cluster("c0001").await);

    let removal = legate(&["apply", "--delete", "cds/c0001", "--server", &control_plane.address.to_string()]);
    assert!(applied(&removal));
    let removed = eventually(WAIT, || async { !has_cluster("c0001").await }).await;
    assert!(removed, "the removed cluster is gone");
    assert!(has_cluster("c0000").await, "the other clusters stay");
}
