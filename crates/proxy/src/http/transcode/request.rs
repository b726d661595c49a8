//! Builds the gRPC request message from the JSON body, the path variables
//! and the query parameters, by reflection over the request descriptor with
//! proto3 JSON rules.

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use serde_json::{Map, Value as Json};

use legate_config::transcoder::{BodyRule, GrpcJsonTranscoder, HttpRule};

/// The message type whose body is passed through raw.
pub(super) const HTTP_BODY: &str = "google.api.HttpBody";

/// A request that cannot be transcoded, with the reason for the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum RequestError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("unknown query parameter {0:?}")]
    UnknownQueryParameter(String),
    #[error("query parameter {parameter:?} names message field {field:?}, which takes no single value")]
    MessageParameter { parameter: String, field: String },
    #[error("path variable or query parameter {field:?}: {value:?} is not a valid {expected}")]
    InvalidValue { field: String, value: String, expected: &'static str },
    #[error("invalid value for field {path:?}: {message}")]
    InvalidField { path: String, message: String },
    #[error("invalid request message: {0}")]
    InvalidMessage(String),
    #[error("{0}")]
    Invalid(String),
}

/// The request parts that feed the message.
pub(super) struct RequestInput<'a> {
    pub rule: &'a HttpRule,
    pub values: &'a [String],
    pub query: Option<&'a str>,
    pub body: &'a Bytes,
    pub content_type: Option<&'a str>,
}

/// Builds the request message. The body, path variables and query
/// parameters are merged into one JSON object, path variables last, and
/// that object is decoded once, so a type error names its field.
pub(super) fn build_message(config: &GrpcJsonTranscoder, input: &RequestInput<'_>) -> Result<DynamicMessage, RequestError> {
    let descriptor = input.rule.binding.method.input();
    let raw_body = raw_body_field(&descriptor, &input.rule.body);
    let mut root = match (&input.rule.body, &raw_body) {
        (_, Some(_)) | (BodyRule::None, _) => Map::new(),
        (BodyRule::Whole, None) => match parse_body(input.body)? {
            None => Map::new(),
            Some(Json::Object(object)) => object,
            Some(_) => return Err(RequestError::NotAnObject),
        },
        (BodyRule::Field(field), None) => {
            let mut object = Map::new();
            if let Some(value) = parse_body(input.body)? {
                object.insert(field.name().to_string(), value);
            }
            object
        }
    };

    if let Some(query) = input.query {
        add_query(config, &descriptor, query, &mut root)?;
    }
    for (path, value) in input.rule.variables.iter().zip(input.values) {
        let field = path.last().expect("field paths are never empty");
        let name = path.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join(".");
        let json = text_value(field, value, &name)?;
        insert(&mut root, path, json, false);
    }

    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(Json::Object(root), &mut track);
    let mut message = DynamicMessage::deserialize_with_options(descriptor, deserializer, &DeserializeOptions::new()).map_err(|error| {
        // serde_path_to_error names the message itself ".", as for an
        // unknown field name.
        match track.path().to_string() {
            top if top == "." => RequestError::InvalidMessage(error.to_string()),
            path => RequestError::InvalidField { path, message: error.to_string() },
        }
    })?;
    if let Some(target) = raw_body {
        set_raw_body(&mut message, target, input)?;
    }
    Ok(message)
}

/// Finds the `google.api.HttpBody` that the raw body fills: the whole
/// message (`Some(None)`) or the body field, when either is that type.
fn raw_body_field(descriptor: &MessageDescriptor, body: &BodyRule) -> Option<Option<FieldDescriptor>> {
    match body {
        BodyRule::Whole if descriptor.full_name() == HTTP_BODY => Some(None),
        BodyRule::Field(field) => match field.kind() {
            Kind::Message(message) if message.full_name() == HTTP_BODY && !field.is_list() => Some(Some(field.clone())),
            _ => None,
        },
        _ => None,
    }
}

fn set_raw_body(message: &mut DynamicMessage, target: Option<FieldDescriptor>, input: &RequestInput<'_>) -> Result<(), RequestError> {
    let fill = |body: &mut DynamicMessage| {
        body.set_field_by_name("content_type", Value::String(input.content_type.unwrap_or_default().to_string()));
        body.set_field_by_name("data", Value::Bytes(input.body.clone()));
    };
    match target {
        None => fill(message),
        Some(field) => {
            let Kind::Message(descriptor) = field.kind() else { return Err(RequestError::Invalid("the body field is not a message".into())) };
            let mut body = DynamicMessage::new(descriptor);
            fill(&mut body);
            message.set_field(&field, Value::Message(body));
        }
    }
    Ok(())
}

