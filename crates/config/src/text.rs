//! Envoy-format YAML and JSON (the proto3 JSON mapping, with `"@type"` inside
//! `typed_config`), parsed by reflection so that an unknown field is an error
//! that names its path.
//!
//! Parsing runs in two passes. The first walks the document against the
//! schema and lists every field Legate does not declare, so a user sees all
//! of them at once. The second deserializes, and reports the first value of
//! a wrong type. An entry of a resources file is deserialized once first,
//! and takes the two passes only when that fails. A valid YAML resources
//! file skips the document too (see `yaml`).

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage};
use serde::de::value::MapDeserializer;
use serde_json::{Map, Value};

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::reflect;

mod json;
mod yaml;

pub use json::parse_json;

const ANY: &str = "google.protobuf.Any";

/// Parses YAML or JSON text (JSON is YAML) into the message type `T`,
/// rejecting fields that Legate's schema does not declare.
pub fn parse<T: prost::Message + Default>(text: &str, message_name: &str) -> Result<T, ConfigErrors> {
    let document = parse_document(text)?;
    parse_value(&document, message_name, "")
}

/// A file of Envoy resources as `legate apply` reads it: the layout of an
/// Envoy `DiscoveryResponse`, a `resources` list whose entries each carry
/// their `"@type"`. Every entry is checked, so the errors of all of them are
/// listed together.
pub fn parse_resources(text: &str) -> Result<Vec<prost_types::Any>, ConfigErrors> {
    match yaml::parse_valid_resources(text) {
        Some(resources) => Ok(resources),
        None => parse_resources_in_document(text),
    }
}

/// Parses a resources file into a document tree first, then each entry,
/// listing the errors of all of them.
fn parse_resources_in_document(text: &str) -> Result<Vec<prost_types::Any>, ConfigErrors> {
    let document = parse_document(text)?;
    let Value::Object(fields) = &document else {
        return Err(syntax_error(String::new(), "expected a mapping with a `resources` list".into()).into());
    };

    let mut errors = Vec::new();
    for key in fields.keys().filter(|key| key.as_str() != "resources" && key.as_str() != "version_info") {
        errors.push(syntax_error(key.clone(), format!("unknown field `{key}`; a resources file has `resources` only")));
    }
    let items = match fields.get("resources") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => {
            errors.push(syntax_error("resources".into(), "expected a list of resources".into()));
            &[]
        }
        None => {
            errors.push(syntax_error(String::new(), "missing `resources` list".into()));
            &[]
        }
    };

    let mut resources = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match parse_resource(item, &format!("resources[{index}]")) {
            Ok(any) => resources.push(any),
            Err(item_errors) => errors.extend(item_errors.0),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn parse_document(text: &str) -> Result<Value, ConfigErrors> {
    if let Some(document) = json::parse_object(text) {
        return Ok(document);
    }
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|error| syntax_error(String::new(), error.to_string()))?;
    if document.is_null() {
        return Err(syntax_error(String::new(), "the document is empty".into()).into());
    }
    Ok(document)
}

/// Parses one entry of a resources file into an `Any`. The entry's fields
/// are deserialized straight into its `"@type"`. Deserializing an `Any` by
/// reflection would copy the entry and encode it twice, which made up much
/// of `legate apply`'s time for 10,000 resources.
fn parse_resource(value: &Value, path: &str) -> Result<prost_types::Any, ConfigErrors> {
    if let Some(any) = parse_valid_resource(value) {
        return Ok(any);
    }

    // The entry is invalid or of a well-known type. List every unknown field
    // first, then name where the first wrong value is.
    let mut errors = Vec::new();
    unknown_fields_of_any(value, &Location::Root(path), &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let Some((fields, type_url)) = typed_entry(value) else {
        return Err(syntax_error(path.to_string(), "expected a mapping with \"@type\"".into()).into());
    };
    let descriptor = match resource_descriptor(type_url) {
        Some(descriptor) => descriptor,
        None => return parse_value(value, ANY, path),
    };
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = deserialize(value, path, |tracked| {
        DynamicMessage::deserialize_with_options(descriptor, serde_path_to_error::Deserializer::new(fields_without_type(fields), tracked), &options)
    })?;
    Ok(prost_types::Any { type_url: type_url.to_string(), value: encoded(&dynamic) })
}

/// Parses a valid entry in one pass. The deserializer rejects unknown
/// fields itself, so the walk that lists them all and the path tracking run
/// only for an entry that fails here. Returns `None` for an invalid entry
/// and for well-known types.
fn parse_valid_resource(value: &Value) -> Option<prost_types::Any> {
    let (fields, type_url) = typed_entry(value)?;
    let descriptor = resource_descriptor(type_url)?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor, fields_without_type(fields), &options).ok()?;
    Some(prost_types::Any { type_url: type_url.to_string(), value: encoded(&dynamic) })
}

