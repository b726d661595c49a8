//! Legate's proto/ declares Envoy's messages with Envoy's names and field
//! numbers: bytes encoded by Legate decode with the official definitions
//! (the envoy-types crate) to the same values, and the reverse.

use prost::Message;

use envoy_types::pb::envoy as official;
use legate_api::envoy as legate;

fn parse<T: Message + Default>(yaml: &str, name: &str) -> T {
    legate_config::text::parse(yaml, name).unwrap_or_else(|errors| panic!("{name}: {errors}"))
}

/// Encodes with one definition, decodes with the other, and back; the
/// bytes after the round trip must equal the original ones, so every field
/// kept its number and type.
fn round_trip<Ours: Message + Default, Theirs: Message + Default>(ours: &Ours) -> Theirs {
    let bytes = ours.encode_to_vec();
    let theirs = Theirs::decode(bytes.as_slice()).expect("official definition decodes Legate's bytes");
    let back = Ours::decode(theirs.encode_to_vec().as_slice()).expect("Legate decodes the official bytes");
    assert_eq!(back.encode_to_vec(), bytes, "field numbers or types differ");
    theirs
}

const CLUSTER: &str = r#"
name: backend
type: EDS
eds_cluster_config: { eds_config: { ads: {}, resource_api_version: V3 }, service_name: backend-eds }
connect_timeout: 2.5s
lb_policy: LEAST_REQUEST
http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536, initial_connection_window_size: 1048576 }
dns_refresh_rate: 3s
dns_lookup_family: V4_PREFERRED
metadata: { filter_metadata: { team: { owner: payments } } }
alt_stat_name: backend_stats
common_http_protocol_options: { idle_timeout: 60s }
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: { idle_timeout: 30s }
    explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 10 } }
load_assignment:
  cluster_name: backend
  endpoints:
  - locality: { region: eu, zone: a, sub_zone: b }
    priority: 1
    lb_endpoints:
    - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }, hostname: host-a }
      health_status: DRAINING
      load_balancing_weight: 7
      metadata: { filter_metadata: { x: { y: z } } }
"#;

const LISTENER: &str = r#"
name: http
address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
stat_prefix: ingress
metadata: { filter_metadata: { a: { b: c } } }
filter_chains:
- name: chain
  metadata: { filter_metadata: { a: { b: c } } }
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      codec_type: HTTP2
      stat_prefix: hcm
      rds: { route_config_name: routes, config_source: { ads: {}, resource_api_version: V3 } }
      http2_protocol_options: { max_concurrent_streams: 50 }
      drain_timeout: 4s
      stream_idle_timeout: 300s
      request_timeout: 10s
      common_http_protocol_options: { idle_timeout: 120s }
      upgrade_configs: [{ upgrade_type: websocket, enabled: true }]
      http_filters:
      - name: envoy.filters.http.router
        typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, dynamic_stats: false }
        is_optional: true
        disabled: false
"#;

const ROUTES: &str = r#"
name: routes
ignore_port_in_host_matching: true
virtual_hosts:
- name: vh
  domains: ["*.example.com", "example.*"]
  metadata: { filter_metadata: { a: { b: c } } }
  routes:
  - name: r1
    match:
      prefix: /api
      case_sensitive: false
      headers:
      - { name: x-exact, exact_match: v }
      - { name: x-regex, safe_regex_match: { google_re2: {}, regex: "a.*" } }
      - { name: x-present, present_match: true, invert_match: true }
      - { name: x-prefix, prefix_match: p }
      - { name: x-suffix, suffix_match: s }
      - { name: x-contains, contains_match: c, treat_missing_header_as_empty: true }
      - { name: x-string, string_match: { exact: e, ignore_case: true } }
    route:
      weighted_clusters:
        clusters:
        - { name: a, weight: 30, host_rewrite_literal: a.internal, metadata_match: { filter_metadata: { x: { y: z } } } }
        - { name: b, weight: 70 }
      prefix_rewrite: /v2
      timeout: 3s
      idle_timeout: 9s
      upgrade_configs: [{ upgrade_type: websocket, enabled: false }]
      hash_policy:
      - { header: { header_name: x-user }, terminal: true }
      - { cookie: { name: sticky, ttl: 60s, path: / } }
      - { connection_properties: { source_ip: true } }
      - { query_parameter: { name: user } }
    metadata: { filter_metadata: { a: { b: c } } }
  - match: { safe_regex: { regex: "/x/[0-9]+" } }
    route: { cluster: c, host_rewrite_literal: c.internal }
  - match: { path: /direct }
    direct_response: { status: 418, body: { inline_string: teapot } }
