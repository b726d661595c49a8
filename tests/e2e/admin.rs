//! The admin listener's pages and its POST-only lifecycle endpoints.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

async fn admin_request(proxy: &Proxy, method: &str, path: &str) -> (u16, String) {
    let request = hyper::Request::builder().method(method).uri(path).header("host", "admin").body(Full::new(Bytes::new())).unwrap();
    let (status, body, _) = http1_request(proxy.admin, request).await.unwrap();
    (status, body)
}

async fn start() -> (Proxy, Upstream) {
    let backend = Upstream::start("backend").await;
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: backend }";
    let dir = temp_dir("admin");
    let proxy = Proxy::start(&static_bootstrap("", routes, &static_cluster("backend", backend.address.port(), None)), &dir);
    proxy.wait_ready().await;
    (proxy, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_pages_describe_the_proxy() {
    let (proxy, backend) = start().await;

    let (status, body) = admin_request(&proxy, "GET", "/server_info").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["node"]["id"], "static");

    let (status, body) = admin_request(&proxy, "GET", "/clusters").await;
    assert_eq!(status, 200);
    let clusters: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(clusters[0]["name"], "backend");
    assert_eq!(clusters[0]["endpoints"][0]["address"], backend.address.to_string());
    assert_eq!(clusters[0]["endpoints"][0]["ejected"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_override_flips_ready() {
    let (proxy, _backend) = start().await;

    assert_eq!(admin_request(&proxy, "GET", "/healthcheck/fail").await.0, 405, "mutating endpoints take POST only");
    assert_eq!(admin_request(&proxy, "POST", "/healthcheck/fail").await.0, 200);
    assert_eq!(admin_request(&proxy, "GET", "/ready").await, (503, "HEALTH_CHECK_FAILED\n".to_string()));
    assert_eq!(admin_request(&proxy, "POST", "/healthcheck/ok").await.0, 200);
    assert_eq!(admin_request(&proxy, "GET", "/ready").await, (200, "LIVE\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_then_quit() {
    let (mut proxy, _backend) = start().await;
    let listener = proxy.listener("http").await;

    assert_eq!(admin_request(&proxy, "POST", "/drain_listeners?graceful").await.0, 200);
    assert_eq!(admin_request(&proxy, "GET", "/ready").await, (503, "DRAINING\n".to_string()));
    let stopped = eventually(Duration::from_secs(5), || async { tokio::net::TcpStream::connect(listener).await.is_err() }).await;
    assert!(stopped, "drained listeners stop accepting");

    assert_eq!(admin_request(&proxy, "POST", "/quitquitquit").await.0, 200);
    let exited = eventually(Duration::from_secs(10), || {
        let done = proxy.process.child.try_wait().map(|status| status.map(|s| s.success()));
        async move { matches!(done, Ok(Some(true))) }
    })
    .await;
    assert!(exited, "the proxy exits 0 after /quitquitquit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_changes_levels_at_run_time() {
    let (proxy, _backend) = start().await;

    let (status, initial) = admin_request(&proxy, "GET", "/logging").await;
    assert_eq!(status, 200);
    assert!(!initial.trim().is_empty(), "GET shows the filter in force");
    assert_eq!(admin_request(&proxy, "GET", "/logging?level=debug").await.0, 405, "changes take POST only");

    assert_eq!(admin_request(&proxy, "POST", "/logging?level=debug").await, (200, "debug\n".to_string()));
    assert_eq!(admin_request(&proxy, "GET", "/logging").await, (200, "debug\n".to_string()));

    let (status, body) = admin_request(&proxy, "POST", "/logging?paths=legate_proxy::upstream:error,h2:warning").await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = admin_request(&proxy, "GET", "/logging").await;
    assert!(shown.contains("legate_proxy::upstream=error"), "{shown}");
    assert!(shown.contains("h2=warn"), "Envoy's warning maps to warn: {shown}");
    assert!(shown.contains("debug"), "the default level stays: {shown}");

    let (status, body) = admin_request(&proxy, "POST", "/logging?level=loud").await;
    assert_eq!(status, 400);
    assert!(body.contains("loud"), "the error names the level: {body}");
    let (status, body) = admin_request(&proxy, "POST", "/logging?paths=nocolon").await;
    assert_eq!(status, 400);
    assert!(body.contains("nocolon"), "{body}");
    assert_eq!(admin_request(&proxy, "GET", "/logging").await.1, shown, "a rejected change leaves the filter alone");

    assert_eq!(admin_request(&proxy, "POST", "/logging?level=info").await, (200, "info\n".to_string()));
    assert_eq!(admin_request(&proxy, "GET", "/healthcheck/ok").await.0, 405);
    assert_eq!(http1_get(proxy.admin, "admin", "/ready").await.unwrap().0, 200, "the proxy keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_shows_updates_and_rejections() {
    let dir = temp_dir("config-dump");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("dump-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let dump = |proxy: &Proxy| {
        let admin = proxy.admin;
        async move { serde_json::from_str::<serde_json::Value>(&http1_get(admin, "admin", "/config_dump").await.unwrap().1).unwrap() }
    };
    let find = |dump: &serde_json::Value, kind: &str, name: &str| {
        dump["resources"].as_array().unwrap().iter().find(|entry| entry["kind"] == kind && entry["name"] == name).cloned().unwrap()
    };

    let first = dump(&proxy).await;
    let api_updated = find(&first, "cluster", "api")["last_updated"].as_str().expect("an xDS resource has a last-updated time").to_string();
    assert!(api_updated.ends_with('Z'), "{api_updated}");
    assert_eq!(first["rejected"], serde_json::json!([]));

    // The proxies cannot bind this address, so they reject the listener.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = unbindable_listener(taken.local_addr().unwrap());
    assert!(control_plane.apply(&listener).status.success());
    let rejected = eventually(Duration::from_secs(10), || async {
        dump(&proxy).await["rejected"].as_array().is_some_and(|rejected| !rejected.is_empty())
    })
    .await;
    assert!(rejected, "the rejected listener shows in /config_dump");

    let after = dump(&proxy).await;
    let entry = &after["rejected"][0];
    assert_eq!(entry["type"], "LDS");
    assert_eq!(entry["name"], "taken");
    assert_eq!(entry["version_info"], "2");
    assert!(entry["error"].as_str().unwrap().contains("failed to bind"), "{entry}");
    assert_eq!(find(&after, "cluster", "api")["last_updated"], api_updated.as_str(), "an unchanged resource keeps its time");
}
