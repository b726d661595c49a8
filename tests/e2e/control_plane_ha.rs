//! Control-plane replicas sharing one etcd. An apply on any replica reaches
//! the proxies of every replica at the same version. A proxy whose replica
//! dies moves to another without a failed request. An etcd outage stops
//! applies, but neither traffic nor pushes of the config in force.

use std::time::Duration;

use legate_api::legate::config::v1::config_service_client::ConfigServiceClient;
use legate_api::legate::config::v1::ApplyRequest;

use crate::support::etcd::Etcd;
use crate::support::replicas::{ads_bootstrap_replicas, etcd_watching, output_text, replicas_serving, start_replica, Traffic};
use crate::support::*;

/// Time allowed for a change to travel through etcd to another replica, or
/// for a proxy to move to another replica.
const SETTLE: Duration = Duration::from_secs(15);

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn apply(server: std::net::SocketAddr, file: &str, extra: &[&str]) -> std::process::Output {
    let address = server.to_string();
    let mut args = vec!["apply", "-f", file, "--server", address.as_str()];
    args.extend_from_slice(extra);
    legate(&args)
}

/// Returns the config version `server` serves, from `legate get`.
fn served_version(server: &ControlPlane) -> Option<u64> {
    let text = String::from_utf8_lossy(&server.get().stdout).into_owned();
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config["version_info"].as_str()?.parse().ok()
}

