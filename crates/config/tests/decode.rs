//! Decoding Envoy-format YAML into Legate's model: what is accepted, what
//! is rejected, and how errors name the problem.

mod support;

use legate_api::envoy::config::bootstrap::v3::Bootstrap;
use legate_config::model::{ClusterSelection, DiscoveryType, LbPolicy, RouteAction, UpstreamProtocol};
use legate_config::resource::decode_any;
use legate_config::text::{parse, parse_resources};
use legate_config::{ConfigErrors, Resource};

/// Decodes every resource of an apply file; returns the model values or all
/// errors joined.
fn decode(yaml: &str) -> Result<Vec<Resource>, String> {
    let resources = parse_resources(yaml).map_err(|errors| errors.to_string())?;
    let mut decoded = Vec::new();
    let mut errors = Vec::new();
    for any in &resources {
        match decode_any(any) {
            Ok(resource) => decoded.push(resource.value),
            Err(ConfigErrors(list)) => errors.extend(list.into_iter().map(|e| e.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(decoded)
    } else {
        Err(errors.join("\n"))
    }
}

fn cluster_yaml(body: &str) -> String {
    format!("resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n{body}")
}

#[test]
fn unknown_yaml_field_names_its_path() {
    let error = decode(&cluster_yaml("  name: c\n  upstream_bind_config: {}\n")).unwrap_err();
    assert!(error.contains("upstream_bind_config"), "got {error}");
    assert!(error.contains("resources[0]"), "path to the field: {error}");
}

#[test]
fn unknown_field_inside_typed_config_is_rejected() {
    let yaml = r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l
  address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: s
        use_remote_address: true
"#;
    let error = decode(yaml).unwrap_err();
    assert!(error.contains("use_remote_address"), "got {error}");
}

#[test]
fn unsupported_extension_type_is_rejected() {
    let yaml = r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l
  address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
"#;
    let error = decode(yaml).unwrap_err();
    assert!(error.contains("tcp_proxy"), "got {error}");
}

#[test]
fn cluster_defaults_and_protocol() {
    let yaml = cluster_yaml(
        r#"  name: c
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config: { http2_protocol_options: {} }
  load_assignment:
    cluster_name: c
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "::1", port_value: 8 } } }, load_balancing_weight: 3 }] }]
"#,
    );
    let resources = decode(&yaml).unwrap();
    let Resource::Cluster(cluster) = &resources[0] else { panic!("not a cluster") };
    assert_eq!(cluster.discovery, DiscoveryType::Static);
    assert_eq!(cluster.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(cluster.protocol, UpstreamProtocol::Http2);
    assert_eq!(cluster.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(cluster.load_assignment.as_ref().unwrap().endpoints[0].weight, 3);
}

#[test]
fn cluster_value_errors_are_all_listed() {
    let yaml = cluster_yaml(
        r#"  name: c
  type: EDS
  lb_policy: CLUSTER_PROVIDED
  connect_timeout: 0s
  load_assignment: { cluster_name: c }
"#,
    );
    let error = decode(&yaml).unwrap_err();
    assert!(error.contains("CLUSTER_PROVIDED"), "unsupported policy: {error}");
    assert!(error.contains("connect_timeout"), "zero timeout: {error}");
    assert!(error.contains("load_assignment"), "inline endpoints on EDS: {error}");
    assert!(error.contains("eds_config"), "missing ADS source: {error}");
}

#[test]
fn host_names_only_in_strict_dns() {
    let endpoints = "load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: backend.local, port_value: 80 } } } }] }] }";
    assert!(decode(&cluster_yaml(&format!("  name: c\n  type: STRICT_DNS\n  {endpoints}\n"))).is_ok());
    let error = decode(&cluster_yaml(&format!("  name: c\n  {endpoints}\n"))).unwrap_err();
    assert!(error.contains("not an IP address"), "got {error}");
}

fn routes_yaml(body: &str) -> String {
    format!("resources:\n- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration\n  name: r\n{body}")
}

#[test]
fn route_errors_name_their_place() {
    let yaml = routes_yaml(
        r#"  virtual_hosts:
  - name: a
    domains: ["a.com", "*.*.com"]
    routes:
    - match: { safe_regex: { regex: "(" } }
      route: { cluster: x }
    - match: { prefix: "/" }
      route: { weighted_clusters: { clusters: [{ name: x, weight: 0 }] } }
    - match: { prefix: "/d" }
      direct_response: { status: 99 }
  - name: b
    domains: ["A.com"]
    routes: []
"#,
    );
    let error = decode(&yaml).unwrap_err();
    assert!(error.contains("virtual_hosts[0].domains[1]"), "bad wildcard: {error}");
    assert!(error.contains("virtual_hosts[0].routes[0].match.safe_regex"), "bad regex: {error}");
    assert!(error.contains("weights must be greater than 0"), "zero weights: {error}");
    assert!(error.contains("status 99"), "bad status: {error}");
    assert!(error.contains("\"A.com\" is also in virtual host \"a\""), "duplicate domain: {error}");
}

#[test]
fn route_actions_decode() {
    let yaml = routes_yaml(
        r#"  virtual_hosts:
  - name: a
    domains: ["*"]
    routes:
    - match: { prefix: "/w" }
      route: { weighted_clusters: { clusters: [{ name: x, weight: 1 }, { name: y, weight: 3 }] }, timeout: 0s }
    - match: { path: "/d" }
      direct_response: { status: 204 }
"#,
    );
    let resources = decode(&yaml).unwrap();
    let Resource::RouteConfiguration(routes) = &resources[0] else { panic!("not routes") };
    let routes = &routes.virtual_hosts[0].routes;
    let RouteAction::Forward(action) = &routes[0].action else { panic!("not forward") };
    assert!(matches!(action.clusters, ClusterSelection::Weighted { total_weight: 4, .. }));
    assert_eq!(action.timeout, None, "0s disables the route timeout");
    assert!(matches!(routes[1].action, RouteAction::DirectResponse { status: 204, .. }));
}

/// Builds a route configuration with one virtual host for every domain,
/// containing `routes` (YAML list items indented by four spaces).
fn catch_all_host_yaml(routes: &str) -> String {
    routes_yaml(&format!("  virtual_hosts:\n  - name: a\n    domains: [\"*\"]\n    routes:\n{routes}"))
}

#[test]
fn host_rewrites_parse_when_loaded() {
    let yaml = catch_all_host_yaml(
        r#"    - match: { prefix: "/w" }
      route: { weighted_clusters: { clusters: [{ name: x, weight: 1, host_rewrite_literal: "x.internal:8080" }] } }
    - match: { prefix: "/" }
      route: { cluster: y, host_rewrite_literal: y.internal }
"#,
    );
    let resources = decode(&yaml).unwrap();
    let Resource::RouteConfiguration(routes) = &resources[0] else { panic!("not routes") };
    let routes = &routes.virtual_hosts[0].routes;

    let RouteAction::Forward(weighted) = &routes[0].action else { panic!("not forward") };
    let ClusterSelection::Weighted { clusters, .. } = &weighted.clusters else { panic!("not weighted") };
    let rewrite = clusters[0].host_rewrite.as_ref().expect("cluster host rewrite");
    assert_eq!(rewrite.header, "x.internal:8080");
    assert_eq!(rewrite.authority.port_u16(), Some(8080));

    let RouteAction::Forward(single) = &routes[1].action else { panic!("not forward") };
    assert_eq!(single.host_rewrite.as_ref().map(|rewrite| rewrite.authority.as_str()), Some("y.internal"));
}

#[test]
fn invalid_host_rewrites_are_rejected() {
    let yaml = catch_all_host_yaml(
        r#"    - match: { prefix: "/w" }
      route: { weighted_clusters: { clusters: [{ name: x, weight: 1, host_rewrite_literal: "a b" }] } }
    - match: { prefix: "/e" }
      route: { cluster: y, host_rewrite_literal: "" }
    - match: { prefix: "/" }
      route: { cluster: y, host_rewrite_literal: "bad\nhost" }
"#,
    );
    let error = decode(&yaml).unwrap_err();

    assert!(error.contains("clusters[0].host_rewrite_literal"), "space: {error}");
    assert!(error.contains("\"a b\" is not a valid host"), "value named: {error}");
    assert!(error.contains("routes[1].route.host_rewrite_literal"), "empty: {error}");
    assert!(error.contains("routes[2].route.host_rewrite_literal"), "control character: {error}");
}

#[test]
fn ignored_fields_are_reported() {
    let resources = parse_resources(&cluster_yaml(
        "  name: c\n  alt_stat_name: x\n  metadata: { filter_metadata: { a: { b: c } } }\n  load_assignment: { cluster_name: c }\n",
    ))
    .unwrap();
    let decoded = decode_any(&resources[0]).unwrap();
    assert!(decoded.ignored.iter().any(|field| field.ends_with("alt_stat_name")), "{:?}", decoded.ignored);
    assert!(decoded.ignored.iter().any(|field| field.ends_with("metadata")), "{:?}", decoded.ignored);
}

#[test]
fn bootstrap_checks_references() {
    let yaml = r#"
dynamic_resources:
  ads_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: missing } }] }
  cds_config: { ads: {} }
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains: [{ filters: [{ name: hcm, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r, virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: nowhere } }] }] }, http_filters: [{ name: envoy.filters.http.router }] } }] }]
"#;
    let proto: Bootstrap = parse(yaml, "envoy.config.bootstrap.v3.Bootstrap").unwrap();
    let error = legate_config::decode::bootstrap(&proto).unwrap_err().to_string();
    assert!(error.contains("\"missing\" is not a static cluster"), "got {error}");

    let static_only = yaml.replace("  cds_config: { ads: {} }\n", "").replace("dynamic_resources:\n  ads_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: missing } }] }\n", "");
    let proto: Bootstrap = parse(&static_only, "envoy.config.bootstrap.v3.Bootstrap").unwrap();
    let error = legate_config::decode::bootstrap(&proto).unwrap_err().to_string();
    assert!(error.contains("cluster \"nowhere\" does not exist"), "got {error}");
}

