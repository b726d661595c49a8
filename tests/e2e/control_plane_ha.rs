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
    let names = ["cp-a", "cp-b", "cp-c"];
    let mut replicas = names.map(|name| start_replica(&dir, &etcd, prefix, name).0);
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;

    let v1 = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = apply(replicas[0].address, &v1, &[]);
    assert!(applied.status.success(), "{}", output_text(&applied));
    for replica in &replicas[1..] {
        let served = eventually(SETTLE, || async { served_version(replica) == Some(1) }).await;
        assert!(served, "replica at {} serves version 1 applied on another replica", replica.address);
    }

    let addresses: Vec<std::net::SocketAddr> = replicas.iter().map(|replica| replica.address).collect();
    let proxy = Proxy::start(&ads_bootstrap_replicas("edge-1", &addresses), &dir);
    let listener = proxy.listener("http").await;
    assert_eq!(body_of(listener, "/api/x").await, "api /v1/x 0");
    // The proxy starts at a random endpoint: call the replica it picked A, the others B and C.
    let listed = eventually(SETTLE, || async { replicas_serving(replicas[0].address, "edge-1").len() == 1 }).await;
    let serving = replicas_serving(replicas[0].address, "edge-1");
    assert!(listed, "the proxy is listed once");
    assert_eq!(serving.len(), 1, "one replica serves the proxy: {serving:?}");
    let first = names.iter().position(|name| *name == serving[0]).expect("a known replica serves the proxy");
    replicas.swap(0, first);
    let [mut a, b, c] = replicas;
    let a_name = serving[0].clone();
    // Each replica publishes its proxies to etcd, so any replica lists them.
    let published = eventually(SETTLE, || async { replicas_serving(c.address, "edge-1") == [a_name.clone()] }).await;
    assert!(published, "replica C lists the proxy that A serves");

    let traffic = Traffic::start(listener, "/api/x");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.process.kill();
    let moved = eventually(SETTLE, || async {
        replicas_serving(c.address, "edge-1").iter().any(|replica| *replica != a_name)
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
async fn stopped_replica_unlists_its_proxies() {
    let dir = temp_dir("ha-clean-stop");
    let etcd = Etcd::start(&dir);
    let prefix = "/ha-clean-stop";
    let (mut a, _) = start_replica(&dir, &etcd, prefix, "cp-a");
    let (b, _) = start_replica(&dir, &etcd, prefix, "cp-b");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let config = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = apply(a.address, &config, &[]);
    assert!(applied.status.success(), "{}", output_text(&applied));

    let proxy = Proxy::start(&ads_bootstrap_replicas("edge-1", &[a.address]), &dir);
    proxy.wait_ready().await;
    let published = eventually(SETTLE, || async { replicas_serving(b.address, "edge-1") == ["cp-a"] }).await;
    assert!(published, "replica B lists the proxy that A serves: {:?}", replicas_serving(b.address, "edge-1"));

    // A clean stop revokes A's lease. Without that, its list would stay
    // until the lease expires, 8 to 10 seconds later.
    let pid = a.process.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let unlisted = eventually(Duration::from_secs(5), || async { replicas_serving(b.address, "edge-1").is_empty() }).await;
    assert!(unlisted, "A's proxies leave B's list at once: {:?}", replicas_serving(b.address, "edge-1"));
    let exit = a.process.child.wait().unwrap();
    assert!(exit.success(), "replica A stops cleanly on SIGTERM: {exit}");
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
    assert!(status.message().contains("etcd is unavailable"), "{}", status.message());
    assert!(status.message().contains("timed out"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(10), "the apply failed after {:?}", started.elapsed());

    etcd.kill();
    assert!(eventually(SETTLE, || async { !etcd_watching(a_admin).await }).await, "replica A reports its etcd watch down");
    let status = client.apply(ApplyRequest::default()).await.expect_err("no apply while etcd is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("etcd is unavailable"), "{}", status.message());
    let v2 = write(&dir, "v2.yaml", &two_cluster_config(&[web.address], api.address, "v2"));
    let rejected = apply(a.address, &v2, &[]);
    assert_eq!(rejected.status.code(), Some(3), "exit code 3 says retry later: {}", output_text(&rejected));
    assert!(output_text(&rejected).contains("etcd is unavailable"), "{}", output_text(&rejected));
    assert!(output_text(&rejected).contains("Unavailable"), "the gRPC code is shown: {}", output_text(&rejected));

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

/// Runs `legate apply -f file --server server --wait` with `extra` arguments.
fn apply_and_wait(server: std::net::SocketAddr, file: &str, extra: &[&str]) -> std::process::Output {
    let server = server.to_string();
    let mut args = vec!["apply", "-f", file, "--server", server.as_str(), "--wait", "--wait-timeout", "20"];
    args.extend_from_slice(extra);
    legate(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_counts_proxies_of_every_replica() {
    let dir = temp_dir("ha-rollout");
    let etcd = Etcd::start(&dir);
    let prefix = "/ha-rollout";
    let (a, _) = start_replica(&dir, &etcd, prefix, "cp-a");
    let (b, _) = start_replica(&dir, &etcd, prefix, "cp-b");
    let (c, _) = start_replica(&dir, &etcd, prefix, "cp-c");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;

    let _on_b = Proxy::start(&ads_bootstrap_replicas("edge-b", &[b.address]), &dir);
    let _on_c = Proxy::start(&ads_bootstrap_replicas("edge-c", &[c.address]), &dir);
    let listed = eventually(SETTLE, || async {
        replicas_serving(a.address, "edge-b") == ["cp-b"] && replicas_serving(a.address, "edge-c") == ["cp-c"]
    })
    .await;
    assert!(listed, "replica A lists the proxies of B and C");

    let v1 = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = apply_and_wait(a.address, &v1, &[]);
    let text = output_text(&applied);
    assert!(applied.status.success(), "{text}");
    assert!(text.contains("version 1: 2 applied, 0 rejected, 0 pending"), "A counts the proxies on B and C: {text}");

    let status = legate(&["status", "1", "--server", &a.address.to_string()]);
    assert!(output_text(&status).contains("version 1: 2 applied, 0 rejected, 0 pending"), "{}", output_text(&status));

    // Only edge-c receives a listener on a port that is taken, so it alone NACKs.
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = write(&dir, "bad.yaml", &unbindable_listener(occupied.local_addr().unwrap()));
    let rejected = apply_and_wait(a.address, &bad, &["--target-node", "edge-c"]);
    let text = output_text(&rejected);
    let proxies_on_c = output_text(&legate(&["proxies", "--server", &c.address.to_string()]));
    assert_eq!(rejected.status.code(), Some(1), "the NACK on replica C fails the wait on A: {text} {proxies_on_c}");
    assert!(text.contains("version 2: 0 applied, 1 rejected"), "{text}");
    assert!(text.contains("edge-c rejected LDS"), "{text}");
    assert!(text.contains("taken"), "the report carries the proxy's error: {text}");
}