async fn body_of(listener: std::net::SocketAddr, path: &str) -> String {
    http1_get(listener, "x", path).await.map(|(_, body)| body).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_config_and_proxy_fails_over() {
    let dir = temp_dir("ha-failover");
    let etcd = Etcd::start(&dir);
    let prefix = "/ha-failover";
    let (mut a, _) = start_replica(&dir, &etcd, prefix, "cp-a");
    let (b, _) = start_replica(&dir, &etcd, prefix, "cp-b");
    let (c, _) = start_replica(&dir, &etcd, prefix, "cp-c");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;

    let v1 = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = apply(a.address, &v1, &[]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    for replica in [&b, &c] {
        let served = eventually(SETTLE, || async { served_version(replica) == Some(1) }).await;
        assert!(served, "replica at {} serves version 1 applied on another replica", replica.address);
    }

    let proxy = Proxy::start(&ads_bootstrap_replicas("edge-1", &[a.address, b.address, c.address]), &dir);
    let listener = proxy.listener("http").await;
    assert_eq!(body_of(listener, "/api/x").await, "api /v1/x 0");
    assert_eq!(replicas_serving(a.address, "edge-1"), ["cp-a"], "the proxy starts on the first endpoint");
    // Each replica publishes its proxies to etcd, so any replica lists them.
    let published = eventually(SETTLE, || async { replicas_serving(c.address, "edge-1") == ["cp-a"] }).await;
    assert!(published, "replica C lists the proxy that A serves");

    let traffic = Traffic::start(listener, "/api/x");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.process.kill();
    let moved = eventually(SETTLE, || async {
        replicas_serving(c.address, "edge-1").iter().any(|replica| replica == "cp-b" || replica == "cp-c")
    })
    .await;
    assert!(moved, "the proxy connects to replica B or C after A is killed: {:?}", replicas_serving(c.address, "edge-1"));

    let v2 = write(&dir, "v2.yaml", &two_cluster_config(&[web.address], api.address, "v2"));
    let applied = apply(b.address, &v2, &["--if-version", "1"]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    assert!(output_text(&applied).contains("applied version 2"), "{}", output_text(&applied));
    let updated = eventually(SETTLE, || async { traffic.report().last_body == "api /v2/x 0" }).await;
    assert!(updated, "version 2 applied on B reaches the proxy; last response {:?}", traffic.report().last_body);

    let report = traffic.stop().await;
    assert!(report.failures.is_empty(), "requests failed during the failover: {:?}", report.failures);
    assert!(report.succeeded > 20, "too few requests to show anything: {}", report.succeeded);

    let served = eventually(SETTLE, || async { served_version(&c) == Some(2) }).await;
    assert!(served, "replica C serves version 2 applied on B");
    // A's list expires with its lease (10 s), leaving the replica that serves the proxy now.
    let expired = eventually(Duration::from_secs(20), || async { replicas_serving(b.address, "edge-1").len() == 1 }).await;
    assert!(expired, "the dead replica's proxies leave the list: {:?}", replicas_serving(b.address, "edge-1"));
    let stale = apply(c.address, &v1, &["--if-version", "1"]);
    assert_eq!(stale.status.code(), Some(1), "a stale --if-version is rejected: {}", output_text(&stale));
    assert!(output_text(&stale).contains("version 2, not 1"), "{}", output_text(&stale));
    assert_eq!(served_version(&c), Some(2), "the rejected apply changed nothing");

    // Two replicas racing on the same version: etcd's revision check lets
    // exactly one of them commit version 3.
    let v3 = write(&dir, "v3.yaml", &two_cluster_config(&[web.address], api.address, "v3"));
    let racing: Vec<std::process::Output> = std::thread::scope(|scope| {
        let (b_address, c_address, v1, v3) = (b.address, c.address, &v1, &v3);
        let on_b = scope.spawn(move || apply(b_address, v1, &["--if-version", "2"]));
        let on_c = scope.spawn(move || apply(c_address, v3, &["--if-version", "2"]));
        vec![on_b.join().unwrap(), on_c.join().unwrap()]
    });
    let winners = racing.iter().filter(|output| output.status.success()).count();
    let texts: Vec<String> = racing.iter().map(output_text).collect();
    assert_eq!(winners, 1, "exactly one racing apply wins: {texts:?}");
    assert!(texts.iter().any(|text| text.contains("version 3, not 2")), "the loser is told the version moved on: {texts:?}");
    let served = eventually(SETTLE, || async { served_version(&b) == Some(3) && served_version(&c) == Some(3) }).await;
    assert!(served, "both replicas serve the winner's version 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_config_and_recovers() {
    let dir = temp_dir("ha-outage");
    let mut etcd = Etcd::start(&dir);
    let prefix = "/ha-outage";
    let (a, a_admin) = start_replica(&dir, &etcd, prefix, "cp-a");
    let (b, _) = start_replica(&dir, &etcd, prefix, "cp-b");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let v1 = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = apply(a.address, &v1, &[]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    assert!(eventually(SETTLE, || etcd_watching(a_admin)).await, "replica A reports its etcd watch up");

    let first = Proxy::start(&ads_bootstrap_replicas("edge-1", &[a.address]), &dir);
    let first_listener = first.listener("http").await;
    assert_eq!(body_of(first_listener, "/api/x").await, "api /v1/x 0");
    let traffic = Traffic::start(first_listener, "/api/x");

    // A frozen etcd accepts connections but never responds: applies time out.
    let mut client = ConfigServiceClient::connect(format!("http://{}", b.address)).await.unwrap();
    etcd.pause();
    let started = std::time::Instant::now();
    let status = client.apply(ApplyRequest::default()).await.expect_err("no apply while etcd is frozen");
    etcd.resume();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("etcd is unavailable") && status.message().contains("timed out"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(10), "the apply failed after {:?}", started.elapsed());

    etcd.kill();
    assert!(eventually(SETTLE, || async { !etcd_watching(a_admin).await }).await, "replica A reports its etcd watch down");
    let status = client.apply(ApplyRequest::default()).await.expect_err("no apply while etcd is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("etcd is unavailable"), "{}", status.message());
    let v2 = write(&dir, "v2.yaml", &two_cluster_config(&[web.address], api.address, "v2"));
    let rejected = apply(a.address, &v2, &[]);
    assert!(!rejected.status.success(), "{}", output_text(&rejected));
    assert!(output_text(&rejected).contains("etcd is unavailable"), "{}", output_text(&rejected));

    // A proxy that connects during the outage still gets the config in force.
    let second = Proxy::start(&ads_bootstrap_replicas("edge-2", &[b.address]), &dir);
    let second_listener = second.listener("http").await;
    assert_eq!(body_of(second_listener, "/api/x").await, "api /v1/x 0");

    etcd.restart();
    let recovered = eventually(SETTLE, || async { apply(b.address, &v2, &[]).status.success() }).await;
    assert!(recovered, "applies work again once etcd is back");
    assert!(eventually(SETTLE, || etcd_watching(a_admin)).await, "replica A watches etcd again");
    for replica in [&a, &b] {
        let served = eventually(SETTLE, || async { served_version(replica) == Some(2) }).await;
        assert!(served, "replica at {} serves version 2 after etcd is back", replica.address);
    }
    let updated = eventually(SETTLE, || async { traffic.report().last_body == "api /v2/x 0" }).await;
    assert!(updated, "replica A pushes version 2 to its proxy after its etcd watch recovered");
    assert_eq!(body_of(second_listener, "/api/x").await, "api /v2/x 0");

    let report = traffic.stop().await;
    assert!(report.failures.is_empty(), "requests failed during the etcd outage: {:?}", report.failures);

    let history = legate(&["history", "--server", &a.address.to_string()]);
    let listed: Vec<String> =
        String::from_utf8_lossy(&history.stdout).lines().filter_map(|line| line.split_whitespace().next().map(str::to_string)).collect();
    assert_eq!(listed, ["VERSION", "2", "1"], "every accepted version is in the history");
}

/// Targeted config travels through etcd like the rest: a replica that
/// adopts a version from its watch serves its targets and lists them in the
/// history, and keeps them when it applies a change of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_config_reaches_every_replica() {
    let dir = temp_dir("ha-targets");
    let etcd = Etcd::start(&dir);
    let prefix = "/ha-targets";
    let (a, _) = start_replica(&dir, &etcd, prefix, "cp-a");
    let (b, _) = start_replica(&dir, &etcd, prefix, "cp-b");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let version = |label: &str| write(&dir, &format!("{label}.yaml"), &two_cluster_config(&[web.address], api.address, label));

    let applied = apply(a.address, &version("v1"), &[]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    let proxy = Proxy::start(&ads_bootstrap_replicas("edge-canary", &[b.address]), &dir);
    let listener = proxy.listener("http").await;
    assert_eq!(body_of(listener, "/api/x").await, "api /v1/x 0");

    // A canary applied on A reaches the proxy that B serves.
    let applied = apply(a.address, &version("v2"), &["--target-node", "edge-canary"]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    let canary = eventually(SETTLE, || async { body_of(listener, "/api/x").await == "api /v2/x 0" }).await;
    assert!(canary, "the canary applied on A reaches B's proxy: {:?}", body_of(listener, "/api/x").await);
    let history = legate(&["history", "--server", &b.address.to_string()]);
    assert!(output_text(&history).contains("edge-canary"), "B's history shows the target: {}", output_text(&history));

    // A change on B for another target keeps A's canary in force.
    let applied = apply(b.address, &version("v3"), &["--target-node", "edge-other"]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    let served = eventually(SETTLE, || async { served_version(&a) == Some(3) }).await;
    assert!(served, "A adopts version 3 applied on B");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(body_of(listener, "/api/x").await, "api /v2/x 0", "the canary keeps its target after B's apply");
    let target = legate(&["get", "--target-node", "edge-canary", "--server", &a.address.to_string()]);
    assert!(output_text(&target).contains("/v2"), "A still holds the canary's target: {}", output_text(&target));
}
