//! Decoding the gRPC-JSON transcoder filter: the descriptor set, the
//! services, the fields Legate rejects by name and the per-route config.

mod support;

use base64::Engine;
use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};

use legate_config::model::{HttpFilter, Listener, RouteSource};
use legate_config::resource::decode_any;
use legate_config::text::parse_resources;
use legate_config::Resource;

const TRANSCODER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";

/// A descriptor set with `package t; message M { string name = 1; } service S { rpc Get(M) returns (M); }`,
/// base64-encoded as YAML carries bytes.
fn descriptor_set() -> String {
    let field = FieldDescriptorProto {
        name: Some("name".into()),
        number: Some(1),
        r#type: Some(prost_types::field_descriptor_proto::Type::String as i32),
        label: Some(prost_types::field_descriptor_proto::Label::Optional as i32),
        json_name: Some("name".into()),
        ..Default::default()
    };
    let method = MethodDescriptorProto { name: Some("Get".into()), input_type: Some(".t.M".into()), output_type: Some(".t.M".into()), ..Default::default() };
    let file = FileDescriptorProto {
        name: Some("t.proto".into()),
        package: Some("t".into()),
        syntax: Some("proto3".into()),
        message_type: vec![DescriptorProto { name: Some("M".into()), field: vec![field], ..Default::default() }],
        service: vec![ServiceDescriptorProto { name: Some("S".into()), method: vec![method], ..Default::default() }],
        ..Default::default()
    };
    base64::engine::general_purpose::STANDARD.encode(FileDescriptorSet { file: vec![file] }.encode_to_vec())
}

/// Decodes a listener whose connection manager runs the transcoder with
/// `fields`, and whose one route carries `route_extra`.
fn decode(fields: &str, route_extra: &str) -> Result<Listener, String> {
    let routes = format!(
        r#"        route_config:
          name: r
          virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, direct_response: {{ status: 200 }} {route_extra} }}] }}]"#
    );
    let filter = format!(
        r#"        - name: envoy.filters.http.grpc_json_transcoder
          typed_config: {{ "@type": {TRANSCODER_TYPE}, {fields} }}"#
    );
    let yaml = support::listener_with_filters(&routes, &filter);
    let resources = parse_resources(&yaml).map_err(|errors| errors.to_string())?;
    match decode_any(&resources[0]).map_err(|errors| errors.to_string())?.value {
        Resource::Listener(listener) => Ok(listener),
        _ => Err("not a listener".to_string()),
    }
}

fn base_fields() -> String {
    format!("proto_descriptor_bin: \"{}\", services: [t.S]", descriptor_set())
}

fn rule_count(listener: &Listener) -> usize {
    match &listener.filter_chains[0].http.http_filters[0] {
        HttpFilter::GrpcJsonTranscoder(config) => config.rules.len(),
        other => panic!("not the transcoder: {other:?}"),
    }
}

#[test]
fn auto_mapping_maps_unannotated_methods() {
    assert_eq!(rule_count(&decode(&base_fields(), "").unwrap()), 0);
    let listener = decode(&format!("{}, auto_mapping: true", base_fields()), "").unwrap();
    assert_eq!(rule_count(&listener), 1);
}

#[test]
fn unknown_service_is_named() {
    let fields = format!("proto_descriptor_bin: \"{}\", services: [t.Missing]", descriptor_set());
    let error = decode(&fields, "").unwrap_err();
    assert!(error.contains("t.Missing"), "got {error}");
}

#[test]
fn descriptor_set_is_required_and_read() {
    let error = decode("services: [t.S]", "").unwrap_err();
    assert!(error.contains("proto_descriptor or proto_descriptor_bin is required"), "got {error}");

    let error = decode("proto_descriptor: /nonexistent/legate-test.pb, services: [t.S]", "").unwrap_err();
    assert!(error.contains("/nonexistent/legate-test.pb"), "got {error}");

    let error = decode("proto_descriptor_bin: \"AAEC\", services: [t.S]", "").unwrap_err();
    assert!(error.contains("not a valid FileDescriptorSet"), "got {error}");

    let error = decode(&format!("proto_descriptor_bin: \"{}\"", descriptor_set()), "").unwrap_err();
    assert!(error.contains("services is required"), "got {error}");
}

#[test]
fn unimplemented_fields_are_rejected_by_name() {
    let cases = [
        ("url_unescape_spec: ALL_CHARACTERS", "url_unescape_spec"),
        ("match_unregistered_custom_verb: true", "match_unregistered_custom_verb"),
        ("case_insensitive_enum_parsing: true", "case_insensitive_enum_parsing"),
        ("request_validation_options: { reject_binding_body_field_collisions: true }", "reject_binding_body_field_collisions"),
        ("max_request_body_size: 0", "max_request_body_size"),
    ];
    for (field, name) in cases {
        let error = decode(&format!("{}, {field}", base_fields()), "").unwrap_err();
        assert!(error.contains(name), "{field}: got {error}");
    }
}

#[test]
fn per_route_config_disables_only() {
    let per_route = |body: &str| {
        format!(
            r#", typed_per_filter_config: {{ envoy.filters.http.grpc_json_transcoder: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoderPerRoute, {body} }} }}"#
        )
    };
    let listener = decode(&base_fields(), &per_route("disabled: true")).unwrap();
    let RouteSource::Inline(routes) = &listener.filter_chains[0].http.routes else { panic!("an inline route config") };
    assert!(routes.virtual_hosts[0].routes[0].filter_configs.grpc_json_transcoder_disabled);

    let error = decode(&base_fields(), &per_route(&format!("transcoder: {{ {} }}", base_fields()))).unwrap_err();
    assert!(error.contains("transcoder is not supported"), "got {error}");

    // Current Envoy's form: the filter's own message with no services.
    let own = |body: &str| format!(r#", typed_per_filter_config: {{ envoy.filters.http.grpc_json_transcoder: {{ "@type": {TRANSCODER_TYPE} {body} }} }}"#);
    let listener = decode(&base_fields(), &own("")).unwrap();
    let RouteSource::Inline(routes) = &listener.filter_chains[0].http.routes else { panic!("an inline route config") };
    assert!(routes.virtual_hosts[0].routes[0].filter_configs.grpc_json_transcoder_disabled);
    let error = decode(&base_fields(), &own(&format!(", {}", base_fields()))).unwrap_err();
    assert!(error.contains("empty services list"), "got {error}");
}
