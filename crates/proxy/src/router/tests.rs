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

/// Route matches of every kind the path index treats differently, with
/// repeated paths that differ in their header or gRPC conditions.
const INDEXED_MATCHES: [&str; 21] = [
    r#"{ prefix: "/a", headers: [{ name: x-v, string_match: { exact: "1" } }] }"#,
    r#"{ prefix: "/a" }"#,
    r#"{ prefix: "/a/" }"#,
    r#"{ prefix: "/a/b" }"#,
    r#"{ prefix: "/ab" }"#,
    r#"{ prefix: "/svc-1/" }"#,
    r#"{ prefix: "/svc-12/" }"#,
    r#"{ prefix: "/pkg.Svc/", grpc: {} }"#,
    r#"{ prefix: "/CASE", case_sensitive: false }"#,
    r#"{ path: "/a" }"#,
    r#"{ path: "/a/b", headers: [{ name: x-v, present_match: true }] }"#,
    r#"{ path: "/a/b" }"#,
    r#"{ path: "/exact" }"#,
    r#"{ path: "/EXACT", case_sensitive: false }"#,
    r#"{ safe_regex: { regex: "/a/[0-9]+" } }"#,
    r#"{ safe_regex: { regex: "/svc-1.*" } }"#,
    r#"{ prefix: "/svc-1/", headers: [{ name: x-v, string_match: { exact: "2" } }] }"#,
    r#"{ prefix: "/pkg.Svc/M" }"#,
    r#"{ prefix: "/" }"#,
    r#"{ prefix: "" }"#,
    r#"{ prefix: "/caf\u00e9/" }"#,
];

const INDEXED_PATHS: [&str; 18] = [
    "/", "/a", "/a/", "/a/b", "/a/b/c", "/a/12", "/ab", "/abc", "/svc-1/", "/svc-12/x", "/svc-1x", "/pkg.Svc/M",
    "/case/x", "/exact", "/Exact", "/zzz", "/caf\u{e9}/x", "/caf\u{e8}",
];

/// Builds a route table with one virtual host for every domain and the
/// given `routes` list items.
fn one_host_table(routes: &str) -> RouteTable {
    table(&format!("name: local\nvirtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n{routes}"))
}

/// Returns the address of the route `table` picks for `request`, to compare
/// routes by identity.
fn picked_route(table: &RouteTable, request: &http::request::Parts) -> Option<*const Route> {
    match table.route("any", request) {
        RouteMatchResult::Matched(route, _, _) => Some(route as *const Route),
        RouteMatchResult::NoRoute(_) => None,
    }
}

/// Returns the position of the first route of `routes` that matches, tested
/// one by one.
fn first_in_order(routes: &[Route], request: &http::request::Parts) -> Option<usize> {
    routes.iter().position(|route| matching::matches(&route.matcher, request.uri.path(), &request.headers))
}

#[test]
fn path_index_picks_first_match() {
    let mut seed = 7u64;
    for round in 0..60 {
        // A deterministic shuffle, so each round tests another route order.
        let mut order: Vec<usize> = (0..INDEXED_MATCHES.len()).collect();
        for index in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(index, (seed >> 33) as usize % (index + 1));
        }
        let keep = if round % 3 == 0 { order.len() - 2 } else { order.len() };
        let routes: String = order[..keep]
            .iter()
            .map(|&index| format!("  - match: {}\n    route: {{ cluster: c{index} }}\n", INDEXED_MATCHES[index]))
            .collect();
        let table = one_host_table(&routes);
        assert!(table.path_indexes[0].is_some(), "{} routes are indexed", keep);
        let host_routes = &table.config.virtual_hosts[0].routes;

        for path in INDEXED_PATHS {
            for headers in [&[][..], &[("x-v", "1")], &[("x-v", "2")], &[("content-type", "application/grpc")]] {
                let mut request = http::Request::get(path);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                let request = request.body(()).unwrap().into_parts().0;

                let picked = picked_route(&table, &request);
                let expected = first_in_order(host_routes, &request).map(|index| &host_routes[index] as *const Route);
                assert_eq!(picked, expected, "round {round}, path {path}, headers {headers:?}");
            }
        }
    }
}

#[test]
fn regex_only_routes_not_indexed() {
    let routes: String = (0..path_index::INDEX_FROM_ROUTES)
        .map(|index| format!("  - match: {{ safe_regex: {{ regex: \"/r{index}/.*\" }} }}\n    route: {{ cluster: c }}\n"))
        .collect();
    let table = one_host_table(&routes);

    assert!(table.path_indexes[0].is_none());
}

#[test]
fn short_route_list_not_indexed() {
    let routes: String = (0..path_index::INDEX_FROM_ROUTES - 1)
        .map(|index| format!("  - match: {{ prefix: \"/p{index}/\" }}\n    route: {{ cluster: c }}\n"))
        .collect();
    let table = one_host_table(&routes);

    assert!(table.path_indexes[0].is_none());
    let expected = &table.config.virtual_hosts[0].routes[3];
    assert_eq!(picked_route(&table, &parts("/p3/x")), Some(expected as *const Route));
}
