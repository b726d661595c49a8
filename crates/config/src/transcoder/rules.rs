//! Reads the `google.api.http` option of each method of the transcoded
//! services from the descriptor pool and compiles it into `HttpRule`s.

use std::sync::Arc;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, Value};

use super::template::{PathTemplate, TemplateError};
use super::{BodyRule, FieldPath, HttpRule, MethodBinding, RuleTable};

/// The `google.api.http` method option.
const HTTP_EXTENSION: &str = "google.api.http";

/// A service or rule the transcoder cannot use.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("service {0:?} is not in the descriptor set")]
    ServiceNotFound(String),
    #[error("method {method}: {source}")]
    Template {
        method: String,
        #[source]
        source: TemplateError,
    },
    #[error("method {method}: field {field:?} is not a field of {message}")]
    FieldNotFound { method: String, field: String, message: String },
    #[error("method {method}: {reason}")]
    Invalid { method: String, reason: String },
}

/// Compiles the rules of `services`. With `auto_mapping`, a method without
/// `google.api.http` gets `POST /package.Service/Method` with `body: "*"`.
pub fn compile(pool: &DescriptorPool, services: &[String], auto_mapping: bool) -> Result<RuleTable, RuleError> {
    let extension = pool.get_extension_by_name(HTTP_EXTENSION);
    let mut rules = Vec::new();
    for name in services {
        let service = pool.get_service_by_name(name).ok_or_else(|| RuleError::ServiceNotFound(name.clone()))?;
        for method in service.methods() {
            let grpc_path = format!("/{}/{}", service.full_name(), method.name());
            let binding = Arc::new(MethodBinding {
                grpc_path: grpc_path.parse().map_err(|_| invalid(&method, "its gRPC path is not a valid path"))?,
                method: method.clone(),
            });
            let options = method.options();
            match extension.as_ref().filter(|extension| options.has_extension(extension)) {
                Some(extension) => {
                    let Value::Message(rule) = options.get_extension(extension).into_owned() else { continue };
                    method_rules(&rule, &binding, true, &mut rules)?;
                }
                None if auto_mapping => {
                    let template = PathTemplate::parse(&grpc_path).map_err(|source| template_error(&method, source))?;
                    rules.push(HttpRule {
                        method: http::Method::POST,
                        template,
                        variables: Vec::new(),
                        binding: binding.clone(),
                        body: BodyRule::Whole,
                        response_body: None,
                    });
                }
                None => {}
            }
        }
    }
    Ok(RuleTable::new(rules))
}

/// Adds the rule in `rule` (a `google.api.HttpRule`) and its
/// `additional_bindings`, which may not nest further.
fn method_rules(rule: &DynamicMessage, binding: &Arc<MethodBinding>, top: bool, rules: &mut Vec<HttpRule>) -> Result<(), RuleError> {
    let method = &binding.method;
    let (verb, path) = pattern(rule).ok_or_else(|| invalid(method, "google.api.http sets no get, put, post, delete, patch or custom pattern"))?;
    let http_method = http::Method::from_bytes(verb.as_bytes()).map_err(|_| invalid(method, &format!("{verb:?} is not an HTTP method")))?;
    let template = PathTemplate::parse(&path).map_err(|source| template_error(method, source))?;
    let input = method.input();
    let variables = template
        .variables
        .iter()
        .map(|variable| field_path(&input, &variable.field_path, method))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = variables.iter().find(|path| path.last().is_some_and(|field| is_plain_message(&field.kind()))) {
        let name = path.iter().map(|field| field.name()).collect::<Vec<_>>().join(".");
        return Err(invalid(method, &format!("path variable {name:?} names a message field")));
    }
    let body = match string_field(rule, "body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(
            input.get_field_by_name(name).ok_or_else(|| not_found(method, name, &input))?,
        ),
    };
    let response_body = match string_field(rule, "response_body").as_str() {
        "" => None,
        name => Some(method.output().get_field_by_name(name).ok_or_else(|| not_found(method, name, &method.output()))?),
    };
    rules.push(HttpRule { method: http_method, template, variables, binding: binding.clone(), body, response_body });

    if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").map(|value| value.into_owned()) {
        if !top && !more.is_empty() {
            return Err(invalid(method, "additional_bindings may not contain additional_bindings"));
        }
        for extra in more {
            if let Value::Message(extra) = extra {
                method_rules(&extra, binding, false, rules)?;
            }
        }
    }
    Ok(())
}

/// Returns the HTTP method and path template of an `HttpRule`.
fn pattern(rule: &DynamicMessage) -> Option<(String, String)> {
    for verb in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(verb) {
            return Some((verb.to_ascii_uppercase(), string_field(rule, verb)));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").map(|value| value.into_owned()) {
            return Some((string_field(&custom, "kind"), string_field(&custom, "path")));
        }
    }
    None
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    }
}

/// Resolves a dotted path of proto field names against `message`. Every
/// field but the last must be a singular message.
pub(crate) fn field_path(message: &MessageDescriptor, path: &str, method: &MethodDescriptor) -> Result<FieldPath, RuleError> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = current.get_field_by_name(name).ok_or_else(|| not_found(method, path, message))?;
        if names.peek().is_some() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => return Err(invalid(method, &format!("field path {path:?} goes through {name:?}, which is not a singular message"))),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Tells whether `kind` is a message other than a well-known type with a string form.
fn is_plain_message(kind: &Kind) -> bool {
    match kind {
        Kind::Message(message) => !message.full_name().starts_with("google.protobuf."),
        _ => false,
    }
}

fn not_found(method: &MethodDescriptor, field: &str, message: &MessageDescriptor) -> RuleError {
    RuleError::FieldNotFound { method: method.full_name().to_string(), field: field.to_string(), message: message.full_name().to_string() }
}

fn invalid(method: &MethodDescriptor, reason: &str) -> RuleError {
    RuleError::Invalid { method: method.full_name().to_string(), reason: reason.to_string() }
}

fn template_error(method: &MethodDescriptor, source: TemplateError) -> RuleError {
    RuleError::Template { method: method.full_name().to_string(), source }
}

