//! The ADS server from a proxy's side: first responses, ACK and NACK
//! handling, stale nonces, pushes and their order.

mod support;

use legate_api::legate::config::v1::{ListProxiesRequest, ProxyStatus, TypeStatus};
use legate_control_plane::ControlPlane;
use support::*;
use tonic::Code;

async fn proxies(server: &TestServer) -> Vec<ProxyStatus> {
    let mut client = server.config_client().await;
    client.list_proxies(ListProxiesRequest {}).await.expect("list proxies").into_inner().proxies
}

fn type_status(proxy: &ProxyStatus, resource_type: legate_config::ResourceType) -> &TypeStatus {
    proxy.types.iter().find(|status| status.type_url == resource_type.type_url()).expect("type is listed")
}

/// Server with two clusters, a route configuration routing to both and a
/// listener using it, at version 1.
async fn server_with_routes() -> TestServer {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    server
        .apply(
            &[
                static_cluster("a", 8081),
                static_cluster("b", 8082),
                route_config("routes", &["a", "b"]),
                listener("http", 10000, "routes"),
            ],
            vec![],
        )
        .await
        .expect("initial config is valid");
    server
}

#[tokio::test]
async fn first_request_gets_current_config() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;

    proxy.subscribe(CDS, &[]).await;
    let clusters = proxy.next_of(CDS).await;
    proxy.subscribe(LDS, &[]).await;
    let listeners = proxy.next_of(LDS).await;
    proxy.subscribe(RDS, &["routes"]).await;
    let routes = proxy.next_of(RDS).await;

    assert_eq!(clusters.version_info, "1");
    assert_eq!(names(&clusters.resources), ["a", "b"]);
    assert_eq!(names(&listeners.resources), ["http"]);
    assert_eq!(names(&routes.resources), ["routes"]);
    assert!(!clusters.nonce.is_empty());
    assert_ne!(clusters.nonce, listeners.nonce);
    assert_ne!(listeners.nonce, routes.nonce);
}

#[tokio::test]
async fn empty_config_is_still_answered() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    let mut proxy = server.ads_client("proxy-1").await;

    proxy.subscribe(LDS, &[]).await;
    let listeners = proxy.next_of(LDS).await;

    assert_eq!(listeners.version_info, "0");
    assert!(listeners.resources.is_empty());
}

#[tokio::test]
async fn ack_is_recorded_for_the_proxy() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    let clusters = proxy.next_of(CDS).await;

    proxy.ack(&clusters, &[]).await;
    proxy.expect_silence().await;

    let listed = proxies(&server).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].node_id, "proxy-1");
    assert_eq!(listed[0].node_cluster, "test-cluster");
    assert!(listed[0].peer_address.starts_with("127.0.0.1:"), "{}", listed[0].peer_address);
    assert!(listed[0].connected_at.is_some());
    let cds = type_status(&listed[0], CDS);
    assert_eq!(cds.sent_version, "1");
    assert_eq!(cds.acked_version, "1");
    assert!(cds.nack_error.is_empty());
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    let clusters = proxy.next_of(CDS).await;

    proxy.nack(&clusters, &[], "", "cluster a: unsupported option").await;
    proxy.expect_silence().await;

    let listed = proxies(&server).await;
    let cds = type_status(&listed[0], CDS);
    assert_eq!(cds.nacked_version, "1");
    assert_eq!(cds.nack_error, "cluster a: unsupported option");
    assert!(cds.acked_version.is_empty());
}

#[tokio::test]
async fn request_with_stale_nonce_is_ignored() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(RDS, &["routes"]).await;
    let first = proxy.next_of(RDS).await;
    proxy.ack(&first, &["routes"]).await;
    server.apply(&[route_config("routes", &["a"]), route_config("extra", &["b"])], vec![]).await.expect("second apply");
    let second = proxy.next_of(RDS).await;
    assert_eq!(second.version_info, "2");

    // Both carry the nonce of the first response, which is no longer the
    // latest. The NACK must not be recorded, and the subscription change
    // must get no response.
    proxy.nack(&first, &["routes"], "1", "stale rejection").await;
    proxy.send(proxy.request(RDS, &["routes", "extra"], "1", &first.nonce)).await;
    proxy.expect_silence().await;

    let listed = proxies(&server).await;
    let rds = type_status(&listed[0], RDS);
    assert!(rds.nack_error.is_empty(), "stale NACK was recorded: {}", rds.nack_error);
    assert_eq!(rds.acked_version, "1");
}

#[tokio::test]
async fn apply_pushes_to_connected_stream() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    let first = proxy.next_of(CDS).await;
    proxy.ack(&first, &[]).await;
    proxy.subscribe(LDS, &[]).await;
    let listeners = proxy.next_of(LDS).await;
    proxy.ack(&listeners, &[]).await;

    server.apply(&[static_cluster("c", 8083)], vec![]).await.expect("second apply");

    let pushed = proxy.next_of(CDS).await;
    assert_eq!(pushed.version_info, "2");
    assert_eq!(names(&pushed.resources), ["a", "b", "c"], "CDS holds the complete set");
    assert_ne!(pushed.nonce, first.nonce);
    proxy.expect_silence().await;
}

