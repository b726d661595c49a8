//! The JWT authentication filter: picks the requirement for the request
//! (the route's `PerRouteConfig`, else the first matching rule), finds the
//! token where each provider looks for it, verifies it, and passes claims
//! upstream as headers.
//!
//! A missing or invalid token gets 401 and an audience the provider does
//! not allow gets 403, each with Envoy's message and `www-authenticate`.
//! The token never appears in a log line, a metric or a reply body.

mod verify;

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::request::Parts;
use http::Response;
use serde_json::Value;
use tracing::debug;

use legate_config::model::{JwtAuthn, JwtPerRoute, JwtProvider, JwtRequirement, TokenSource};

use super::body::ResponseBody;
use super::hash::query_value;
use super::local_reply;
use crate::stats::HttpStats;
use verify::{JwtError, Verified};

/// Runs the filter on one request that arrived over TLS when `secure`.
/// Returns the reply for a rejected request. An accepted one gets the claim
/// and payload headers of its providers.
pub fn check(
    filter: &JwtAuthn,
    route: Option<&JwtPerRoute>,
    parts: &mut Parts,
    secure: bool,
    stats: &HttpStats,
) -> Result<(), Box<Response<ResponseBody>>> {
    for name in &filter.written_headers {
        parts.headers.remove(name);
    }
    let requirement = match route {
        Some(JwtPerRoute::Disabled) => return Ok(()),
        Some(JwtPerRoute::RequirementName(name)) => match filter.requirement_map.get(name) {
            Some(requirement) => requirement,
            None => {
                // NOTE: the route names a requirement the listener's filter lacks; the request is rejected rather than let through.
                debug!(requirement = %name, "route names a requirement that is not in requirement_map");
                stats.count_jwt_authn("failed");
                return Err(Box::new(reply(JwtError::VerificationFail, parts, secure)));
            }
        },
        None => {
            let path = parts.uri.path();
            let rule = filter.rules.iter().find(|rule| crate::router::matching::matches(&rule.matcher, path, &parts.headers));
            match rule.and_then(|rule| rule.requirement.as_ref()) {
                Some(requirement) => requirement,
                None => return Ok(()),
            }
        }
    };

    match evaluate(requirement, filter, parts) {
        Ok(true) => {
            stats.count_jwt_authn("ok");
            Ok(())
        }
        Ok(false) => {
            stats.count_jwt_authn("passed_without_jwt");
            Ok(())
        }
        Err(error) => {
            debug!(reason = error.message(), "JWT rejected");
            stats.count_jwt_authn(if error == JwtError::Missing { "missing" } else { "failed" });
            Err(Box::new(reply(error, parts, secure)))
        }
    }
}

/// Returns whether a token was verified (`false`: the requirement allowed
/// the request without one), or the error to reply with.
fn evaluate(requirement: &JwtRequirement, filter: &JwtAuthn, parts: &mut Parts) -> Result<bool, JwtError> {
    match requirement {
        JwtRequirement::Provider(index) => verify_provider(&filter.providers[*index], parts).map(|()| true),
        JwtRequirement::Any(requirements) => {
            let mut worst = JwtError::Missing;
            for child in requirements {
                match evaluate(child, filter, parts) {
                    Ok(verified) => return Ok(verified),
                    Err(error) if error.rank() > worst.rank() => worst = error,
                    Err(_) => {}
                }
            }
            Err(worst)
        }
        JwtRequirement::AllowMissing => verify_any_present(filter, parts),
        JwtRequirement::AllowMissingOrFailed => Ok(verify_any_present(filter, parts).unwrap_or(false)),
    }
}

/// Verifies the provider's token and applies its effects to the request.
fn verify_provider(provider: &JwtProvider, parts: &mut Parts) -> Result<(), JwtError> {
    let (source, token) = find_token(provider, parts).ok_or(JwtError::Missing)?;
    let verified = verify::verify(provider, &token).inspect_err(|error| {
        debug!(provider = %provider.name, reason = error.message(), "JWT verification failed");
    })?;
    apply(provider, source, &verified, parts);
    Ok(())
}

/// `allow_missing`: tries every provider whose token the request carries.
/// Passes unverified when it carries none.
fn verify_any_present(filter: &JwtAuthn, parts: &mut Parts) -> Result<bool, JwtError> {
    let mut worst = None::<JwtError>;
    for provider in &filter.providers {
        match verify_provider(provider, parts) {
            Ok(()) => return Ok(true),
            Err(JwtError::Missing) => {}
            Err(error) if worst.is_none_or(|worst| error.rank() > worst.rank()) => worst = Some(error),
            Err(_) => {}
        }
    }
    match worst {
        None => Ok(false),
        Some(error) => Err(error),
    }
}

