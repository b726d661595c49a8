//! Decoding of the JWT authentication filter, its per-route settings and the
//! JSON Web Key Sets of its providers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::extensions::filters::http::jwt_authn::v3 as api;

use super::auth::header_name;
use super::decode_message;
use crate::error::Collector;
use crate::model::{ClaimToHeader, JwtAuthn, JwtPerRoute, JwtProvider, JwtRequirement, JwtRule, TokenSource};

mod jwks;

pub(crate) const JWT_AUTHN_NAME: &str = "envoy.filters.http.jwt_authn";
pub(crate) const JWT_AUTHN_TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
pub(crate) const JWT_AUTHN_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";

/// Envoy's default `clock_skew_seconds`.
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Decodes the filter's `typed_config`, parsing every provider's JWKS.
pub(crate) fn jwt_authn(bytes: &[u8], errors: &mut Collector) -> Option<JwtAuthn> {
    let proto = decode_message::<api::JwtAuthentication>(bytes, errors)?;
    let mut names: Vec<&str> = proto.providers.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        errors.missing("providers");
    }

    let providers: Vec<JwtProvider> =
        names.iter().filter_map(|name| errors.at(format!("providers[{name}]"), |errors| provider(name, &proto.providers[*name], errors))).collect();
    let mut requirement_map = HashMap::with_capacity(proto.requirement_map.len());
    for (name, requirement) in &proto.requirement_map {
        if let Some(decoded) = errors.at(format!("requirement_map[{name}]"), |errors| self::requirement(requirement, &names, errors)) {
            requirement_map.insert(name.clone(), Arc::new(decoded));
        }
    }
    let rules = proto
        .rules
        .iter()
        .enumerate()
        .filter_map(|(index, rule)| errors.at(format!("rules[{index}]"), |errors| self::rule(rule, &names, &requirement_map, errors)))
        .collect();
    let written_headers: Vec<http::HeaderName> = providers
        .iter()
        .flat_map(|provider| provider.forward_payload_header.iter().chain(provider.claim_to_headers.iter().map(|claim| &claim.header_name)))
        .cloned()
        .collect();
    Some(JwtAuthn { providers, rules, requirement_map, written_headers })
}

/// Decodes `PerRouteConfig` from a route's or virtual host's
/// `typed_per_filter_config`. The requirement name is looked up in the
/// filter's `requirement_map` per request, because the filter belongs to a
/// listener and routes may arrive before it.
pub(crate) fn jwt_authn_per_route(bytes: &[u8], errors: &mut Collector) -> Option<JwtPerRoute> {
    use api::per_route_config::RequirementSpecifier;

    let proto = decode_message::<api::PerRouteConfig>(bytes, errors)?;
    match proto.requirement_specifier {
        Some(RequirementSpecifier::Disabled(true)) => Some(JwtPerRoute::Disabled),
        Some(RequirementSpecifier::Disabled(false)) => {
            errors.invalid("disabled must be true when set");
            None
        }
        Some(RequirementSpecifier::RequirementName(name)) if name.is_empty() => {
            errors.missing("requirement_name");
            None
        }
        Some(RequirementSpecifier::RequirementName(name)) => Some(JwtPerRoute::RequirementName(name)),
        None => {
            errors.missing("disabled or requirement_name");
            None
        }
    }
}

fn provider(name: &str, proto: &api::JwtProvider, errors: &mut Collector) -> Option<JwtProvider> {
    use api::jwt_provider::JwksSourceSpecifier;

    let keys = match &proto.jwks_source_specifier {
        Some(JwksSourceSpecifier::LocalJwks(source)) => errors.at("local_jwks", |errors| local_jwks(name, source, errors)),
        Some(JwksSourceSpecifier::RemoteJwks(_)) => {
            errors.at("remote_jwks", |errors| {
                errors.unsupported("remote_jwks is not supported because Legate makes no outbound calls to fetch keys; use local_jwks")
            });
            None
        }
        None => {
            errors.missing("local_jwks");
            None
        }
    };
    let forward_payload_header = (!proto.forward_payload_header.is_empty())
        .then(|| header_name(&proto.forward_payload_header, "forward_payload_header", errors))
        .flatten();
    let claim_to_headers = proto
        .claim_to_headers
        .iter()
        .enumerate()
        .filter_map(|(index, claim)| errors.at(format!("claim_to_headers[{index}]"), |errors| claim_to_header(claim, errors)))
        .collect();
    let clock_skew = match proto.clock_skew_seconds {
        0 => DEFAULT_CLOCK_SKEW,
        seconds => Duration::from_secs(u64::from(seconds)),
    };
    Some(JwtProvider {
        name: name.to_string(),
        issuer: proto.issuer.clone(),
        audiences: proto.audiences.clone(),
        keys: keys?,
        token_sources: token_sources(proto, errors),
        forward: proto.forward,
        forward_payload_header,
        claim_to_headers,
        clock_skew,
    })
}

