//! A proxy started from a static Envoy-format bootstrap, with no control
//! plane, routes traffic; the examples in deploy/examples load as they are.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_bootstrap_routes_traffic() {
    let dir = temp_dir("static");
    let backend = Upstream::start("backend").await;
    let bootstrap = format!(
        r#"
node: {{ id: static-proxy }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: static_http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ path: "/hello" }}
                direct_response: {{ status: 200, body: {{ inline_string: "hi from legate" }} }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
"#,
        backend.address.port()
    );
    let proxy = Proxy::start(&bootstrap, &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("static_http").await;

    assert_eq!(http1_get(listener, "a", "/page").await.unwrap(), (200, "backend /page 0".to_string()));
    assert_eq!(http2_get(listener, "a", "/page").await.unwrap(), (200, "backend /page 0".to_string()));
    assert_eq!(http1_get(listener, "a", "/hello").await.unwrap(), (200, "hi from legate".to_string()));
}

#[test]
fn deploy_examples_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let output = legate(&["proxy", "--mode", "validate", "--config", path.to_str().unwrap()]);
        assert!(output.status.success(), "{} is invalid: {}", path.display(), String::from_utf8_lossy(&output.stderr));
        checked += 1;
    }
    assert!(checked >= 2, "the WebSocket and gRPC examples are checked");
}

#[test]
fn unsupported_bootstrap_field_is_named() {
    let dir = temp_dir("static-invalid");
    let path = dir.join("bootstrap.yaml");
    std::fs::write(&path, "node: { id: x }\nstats_sinks: []\n").unwrap();
    let output = legate(&["proxy", "--mode", "validate", "--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stats_sinks"), "error names the field: {stderr}");
}
