//! Decoding of the JWT authentication filter: a full config is accepted,
//! and unknown fields, bad JWKS, `remote_jwks` and unknown provider names
//! are rejected with errors that name them.

mod support;

use legate_config::model::{HttpFilter, JwkKey, JwtRequirement};
use legate_config::resource::decode_any;
use legate_config::text::parse_resources;
use legate_config::Resource;

/// A JWKS with one EC P-256 key (an arbitrary point: decoding does not check
/// that it lies on the curve) and one Ed25519 key.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA","y":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"},{"kty":"OKP","crv":"Ed25519","x":"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"}]}"#;

/// Renders a listener whose connection manager runs the JWT filter with `provider`
/// (YAML fields of provider `main`, indented by 14 spaces) and `rules`.
fn listener(provider: &str, rules: &str) -> String {
    let jwks = serde_json::to_string(JWKS).unwrap();
    let filter = format!(
        r#"        - name: envoy.filters.http.jwt_authn
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
            providers:
              main:
                local_jwks: {{ inline_string: {jwks} }}
{provider}
            rules:
{rules}"#
    );
    support::listener_with_filters(support::RDS, &filter)
}

const RULES: &str = "            - match: { prefix: / }\n              requires: { provider_name: main }";

fn decode(yaml: &str) -> Result<Vec<Resource>, String> {
    let resources = parse_resources(yaml).map_err(|errors| errors.to_string())?;
    resources.iter().map(|any| decode_any(any).map(|decoded| decoded.value).map_err(|errors| errors.to_string())).collect()
}

#[test]
fn full_config_decodes() {
    let provider = "                issuer: https://issuer.example\n                audiences: [api]\n                forward: true\n                from_headers: [{ name: x-jwt, value_prefix: \"Token \" }]\n                from_params: [jwt]\n                forward_payload_header: x-payload\n                claim_to_headers: [{ claim_name: sub, header_name: x-sub }]\n                clock_skew_seconds: 5";
    let rules = format!("{RULES}\n            - match: {{ path: /open }}\n            - match: {{ safe_regex: {{ regex: \"/any/.*\" }} }}\n              requires: {{ requires_any: {{ requirements: [{{ provider_name: main }}, {{ allow_missing: {{}} }}] }} }}");
    let resources = decode(&listener(provider, &rules)).unwrap();
    let Resource::Listener(listener) = &resources[0] else { panic!("not a listener") };
    let filters = &listener.filter_chains[0].http.http_filters;
    let HttpFilter::JwtAuthn(config) = &filters[0] else { panic!("no JWT filter: {filters:?}") };

    let provider = &config.providers[0];
    assert_eq!(provider.name, "main");
    assert_eq!(provider.keys.len(), 2);
    let JwkKey::Ec { point, .. } = &provider.keys[0].key else { panic!("not an EC key: {:?}", provider.keys[0]) };
    assert_eq!(point.len(), 65, "uncompressed point");
    assert_eq!(point[0], 4, "uncompressed point tag");
    assert!(matches!(&provider.keys[1].key, JwkKey::Ed25519(key) if key.len() == 32));
    assert_eq!(provider.token_sources.len(), 2);
    assert_eq!(provider.clock_skew.as_secs(), 5);
    assert_eq!(config.rules.len(), 3);
    assert!(config.rules[1].requirement.is_none(), "a rule without requires");
    assert_eq!(config.rules[2].requirement.as_deref(), Some(&JwtRequirement::Any(vec![JwtRequirement::Provider(0), JwtRequirement::AllowMissing])));
}

#[test]
fn unknown_field_is_rejected_by_name() {
    let error = decode(&listener("                require_expiration: true", RULES)).unwrap_err();
    assert!(error.contains("require_expiration"), "got {error}");
}

#[test]
fn invalid_jwks_names_the_provider() {
    let yaml = listener("", RULES).replace(&serde_json::to_string(JWKS).unwrap(), "\"{not json\"");
    let error = decode(&yaml).unwrap_err();
    assert!(error.contains("\"main\""), "got {error}");
    assert!(error.contains("not valid JSON"), "got {error}");

    let yaml = listener("", RULES).replace("\"kty\\\":\\\"OKP\\\"", "\"kty\\\":\\\"oct\\\"");
    let error = decode(&yaml).unwrap_err();
    assert!(error.contains("keys[1]"), "got {error}");
    assert!(error.contains("\"oct\""), "got {error}");
}

#[test]
fn remote_jwks_is_rejected() {
    let yaml = listener("", RULES).replace(
        &format!("local_jwks: {{ inline_string: {} }}", serde_json::to_string(JWKS).unwrap()),
        "remote_jwks: { http_uri: { uri: \"https://keys.example/jwks\", cluster: keys, timeout: 1s } }",
    );
    let error = decode(&yaml).unwrap_err();
    assert!(error.contains("remote_jwks"), "got {error}");
    assert!(error.contains("not supported"), "got {error}");
}

#[test]
fn unknown_provider_name_is_rejected() {
    let error = decode(&listener("", &RULES.replace("provider_name: main", "provider_name: other"))).unwrap_err();
    assert!(error.contains("\"other\" is not in providers"), "got {error}");
}

#[test]
fn per_route_config_decodes() {
    let route = |entry: &str| {
        format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration\n  name: r\n  virtual_hosts:\n  - name: h\n    domains: [\"*\"]\n    routes:\n    - match: {{ prefix: / }}\n      route: {{ cluster: c }}\n      typed_per_filter_config:\n        envoy.filters.http.jwt_authn:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig\n          {entry}\n"
        )
    };
    assert!(decode(&route("disabled: true")).is_ok());
    assert!(decode(&route("requirement_name: admins")).is_ok());
    let error = decode(&route("disabled: false")).unwrap_err();
    assert!(error.contains("disabled"), "got {error}");
    let error = decode(&route("requirement_name: admins\n          bypass: true")).unwrap_err();
    assert!(error.contains("bypass"), "got {error}");
}