/// Reads and parses the JWKS. Errors name the provider, because the JWKS
/// text itself is often a long inline string.
fn local_jwks(provider: &str, source: &core::DataSource, errors: &mut Collector) -> Option<Vec<crate::model::Jwk>> {
    use core::data_source::Specifier;

    let text = match &source.specifier {
        Some(Specifier::InlineString(text)) => text.clone(),
        Some(Specifier::InlineBytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        // NOTE: the control plane decodes listeners too, so a `filename` must exist on its host as well as the proxy's.
        Some(Specifier::Filename(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                errors.invalid(format!("cannot read the JWKS of provider {provider:?} from {path:?}: {error}"));
                return None;
            }
        },
        None => {
            errors.missing("filename, inline_bytes or inline_string");
            return None;
        }
    };
    match jwks::parse(&text) {
        Ok(keys) => Some(keys),
        Err(error) => {
            errors.invalid(format!("the JWKS of provider {provider:?} is invalid: {error}"));
            None
        }
    }
}

/// `from_headers` and `from_params`, or Envoy's defaults when both are empty:
/// `Authorization: Bearer <token>` and the `access_token` query parameter.
fn token_sources(proto: &api::JwtProvider, errors: &mut Collector) -> Vec<TokenSource> {
    if proto.from_headers.is_empty() && proto.from_params.is_empty() {
        return vec![
            TokenSource::Header { name: http::header::AUTHORIZATION, value_prefix: "Bearer ".to_string() },
            TokenSource::Param("access_token".to_string()),
        ];
    }
    let mut sources = Vec::with_capacity(proto.from_headers.len() + proto.from_params.len());
    for (index, header) in proto.from_headers.iter().enumerate() {
        let name = errors.at(format!("from_headers[{index}]"), |errors| {
            if header.name.is_empty() {
                errors.missing("name");
                return None;
            }
            header_name(&header.name, "name", errors)
        });
        if let Some(name) = name {
            sources.push(TokenSource::Header { name, value_prefix: header.value_prefix.clone() });
        }
    }
    for (index, param) in proto.from_params.iter().enumerate() {
        if param.is_empty() {
            errors.at(format!("from_params[{index}]"), |errors| errors.invalid("a parameter name must not be empty"));
        }
        sources.push(TokenSource::Param(param.clone()));
    }
    sources
}

fn claim_to_header(proto: &api::JwtClaimToHeader, errors: &mut Collector) -> Option<ClaimToHeader> {
    if proto.claim_name.is_empty() {
        errors.missing("claim_name");
    }
    if proto.header_name.is_empty() {
        errors.missing("header_name");
        return None;
    }
    let header_name: HeaderName = header_name(&proto.header_name, "header_name", errors)?;
    Some(ClaimToHeader { claim_name: proto.claim_name.clone(), header_name })
}

fn rule(
    proto: &api::RequirementRule,
    providers: &[&str],
    requirement_map: &HashMap<String, Arc<JwtRequirement>>,
    errors: &mut Collector,
) -> Option<JwtRule> {
    use api::requirement_rule::RequirementType;

    let Some(proto_match) = &proto.r#match else {
        errors.missing("match");
        return None;
    };
    let matcher = errors.at("match", |errors| super::route::route_match(proto_match, errors))?;
    let requirement = match &proto.requirement_type {
        Some(RequirementType::Requires(requirement)) => {
            Some(Arc::new(errors.at("requires", |errors| self::requirement(requirement, providers, errors))?))
        }
        Some(RequirementType::RequirementName(name)) => match requirement_map.get(name) {
            Some(requirement) => Some(requirement.clone()),
            None => {
                errors.at("requirement_name", |errors| errors.invalid(format!("{name:?} is not in requirement_map")));
                return None;
            }
        },
        None => None,
    };
    Some(JwtRule { matcher, requirement })
}

fn requirement(proto: &api::JwtRequirement, providers: &[&str], errors: &mut Collector) -> Option<JwtRequirement> {
    use api::jwt_requirement::RequiresType;

    match &proto.requires_type {
        Some(RequiresType::ProviderName(name)) => match providers.iter().position(|provider| provider == name) {
            Some(index) => Some(JwtRequirement::Provider(index)),
            None => {
                errors.at("provider_name", |errors| errors.invalid(format!("{name:?} is not in providers")));
                None
            }
        },
        Some(RequiresType::RequiresAny(list)) => {
            if list.requirements.len() < 2 {
                errors.at("requires_any", |errors| errors.invalid("requirements must list at least two requirements"));
            }
            let requirements: Vec<_> = list
                .requirements
                .iter()
                .enumerate()
                .filter_map(|(index, child)| {
                    errors.at(format!("requires_any.requirements[{index}]"), |errors| requirement(child, providers, errors))
                })
                .collect();
            Some(JwtRequirement::Any(requirements))
        }
        Some(RequiresType::AllowMissing(())) => Some(JwtRequirement::AllowMissing),
        Some(RequiresType::AllowMissingOrFailed(())) => Some(JwtRequirement::AllowMissingOrFailed),
        None => {
            errors.missing("provider_name, requires_any, allow_missing or allow_missing_or_failed");
            None
        }
    }
}
