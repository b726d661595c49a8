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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_change_keeps_http2_connection() {
    let dir = temp_dir("hot-swap-h2");
    let web = [Upstream::start("web-1").await];
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let web_addresses = [web[0].address];
    assert!(control_plane.apply(&two_cluster_config(&web_addresses, api.address, "old")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("swap-h2-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let client = Http2Client::connect(listener).await;
    let (status, body) = client.get("any.test", "/api/before").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "api /old/before 0"));

    let streaming = {
        let client = client.clone();
        tokio::spawn(async move { client.get("any.test", "/api/slow/1500").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(control_plane.apply(&two_cluster_config(&web_addresses, api.address, "new")).status.success());

    let switched = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move { matches!(client.get("any.test", "/api/after").await, Ok((200, body)) if body == "api /new/after 0") }
    })
    .await;
    assert!(switched, "the next stream on the same HTTP/2 connection uses the new table");

    let (status, body) = streaming.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "api /old/slow/1500 0"), "the stream in flight finishes on the old table");
    assert!(!client.is_closed(), "the connection stays open");
}