#[tokio::test]
async fn rds_names_that_appear_later_are_sent() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(RDS, &["later"]).await;
    let empty = proxy.next_of(RDS).await;
    assert!(empty.resources.is_empty());
    proxy.ack(&empty, &["later"]).await;

    server.apply(&[route_config("unrelated", &["a"])], vec![]).await.expect("unrelated apply");
    proxy.expect_silence().await;

    server.apply(&[route_config("later", &["b"])], vec![]).await.expect("apply the subscribed name");
    let routes = proxy.next_of(RDS).await;
    assert_eq!(names(&routes.resources), ["later"]);
    assert_eq!(routes.version_info, "3");
}

#[tokio::test]
async fn eds_sends_only_subscribed_assignments() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    server
        .apply(&[eds_cluster("a"), eds_cluster("b"), assignment("a", 8081), assignment("b", 8082)], vec![])
        .await
        .expect("EDS config is valid");
    let mut proxy = server.ads_client("proxy-1").await;

    proxy.subscribe(EDS, &["b"]).await;
    let endpoints = proxy.next_of(EDS).await;
    assert_eq!(names(&endpoints.resources), ["b"]);
    proxy.ack(&endpoints, &["b"]).await;

    server.apply(&[assignment("a", 9091)], vec![]).await.expect("change an unsubscribed assignment");
    proxy.expect_silence().await;
}

#[tokio::test]
async fn removal_sent_after_its_replacement() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    for (resource_type, names) in [(CDS, vec![]), (LDS, vec![]), (RDS, vec!["routes"])] {
        proxy.subscribe(resource_type, &names).await;
        let response = proxy.next_of(resource_type).await;
        proxy.ack(&response, &names).await;
    }

    // Cluster b is replaced by c: the route moves to c and b is removed.
    server
        .apply(&[static_cluster("c", 8083), route_config("routes", &["a", "c"])], vec![removal(CDS, "b")])
        .await
        .expect("replacement is valid");

    let clusters_added = proxy.next_of(CDS).await;
    assert_eq!(names(&clusters_added.resources), ["a", "b", "c"], "b stays until no route uses it");
    let routes = proxy.next_of(RDS).await;
    assert_eq!(names(&routes.resources), ["routes"]);
    let clusters_final = proxy.next_of(CDS).await;
    assert_eq!(names(&clusters_final.resources), ["a", "c"]);
    assert_eq!(clusters_final.version_info, "2");
    proxy.expect_silence().await;
}

#[tokio::test]
async fn listener_removed_before_routes_and_clusters() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    for (resource_type, names) in [(CDS, vec![]), (LDS, vec![]), (RDS, vec!["routes"])] {
        proxy.subscribe(resource_type, &names).await;
        let response = proxy.next_of(resource_type).await;
        proxy.ack(&response, &names).await;
    }

    server
        .apply(&[], vec![removal(LDS, "http"), removal(RDS, "routes"), removal(CDS, "a"), removal(CDS, "b")])
        .await
        .expect("removing everything is valid");

    let listeners = proxy.next_of(LDS).await;
    assert!(listeners.resources.is_empty());
    let routes = proxy.next_of(RDS).await;
    assert!(routes.resources.is_empty());
    let clusters = proxy.next_of(CDS).await;
    assert!(clusters.resources.is_empty());
    proxy.expect_silence().await;
}

#[tokio::test]
async fn proxy_leaves_list_when_stream_ends() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    proxy.next_of(CDS).await;
    assert_eq!(proxies(&server).await.len(), 1);

    drop(proxy);

    let mut listed = proxies(&server).await;
    for _ in 0..50 {
        if listed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        listed = proxies(&server).await;
    }
    assert!(listed.is_empty(), "proxy still listed after its stream ended");
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = server_with_routes().await;
    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    proxy.next_of(CDS).await;

    let stopping = tokio::spawn(server.stop());
    let status = proxy.end_status().await;

    assert_eq!(status.map(|status| status.code()), Some(Code::Unavailable));
    stopping.await.expect("stop task").expect("server stops cleanly");
}

/// A request that is not a valid message ends the stream with
/// INVALID_ARGUMENT, on both ADS variants, rather than a silent OK.
#[tokio::test]
async fn undecodable_request_ends_the_stream_with_an_error() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let server = TestServer::start(ControlPlane::in_memory()).await;
    for method in ["StreamAggregatedResources", "DeltaAggregatedResources"] {
        let stream = tokio::net::TcpStream::connect(server.address).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("HTTP/2 handshake");
        tokio::spawn(connection);
        // One gRPC message whose two bytes are a tag with an invalid wire type.
        let body = Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]));
        let request = http::Request::post(format!("http://{}/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}", server.address))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let headers = response.headers().clone();
        let collected = tokio::time::timeout(std::time::Duration::from_secs(5), response.into_body().collect())
            .await
            .expect("the stream ends")
            .expect("body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status = trailers.get("grpc-status").or(headers.get("grpc-status")).expect("a grpc-status");
        assert_eq!(status, "3", "{method}: {trailers:?}");
    }
}
