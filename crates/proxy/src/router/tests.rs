use std::sync::Arc;

use legate_api::envoy::config::route::v3::RouteConfiguration as ProtoRoutes;
use legate_config::error::Collector;

use super::*;

fn table(yaml: &str) -> RouteTable {
    let proto: ProtoRoutes = legate_config::text::parse(yaml, "envoy.config.route.v3.RouteConfiguration").unwrap();
    let mut errors = Collector::new("test");
    let config = legate_config::decode::route_configuration(&proto, &mut errors).unwrap();
    assert!(!errors.has_errors());
    RouteTable::new(Arc::new(config), &crate::stats::ProxyStats::new().http)
}

fn parts(path: &str) -> http::request::Parts {
    http::Request::get(path).body(()).unwrap().into_parts().0
}

const ROUTES: &str = r#"
name: local
virtual_hosts:
- name: exact
  domains: ["api.example.com"]
  routes: [{ match: { prefix: "/" }, route: { cluster: exact } }]
- name: suffix
  domains: ["*.example.com"]
  routes: [{ match: { prefix: "/" }, route: { cluster: suffix } }]
- name: prefix
  domains: ["example.*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: prefix } }]
- name: any
  domains: ["*"]
  routes:
  - match: { path: "/exact" }
    route: { cluster: path }
  - match: { safe_regex: { regex: "/items/[0-9]+" } }
    route: { cluster: regex }
  - match: { prefix: "/API", case_sensitive: false }
    route: { cluster: insensitive }
"#;

/// Checks the virtual host picked for each `(host, virtual host name)`.
fn assert_virtual_hosts(table: &RouteTable, cases: &[(&str, &str)]) {
    for (host, expected) in cases {
        let picked = table.virtual_host(host).map(|virtual_host| virtual_host.name.as_str());
        assert_eq!(picked, Some(*expected), "host {host:?}");
    }
}

#[test]
fn virtual_host_precedence() {
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.com", "exact"),
        ("www.example.com", "suffix"),
        ("example.org", "prefix"),
        ("other.net", "any"),
    ];
    assert_virtual_hosts(&table(ROUTES), &cases);
}

#[test]
fn path_matchers() {
    let table = table(ROUTES);
    let name = |path: &str| match table.route("other", &parts(path)) {
        RouteMatchResult::Matched(route, _, _) => Some(format!("{:?}", route.action)),
        RouteMatchResult::NoRoute(_) => None,
    };
    assert!(name("/exact").unwrap().contains("\"path\""));
    assert!(name("/items/42").unwrap().contains("\"regex\""));
    assert!(name("/items/4x").is_none());
    assert!(name("/api/v1").unwrap().contains("\"insensitive\""));
    assert!(name("/exact/more").is_none());
}

const PORT_ROUTES: &str = r#"
name: ports
virtual_hosts:
- name: plain
  domains: ["api.example.com", "[::1]"]
  routes: [{ match: { prefix: "/" }, route: { cluster: plain } }]
- name: with_port
  domains: ["api.example.com:8080"]
  routes: [{ match: { prefix: "/" }, route: { cluster: with_port } }]
- name: suffix
  domains: ["*.example.org"]
  routes: [{ match: { prefix: "/" }, route: { cluster: suffix } }]
- name: any_port
  domains: ["web.example.com:*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: any_port } }]
- name: any
  domains: ["*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: any } }]
"#;

#[test]
fn port_matched_by_default() {
    let cases = [
        ("api.example.com", "plain"),
        ("api.example.com:8080", "with_port"),
        ("api.example.com:9090", "any"),
        ("web.example.com:81", "any_port"),
        ("[::1]:8080", "any"),
        ("www.example.org", "suffix"),
        ("www.example.org:8080", "any"),
    ];
    assert_virtual_hosts(&table(PORT_ROUTES), &cases);
}

#[test]
fn port_ignored_when_configured() {
    let cases = [
        ("api.example.com:9090", "plain"),
        ("API.example.com:8080", "plain"),
        ("[::1]:8080", "plain"),
        ("web.example.com:81", "any"),
        ("www.example.org:8080", "suffix"),
    ];
    assert_virtual_hosts(&table(&format!("{PORT_ROUTES}ignore_port_in_host_matching: true\n")), &cases);
}

#[test]
fn host_port_is_removed() {
    assert_eq!(host_without_port("example.com:8080"), "example.com");
    assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    assert_eq!(host_without_port("example.com"), "example.com");
}
