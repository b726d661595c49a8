//! Decoding filter chains with SNI matching and TLS transport sockets.

use legate_config::model::{DataSource, ForwardClientCert, Listener, TlsVersion};
use legate_config::resource::decode_any;
use legate_config::text::parse_resources;
use legate_config::Resource;

const HCM: &str = r#"{ name: hcm, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r }, http_filters: [{ name: envoy.filters.http.router }] } }"#;

/// Renders a `DownstreamTlsContext` transport socket with `fields` added to the context.
fn tls_socket(fields: &str) -> String {
    format!(
        r#"{{ name: envoy.transport_sockets.tls, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {{ tls_certificates: [{{ certificate_chain: {{ filename: /certs/server.crt }}, private_key: {{ inline_string: "key" }} }}] }}{fields} }} }}"#
    )
}

fn listener_yaml(chains: &[String]) -> String {
    let chains: Vec<String> = chains.iter().map(|chain| format!("  - {chain}\n")).collect();
    format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: l\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8443 }} }}\n  filter_chains:\n{}",
        chains.concat()
    )
}

fn chain(server_names: &str, socket: &str) -> String {
    format!("{{ filter_chain_match: {{ server_names: [{server_names}] }}, transport_socket: {socket}, filters: [{HCM}] }}")
}

fn decode_listener(yaml: &str) -> Result<Listener, String> {
    let resources = parse_resources(yaml).map_err(|errors| errors.to_string())?;
    match decode_any(&resources[0]).map_err(|errors| errors.to_string())?.value {
        Resource::Listener(listener) => Ok(listener),
        _ => Err("not a listener".to_string()),
    }
}

#[test]
fn sni_filter_chains_decode() {
    let yaml = listener_yaml(&[chain(r#""A.Example.com""#, &tls_socket("")), chain(r#""*.example.com""#, &tls_socket("")), chain("", &tls_socket(""))]);
    let listener = decode_listener(&yaml).unwrap();
    assert_eq!(listener.filter_chains.len(), 3);
    assert_eq!(listener.filter_chains[0].server_names, vec!["a.example.com"]);
    assert_eq!(listener.filter_chains[1].server_names, vec!["*.example.com"]);
    assert!(listener.filter_chains[2].server_names.is_empty());

    let tls = listener.filter_chains[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].certificate_chain, DataSource::Filename("/certs/server.crt".into()));
    assert_eq!(tls.certificates[0].private_key, DataSource::Inline(b"key".as_slice().into()));
    assert_eq!((tls.versions.minimum, tls.versions.maximum), (TlsVersion::Tls12, TlsVersion::Tls13));
    assert_eq!(listener.filter_chains[0].http.forward_client_cert, ForwardClientCert::Sanitize);
}

#[test]
fn two_default_chains_are_rejected() {
    let error = decode_listener(&listener_yaml(&[chain("", &tls_socket("")), chain("", &tls_socket(""))])).unwrap_err();
    assert!(error.contains("only one may be the default"), "got {error}");
}

#[test]
fn server_names_need_tls() {
    let yaml = listener_yaml(&[format!("{{ filter_chain_match: {{ server_names: [a.example.com] }}, filters: [{HCM}] }}")]);
    let error = decode_listener(&yaml).unwrap_err();
    assert!(error.contains("server_names needs a TLS transport_socket"), "got {error}");
}

#[test]
fn other_filter_chain_match_fields_are_rejected() {
    let yaml = listener_yaml(&[format!("{{ filter_chain_match: {{ destination_port: 443 }}, transport_socket: {}, filters: [{HCM}] }}", tls_socket(""))]);
    let error = decode_listener(&yaml).unwrap_err();
    assert!(error.contains("destination_port"), "got {error}");
}

#[test]
fn unknown_tls_field_is_rejected_by_name() {
    let error = decode_listener(&listener_yaml(&[chain("", &tls_socket(", ocsp_staple_policy: STRICT_STAPLING"))])).unwrap_err();
    assert!(error.contains("ocsp_staple_policy"), "got {error}");
}

#[test]
fn old_tls_versions_are_rejected() {
    let socket = r#"{ name: tls, typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: { tls_params: { tls_minimum_protocol_version: TLSv1_0 }, tls_certificates: [{ certificate_chain: { inline_string: "c" }, private_key: { inline_string: "k" } }] } } }"#;
    let error = decode_listener(&listener_yaml(&[chain("", socket)])).unwrap_err();
    assert!(error.contains("tls_minimum_protocol_version"), "got {error}");
    assert!(error.contains("TLS 1.0 and 1.1 are not supported"), "got {error}");
}

#[test]
fn client_certificate_needs_trusted_ca() {
    let error = decode_listener(&listener_yaml(&[chain("", &tls_socket(", require_client_certificate: true"))])).unwrap_err();
    assert!(error.contains("needs common_tls_context.validation_context.trusted_ca"), "got {error}");
}

#[test]
fn missing_certificate_file_names_its_path() {
    let listener = decode_listener(&listener_yaml(&[chain("", &tls_socket(""))])).unwrap();
    let source = &listener.filter_chains[0].tls.as_ref().unwrap().certificates[0].certificate_chain;
    let error = source.read().unwrap_err();
    assert_eq!(error.to_string(), "failed to read /certs/server.crt");
    assert_eq!(error.source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn only_tls_inspector_listener_filter_is_accepted() {
    let with_filter = |filter: &str| listener_yaml(&[chain("", &tls_socket(""))]).replace("  filter_chains:\n", &format!("  listener_filters: [{filter}]\n  filter_chains:\n"));

    let inspector = r#"{ name: envoy.filters.listener.tls_inspector, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector } }"#;
    assert!(decode_listener(&with_filter(inspector)).is_ok());
    assert!(decode_listener(&with_filter("{ name: envoy.filters.listener.tls_inspector }")).is_ok());

    let error = decode_listener(&with_filter("{ name: envoy.filters.listener.http_inspector }")).unwrap_err();
    assert!(error.contains("listener_filters[0]"), "got {error}");
    assert!(error.contains("http_inspector"), "got {error}");
}

#[test]
fn handshake_timeout_defaults_to_ten_seconds() {
    let listener = decode_listener(&listener_yaml(&[chain("", &tls_socket(""))])).unwrap();
    assert_eq!(listener.filter_chains[0].handshake_timeout, std::time::Duration::from_secs(10));

    let yaml = listener_yaml(&[format!("{{ transport_socket_connect_timeout: 2s, transport_socket: {}, filters: [{HCM}] }}", tls_socket(""))]);
    assert_eq!(decode_listener(&yaml).unwrap().filter_chains[0].handshake_timeout, std::time::Duration::from_secs(2));
}
