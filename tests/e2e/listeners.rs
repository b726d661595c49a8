//! Listeners added, changed and removed at run time through the control
//! plane, and a listener whose port is taken rejected with a NACK.

use std::time::Duration;

use crate::support::*;

pub(crate) fn extra_listener(name: &str, port: u16, direct_body: &str) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: extra
        drain_timeout: 0.2s
        route_config:
          name: extra_routes
          virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200, body: {{ inline_string: "{direct_body}" }} }} }}] }}]
        http_filters: [{{ name: envoy.filters.http.router }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_added_changed_removed() {
    let dir = temp_dir("listeners");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("listeners-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;

    assert!(control_plane.apply(&extra_listener("extra", 0, "first")).status.success());
    let extra = proxy.listener("extra").await;
    let added = eventually(Duration::from_secs(10), || async {
        matches!(http1_get(extra, "a", "/").await, Ok((200, body)) if body == "first")
    })
    .await;
    assert!(added, "the new listener serves its routes");

    assert!(control_plane.apply(&extra_listener("extra", 0, "second")).status.success());
    let changed = eventually(Duration::from_secs(10), || async {
        matches!(http1_get(extra, "a", "/").await, Ok((200, body)) if body == "second")
    })
    .await;
    assert!(changed, "the changed listener keeps its socket and serves the new routes");

    let output = legate(&["apply", "--delete", "lds/extra", "--server", &control_plane.address.to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let removed = eventually(Duration::from_secs(10), || async { tokio::net::TcpStream::connect(extra).await.is_err() }).await;
    assert!(removed, "the removed listener stops accepting");

    let main = proxy.listener("http").await;
    assert_eq!(http1_get(main, "x", "/api/ok").await.unwrap(), (200, "api /v1/ok 0".to_string()), "other listeners are untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_on_taken_port_is_nacked() {
    let dir = temp_dir("port-taken");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let proxy = Proxy::start(&ads_bootstrap("port-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    assert!(control_plane.apply(&extra_listener("clash", port, "never")).status.success());

    let server = control_plane.address.to_string();
    let nacked = eventually(Duration::from_secs(15), || {
        let server = server.clone();
        async move {
            let output = legate(&["proxies", "--server", &server]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.contains("clash") && text.contains(&port.to_string())
        }
    })
    .await;
    let table = String::from_utf8_lossy(&legate(&["proxies", "--server", &server]).stdout).into_owned();
    assert!(nacked, "legate proxies shows the NACK naming the listener and port:\n{table}");

    let main = proxy.listener("http").await;
    assert_eq!(http1_get(main, "x", "/api/ok").await.unwrap().0, 200, "the proxy keeps routing");
}
