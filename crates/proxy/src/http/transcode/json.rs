//! Response messages as JSON, by the filter's `print_options`.

use prost_reflect::{DynamicMessage, FieldDescriptor, SerializeOptions};
use serde_json::Value as Json;

use legate_config::transcoder::PrintOptions;

/// Encodes `message` as JSON, or only its `field` for `response_body`.
pub(super) fn message_json(message: &DynamicMessage, print: &PrintOptions, field: Option<&FieldDescriptor>) -> Result<Vec<u8>, serde_json::Error> {
    let options = SerializeOptions::new()
        .use_enum_numbers(print.always_print_enums_as_ints)
        .use_proto_field_name(print.preserve_proto_field_names)
        // The response_body field is printed even when it has its default value.
        .skip_default_fields(!print.always_print_primitive_fields && field.is_none());
    let Some(field) = field else {
        let mut output = Vec::with_capacity(128);
        if print.add_whitespace {
            message.serialize_with_options(&mut serde_json::Serializer::pretty(&mut output), &options)?;
        } else {
            message.serialize_with_options(&mut serde_json::Serializer::new(&mut output), &options)?;
        }
        return Ok(output);
    };
    let whole = message.serialize_with_options(serde_json::value::Serializer, &options)?;
    let name = if print.preserve_proto_field_names { field.name() } else { field.json_name() };
    let value = match whole {
        Json::Object(mut object) => object.remove(name).unwrap_or(Json::Null),
        _ => Json::Null,
    };
    value_json(&value, print)
}

/// Encodes a JSON value with the filter's whitespace setting.
pub(super) fn value_json(value: &Json, print: &PrintOptions) -> Result<Vec<u8>, serde_json::Error> {
    if print.add_whitespace {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
}
