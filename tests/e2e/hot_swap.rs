//! A route change lands while a slow request and a steady stream of
//! requests are in flight: nothing fails and each request sees one table.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_keeps_in_flight_request() {
    let dir = temp_dir("hot-swap");
    let web = [Upstream::start("web-1").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let web_addresses = [web[0].address];
    assert!(control_plane.apply(&two_cluster_config(&web_addresses, api.address, "old")).status.success());

    let proxy = Proxy::start(&ads_bootstrap("swap-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let slow = tokio::spawn(async move { http1_get(listener, "any.test", "/api/slow/3000").await });
    let steady = tokio::spawn(async move {
        let mut client = KeepAlive::connect(listener).await;
        let mut results = Vec::new();
        for _ in 0..120 {
            results.push(client.get("any.test", "/api/ping").await);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        results
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = control_plane.apply(&two_cluster_config(&web_addresses, api.address, "new"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let (status, body) = slow.await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api /old/slow/3000 0", "the slow request finishes on the table it started with");

    let results = steady.await.unwrap();
    let failures: Vec<_> = results.iter().filter(|r| !matches!(r, Ok((200, _)))).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let bodies: Vec<&str> = results.iter().map(|r| r.as_ref().unwrap().1.as_str()).collect();
    assert_eq!(bodies.first(), Some(&"api /old/ping 0"));
    assert_eq!(bodies.last(), Some(&"api /new/ping 0"), "new requests follow the new route");
    let switch = bodies.iter().position(|b| b.contains("/new/")).unwrap();
    assert!(bodies[switch..].iter().all(|b| b.contains("/new/")), "no request goes back to the old table");
}