"#;

const BOOTSTRAP: &str = r#"
node: { id: n1, cluster: c1, locality: { zone: z }, user_agent_name: legate, user_agent_version: "1", client_features: [f] }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 9901 } } }
dynamic_resources:
  lds_config: { ads: {} }
  cds_config: { ads: {} }
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{ envoy_grpc: { cluster_name: xds }, timeout: 5s }]
static_resources:
  clusters:
  - name: xds
    load_assignment: { cluster_name: xds }
"#;

#[test]
fn cluster_matches_envoy() {
    let ours: legate::config::cluster::v3::Cluster = parse(CLUSTER, "envoy.config.cluster.v3.Cluster");
    let theirs: official::config::cluster::v3::Cluster = round_trip(&ours);
    assert_eq!(theirs.name, "backend");
    assert_eq!(theirs.lb_policy, official::config::cluster::v3::cluster::LbPolicy::LeastRequest as i32);
    assert_eq!(theirs.connect_timeout.unwrap().nanos, 500_000_000);
    let endpoint = &theirs.load_assignment.unwrap().endpoints[0];
    assert_eq!(endpoint.priority, 1);
    assert_eq!(endpoint.lb_endpoints[0].load_balancing_weight.as_ref().map(|w| w.value), Some(7));
    assert!(theirs.typed_extension_protocol_options.contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));
}

#[test]
fn hashing_cluster_configs_match_envoy() {
    let ring = "name: r\nlb_policy: RING_HASH\nring_hash_lb_config: { minimum_ring_size: 2048, maximum_ring_size: 4096, hash_function: XX_HASH }";
    let ours: legate::config::cluster::v3::Cluster = parse(ring, "envoy.config.cluster.v3.Cluster");
    let theirs: official::config::cluster::v3::Cluster = round_trip(&ours);
    let Some(official::config::cluster::v3::cluster::LbConfig::RingHashLbConfig(config)) = theirs.lb_config else {
        panic!("ring_hash_lb_config lost");
    };
    assert_eq!(config.minimum_ring_size.map(|v| v.value), Some(2048));

    let maglev = "name: m\nlb_policy: MAGLEV\nmaglev_lb_config: { table_size: 65537 }";
    let ours: legate::config::cluster::v3::Cluster = parse(maglev, "envoy.config.cluster.v3.Cluster");
    let theirs: official::config::cluster::v3::Cluster = round_trip(&ours);
    assert_eq!(theirs.lb_policy, official::config::cluster::v3::cluster::LbPolicy::Maglev as i32);
}

#[test]
fn listener_matches_envoy() {
    let ours: legate::config::listener::v3::Listener = parse(LISTENER, "envoy.config.listener.v3.Listener");
    let theirs: official::config::listener::v3::Listener = round_trip(&ours);
    let filter = &theirs.filter_chains[0].filters[0];
    let Some(official::config::listener::v3::filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("typed_config missing");
    };
    assert_eq!(any.type_url, "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");

    use official::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager as Hcm;
    let ours_hcm = legate::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let theirs_hcm: Hcm = round_trip(&ours_hcm);
    assert_eq!(theirs_hcm.stat_prefix, "hcm");
    assert_eq!(theirs_hcm.upgrade_configs[0].upgrade_type, "websocket");
    assert_eq!(theirs_hcm.request_timeout.unwrap().seconds, 10);
    let router = theirs_hcm.http_filters[0].config_type.clone().unwrap();
    let official::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(router) = router else {
        panic!("router typed_config missing");
    };
    let ours_router = legate::extensions::filters::http::router::v3::Router::decode(router.value.as_slice()).unwrap();
    let _: official::extensions::filters::http::router::v3::Router = round_trip(&ours_router);
}

