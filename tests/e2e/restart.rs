//! The control plane and the proxy can each be killed and restarted without
//! losing config or dropping a request.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_keeps_config() {
    let dir = temp_dir("restart");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let data = dir.join("cp");
    let mut control_plane = ControlPlane::start(&data);
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let config_before = String::from_utf8_lossy(&control_plane.get().stdout).into_owned();
    let listen = control_plane.address.to_string();

    let proxy = Proxy::start(&ads_bootstrap("restart-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let steady = tokio::spawn(async move {
        let mut client = KeepAlive::connect(listener).await;
        let mut failures = Vec::new();
        for _ in 0..100 {
            match client.get("x.test", "/api/ping").await {
                Ok((200, body)) if body == "api /v1/ping 0" => {}
                other => failures.push(format!("{other:?}")),
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        failures
    });

    control_plane.process.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(http1_get(listener, "x.test", "/api/alone").await.unwrap().0, 200, "proxy routes without its control plane");

    let restarted = ControlPlane::start_on(&data, &listen);
    let config_after = String::from_utf8_lossy(&restarted.get().stdout).into_owned();
    assert_eq!(config_before, config_after, "same resources and version after restart");

    let reconnected = eventually(Duration::from_secs(30), || async {
        let output = legate(&["proxies", "--server", &listen]);
        String::from_utf8_lossy(&output.stdout).contains("restart-proxy")
    })
    .await;
    assert!(reconnected, "proxy reconnects to the restarted control plane");

    let failures = steady.await.unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    drop(proxy);

    let second = Proxy::start(&ads_bootstrap("restart-proxy-2", restarted.address), &dir);
    second.wait_ready().await;
    let listener = second.listener("http").await;
    assert_eq!(http1_get(listener, "x.test", "/api/again").await.unwrap(), (200, "api /v1/again 0".to_string()));
}