/// Encodes `message` with the entries of each map in sorted order, so the
/// same resource always becomes the same bytes.
fn encoded(message: &DynamicMessage) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    reflect::sort_map_entries(&message.descriptor(), &mut bytes);
    bytes
}

/// Returns the fields of an entry that is a mapping with a string `"@type"`,
/// and that type URL.
fn typed_entry(value: &Value) -> Option<(&Map<String, Value>, &str)> {
    let Value::Object(fields) = value else { return None };
    let type_url = fields.get("@type").and_then(Value::as_str)?;
    Some((fields, type_url))
}

/// Finds the message type of a resource entry. Returns `None` for unknown
/// types and for well-known types, whose JSON form the reflection path for
/// `Any` handles.
fn resource_descriptor(type_url: &str) -> Option<MessageDescriptor> {
    reflect::message_for_type_url(type_url).filter(|descriptor| !descriptor.full_name().starts_with("google.protobuf."))
}

/// Returns a deserializer over the fields of an `Any` entry other than `"@type"`.
fn fields_without_type(fields: &Map<String, Value>) -> MapDeserializer<'_, impl Iterator<Item = (&str, &Value)>, serde_json::Error> {
    MapDeserializer::new(fields.iter().filter(|(key, _)| key.as_str() != "@type").map(|(key, value)| (key.as_str(), value)))
}

/// Runs `deserialize` with a path tracker, turning its error into one that
/// names where in `value` (found at `path`) it failed and the value found.
fn deserialize<T, E: std::fmt::Display>(
    value: &Value,
    path: &str,
    deserialize: impl FnOnce(&mut serde_path_to_error::Track) -> Result<T, E>,
) -> Result<T, ConfigErrors> {
    let mut tracker = serde_path_to_error::Track::new();
    deserialize(&mut tracker).map_err(|error| {
        let failed_at = tracker.path();
        let inner = failed_at.to_string();
        let location = join_path(path, if inner == "." { "" } else { &inner });
        let mut message = error.to_string();
        if let Some(found) = value_at(value, &failed_at).filter(|found| !found.is_object() && !found.is_array()) {
            message.push_str(&format!(" (found {found})"));
        }
        ConfigErrors::from(syntax_error(location, message))
    })
}

/// Checks `value` for undeclared fields, then deserializes it as
/// `message_name`; `path` prefixes every error's location.
fn parse_value<T: prost::Message + Default>(value: &Value, message_name: &str, path: &str) -> Result<T, ConfigErrors> {
    let descriptor = reflect::pool()
        .get_message_by_name(message_name)
        .unwrap_or_else(|| panic!("{message_name} is declared in proto/"));

    let mut errors = Vec::new();
    unknown_fields(value, &descriptor, &Location::Root(path), &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let dynamic = deserialize(value, path, |tracked| {
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        DynamicMessage::deserialize_with_options(descriptor, serde_path_to_error::Deserializer::new(value, tracked), &options)
    })?;
    dynamic.transcode_to::<T>().map_err(|error| syntax_error(path.to_string(), error.to_string()).into())
}

/// Finds the JSON value at `path`, to show it in an error message.
fn value_at<'a>(value: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    let mut current = value;
    for segment in path.iter() {
        current = match segment {
            serde_path_to_error::Segment::Seq { index } => current.get(*index)?,
            serde_path_to_error::Segment::Map { key } => current.get(key.as_str())?,
            _ => return None,
        };
    }
    Some(current)
}

