//! Invalid config through `legate apply` is rejected whole, with every
//! error listed, and the running config stays as it was.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_apply_lists_every_error() {
    let dir = temp_dir("invalid-apply");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    assert!(control_plane.apply(&two_cluster_config(&[web.address], api.address, "v1")).status.success());
    let before = String::from_utf8_lossy(&control_plane.get().stdout).into_owned();

    let proxy = Proxy::start(&ads_bootstrap("invalid-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;

    let unknown_cluster = r#"resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: routes
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: { prefix: "/" }
      route: { cluster: missing }
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: broken
  lb_policy: CLUSTER_PROVIDED
  load_assignment: { cluster_name: broken }
"#;
    let output = control_plane.apply(unknown_cluster);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("\"missing\""), "names the unknown cluster: {stderr}");
    assert!(stderr.contains("CLUSTER_PROVIDED"), "names the unsupported lb_policy: {stderr}");

    let unsupported_field = r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: tls
  transport_socket: { name: envoy.transport_sockets.tls }
  load_assignment: { cluster_name: tls }
"#;
    let output = control_plane.apply(unsupported_field);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("transport_socket"), "names the unsupported field: {stderr}");

    let bad_values = r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: slow
  connect_timeout: banana
"#;
    let output = control_plane.apply(bad_values);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("connect_timeout") && stderr.contains("\"banana\""), "names the field and the value: {stderr}");

    let negative = r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: negative
  connect_timeout: -5s
  load_assignment: { cluster_name: negative }
"#;
    let output = control_plane.apply(negative);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid duration -5s: must not be negative"), "{stderr}");

    let after = String::from_utf8_lossy(&control_plane.get().stdout).into_owned();
    assert_eq!(before, after, "the running config is unchanged");
    let (status, body) = http1_get(listener, "x.test", "/api/still").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "api /v1/still 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_apply_makes_no_new_version() {
    let dir = temp_dir("no-change");
    let web = Upstream::start("web-1").await;
    let api = Upstream::start("api").await;
    let control_plane = ControlPlane::start(&dir.join("cp"));
    let config = two_cluster_config(&[web.address], api.address, "v1");
    let first = control_plane.apply(&config);
    assert!(first.status.success());
    let second = control_plane.apply(&config);
    assert!(second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("no change"), "got {stdout}");
}
