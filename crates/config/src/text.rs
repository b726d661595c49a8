//! Envoy-format YAML and JSON (the proto3 JSON mapping, with `"@type"` inside
//! `typed_config`), parsed by reflection so that an unknown field is an error
//! that names its path.

use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::reflect;

/// Parses YAML or JSON text (JSON is YAML) into the message type `T`,
/// rejecting fields that Legate's schema does not declare.
pub fn parse<T: prost::Message + Default>(text: &str, message_name: &str) -> Result<T, ConfigErrors> {
    let descriptor = reflect::pool()
        .get_message_by_name(message_name)
        .unwrap_or_else(|| panic!("{message_name} is declared in proto/"));
    let dynamic = parse_dynamic(text, descriptor)?;
    dynamic.transcode_to::<T>().map_err(|error| syntax_error(String::new(), error.to_string()).into())
}

fn parse_dynamic(text: &str, descriptor: MessageDescriptor) -> Result<DynamicMessage, ConfigErrors> {
    let document: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|error| syntax_error(String::new(), error.to_string()))?;

    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut tracker = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(&document, &mut tracker);
    DynamicMessage::deserialize_with_options(descriptor, deserializer, &options).map_err(|error| {
        let path = tracker.path().to_string();
        let path = if path == "." { String::new() } else { path };
        syntax_error(path, error.to_string()).into()
    })
}

fn syntax_error(path: String, message: String) -> ConfigError {
    ConfigError { kind: ErrorKind::Syntax, resource: String::new(), path, message }
}

/// A file of Envoy resources as `legate apply` reads it: the layout of an
/// Envoy `DiscoveryResponse`, a `resources` list whose entries each carry
/// their `"@type"`.
pub fn parse_resources(text: &str) -> Result<Vec<prost_types::Any>, ConfigErrors> {
    let response: legate_api::envoy::service::discovery::v3::DiscoveryResponse =
        parse(text, "envoy.service.discovery.v3.DiscoveryResponse")?;
    Ok(response.resources)
}