#[test]
fn route_configuration_matches_envoy() {
    let ours: legate::config::route::v3::RouteConfiguration = parse(ROUTES, "envoy.config.route.v3.RouteConfiguration");
    let theirs: official::config::route::v3::RouteConfiguration = round_trip(&ours);
    let route = &theirs.virtual_hosts[0].routes[0];
    assert_eq!(route.name, "r1");
    assert_eq!(route.r#match.as_ref().unwrap().headers.len(), 7);
    let Some(official::config::route::v3::route::Action::Route(action)) = &route.action else { panic!("route action lost") };
    assert_eq!(action.hash_policy.len(), 4);
    assert!(action.hash_policy[0].terminal);
    assert!(theirs.ignore_port_in_host_matching);
}

#[test]
fn bootstrap_and_discovery_match_envoy() {
    let ours: legate::config::bootstrap::v3::Bootstrap = parse(BOOTSTRAP, "envoy.config.bootstrap.v3.Bootstrap");
    let theirs: official::config::bootstrap::v3::Bootstrap = round_trip(&ours);
    assert_eq!(theirs.node.unwrap().id, "n1");

    let cluster: legate::config::cluster::v3::Cluster = parse(CLUSTER, "envoy.config.cluster.v3.Cluster");
    let response = legate::service::discovery::v3::DiscoveryResponse {
        version_info: "7".into(),
        resources: vec![prost_types::Any { type_url: legate_config::ResourceType::Cluster.type_url().into(), value: cluster.encode_to_vec() }],
        canary: false,
        type_url: legate_config::ResourceType::Cluster.type_url().into(),
        nonce: "n".into(),
    };
    let theirs: official::service::discovery::v3::DiscoveryResponse = round_trip(&response);
    assert_eq!(theirs.resources[0].type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    let decoded = official::config::cluster::v3::Cluster::decode(theirs.resources[0].value.as_slice()).unwrap();
    assert_eq!(decoded.name, "backend");

    let nack = legate::service::discovery::v3::DiscoveryRequest {
        version_info: "6".into(),
        node: Some(legate::config::core::v3::Node { id: "p".into(), ..Default::default() }),
        resource_names: vec!["a".into()],
        type_url: legate_config::ResourceType::Listener.type_url().into(),
        response_nonce: "n".into(),
        error_detail: Some(legate_api::google::rpc::Status { code: 3, message: "bad".into(), details: vec![] }),
    };
    let theirs: official::service::discovery::v3::DiscoveryRequest = round_trip(&nack);
    assert_eq!(theirs.error_detail.unwrap().message, "bad");
}

#[test]
fn official_encoding_decodes_in_legate() {
    let theirs = official::config::endpoint::v3::ClusterLoadAssignment {
        cluster_name: "svc".into(),
        endpoints: vec![official::config::endpoint::v3::LocalityLbEndpoints {
            lb_endpoints: vec![official::config::endpoint::v3::LbEndpoint {
                load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 3 }),
                host_identifier: Some(official::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    official::config::endpoint::v3::Endpoint {
                        address: Some(official::config::core::v3::Address {
                            address: Some(official::config::core::v3::address::Address::SocketAddress(
                                official::config::core::v3::SocketAddress {
                                    address: "127.0.0.1".into(),
                                    port_specifier: Some(official::config::core::v3::socket_address::PortSpecifier::PortValue(9000)),
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let any = prost_types::Any {
        type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
        value: theirs.encode_to_vec(),
    };
    let decoded = legate_config::resource::decode_any(&any).expect("Legate accepts the official encoding");
    let legate_config::Resource::ClusterLoadAssignment(assignment) = decoded.value else { panic!("wrong type") };
    assert_eq!(assignment.endpoints[0].weight, 3);
    assert_eq!(assignment.endpoints[0].address, legate_config::model::EndpointAddress::Socket("127.0.0.1:9000".parse().unwrap()));
}

#[test]
fn unknown_field_in_binary_is_rejected_by_number() {
    // An official Cluster with a field Legate does not implement
    // (upstream_bind_config, field 21).
    let theirs = official::config::cluster::v3::Cluster {
        name: "c".into(),
        upstream_bind_config: Some(Default::default()),
        load_assignment: Some(official::config::endpoint::v3::ClusterLoadAssignment { cluster_name: "c".into(), ..Default::default() }),
        ..Default::default()
    };
    let any = prost_types::Any { type_url: legate_config::ResourceType::Cluster.type_url().into(), value: theirs.encode_to_vec() };
    let errors = legate_config::resource::decode_any(&any).expect_err("unknown field is rejected");
    let text = errors.to_string();
    assert!(text.contains("field number 21") && text.contains("envoy.config.cluster.v3.Cluster"), "got {text}");
}

const GRPC_ROUTES: &str = r#"
name: grpc
virtual_hosts:
- name: web
  domains: ["*"]
  cors:
    allow_origin_string_match: [{ exact: "https://app.example" }, { suffix: ".example.org" }]
    allow_methods: "POST, OPTIONS"
    allow_headers: "content-type,x-grpc-web"
    expose_headers: "grpc-status,grpc-message"
    max_age: "600"
    allow_credentials: true
  routes:
  - match: { prefix: "/pkg.Svc/", grpc: {} }
    route:
      cluster: grpc
      max_stream_duration: { max_stream_duration: 30s, grpc_timeout_header_max: 10s, grpc_timeout_header_offset: 0.1s }
      cors: { allow_origin_string_match: [{ prefix: "https://" }], max_age: "60" }
"#;

#[test]
fn grpc_route_fields_match_envoy() {
    let ours: legate::config::route::v3::RouteConfiguration = parse(GRPC_ROUTES, "envoy.config.route.v3.RouteConfiguration");
    let theirs: official::config::route::v3::RouteConfiguration = round_trip(&ours);
    let host = &theirs.virtual_hosts[0];
    #[allow(deprecated)]
    let cors = host.cors.as_ref().expect("virtual host cors kept");
    assert_eq!(cors.allow_origin_string_match.len(), 2);
    assert_eq!(cors.allow_credentials.map(|value| value.value), Some(true));
    let route = &host.routes[0];
    assert!(route.r#match.as_ref().unwrap().grpc.is_some());
    let Some(official::config::route::v3::route::Action::Route(action)) = &route.action else { panic!("route action lost") };
    let limits = action.max_stream_duration.as_ref().expect("max_stream_duration kept");
    assert_eq!(limits.grpc_timeout_header_max.as_ref().unwrap().seconds, 10);
    assert_eq!(limits.grpc_timeout_header_offset.as_ref().unwrap().nanos, 100_000_000);
}

#[test]
fn grpc_filter_configs_match_envoy() {
    use legate::extensions::filters::http as ours;
    use official::extensions::filters::http as theirs;

    let stats: ours::grpc_stats::v3::FilterConfig = parse(
        "individual_method_stats_allowlist: { services: [{ name: pkg.Svc, method_names: [A, B] }] }",
        "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    );
    let official_stats: theirs::grpc_stats::v3::FilterConfig = round_trip(&stats);
    assert!(official_stats.per_method_stat_specifier.is_some());
    let all: ours::grpc_stats::v3::FilterConfig =
        parse("stats_for_all_methods: true", "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig");
    let _: theirs::grpc_stats::v3::FilterConfig = round_trip(&all);

    let policy: ours::cors::v3::CorsPolicy = parse(
        r#"{ allow_origin_string_match: [{ exact: "https://a" }], allow_methods: POST, allow_headers: x, expose_headers: grpc-status, max_age: "5", allow_credentials: false }"#,
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
    );
    let official_policy: theirs::cors::v3::CorsPolicy = round_trip(&policy);
    assert_eq!(official_policy.expose_headers, "grpc-status");
    assert_eq!(official_policy.allow_credentials.map(|value| value.value), Some(false));
    let _: theirs::cors::v3::Cors = round_trip(&ours::cors::v3::Cors {});
    let _: theirs::grpc_web::v3::GrpcWeb = round_trip(&ours::grpc_web::v3::GrpcWeb {});

    let transcoder: ours::grpc_json_transcoder::v3::GrpcJsonTranscoder = parse(
        r#"{ proto_descriptor_bin: "AAEC", services: [pkg.Svc], print_options: { add_whitespace: true, always_print_primitive_fields: true,
             always_print_enums_as_ints: true, preserve_proto_field_names: true, stream_newline_delimited: true },
             match_incoming_request_route: true, ignored_query_parameters: [key], auto_mapping: true, ignore_unknown_query_parameters: true,
             convert_grpc_status: true, url_unescape_spec: ALL_CHARACTERS, request_validation_options: { reject_unknown_method: true,
             reject_unknown_query_parameters: true, reject_binding_body_field_collisions: true }, query_param_unescape_plus: true,
             match_unregistered_custom_verb: true, case_insensitive_enum_parsing: true, max_request_body_size: 10, max_response_body_size: 20 }"#,
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
    );
    let official_transcoder: theirs::grpc_json_transcoder::v3::GrpcJsonTranscoder = round_trip(&transcoder);
    assert_eq!(official_transcoder.services, ["pkg.Svc"]);
    assert_eq!(official_transcoder.max_response_body_size.map(|value| value.value), Some(20));
}

#[test]
fn tls_configs_match_envoy() {
    use legate::extensions::transport_sockets::tls::v3 as ours;
    use official::extensions::transport_sockets::tls::v3 as theirs;

    let downstream: ours::DownstreamTlsContext = parse(
        r#"
require_client_certificate: true
common_tls_context:
  tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
  tls_certificates: [{ certificate_chain: { filename: /a.crt }, private_key: { inline_string: key } }]
  validation_context:
    trusted_ca: { inline_bytes: Y2E= }
    match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: "spiffe://a/" } }]
  alpn_protocols: [h2, http/1.1]
"#,
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    );
    let official_downstream: theirs::DownstreamTlsContext = round_trip(&downstream);
    assert_eq!(official_downstream.require_client_certificate.map(|value| value.value), Some(true));
    let common = official_downstream.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(common.tls_params.unwrap().tls_minimum_protocol_version, theirs::tls_parameters::TlsProtocol::TlSv12 as i32);
    let Some(theirs::common_tls_context::ValidationContextType::ValidationContext(validation)) = common.validation_context_type else {
        panic!("validation_context missing");
    };
    assert_eq!(validation.match_typed_subject_alt_names[0].san_type, theirs::subject_alt_name_matcher::SanType::Uri as i32);

    let upstream: ours::UpstreamTlsContext =
        parse("{ sni: backend.internal, common_tls_context: { alpn_protocols: [h2] } }", "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    let official_upstream: theirs::UpstreamTlsContext = round_trip(&upstream);
    assert_eq!(official_upstream.sni, "backend.internal");

    let inspector = legate::extensions::filters::listener::tls_inspector::v3::TlsInspector {};
    let _: official::extensions::filters::listener::tls_inspector::v3::TlsInspector = round_trip(&inspector);
}

#[test]
fn tls_listener_and_cluster_fields_match_envoy() {
    let listener: legate::config::listener::v3::Listener = parse(
        r#"
name: https
listener_filters: [{ name: envoy.filters.listener.tls_inspector, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector } }]
filter_chains:
- filter_chain_match: { server_names: [a.example.com, "*.example.com"] }
  transport_socket_connect_timeout: 3s
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: { alpn_protocols: [h2] } }
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: s
      forward_client_cert_details: APPEND_FORWARD
      set_current_client_cert_details: { subject: true, cert: true, chain: true, dns: true, uri: true }
"#,
        "envoy.config.listener.v3.Listener",
    );
    let theirs: official::config::listener::v3::Listener = round_trip(&listener);
    assert_eq!(theirs.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let chain = &theirs.filter_chains[0];
    assert_eq!(chain.filter_chain_match.as_ref().unwrap().server_names, ["a.example.com", "*.example.com"]);
    assert_eq!(chain.transport_socket_connect_timeout.unwrap().seconds, 3);
    assert_eq!(chain.transport_socket.as_ref().unwrap().name, "envoy.transport_sockets.tls");

    let Some(official::config::listener::v3::filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("typed_config missing");
    };
    use official::extensions::filters::network::http_connection_manager::v3::{http_connection_manager, HttpConnectionManager};
    let ours_hcm = legate::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let theirs_hcm: HttpConnectionManager = round_trip(&ours_hcm);
    assert_eq!(theirs_hcm.forward_client_cert_details, http_connection_manager::ForwardClientCertDetails::AppendForward as i32);
    let details = theirs_hcm.set_current_client_cert_details.unwrap();
    assert!(details.subject.unwrap().value);
    assert!(details.cert);
    assert!(details.chain);
    assert!(details.dns);
    assert!(details.uri);

    let cluster: legate::config::cluster::v3::Cluster = parse(
        r#"{ name: c, transport_socket: { name: tls, typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: x } } }"#,
        "envoy.config.cluster.v3.Cluster",
    );
    let theirs_cluster: official::config::cluster::v3::Cluster = round_trip(&cluster);
    assert_eq!(theirs_cluster.transport_socket.unwrap().name, "tls");

    let source: legate::config::core::v3::DataSource = parse("{ filename: /etc/a.crt }", "envoy.config.core.v3.DataSource");
    let theirs_source: official::config::core::v3::DataSource = round_trip(&source);
    assert_eq!(theirs_source.specifier, Some(official::config::core::v3::data_source::Specifier::Filename("/etc/a.crt".into())));
}

#[test]
fn connection_filter_configs_match_envoy() {
    use legate::extensions::filters::network as ours;
    use official::extensions::filters::network as theirs;

    let rate: ours::local_ratelimit::v3::LocalRateLimit = parse(
        "{ stat_prefix: conn, token_bucket: { max_tokens: 5, tokens_per_fill: 2, fill_interval: 1s }, runtime_enabled: { default_value: false }, share_key: k }",
        "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
    );
    let official_rate: theirs::local_ratelimit::v3::LocalRateLimit = round_trip(&rate);
    assert_eq!(official_rate.token_bucket.as_ref().map(|bucket| bucket.max_tokens), Some(5));
    assert_eq!(official_rate.runtime_enabled.as_ref().and_then(|flag| flag.default_value).map(|value| value.value), Some(false));
    assert_eq!(official_rate.share_key, "k");

    let limit: ours::connection_limit::v3::ConnectionLimit = parse(
        "{ stat_prefix: cap, max_connections: 3, delay: 0.5s, runtime_enabled: { default_value: true } }",
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
    );
    let official_limit: theirs::connection_limit::v3::ConnectionLimit = round_trip(&limit);
    assert_eq!(official_limit.max_connections.map(|max| max.value), Some(3));
    assert_eq!(official_limit.delay.as_ref().map(|delay| delay.nanos), Some(500_000_000));
}

#[test]
fn sds_secrets_match_envoy() {
    use legate::extensions::transport_sockets::tls::v3 as ours;
    use official::extensions::transport_sockets::tls::v3 as theirs;

    let certificate: ours::Secret = parse(
        "{ name: cert, tls_certificate: { certificate_chain: { filename: /a.crt }, private_key: { inline_string: key } } }",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
    );
    let official_certificate: theirs::Secret = round_trip(&certificate);
    assert_eq!(official_certificate.name, "cert");
    assert!(matches!(official_certificate.r#type, Some(theirs::secret::Type::TlsCertificate(_))));

    let validation: ours::Secret =
        parse("{ name: ca, validation_context: { trusted_ca: { inline_bytes: Y2E= } } }", "envoy.extensions.transport_sockets.tls.v3.Secret");
    let official_validation: theirs::Secret = round_trip(&validation);
    assert!(matches!(official_validation.r#type, Some(theirs::secret::Type::ValidationContext(_))));

    let generic: ours::Secret =
        parse("{ name: token, generic_secret: { secret: { inline_string: s } } }", "envoy.extensions.transport_sockets.tls.v3.Secret");
    let official_generic: theirs::Secret = round_trip(&generic);
    let Some(theirs::secret::Type::GenericSecret(secret)) = official_generic.r#type else { panic!("generic_secret missing") };
    assert!(secret.secret.is_some());

    let context: ours::CommonTlsContext = parse(
        "{ tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }], \
           validation_context_sds_secret_config: { name: ca, sds_config: { ads: {} } } }",
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
    );
    let official_context: theirs::CommonTlsContext = round_trip(&context);
    assert_eq!(official_context.tls_certificate_sds_secret_configs[0].name, "cert");
    assert!(official_context.tls_certificate_sds_secret_configs[0].sds_config.is_some());
    let Some(theirs::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(config)) = official_context.validation_context_type
    else {
        panic!("validation_context_sds_secret_config missing");
    };
    assert_eq!(config.name, "ca");
}
