//! Decoding the connection filters of a filter chain: the connection rate
//! limit and the connection limit before the HTTP connection manager.

use std::time::Duration;

use legate_config::model::{ConnectionFilter, ConnectionLimit, ConnectionRateLimit, Listener, TokenBucket};
use legate_config::resource::decode_any;
use legate_config::text::parse_resources;
use legate_config::Resource;

const HCM: &str = r#"{ name: envoy.filters.network.http_connection_manager, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r }, http_filters: [{ name: envoy.filters.http.router }] } }"#;

/// Renders a connection rate limit filter with `fields` in its config.
fn rate_limit(fields: &str) -> String {
    format!(
        r#"{{ name: envoy.filters.network.local_ratelimit, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, {fields} }} }}"#
    )
}

/// Renders a connection limit filter with `fields` in its config.
fn connection_limit(fields: &str) -> String {
    format!(
        r#"{{ name: envoy.filters.network.connection_limit, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, {fields} }} }}"#
    )
}

const BUCKET: &str = "stat_prefix: conn_rate, token_bucket: { max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s }";

/// Decodes a listener whose one filter chain has `filters`.
fn decode(filters: &[&str]) -> Result<Listener, String> {
    let yaml = format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: l\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8080 }} }}\n  filter_chains:\n  - filters: [{}]\n",
        filters.join(", ")
    );
    let resources = parse_resources(&yaml).map_err(|errors| errors.to_string())?;
    match decode_any(&resources[0]).map_err(|errors| errors.to_string())?.value {
        Resource::Listener(listener) => Ok(listener),
        _ => Err("not a listener".to_string()),
    }
}

#[test]
fn both_filters_decode_in_order() {
    let limit = connection_limit("stat_prefix: conn_cap, max_connections: 3, delay: 0.5s, runtime_enabled: { default_value: false }");
    let listener = decode(&[&limit, &rate_limit(BUCKET), HCM]).unwrap();
    let filters = &listener.filter_chains[0].connection_filters;
    assert_eq!(filters.len(), 2);
    assert_eq!(
        filters[0],
        ConnectionFilter::ConnectionLimit(ConnectionLimit {
            stat_prefix: "conn_cap".into(),
            max_connections: 3,
            delay: Some(Duration::from_millis(500)),
            enabled: false,
        })
    );
    let token_bucket = TokenBucket { max_tokens: 5, tokens_per_fill: 5, fill_interval: Duration::from_secs(60) };
    assert_eq!(
        filters[1],
        ConnectionFilter::LocalRateLimit(ConnectionRateLimit { stat_prefix: "conn_rate".into(), token_bucket, enabled: true })
    );
}

#[test]
fn chain_without_filters_has_none() {
    let listener = decode(&[HCM]).unwrap();
    assert!(listener.filter_chains[0].connection_filters.is_empty());
}

#[test]
fn unknown_field_is_rejected_by_name() {
    let error = decode(&[&rate_limit(&format!("{BUCKET}, local_rate_limit_per_downstream_connection: true")), HCM]).unwrap_err();
    assert!(error.contains("local_rate_limit_per_downstream_connection"), "got {error}");

    let error = decode(&[&connection_limit("stat_prefix: c, max_connections: 1, runtime_enabled: { runtime_key: k }"), HCM]).unwrap_err();
    assert!(error.contains("runtime_key"), "got {error}");
}

#[test]
fn share_key_is_unsupported() {
    let error = decode(&[&rate_limit(&format!("{BUCKET}, share_key: shared")), HCM]).unwrap_err();
    assert!(error.contains("share_key"), "got {error}");
}

#[test]
fn missing_token_bucket_is_rejected() {
    let error = decode(&[&rate_limit("stat_prefix: conn_rate"), HCM]).unwrap_err();
    assert!(error.contains("token_bucket is required"), "got {error}");

    let error = decode(&[&rate_limit("token_bucket: { max_tokens: 5, fill_interval: 60s }"), HCM]).unwrap_err();
    assert!(error.contains("stat_prefix is required"), "got {error}");
}

#[test]
fn zero_max_connections_is_rejected() {
    let error = decode(&[&connection_limit("stat_prefix: c, max_connections: 0"), HCM]).unwrap_err();
    assert!(error.contains("max_connections must be at least 1"), "got {error}");

    let error = decode(&[&connection_limit("stat_prefix: c"), HCM]).unwrap_err();
    assert!(error.contains("max_connections is required"), "got {error}");
}

#[test]
fn duplicate_filter_is_rejected() {
    let error = decode(&[&rate_limit(BUCKET), &rate_limit(BUCKET), HCM]).unwrap_err();
    assert!(error.contains("filters[1]"), "got {error}");
    assert!(error.contains("envoy.filters.network.local_ratelimit appears more than once"), "got {error}");
}

#[test]
fn connection_manager_must_be_last() {
    let error = decode(&[HCM, &rate_limit(BUCKET)]).unwrap_err();
    assert!(error.contains("filters[1]"), "got {error}");
    assert!(error.contains("must be the last filter"), "got {error}");
}

#[test]
fn other_network_filters_are_rejected_by_name() {
    let tcp_proxy = r#"{ name: envoy.filters.network.tcp_proxy, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy } }"#;
    let error = decode(&[tcp_proxy, HCM]).unwrap_err();
    assert!(error.contains("tcp_proxy"), "got {error}");
}
