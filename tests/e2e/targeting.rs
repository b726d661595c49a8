//! Targeted applies: a change for a node cluster, a node id or node
//! metadata reaches only the matching proxies, `apply --wait` counts only
//! them, and a NACK from a targeted proxy fails the wait.

use std::process::Output;
use std::time::Duration;

use crate::support::*;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn report(output: &Output) -> String {
    format!("{}{}", stdout(output), String::from_utf8_lossy(&output.stderr))
}

/// Renders only the route configuration of `two_cluster_config`.
fn routes_only(web: std::net::SocketAddr, api: std::net::SocketAddr, marker: &str) -> String {
    let full = two_cluster_config(&[web], api, marker);
    let start = full.find("- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration").expect("routes present");
    format!("resources:\n{}", &full[start..])
}

/// Writes `text` to `dir/name` and returns the path.
fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

async fn api_body(listener: std::net::SocketAddr) -> String {
    http1_get(listener, "x", "/api/ok").await.map(|(_, body)| body).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_apply_reaches_only_targeted_proxies() {
    let dir = temp_dir("targeting");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let mut control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let write = |name: &str, text: &str| write_file(&dir, name, text);

    // The canary proxy uses delta xDS, the stable one state-of-the-world.
    let canary_bootstrap = ads_bootstrap("canary-node", control_plane.address)
        .replace("cluster: test", "cluster: canary")
        .replace("api_type: GRPC", "api_type: DELTA_GRPC");
    let stable_bootstrap = ads_bootstrap("stable-node", control_plane.address).replace("cluster: test", "cluster: stable, metadata: { track: blue }");
    let canary = Proxy::start(&canary_bootstrap, &dir);
    let stable = Proxy::start(&stable_bootstrap, &dir);
    let connected = eventually(Duration::from_secs(30), || async {
        stdout(&legate(&["proxies", "--server", &server])).lines().filter(|line| line.contains("-node")).count() == 2
    })
    .await;
    assert!(connected, "both proxies connect");

    let v1 = write("v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = legate(&["apply", "-f", &v1, "--server", &server, "--wait", "--wait-timeout", "20"]);
    assert!(applied.status.success(), "{}", report(&applied));
    assert!(stdout(&applied).contains("version 1: 2 applied, 0 rejected, 0 pending"), "{}", report(&applied));
    let canary_http = canary.listener("http").await;
    let stable_http = stable.listener("http").await;
    assert_eq!(api_body(canary_http).await, "api /v1/ok 0");
    assert_eq!(api_body(stable_http).await, "api /v1/ok 0");

    // A changed route for the canary cluster.
    let v2 = write("v2.yaml", &routes_only(web.address, api.address, "v2"));
    let applied = legate(&["apply", "-f", &v2, "--server", &server, "--target-cluster", "canary", "--wait", "--wait-timeout", "20"]);
    assert!(applied.status.success(), "{}", report(&applied));
    assert!(stdout(&applied).contains("version 2: 1 applied, 0 rejected, 0 pending"), "{}", report(&applied));
    assert!(eventually(Duration::from_secs(10), || async { api_body(canary_http).await == "api /v2/ok 0" }).await);
    assert_eq!(api_body(stable_http).await, "api /v1/ok 0", "the stable proxy keeps the untargeted route");

    // A route for proxies whose metadata has track=blue.
    let v3 = write("v3.yaml", &routes_only(web.address, api.address, "v3"));
    let applied = legate(&["apply", "-f", &v3, "--server", &server, "--target-metadata", "track=blue", "--wait", "--wait-timeout", "20"]);
    assert!(applied.status.success(), "{}", report(&applied));
    assert!(stdout(&applied).contains("version 3: 1 applied, 0 rejected, 0 pending"), "{}", report(&applied));
    assert!(eventually(Duration::from_secs(10), || async { api_body(stable_http).await == "api /v3/ok 0" }).await);
    assert_eq!(api_body(canary_http).await, "api /v2/ok 0");

    // `get` and `history` show the targeted config.
    let targeted = legate(&["get", "--target-cluster", "canary", "--server", &server]);
    assert!(stdout(&targeted).contains("/v2/"), "{}", report(&targeted));
    assert!(!stdout(&targeted).contains("envoy.config.cluster.v3.Cluster"), "only the targeted route: {}", report(&targeted));
    let untargeted = legate(&["get", "--server", &server]);
    assert!(stdout(&untargeted).contains("/v1/"), "{}", report(&untargeted));
    let hint = String::from_utf8_lossy(&untargeted.stderr).into_owned();
    assert!(hint.contains("legate get --target-cluster canary"), "{hint}");
    assert!(hint.contains("legate get --target-metadata track=blue"), "{hint}");
    let history = stdout(&legate(&["history", "--server", &server]));
    assert!(history.lines().any(|line| line.starts_with("2 ") && line.ends_with("target cluster=canary")), "{history}");

    // A listener the stable proxy cannot bind, for that node only.
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = write("bad.yaml", &unbindable_listener(occupied.local_addr().unwrap()));
    let rejected = legate(&["apply", "-f", &bad, "--server", &server, "--target-node", "stable-node", "--wait", "--wait-timeout", "20"]);
    assert_eq!(rejected.status.code(), Some(1), "a NACK fails the wait: {}", report(&rejected));
    assert!(stdout(&rejected).contains("version 4: 0 applied, 1 rejected, 0 pending"), "{}", report(&rejected));
    assert!(stdout(&rejected).contains("stable-node rejected LDS"), "{}", report(&rejected));
    assert_eq!(api_body(stable_http).await, "api /v3/ok 0", "the rejecting proxy keeps serving");

    let status = legate(&["status", "2", "--server", &server]);
    assert!(stdout(&status).contains("version 2: 1 applied, 0 rejected, 0 pending"), "{}", report(&status));

    // An empty target is rejected rather than taken as every proxy.
    let empty = legate(&["apply", "-f", &v2, "--server", &server, "--target-metadata", "=x"]);
    assert_eq!(empty.status.code(), Some(2), "{}", report(&empty));

    // Targeted config survives a restart: a new canary proxy gets it.
    control_plane.process.kill();
    control_plane = ControlPlane::start_on(&dir.join("cp"), &server);
    let late = Proxy::start(&canary_bootstrap.replace("canary-node", "late-canary"), &dir);
    let late_http = late.listener("http").await;
    assert!(eventually(Duration::from_secs(10), || async { api_body(late_http).await == "api /v2/ok 0" }).await);

    // Deleting the targeted route puts the canaries back on the untargeted one.
    let reconnected = eventually(Duration::from_secs(30), || async {
        let listed = stdout(&legate(&["proxies", "--server", &server]));
        listed.contains("canary-node") && listed.contains("late-canary")
    })
    .await;
    assert!(reconnected, "both canaries are connected");
    let reverted = legate(&["apply", "--delete", "rds/routes", "--target-cluster", "canary", "--server", &server, "--wait", "--wait-timeout", "20"]);
    assert!(reverted.status.success(), "{}", report(&reverted));
    assert!(stdout(&reverted).contains("version 5: 2 applied, 0 rejected, 0 pending"), "{}", report(&reverted));
    assert_eq!(api_body(late_http).await, "api /v1/ok 0");
    assert_eq!(api_body(canary_http).await, "api /v1/ok 0");
    drop(control_plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_targeted_overlays() {
    let dir = temp_dir("targeting-rollback");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let write = |name: &str, text: &str| write_file(&dir, name, text);
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &server, "--wait", "--wait-timeout", "20"]);
        let output = legate(&all);
        assert!(output.status.success(), "legate {args:?}: {}", report(&output));
        output
    };

    let canary = Proxy::start(&ads_bootstrap("canary-node", control_plane.address).replace("cluster: test", "cluster: canary"), &dir);
    let stable = Proxy::start(&ads_bootstrap("stable-node", control_plane.address).replace("cluster: test", "cluster: stable, metadata: { track: blue }"), &dir);
    let v1 = write("v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    run(&["apply", "-f", &v1]);
    let canary_http = canary.listener("http").await;
    let stable_http = stable.listener("http").await;

    // Version 2 adds a canary overlay, 3 a track=blue overlay, 4 changes the
    // canary overlay and 5 removes it.
    run(&["apply", "-f", &write("v2.yaml", &routes_only(web.address, api.address, "v2")), "--target-cluster", "canary"]);
    run(&["apply", "-f", &write("v3.yaml", &routes_only(web.address, api.address, "v3")), "--target-metadata", "track=blue"]);
    run(&["apply", "-f", &write("v4.yaml", &routes_only(web.address, api.address, "v4")), "--target-cluster", "canary"]);
    run(&["apply", "--delete", "rds/routes", "--target-cluster", "canary"]);
    assert!(eventually(Duration::from_secs(10), || async { api_body(canary_http).await == "api /v1/ok 0" }).await);
    assert_eq!(api_body(stable_http).await, "api /v3/ok 0");

    // Rolling back to 2 adds the canary overlay back and removes the track=blue one.
    let restored = run(&["rollback", "2"]);
    assert!(stdout(&restored).contains("version 6 restores version 2"), "{}", report(&restored));
    assert!(stdout(&restored).contains("version 6: 2 applied, 0 rejected, 0 pending"), "{}", report(&restored));
    assert_eq!(api_body(canary_http).await, "api /v2/ok 0", "the canary overlay is back");
    assert_eq!(api_body(stable_http).await, "api /v1/ok 0", "the track=blue overlay is gone");
    let blue = legate(&["get", "--target-metadata", "track=blue", "--server", &server]);
    assert!(!stdout(&blue).contains("RouteConfiguration"), "no track=blue overlay remains: {}", report(&blue));

    // Rolling back to 4 changes the canary overlay and adds the track=blue one back.
    let restored = run(&["rollback", "4"]);
    assert!(stdout(&restored).contains("version 7: 2 applied, 0 rejected, 0 pending"), "{}", report(&restored));
    assert_eq!(api_body(canary_http).await, "api /v4/ok 0", "the canary overlay is changed back");
    assert_eq!(api_body(stable_http).await, "api /v3/ok 0", "the track=blue overlay is added back");

    // Rolling back to 1 removes every overlay.
    run(&["rollback", "1"]);
    assert_eq!(api_body(canary_http).await, "api /v1/ok 0");
    assert_eq!(api_body(stable_http).await, "api /v1/ok 0");
    let config = stdout(&legate(&["get", "--server", &server]));
    let hint = String::from_utf8_lossy(&legate(&["get", "--server", &server]).stderr).into_owned();
    assert!(!hint.contains("--target"), "no target is left: {hint}");
    assert!(config.contains("/v1/"), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_targets_are_validated_together() {
    let dir = temp_dir("targeting-overlap");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let write = |name: &str, text: &str| write_file(&dir, name, text);
    let v1 = write("v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = legate(&["apply", "-f", &v1, "--server", &server]);
    assert!(applied.status.success(), "{}", report(&applied));

    // Each extra listener is valid alone, but two on one address are not.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listener = |name: &str| write(&format!("{name}.yaml"), &unbindable_listener(address).replace("name: taken", &format!("name: {name}")));
    let canary = legate(&["apply", "-f", &listener("extra-canary"), "--target-cluster", "canary", "--server", &server]);
    assert!(canary.status.success(), "{}", report(&canary));
    let stable = legate(&["apply", "-f", &listener("extra-stable"), "--target-cluster", "stable", "--server", &server]);
    assert!(stable.status.success(), "targets no proxy can match together are not combined: {}", report(&stable));

    let blue = legate(&["apply", "-f", &listener("extra-blue"), "--target-metadata", "track=blue", "--server", &server]);
    let text = report(&blue);
    assert_eq!(blue.status.code(), Some(1), "a canary or stable proxy with track=blue would get two listeners on one address: {text}");
    assert!(text.contains("targets metadata.track=blue and cluster=canary together"), "{text}");
    assert!(text.contains("targets metadata.track=blue and cluster=stable together"), "{text}");
    assert!(text.contains("also used by listener"), "{text}");
    let config = stdout(&legate(&["get", "--target-metadata", "track=blue", "--server", &server]));
    assert!(!config.contains("extra-blue"), "the rejected overlay is not in force: {config}");
}