/// Finds the token in the first of the provider's sources that carries
/// one. The copy lets the request change once the token is verified.
fn find_token<'p>(provider: &'p JwtProvider, parts: &Parts) -> Option<(&'p TokenSource, String)> {
    provider.token_sources.iter().find_map(|source| {
        let token = match source {
            TokenSource::Header { name, value_prefix } => parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| value.strip_prefix(value_prefix.as_str()))?,
            TokenSource::Param(name) => query_value(&parts.uri, name)?,
        };
        let token = token.trim();
        (!token.is_empty()).then(|| (source, token.to_string()))
    })
}

/// Changes an accepted request as the provider sets: removes the token's
/// header unless `forward`, and adds the payload and claim headers.
fn apply(provider: &JwtProvider, source: &TokenSource, verified: &Verified<'_>, parts: &mut Parts) {
    if let (false, TokenSource::Header { name, .. }) = (provider.forward, source) {
        parts.headers.remove(name);
    }
    if let Some(name) = &provider.forward_payload_header {
        if let Ok(value) = HeaderValue::from_str(verified.payload_segment) {
            parts.headers.insert(name.clone(), value);
        }
    }
    for claim in &provider.claim_to_headers {
        if let Some(value) = claim_value(&verified.claims, &claim.claim_name) {
            insert_claim(&mut parts.headers, &claim.header_name, value);
        }
    }
}

/// Looks a claim up by name, then as a dotted path into nested objects.
fn claim_value<'c>(claims: &'c serde_json::Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut segments = name.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// Sets the header to a string, number or boolean claim; other claim types
/// are not copied.
fn insert_claim(headers: &mut http::HeaderMap, name: &HeaderName, value: &Value) {
    let text = match value {
        Value::String(text) => HeaderValue::from_str(text),
        Value::Number(number) => HeaderValue::from_str(&number.to_string()),
        Value::Bool(flag) => Ok(HeaderValue::from_static(if *flag { "true" } else { "false" })),
        _ => return,
    };
    if let Ok(value) = text {
        headers.insert(name.clone(), value);
    }
}

/// Envoy's reply: the error's message as the body, and `www-authenticate`
/// with the request's URI (without its query) as the realm.
fn reply(error: JwtError, parts: &Parts, secure: bool) -> Response<ResponseBody> {
    let mut response = local_reply(error.status(), error.message());
    let scheme = if secure { "https" } else { "http" };
    let host = super::headers::parts_host(parts).unwrap_or("");
    let uri = format!("{scheme}://{host}{}", parts.uri.path());
    let realm = if uri.contains(['"', '\\']) { "" } else { uri.as_str() };
    let mut value = format!("Bearer realm=\"{realm}\"");
    if error != JwtError::Missing {
        value.push_str(", error=\"invalid_token\"");
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri).header("host", "api.example");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn claim_value_follows_dotted_paths() {
        let claims = json!({ "sub": "alice", "org": { "team": { "id": 42 } }, "a.b": "flat" });
        let claims = claims.as_object().unwrap();
        assert_eq!(claim_value(claims, "sub"), Some(&json!("alice")));
        assert_eq!(claim_value(claims, "org.team.id"), Some(&json!(42)));
        assert_eq!(claim_value(claims, "a.b"), Some(&json!("flat")), "a name with a dot is looked up whole first");
        assert_eq!(claim_value(claims, "org.missing"), None);
    }

    #[test]
    fn token_found_by_prefix_and_parameter() {
        let sources = vec![
            TokenSource::Header { name: HeaderName::from_static("x-jwt"), value_prefix: "Token ".into() },
            TokenSource::Param("jwt".into()),
        ];
        let provider = JwtProvider {
            name: "p".into(),
            issuer: String::new(),
            audiences: Vec::new(),
            keys: Vec::new(),
            token_sources: sources,
            forward: false,
            forward_payload_header: None,
            claim_to_headers: Vec::new(),
            clock_skew: std::time::Duration::from_secs(60),
        };
        let (_, token) = find_token(&provider, &parts("/", &[("x-jwt", "Token abc")])).unwrap();
        assert_eq!(token, "abc");
        assert!(find_token(&provider, &parts("/", &[("x-jwt", "Bearer abc")])).is_none(), "the prefix is required");
        let (_, token) = find_token(&provider, &parts("/a?x=1&jwt=def", &[])).unwrap();
        assert_eq!(token, "def");
    }

    #[test]
    fn reply_sets_www_authenticate() {
        let missing = reply(JwtError::Missing, &parts("/p?q=1", &[]), true);
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()[WWW_AUTHENTICATE], "Bearer realm=\"https://api.example/p\"");
        let audience = reply(JwtError::AudienceNotAllowed, &parts("/p", &[]), false);
        assert_eq!(audience.status(), 403);
        assert_eq!(audience.headers()[WWW_AUTHENTICATE], "Bearer realm=\"http://api.example/p\", error=\"invalid_token\"");
    }
}