#[test]
fn duplicate_listener_addresses_are_rejected() {
    let listener = |name: &str| {
        format!(
            r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8000 }} }}
  filter_chains: [{{ filters: [{{ name: hcm, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {{ name: r }}, http_filters: [{{ name: envoy.filters.http.router }}] }} }}] }}]
"#
        )
    };
    let yaml = format!("resources:\n{}{}", listener("one"), listener("two"));
    let resources = decode(&yaml).unwrap();
    let errors = legate_config::validate::snapshot(&resources).to_string();
    assert!(errors.contains("127.0.0.1:8000 is also used by listener \"one\""), "got {errors}");
}

#[test]
fn every_unknown_field_is_listed() {
    let yaml = r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  upstream_bind_config: {}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
  cluster_type: {}
  load_assignment: { cluster_name: b, endpoints: [{ lb_endpoints: [{ endpoint: { adress: {} } }] }] }
- "@type": type.googleapis.com/envoy.config.cluster.v3.Clustr
  name: c
"#;
    let errors = parse_resources(yaml).unwrap_err().to_string();
    assert!(errors.contains("resources[0].upstream_bind_config"), "got {errors}");
    assert!(errors.contains("resources[1].cluster_type"), "got {errors}");
    assert!(errors.contains("resources[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.adress"), "got {errors}");
    assert!(errors.contains("envoy.config.cluster.v3.Clustr"), "got {errors}");
}

