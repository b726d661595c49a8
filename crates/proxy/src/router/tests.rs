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

#[test]
fn virtual_host_precedence() {
    let table = table(ROUTES);
    assert_eq!(table.virtual_host("api.example.com").unwrap().name, "exact");
    assert_eq!(table.virtual_host("API.Example.com").unwrap().name, "exact");
    assert_eq!(table.virtual_host("www.example.com").unwrap().name, "suffix");
    assert_eq!(table.virtual_host("example.org").unwrap().name, "prefix");
    assert_eq!(table.virtual_host("other.net").unwrap().name, "any");
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
- name: any_port
  domains: ["web.example.com:*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: any_port } }]
- name: any
  domains: ["*"]
  routes: [{ match: { prefix: "/" }, route: { cluster: any } }]
"#;

#[test]
fn port_matched_by_default() {
    let table = table(PORT_ROUTES);
    assert_eq!(table.virtual_host("api.example.com").unwrap().name, "plain");
    assert_eq!(table.virtual_host("api.example.com:8080").unwrap().name, "with_port");
    assert_eq!(table.virtual_host("api.example.com:9090").unwrap().name, "any");
    assert_eq!(table.virtual_host("web.example.com:81").unwrap().name, "any_port");
    assert_eq!(table.virtual_host("[::1]:8080").unwrap().name, "any");
}

#[test]
fn port_ignored_when_configured() {
    let table = table(&format!("{PORT_ROUTES}ignore_port_in_host_matching: true\n"));
    assert_eq!(table.virtual_host("api.example.com:9090").unwrap().name, "plain");
    assert_eq!(table.virtual_host("API.example.com:8080").unwrap().name, "plain");
    assert_eq!(table.virtual_host("[::1]:8080").unwrap().name, "plain");
    assert_eq!(table.virtual_host("web.example.com:81").unwrap().name, "any");
}

#[test]
fn host_port_is_removed() {
    assert_eq!(host_without_port("example.com:8080"), "example.com");
    assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    assert_eq!(host_without_port("example.com"), "example.com");
}
