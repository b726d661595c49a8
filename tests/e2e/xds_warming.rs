//! Cluster updates that arrive without new endpoints: the updated cluster
//! takes over at once with the endpoints it already has, and the traffic
//! running meanwhile sees no error.

use std::time::Duration;

use crate::support::scripted_ads::*;
use crate::support::*;

fn eds_cluster(connect_timeout: &str) -> prost_types::Any {
    pack(CLUSTER_TYPE, &format!("name: foo\ntype: EDS\nconnect_timeout: {connect_timeout}\neds_cluster_config: {{ eds_config: {{ ads: {{}} }} }}"))
}

fn assignment(upstreams: &[&Upstream]) -> prost_types::Any {
    let endpoints: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", u.address.port()))
        .collect();
    pack(ENDPOINT_TYPE, &format!("cluster_name: foo\nendpoints: [{{ lb_endpoints: [{}] }}]", endpoints.join(", ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_update_without_endpoints_keeps_serving() {
    let dir = temp_dir("warming");
    let first = Upstream::start("first").await;
    let second = Upstream::start("second").await;
    let (ads_address, responses, mut requests) = start_scripted_ads().await;
    let proxy = Proxy::start(&ads_bootstrap("warming-proxy", ads_address), &dir);

    requests.next(CLUSTER_TYPE).await;
    responses.send(response(CLUSTER_TYPE, "1", "c1", vec![eds_cluster("1s")])).await.unwrap();
    let eds_request = requests.next(ENDPOINT_TYPE).await;
    assert_eq!(eds_request.resource_names, vec!["foo".to_string()], "the proxy asks for the endpoints of foo");
    responses.send(response(ENDPOINT_TYPE, "1", "e1", vec![assignment(&[&first, &second])])).await.unwrap();
    requests.next(LISTENER_TYPE).await;
    responses.send(response(LISTENER_TYPE, "1", "l1", vec![listener("foo")])).await.unwrap();
    proxy.wait_ready().await;
    let address = proxy.listener("http").await;

    let traffic = tokio::spawn(async move {
        let mut client = KeepAlive::connect(address).await;
        let mut statuses = Vec::new();
        for _ in 0..100 {
            statuses.push(client.get("a", "/").await.map(|(status, _)| status));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses
    });

    tokio::time::sleep(Duration::from_millis(200)).await;
    responses.send(response(CLUSTER_TYPE, "2", "c2", vec![eds_cluster("2s")])).await.unwrap();
    let ack = requests.next(CLUSTER_TYPE).await;
    let ack = if ack.response_nonce == "c1" { requests.next(CLUSTER_TYPE).await } else { ack };
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("2", "c2"));
    assert!(ack.error_detail.is_none());

    let statuses = traffic.await.unwrap();
    let failed: Vec<_> = statuses.iter().filter(|status| !matches!(status, Ok(200))).collect();
    assert!(failed.is_empty(), "requests failed during the cluster update: {failed:?}");
    assert!(first.hits() > 10 && second.hits() > 10, "both endpoints kept serving: {} and {}", first.hits(), second.hits());
}
