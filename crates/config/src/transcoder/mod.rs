//! The gRPC-JSON transcoder's model: the descriptor pool, the print options
//! and the HTTP rules of `google.api.http`, compiled at config load into a
//! table that each request only matches against.

mod rules;
pub mod template;

use std::collections::HashSet;
use std::sync::Arc;

use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor, MethodDescriptor};

pub use rules::{compile, RuleError};
use template::PathTemplate;

/// `envoy.filters.http.grpc_json_transcoder`.
#[derive(Debug)]
pub struct GrpcJsonTranscoder {
    pub pool: DescriptorPool,
    pub rules: RuleTable,
    pub print: PrintOptions,
    pub match_incoming_request_route: bool,
    pub ignored_query_parameters: HashSet<String>,
    pub ignore_unknown_query_parameters: bool,
    pub convert_grpc_status: bool,
    /// A request matching no rule gets 404 instead of going on untouched.
    pub reject_unknown_method: bool,
    /// `+` in a query parameter is a space.
    pub query_param_unescape_plus: bool,
    /// Largest request body read, in bytes. A larger one gets 413.
    pub max_request_body_size: usize,
    /// Largest unary response body buffered, in bytes. A larger one gets 502.
    pub max_response_body_size: usize,
    /// `google.rpc.Status`, when the descriptor set contains it, for
    /// `grpc-status-details-bin`.
    pub status_message: Option<MessageDescriptor>,
    /// The decoded descriptor set's bytes, so two configs compare equal when
    /// their descriptors are the same.
    pub descriptor_bytes: Arc<[u8]>,
    pub services: Vec<String>,
}

impl PartialEq for GrpcJsonTranscoder {
    fn eq(&self, other: &Self) -> bool {
        self.descriptor_bytes == other.descriptor_bytes
            && self.services == other.services
            && self.print == other.print
            && self.match_incoming_request_route == other.match_incoming_request_route
            && self.ignored_query_parameters == other.ignored_query_parameters
            && self.ignore_unknown_query_parameters == other.ignore_unknown_query_parameters
            && self.convert_grpc_status == other.convert_grpc_status
            && self.reject_unknown_method == other.reject_unknown_method
            && self.query_param_unescape_plus == other.query_param_unescape_plus
            && self.max_request_body_size == other.max_request_body_size
            && self.max_response_body_size == other.max_response_body_size
    }
}

/// `print_options`: how response messages become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrintOptions {
    pub add_whitespace: bool,
    pub always_print_primitive_fields: bool,
    pub always_print_enums_as_ints: bool,
    pub preserve_proto_field_names: bool,
    /// Server streams as newline-delimited JSON instead of a JSON array.
    pub stream_newline_delimited: bool,
}

/// The HTTP rules of every transcoded method, most specific first.
#[derive(Debug, Default)]
pub struct RuleTable {
    rules: Vec<HttpRule>,
}

/// One HTTP method and path template bound to a gRPC method.
#[derive(Debug)]
pub struct HttpRule {
    pub method: http::Method,
    pub template: PathTemplate,
    /// The field path of each template variable, in template order.
    pub variables: Vec<FieldPath>,
    pub binding: Arc<MethodBinding>,
    /// The `body` of the rule.
    pub body: BodyRule,
    /// `response_body`: the output field sent as the response, if any.
    pub response_body: Option<FieldDescriptor>,
}

/// The gRPC method a rule calls.
#[derive(Debug)]
pub struct MethodBinding {
    pub method: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
}

/// Target of the request body in the request message.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyRule {
    /// No body: every field comes from the path and the query.
    None,
    /// `body: "*"`: the body is the whole request message.
    Whole,
    /// `body: "field"`: the body is one field of the request message.
    Field(FieldDescriptor),
}

/// A dotted field path resolved against the request message, outermost
/// field first.
pub type FieldPath = Vec<FieldDescriptor>;

/// A rule matched by a request.
pub struct RuleMatch {
    /// The rule's index, for `RuleTable::get`.
    pub index: usize,
    /// The values of the template variables, in template order.
    pub values: Vec<String>,
}

impl RuleTable {
    pub fn new(mut rules: Vec<HttpRule>) -> RuleTable {
        rules.sort_by_key(|rule| rule.template.specificity_key());
        RuleTable { rules }
    }

    /// Finds the first rule for `method` whose template matches `path`.
    // NOTE: a linear scan over the method's rules; fine for the tens of
    // methods a service has, slow for thousands.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<RuleMatch> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.method == method)
            .find_map(|(index, rule)| rule.template.matches(path).map(|values| RuleMatch { index, values }))
    }

    /// Returns the rule at `index`, as `find` returned it.
    pub fn get(&self, index: usize) -> &HttpRule {
        &self.rules[index]
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
