//! Decoding of the API key authentication filter and its per-route settings.

use std::collections::HashSet;

use http::HeaderName;

use legate_api::envoy::extensions::filters::http::api_key_auth::v3 as api;

use super::decode_message;
use crate::error::Collector;
use crate::model::{ApiKeyAuth, ApiKeyAuthPerRoute, ApiKeyCredential, ApiKeyForwarding, KeySource};

pub(crate) const API_KEY_AUTH_NAME: &str = "envoy.filters.http.api_key_auth";
pub(crate) const API_KEY_AUTH_TYPE: &str = "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth";
pub(crate) const API_KEY_AUTH_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute";

/// Decodes the filter's `typed_config`. The filter needs at least one key
/// source, because without one every request would be rejected.
pub(crate) fn api_key_auth(bytes: &[u8], errors: &mut Collector) -> Option<ApiKeyAuth> {
    let proto = decode_message::<api::ApiKeyAuth>(bytes, errors)?;
    let key_sources = key_sources(&proto.key_sources, errors);
    if key_sources.is_empty() {
        errors.missing("key_sources");
    }
    Some(ApiKeyAuth {
        credentials: credentials(&proto.credentials, errors),
        key_sources,
        forwarding: proto.forwarding.as_ref().map(|forwarding| self::forwarding(forwarding, errors)).unwrap_or_default(),
    })
}

/// Decodes `ApiKeyAuthPerRoute` from a route's or virtual host's
/// `typed_per_filter_config`.
pub(crate) fn api_key_auth_per_route(bytes: &[u8], errors: &mut Collector) -> Option<ApiKeyAuthPerRoute> {
    let proto = decode_message::<api::ApiKeyAuthPerRoute>(bytes, errors)?;
    for (index, client) in proto.allowed_clients.iter().enumerate() {
        if client.is_empty() {
            errors.at(format!("allowed_clients[{index}]"), |errors| errors.invalid("a client name must not be empty"));
        }
    }
    Some(ApiKeyAuthPerRoute {
        credentials: credentials(&proto.credentials, errors),
        key_sources: key_sources(&proto.key_sources, errors),
        allowed_clients: proto.allowed_clients.clone(),
        forwarding: proto.forwarding.as_ref().map(|forwarding| self::forwarding(forwarding, errors)),
    })
}

/// Checks the credentials. Error messages name the entry by index and
/// client, never by key.
fn credentials(proto: &[api::Credential], errors: &mut Collector) -> Vec<ApiKeyCredential> {
    let mut keys = HashSet::with_capacity(proto.len());
    for (index, credential) in proto.iter().enumerate() {
        errors.at(format!("credentials[{index}]"), |errors| {
            if credential.key.is_empty() {
                errors.missing("key");
            }
            if credential.client.is_empty() {
                errors.missing("client");
            }
            if !keys.insert(credential.key.as_str()) {
                errors.invalid(format!("the key of client {:?} is also the key of an earlier credential", credential.client));
            }
        });
    }
    proto.iter().map(|credential| ApiKeyCredential { key: credential.key.clone(), client: credential.client.clone() }).collect()
}

fn key_sources(proto: &[api::KeySource], errors: &mut Collector) -> Vec<KeySource> {
    let mut sources = Vec::with_capacity(proto.len());
    for (index, source) in proto.iter().enumerate() {
        let decoded = errors.at(format!("key_sources[{index}]"), |errors| {
            // Envoy's precedence when several are set: header, then query, then cookie.
            if !source.header.is_empty() {
                header_name(&source.header, "header", errors).map(KeySource::Header)
            } else if !source.query.is_empty() {
                Some(KeySource::Query(source.query.clone()))
            } else if !source.cookie.is_empty() {
                Some(KeySource::Cookie(source.cookie.clone()))
            } else {
                errors.missing("header, query or cookie");
                None
            }
        });
        sources.extend(decoded);
    }
    sources
}

fn forwarding(proto: &api::Forwarding, errors: &mut Collector) -> ApiKeyForwarding {
    let header = (!proto.header.is_empty()).then(|| errors.at("forwarding", |errors| header_name(&proto.header, "header", errors))).flatten();
    ApiKeyForwarding { header, hide_credentials: proto.hide_credentials }
}

/// Parses a header name given in config, lowercased.
pub(crate) fn header_name(text: &str, field: &'static str, errors: &mut Collector) -> Option<HeaderName> {
    match HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            errors.at(field, |errors| errors.invalid(format!("{text:?} is not a valid header name")));
            None
        }
    }
}
