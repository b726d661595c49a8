//! A scripted ADS server drives the proxy through invalid resources: the
//! proxy NACKs with the last accepted version and an error naming the
//! problem, keeps routing, and ACKs the next valid version.

use std::time::Duration;

use crate::support::scripted_ads::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cluster_is_nacked_without_loop() {
    let dir = temp_dir("nack");
    let backend = Upstream::start("backend").await;

    let (ads_address, responses, mut requests) = start_scripted_ads().await;

    let proxy = Proxy::start(&ads_bootstrap("nack-proxy", ads_address), &dir);

    let first = requests.next(CLUSTER_TYPE).await;
    assert_eq!(first.node.as_ref().map(|n| n.id.as_str()), Some("nack-proxy"), "node on the first request");
    responses.send(response(CLUSTER_TYPE, "1", "n1", vec![cluster("backend", backend.address, "ROUND_ROBIN")])).await.unwrap();
    let ack = requests.next(CLUSTER_TYPE).await;
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("1", "n1"));
    assert!(ack.error_detail.is_none());

    requests.next(LISTENER_TYPE).await;
    responses.send(response(LISTENER_TYPE, "1", "l1", vec![listener("backend")])).await.unwrap();
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
