//! Resources files shared by the decoding tests.

// Each test file uses a part of this module.
#![allow(dead_code)]

/// Route source of a connection manager that takes route configuration `r`
/// over ADS, indented for [`listener_with_filters`].
pub const RDS: &str = "        rds: { route_config_name: r, config_source: { ads: {} } }";

/// Renders a resources file with one listener whose connection manager
/// takes its routes from `routes` (a `route_config` or `rds` field) and runs
/// `filters` (`http_filters` items) before the router. Both are indented by
/// eight spaces.
pub fn listener_with_filters(routes: &str, filters: &str) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: s
{routes}
        http_filters:
{filters}
        - name: envoy.filters.http.router
"#
    )
}