/// Records every key of `value` that `descriptor` does not declare,
/// following nested messages, lists, maps and `Any` values by their
/// `"@type"`.
fn unknown_fields(value: &Value, descriptor: &MessageDescriptor, path: &Location, errors: &mut Vec<ConfigError>) {
    let name = descriptor.full_name();
    if name == ANY {
        unknown_fields_of_any(value, path, errors);
        return;
    }
    // Other well-known types have their own JSON forms (strings for
    // Duration, bare values for wrappers, free-form Struct).
    if name.starts_with("google.protobuf.") {
        return;
    }
    let Value::Object(fields) = value else { return };
    unknown_fields_of(fields.iter(), descriptor, path, errors);
}

/// Checks each of `fields` against `descriptor`, like `unknown_fields`.
fn unknown_fields_of<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    descriptor: &MessageDescriptor,
    path: &Location,
    errors: &mut Vec<ConfigError>,
) {
    let name = descriptor.full_name();
    for (key, field_value) in fields {
        let field_path = Location::Field(path, key);
        let field = descriptor.get_field_by_json_name(key).or_else(|| descriptor.get_field_by_name(key));
        let Some(field) = field else {
            errors.push(ConfigError {
                kind: ErrorKind::Unsupported,
                resource: String::new(),
                path: field_path.render(),
                message: format!("unknown field `{key}`: {name} in Legate has no such field"),
            });
            continue;
        };
        let Kind::Message(inner) = field.kind() else { continue };

        if field.is_map() {
            let value_field = inner.map_entry_value_field();
            if let (Kind::Message(value_type), Value::Object(entries)) = (value_field.kind(), field_value) {
                for (entry_key, entry) in entries {
                    unknown_fields(entry, &value_type, &Location::Key(&field_path, entry_key), errors);
                }
            }
        } else if let Value::Array(items) = field_value {
            for (index, item) in items.iter().enumerate() {
                unknown_fields(item, &inner, &Location::Index(&field_path, index), errors);
            }
        } else {
            unknown_fields(field_value, &inner, &field_path, errors);
        }
    }
}

fn unknown_fields_of_any(value: &Value, path: &Location, errors: &mut Vec<ConfigError>) {
    let Value::Object(fields) = value else { return };
    let Some(type_url) = fields.get("@type").and_then(Value::as_str) else {
        errors.push(syntax_error(path.render(), "missing \"@type\"".into()));
        return;
    };
    let Some(inner) = reflect::message_for_type_url(type_url) else {
        errors.push(ConfigError {
            kind: ErrorKind::Unsupported,
            resource: String::new(),
            path: Location::Field(path, "@type").render(),
            message: format!("type {type_url:?} is not supported by Legate"),
        });
        return;
    };
    if inner.full_name().starts_with("google.protobuf.") {
        return;
    }
    unknown_fields_of(fields.iter().filter(|(key, _)| key.as_str() != "@type"), &inner, path, errors);
}