fn parse_body(body: &Bytes) -> Result<Option<Json>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    legate_config::text::parse_json(body).map(Some).map_err(RequestError::MalformedJson)
}

/// Adds each query parameter to `root` under its field path, given by proto
/// or JSON field names separated by dots.
fn add_query(config: &GrpcJsonTranscoder, descriptor: &MessageDescriptor, query: &str, root: &mut Map<String, Json>) -> Result<(), RequestError> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_query(key, config.query_param_unescape_plus);
        if config.ignored_query_parameters.contains(key.as_str()) {
            continue;
        }
        let Some(path) = query_field_path(descriptor, &key) else {
            if config.ignore_unknown_query_parameters {
                continue;
            }
            return Err(RequestError::UnknownQueryParameter(key));
        };
        let field = path.last().expect("field paths are never empty");
        if matches!(field.kind(), Kind::Message(message) if !message.full_name().starts_with("google.protobuf.")) {
            return Err(RequestError::MessageParameter { parameter: key.clone(), field: field.full_name().to_string() });
        }
        let value = decode_query(value, config.query_param_unescape_plus);
        let json = text_value(field, &value, &key)?;
        insert(root, &path, json, field.is_list());
    }
    Ok(())
}

fn decode_query(text: &str, plus_is_space: bool) -> String {
    if plus_is_space && text.contains('+') {
        percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned()
    } else {
        percent_decode_str(text).decode_utf8_lossy().into_owned()
    }
}

fn query_field_path(descriptor: &MessageDescriptor, key: &str) -> Option<Vec<FieldDescriptor>> {
    let mut path = Vec::new();
    let mut current = descriptor.clone();
    let mut names = key.split('.').peekable();
    while let Some(name) = names.next() {
        let field = current.get_field_by_name(name).or_else(|| current.get_field_by_json_name(name))?;
        if field.is_map() {
            return None;
        }
        if names.peek().is_some() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() => current = inner,
                _ => return None,
            }
        }
        path.push(field);
    }
    Some(path)
}

/// Turns the text of a path variable or query parameter into the JSON value
/// proto3 JSON expects for `field`.
fn text_value(field: &FieldDescriptor, text: &str, name: &str) -> Result<Json, RequestError> {
    scalar_value(&field.kind(), text, name)
}

