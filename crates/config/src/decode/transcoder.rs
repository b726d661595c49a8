//! Decoding of the gRPC-JSON transcoder filter and its per-route config.

use std::collections::HashSet;
use std::sync::Arc;

use prost_reflect::DescriptorPool;

use legate_api::envoy::extensions::filters::http::grpc_json_transcoder::v3 as api;

use super::decode_message;
use crate::error::Collector;
use crate::transcoder::{compile, GrpcJsonTranscoder, PrintOptions};

pub(crate) const TRANSCODER_NAME: &str = "envoy.filters.http.grpc_json_transcoder";
pub(crate) const TRANSCODER_TYPE: &str = "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder";
pub(crate) const TRANSCODER_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoderPerRoute";

/// Legate's default for `max_request_body_size` and
/// `max_response_body_size`: gRPC's default largest message, 4 MiB.
const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

pub(crate) fn grpc_json_transcoder(bytes: &[u8], errors: &mut Collector) -> Option<GrpcJsonTranscoder> {
    let proto = decode_message::<api::GrpcJsonTranscoder>(bytes, errors)?;
    reject_unimplemented(&proto, errors);

    let descriptor_bytes: Arc<[u8]> = match &proto.descriptor_set {
        Some(api::grpc_json_transcoder::DescriptorSet::ProtoDescriptorBin(bytes)) => bytes.as_slice().into(),
        Some(api::grpc_json_transcoder::DescriptorSet::ProtoDescriptor(path)) => match std::fs::read(path) {
            Ok(bytes) => bytes.into(),
            Err(error) => {
                errors.at("proto_descriptor", |errors| errors.invalid(format!("reading {path:?} failed: {error}")));
                return None;
            }
        },
        None => {
            errors.missing("proto_descriptor or proto_descriptor_bin");
            return None;
        }
    };
    let pool = match DescriptorPool::decode(&*descriptor_bytes) {
        Ok(pool) => pool,
        Err(error) => {
            errors.invalid(format!("the proto descriptor set is not a valid FileDescriptorSet: {error}"));
            return None;
        }
    };
    if proto.services.is_empty() {
        errors.missing("services");
        return None;
    }
    let rules = match compile(&pool, &proto.services, proto.auto_mapping) {
        Ok(rules) => rules,
        Err(error) => {
            errors.at("services", |errors| errors.invalid(error.to_string()));
            return None;
        }
    };
    let print = proto.print_options.unwrap_or_default();
    let validation = proto.request_validation_options.unwrap_or_default();
    let limit = |value: Option<u32>, field: &'static str, errors: &mut Collector| match value {
        Some(0) => {
            errors.at(field, |errors| errors.invalid(format!("{field} must be greater than 0")));
            DEFAULT_MAX_BODY
        }
        Some(value) => value as usize,
        None => DEFAULT_MAX_BODY,
    };
    Some(GrpcJsonTranscoder {
        status_message: pool.get_message_by_name("google.rpc.Status"),
        rules,
        print: PrintOptions {
            add_whitespace: print.add_whitespace,
            always_print_primitive_fields: print.always_print_primitive_fields,
            always_print_enums_as_ints: print.always_print_enums_as_ints,
            preserve_proto_field_names: print.preserve_proto_field_names,
            stream_newline_delimited: print.stream_newline_delimited,
        },
        match_incoming_request_route: proto.match_incoming_request_route,
        ignored_query_parameters: proto.ignored_query_parameters.iter().cloned().collect::<HashSet<_>>(),
        // Legate rejects an unknown query parameter with 400 whether or not
        // reject_unknown_query_parameters is set, where Envoy without it
        // passes the request on untranscoded.
        ignore_unknown_query_parameters: proto.ignore_unknown_query_parameters,
        convert_grpc_status: proto.convert_grpc_status,
        reject_unknown_method: validation.reject_unknown_method,
        query_param_unescape_plus: proto.query_param_unescape_plus,
        max_request_body_size: limit(proto.max_request_body_size, "max_request_body_size", errors),
        max_response_body_size: limit(proto.max_response_body_size, "max_response_body_size", errors),
        pool,
        descriptor_bytes,
        services: proto.services,
    })
}

/// Rejects, by name, the fields Legate declares but does not implement.
fn reject_unimplemented(proto: &api::GrpcJsonTranscoder, errors: &mut Collector) {
    let mut reject = |is_set: bool, field: &str| {
        if is_set {
            errors.unsupported(format!("{field} is not supported by Legate's gRPC-JSON transcoder"));
        }
    };
    reject(proto.url_unescape_spec != 0, "url_unescape_spec other than ALL_CHARACTERS_EXCEPT_RESERVED");
    reject(proto.match_unregistered_custom_verb, "match_unregistered_custom_verb");
    reject(proto.case_insensitive_enum_parsing, "case_insensitive_enum_parsing");
    let collisions = proto.request_validation_options.as_ref().is_some_and(|options| options.reject_binding_body_field_collisions);
    reject(collisions, "request_validation_options.reject_binding_body_field_collisions");
}

/// Reads a route's `GrpcJsonTranscoder`, which current Envoy uses as the
/// per-route config: an empty `services` list turns the filter off, and
/// Legate supports no other per-route setting.
pub(crate) fn transcoder_route_override(bytes: &[u8], errors: &mut Collector) -> bool {
    let Some(proto) = decode_message::<api::GrpcJsonTranscoder>(bytes, errors) else { return false };
    if proto.services.is_empty() {
        return true;
    }
    errors.unsupported("a per-route GrpcJsonTranscoder must have an empty services list, which disables the filter; Legate has no per-route transcoder settings");
    false
}

/// Reads `GrpcJsonTranscoderPerRoute`, the per-route message of older Envoy
/// releases, where Legate supports `disabled: true` only.
pub(crate) fn transcoder_per_route(bytes: &[u8], errors: &mut Collector) -> bool {
    let Some(proto) = decode_message::<api::GrpcJsonTranscoderPerRoute>(bytes, errors) else { return false };
    match proto.r#override {
        Some(api::grpc_json_transcoder_per_route::Override::Disabled(true)) => true,
        Some(api::grpc_json_transcoder_per_route::Override::Transcoder(_)) => {
            errors.unsupported("transcoder is not supported in GrpcJsonTranscoderPerRoute; Legate supports disabled: true only");
            false
        }
        _ => {
            errors.invalid("GrpcJsonTranscoderPerRoute must set disabled: true");
            false
        }
    }
}