/// Position of a value in a document. It becomes text only for an error, so
/// checking a large file allocates no path per field.
enum Location<'a> {
    Root(&'a str),
    Field(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
    Key(&'a Location<'a>, &'a str),
}

impl Location<'_> {
    fn render(&self) -> String {
        match self {
            Location::Root(path) => path.to_string(),
            Location::Field(parent, key) => join_path(&parent.render(), key),
            Location::Index(parent, index) => format!("{}[{index}]", parent.render()),
            Location::Key(parent, key) => format!("{}[{key}]", parent.render()),
        }
    }
}

fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

fn syntax_error(path: String, message: String) -> ConfigError {
    ConfigError { kind: ErrorKind::Syntax, resource: String::new(), path, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    /// Resources of several types, with nested typed configs, durations,
    /// enums, numbers, lists and maps.
    const RESOURCES: &str = r#"version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  type: STRICT_DNS
  connect_timeout: 1.5s
  lb_policy: LEAST_REQUEST
  circuit_breakers: { thresholds: [{ priority: HIGH, max_requests: 3 }] }
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config: { http2_protocol_options: {} }
  load_assignment:
    cluster_name: web
    endpoints:
    - lb_endpoints:
      - endpoint: { address: { socket_address: { address: web.internal, port_value: 8080 } } }
        load_balancing_weight: 2
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: routes
  virtual_hosts:
  - name: all
    domains: ["*", "web.test:8080"]
    routes:
    - match: { prefix: "/", headers: [{ name: x-canary, string_match: { exact: "1" } }] }
      route: { cluster: web, timeout: 0s, retry_policy: { retry_on: 5xx, num_retries: 2 } }
      typed_per_filter_config:
        envoy.filters.http.local_ratelimit:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: web
"#;

    #[test]
    fn fast_path_matches_document_path() {
        let fast = yaml::parse_valid_resources(RESOURCES).expect("the fast path reads a valid file");
        let document = parse_resources_in_document(RESOURCES).expect("valid file");

        assert_eq!(fast.len(), 2);
        assert_eq!(fast, document);
    }

    #[test]
    fn maps_encode_the_same_every_time() {
        let text = format!(
            "resources:\n- \"@type\": {CLUSTER}\n  name: web\n  metadata:\n    filter_metadata:\n      a: {{ k1: 1, k2: 2, k3: 3, k4: 4, k5: 5 }}\n      b: {{ x: [{{ y: 1, z: 2 }}] }}\n      c: {{ y: 2 }}\n      d: {{}}\n"
        );
        let json = serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&text).unwrap()).unwrap();
        let first = parse_resources(&text).expect("valid file");

        for _ in 0..20 {
            assert_eq!(parse_resources(&text).unwrap(), first, "YAML");
            assert_eq!(parse_resources(&json).unwrap(), first, "JSON");
            assert_eq!(parse_resources_in_document(&text).unwrap(), first, "document path");
        }
    }

    #[test]
    fn number_for_string_field_is_rejected() {
        let text = format!("resources:\n- \"@type\": {CLUSTER}\n  name: 123\n");

        assert!(yaml::parse_valid_resources(&text).is_none(), "a plain 123 is a number, as in a document tree");
        let errors = parse_resources(&text).unwrap_err().to_string();
        assert!(errors.contains("name"), "the error names the field: {errors}");
    }

    #[test]
    fn entries_the_fast_path_leaves_parse_in_document() {
        let type_last = format!("resources:\n- name: late\n  \"@type\": {CLUSTER}\n");
        let well_known = "resources:\n- \"@type\": type.googleapis.com/google.protobuf.Duration\n  value: 1s\n";
        let empty = "resources: []\n";

        assert!(yaml::parse_valid_resources(&type_last).is_none(), "\"@type\" after other fields");
        assert_eq!(parse_resources(&type_last).unwrap()[0].type_url, CLUSTER);
        assert!(yaml::parse_valid_resources(well_known).is_none(), "a well-known type");
        assert_eq!(parse_resources(well_known).unwrap()[0].value, [8, 1], "1s encoded");
        assert_eq!(yaml::parse_valid_resources(empty), Some(Vec::new()));
    }

    #[test]
    fn alike_keys_and_infinities_take_the_document_path() {
        let cases = [
            "  connect_timeout: 1s\n  connectTimeout: 2s\n",
            "  outlier_detection: { consecutive_5xx: 3, consecutive5xx: 4 }\n",
            "  circuit_breakers: { thresholds: [{ retry_budget: { budget_percent: { value: .inf } } }] }\n",
        ];
        for fields in cases {
            let text = format!("resources:\n- \"@type\": {CLUSTER}\n  name: c\n{fields}");

            assert!(yaml::parse_valid_resources(&text).is_none(), "fast path took {fields:?}");
            assert_eq!(parse_resources(&text).unwrap(), parse_resources_in_document(&text).unwrap(), "{fields:?}");
        }
    }

    #[test]
    fn fast_path_leaves_bad_files_to_document() {
        for text in [
            "version_info: { ? [1] : 2 }\nresources: []\n".to_string(),
            "resources: {}\n".to_string(),
            "other: 1\nresources: []\n".to_string(),
            "version_info: \"1\"\n".to_string(),
            format!("resources:\n- \"@type\": {CLUSTER}\n  unknown_field: 1\n"),
            "resources:\n- !tagged { a: 1 }\n".to_string(),
        ] {
            assert!(yaml::parse_valid_resources(&text).is_none(), "fast path took {text:?}");
            assert!(parse_resources(&text).is_err(), "document path accepted {text:?}");
        }
    }
}