#[test]
fn wrong_value_type_names_path_and_value() {
    let yaml = cluster_yaml("  name: c\n  connect_timeout: 1s\n  load_assignment: { cluster_name: c, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: many } } } }] }] }\n");
    let errors = parse_resources(&yaml).unwrap_err().to_string();
    assert!(errors.contains("resources[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"), "got {errors}");
    assert!(errors.contains("(found \"many\")"), "got {errors}");
}

#[test]
fn resource_parses_to_its_type_url_and_bytes() {
    let resources = parse_resources(&cluster_yaml("  name: c\n  connect_timeout: 2s\n")).unwrap();
    assert_eq!(resources[0].type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    let cluster = <legate_api::envoy::config::cluster::v3::Cluster as prost::Message>::decode(resources[0].value.as_slice()).unwrap();
    assert_eq!(cluster.name, "c");
    assert_eq!(cluster.connect_timeout.map(|timeout| timeout.seconds), Some(2));
}

#[test]
fn empty_or_shapeless_files_are_explained() {
    let empty = parse_resources("").unwrap_err().to_string();
    assert!(empty.contains("empty"), "got {empty}");
    let list = parse_resources("- a\n- b\n").unwrap_err().to_string();
    assert!(list.contains("`resources`"), "got {list}");
}

/// Renders a listener whose connection manager runs `filter` (an `http_filters`
/// item body, indented by eight spaces) before the router.
fn listener_with_filter(filter: &str) -> String {
    support::listener_with_filters(support::RDS, filter)
}

#[test]
fn api_key_auth_decodes_and_rejects_unknown_fields() {
    let filter = r#"        - name: envoy.filters.http.api_key_auth
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth
            credentials: [{ key: k1, client: c1 }]
            key_sources: [{ header: x-api-key }, { query: api_key }, { cookie: session }]
            forwarding: { header: x-client-id, hide_credentials: true }"#;
    assert!(decode(&listener_with_filter(filter)).is_ok());

    let unknown = filter.replace("forwarding:", "allowed_clients: [c1]\n            forwarding:");
    let error = decode(&listener_with_filter(&unknown)).unwrap_err();
    assert!(error.contains("allowed_clients"), "got {error}");

    let duplicate = filter.replace("[{ key: k1, client: c1 }]", "[{ key: k1, client: c1 }, { key: k1, client: c2 }]");
    let error = decode(&listener_with_filter(&duplicate)).unwrap_err();
    assert!(error.contains("credentials[1]"), "got {error}");
    assert!(error.contains("\"c2\""), "got {error}");
    assert!(!error.contains("k1"), "the key is in the error: {error}");

    let no_source = filter.replace("key_sources: [{ header: x-api-key }, { query: api_key }, { cookie: session }]", "key_sources: []");
    assert!(decode(&listener_with_filter(&no_source)).unwrap_err().contains("key_sources"));
}

/// Renders a route configuration with one virtual host, with `host` fields (lines
/// indented by four spaces), and one route matching every path, with
/// `route` fields (indented by six).
fn one_route_yaml(host: &str, route: &str) -> String {
    routes_yaml(&format!("  virtual_hosts:\n  - name: h\n    domains: [\"*\"]\n{host}    routes:\n    - match: {{ prefix: \"/\" }}\n{route}"))
}

#[test]
fn api_key_auth_per_route_entries() {
    let per_route = |entry: &str| {
        one_route_yaml("", &format!("      route: {{ cluster: c }}\n      typed_per_filter_config:\n        envoy.filters.http.api_key_auth:\n{entry}"))
    };
    let allowed = "          \"@type\": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute\n          allowed_clients: [c1]";
    assert!(decode(&per_route(allowed)).is_ok());
    let disabled = "          \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n          disabled: true";
    assert!(decode(&per_route(disabled)).is_ok());
    let not_disabled = "          \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n          disabled: false";
    assert!(decode(&per_route(not_disabled)).unwrap_err().contains("disabled"));
    let unknown = format!("{allowed}\n          hide_credentials: true");
    assert!(decode(&per_route(&unknown)).unwrap_err().contains("hide_credentials"));
}

#[test]
fn local_ratelimit_decodes_and_rejects_unknown_fields() {
    let filter = r#"        - name: envoy.filters.http.local_ratelimit
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: edge
            status: { code: ServiceUnavailable }
            token_bucket: { max_tokens: 60, tokens_per_fill: 60, fill_interval: 60s }
            filter_enabled: { default_value: { numerator: 50, denominator: HUNDRED } }
            filter_enforced: { default_value: { numerator: 100 } }
            response_headers_to_add: [{ header: { key: x-limited, value: "yes" } }]
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            rate_limited_as_resource_exhausted: true
            descriptors: [{ entries: [{ key: client, value: "" }], token_bucket: { max_tokens: 2, tokens_per_fill: 2, fill_interval: 1s } }]"#;
    assert!(decode(&listener_with_filter(filter)).is_ok());

    let unknown = filter.replace("stat_prefix: edge", "stat_prefix: edge\n            local_rate_limit_per_downstream_connection: true");
    let error = decode(&listener_with_filter(&unknown)).unwrap_err();
    assert!(error.contains("local_rate_limit_per_downstream_connection"), "got {error}");

    let fast = filter.replace("fill_interval: 60s", "fill_interval: 0.01s");
    assert!(decode(&listener_with_filter(&fast)).unwrap_err().contains("fill_interval"));
}

#[test]
fn route_rate_limit_actions_decode() {
    let routes = |actions: &str| {
        let host = "    rate_limits: [{ actions: [{ remote_address: {} }] }]\n";
        one_route_yaml(host, &format!("      route:\n        cluster: c\n        rate_limits: [{{ actions: [{actions}] }}]"))
    };
    assert!(decode(&routes("{ request_headers: { header_name: x-client, descriptor_key: client } }, { generic_key: { descriptor_value: v } }")).is_ok());
    let error = decode(&routes("{ destination_cluster: {} }")).unwrap_err();
    assert!(error.contains("destination_cluster"), "got {error}");
    let error = decode(&routes("{ request_headers: { header_name: x-client } }")).unwrap_err();
    assert!(error.contains("descriptor_key"), "got {error}");
}

#[test]
fn ext_authz_decodes_and_rejects_unknown_fields() {
    let http = r#"        - name: envoy.filters.http.ext_authz
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
            failure_mode_allow: true
            allowed_headers: { patterns: [{ prefix: x-tenant- }] }
            http_service:
              server_uri: { uri: "http://auth", cluster: auth, timeout: 1s }
              path_prefix: /check
              authorization_request: { allowed_headers: { patterns: [{ exact: cookie }] } }
              authorization_response: { allowed_upstream_headers: { patterns: [{ prefix: x-user- }] } }"#;
    assert!(decode(&listener_with_filter(http)).is_ok());
    let grpc = r#"        - name: envoy.filters.http.ext_authz
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
            grpc_service: { envoy_grpc: { cluster_name: auth }, timeout: 0.5s }"#;
    assert!(decode(&listener_with_filter(grpc)).is_ok());

    let body = format!("{grpc}\n            with_request_body: {{ max_request_bytes: 1024 }}");
    let error = decode(&listener_with_filter(&body)).unwrap_err();
    assert!(error.contains("with_request_body"), "got {error}");
    let no_service = "        - name: envoy.filters.http.ext_authz\n          typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz }";
    assert!(decode(&listener_with_filter(no_service)).unwrap_err().contains("http_service or grpc_service"));
}

#[test]
fn ext_authz_cluster_must_exist() {
    let yaml = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains: [{ filters: [{ name: hcm, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r, virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: "/" }, direct_response: { status: 200 } }] }] }, http_filters: [{ name: envoy.filters.http.ext_authz, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, grpc_service: { envoy_grpc: { cluster_name: authz } } } }, { name: envoy.filters.http.router }] } }] }]
"#;
    let proto: Bootstrap = parse(yaml, "envoy.config.bootstrap.v3.Bootstrap").unwrap();
    let error = legate_config::decode::bootstrap(&proto).unwrap_err().to_string();
    assert!(error.contains("cluster \"authz\" does not exist"), "got {error}");
    assert!(error.contains("grpc_service.envoy_grpc.cluster_name"), "got {error}");
}

#[test]
fn static_cluster_without_load_assignment_has_no_hosts() {
    let decoded = decode(&cluster_yaml("  name: empty\n  type: STATIC\n  connect_timeout: 1s\n")).unwrap();
    let Some(Resource::Cluster(cluster)) = decoded.first() else { panic!("a cluster: {decoded:?}") };
    let assignment = cluster.load_assignment.as_ref().expect("an empty assignment");
    assert_eq!(assignment.cluster_name, "empty");
    assert!(assignment.endpoints.is_empty());
}