fn scalar_value(kind: &Kind, text: &str, name: &str) -> Result<Json, RequestError> {
    let invalid = |expected| RequestError::InvalidValue { field: name.to_string(), value: text.to_string(), expected };
    let json = match kind {
        Kind::Bool => match text {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => return Err(invalid("boolean")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Json::from(text.parse::<i64>().map_err(|_| invalid("integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => Json::from(text.parse::<u64>().map_err(|_| invalid("unsigned integer"))?),
        Kind::Float | Kind::Double => match text.parse::<f64>() {
            Ok(number) if number.is_finite() => Json::from(number),
            // "NaN", "Infinity" and "-Infinity" are proto3 JSON strings.
            _ => Json::String(text.to_string()),
        },
        Kind::Enum(_) => match text.parse::<i64>() {
            Ok(number) => Json::from(number),
            Err(_) => Json::String(text.to_string()),
        },
        Kind::String | Kind::Bytes => Json::String(text.to_string()),
        Kind::Message(message) => match message.get_field_by_name("value") {
            // A wrapper such as google.protobuf.Int32Value takes its value's form.
            Some(value) if message.full_name().ends_with("Value") && message.fields().len() == 1 => scalar_value(&value.kind(), text, name)?,
            // Timestamp, Duration and FieldMask have a string form.
            _ => Json::String(text.to_string()),
        },
    };
    Ok(json)
}

/// Sets `value` at `path` in `root`, creating the objects on the way. With
/// `append`, the value joins the array there (a repeated query parameter).
fn insert(root: &mut Map<String, Json>, path: &[FieldDescriptor], value: Json, append: bool) {
    let (last, parents) = path.split_last().expect("field paths are never empty");
    let mut object = root;
    for field in parents {
        let entry = object.entry(field.name().to_string()).or_insert_with(|| Json::Object(Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(Map::new());
        }
        object = entry.as_object_mut().expect("replaced by an object above");
    }
    if append {
        match object.entry(last.name().to_string()).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(items) => items.push(value),
            other => *other = Json::Array(vec![value]),
        }
    } else {
        object.insert(last.name().to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost_reflect::{DescriptorPool, ReflectMessage};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};

    use legate_config::transcoder::template::PathTemplate;
    use legate_config::transcoder::MethodBinding;

    use super::*;

    fn field(name: &str, number: i32, kind: Type, label: Label, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            type_name: type_name.map(str::to_string),
            json_name: Some(name.replace("_i", "I")),
            ..Default::default()
        }
    }

    /// `message Req { string name = 1; int64 big_id = 2; repeated string tags = 3; Inner inner = 4; bool flag = 5; }`
    /// with `message Inner { uint32 size = 1; }`, and `service S { rpc Call(Req) returns (Req); }`.
    fn method() -> prost_reflect::MethodDescriptor {
        let optional = Label::Optional;
        let request = DescriptorProto {
            name: Some("Req".into()),
            field: vec![
                field("name", 1, Type::String, optional, None),
                field("big_id", 2, Type::Int64, optional, None),
                field("tags", 3, Type::String, Label::Repeated, None),
                field("inner", 4, Type::Message, optional, Some(".t.Inner")),
                field("flag", 5, Type::Bool, optional, None),
            ],
            ..Default::default()
        };
        let inner = DescriptorProto { name: Some("Inner".into()), field: vec![field("size", 1, Type::Uint32, optional, None)], ..Default::default() };
        let call = MethodDescriptorProto { name: Some("Call".into()), input_type: Some(".t.Req".into()), output_type: Some(".t.Req".into()), ..Default::default() };
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![request, inner],
            service: vec![ServiceDescriptorProto { name: Some("S".into()), method: vec![call], ..Default::default() }],
            ..Default::default()
        };
        let pool = DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file: vec![file] }).unwrap();
        pool.get_service_by_name("t.S").unwrap().methods().next().unwrap()
    }

    fn rule(template: &str, body: BodyRule) -> HttpRule {
        let method = method();
        let template = PathTemplate::parse(template).unwrap();
        let input = method.input();
        let variables = template.variables.iter().map(|variable| vec![input.get_field_by_name(&variable.field_path).unwrap()]).collect();
        let binding = Arc::new(MethodBinding { grpc_path: "/t.S/Call".parse().unwrap(), method });
        HttpRule { method: http::Method::POST, template, variables, binding, body, response_body: None }
    }

    fn build(rule: &HttpRule, path: &str, query: Option<&str>, body: &str) -> Result<DynamicMessage, RequestError> {
        let values = rule.template.matches(path).expect("the path matches the template");
        let body = Bytes::from(body.to_string());
        let input = RequestInput { rule, values: &values, query, body: &body, content_type: None };
        build_message(&super::super::test_config(), &input)
    }

    fn json(message: &DynamicMessage) -> Json {
        assert_eq!(message.descriptor().full_name(), "t.Req");
        serde_json::to_value(message).unwrap()
    }

    #[test]
    fn path_query_and_body_merge() {
        let rule = rule("/v1/{big_id}", BodyRule::Whole);
        let query = Some("tags=a&tags=b+c&inner.size=3&flag=true&api_key=secret");
        let message = build(&rule, "/v1/9007199254740993", query, r#"{"name": "n", "bigId": "1"}"#).unwrap();
        let expected = serde_json::json!({ "name": "n", "bigId": "9007199254740993", "tags": ["a", "b c"], "inner": { "size": 3 }, "flag": true });
        assert_eq!(json(&message), expected, "the path variable wins over the body");
    }

    #[test]
    fn body_field_fills_one_field() {
        let rule = rule("/v1/items", BodyRule::Field(method().input().get_field_by_name("inner").unwrap()));
        let message = build(&rule, "/v1/items", None, r#"{"size": 9}"#).unwrap();
        assert_eq!(json(&message), serde_json::json!({ "inner": { "size": 9 } }));
    }

    #[test]
    fn bad_values_name_their_field() {
        let rule = rule("/v1/{big_id}", BodyRule::Whole);
        let cases = [
            ("/v1/x", None, "", "big_id"),
            ("/v1/1", Some("flag=yes"), "", "flag"),
            ("/v1/1", Some("colour=red"), "", "colour"),
            ("/v1/1", Some("inner=x"), "", "inner"),
            ("/v1/1", None, r#"{"name": 5}"#, "name"),
            ("/v1/1", None, r#"{"nmae": "x"}"#, "nmae"),
            ("/v1/1", None, r#"{"inner": {"size": -1}}"#, "inner.size"),
            ("/v1/1", None, "{", "not valid JSON"),
            ("/v1/1", None, r#"{"name": "a", "name": "b"}"#, "duplicate key `name`"),
            ("/v1/1", None, r#"{"inner": {"size": 1, "size": 2}}"#, "duplicate key `size`"),
        ];
        for (path, query, body, needle) in cases {
            let error = build(&rule, path, query, body).unwrap_err().to_string();
            assert!(error.contains(needle), "{path} {query:?} {body}: {error}");
        }
    }
}
