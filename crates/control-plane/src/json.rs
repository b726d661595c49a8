//! Proto3 JSON for humans: packed resources are expanded with their `"@type"`
//! and fields keep their proto names, as in Envoy's YAML and JSON configs.

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use legate_api::envoy::service::discovery::v3::DiscoveryResponse;
use legate_config::reflect;

/// A message that could not be converted to or from proto3 JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("message type {0} is not in the descriptor pool")]
    UnknownMessage(String),
    #[error("invalid {message} protobuf")]
    Decode {
        message: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("failed to write {message} as JSON")]
    Serialize {
        message: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {message} JSON")]
    Deserialize {
        message: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Writes `message`, whose proto type is `message_name`, as indented proto3
/// JSON.
pub fn to_json<M: Message>(message: &M, message_name: &str) -> Result<String, JsonError> {
    let descriptor =
        reflect::pool().get_message_by_name(message_name).ok_or_else(|| JsonError::UnknownMessage(message_name.into()))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|source| JsonError::Decode { message: message_name.into(), source })?;

    let options = SerializeOptions::new().use_proto_field_name(true);
    let mut serializer = serde_json::Serializer::pretty(Vec::new());
    dynamic
        .serialize_with_options(&mut serializer, &options)
        .map_err(|source| JsonError::Serialize { message: message_name.into(), source })?;

    let mut text = String::from_utf8(serializer.into_inner()).expect("serde_json writes UTF-8");
    text.push('\n');
    Ok(text)
}

/// Reads proto3 JSON of type `message_name`, rejecting unknown fields.
pub fn from_json<M: Message + Default>(text: &str, message_name: &str) -> Result<M, JsonError> {
    let descriptor =
        reflect::pool().get_message_by_name(message_name).ok_or_else(|| JsonError::UnknownMessage(message_name.into()))?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);

    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor, &mut deserializer, &options)
        .and_then(|dynamic| deserializer.end().map(|()| dynamic))
        .map_err(|source| JsonError::Deserialize { message: message_name.into(), source })?;

    dynamic.transcode_to::<M>().map_err(|source| JsonError::Decode { message: message_name.into(), source })
}

/// Writes resources in the layout `legate apply -f` reads: a
/// `DiscoveryResponse` with `version_info` and a `resources` list.
pub fn resources_to_json(version: &str, resources: Vec<prost_types::Any>) -> Result<String, JsonError> {
    let response = DiscoveryResponse { version_info: version.to_string(), resources, ..Default::default() };
    to_json(&response, "envoy.service.discovery.v3.DiscoveryResponse")
}
