//! The API key authentication filter: finds the request's key, checks it
//! against the credentials in constant time, and passes the client's name
//! upstream.
//!
//! A request without a key gets 401. A key that matches no credential, or
//! the key of a client the route does not allow, gets 403. The key never
//! appears in a log line, a metric or a reply body.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Uri};
use tracing::debug;

use legate_config::model::{ApiKeyAuth, ApiKeyAuthPerRoute, ApiKeyCredential, KeySource, PerRoute};

use super::body::ResponseBody;
use super::hash::{cookie_value, query_value};
use super::local_reply;

/// Runs the filter on one request. Returns the reply for a rejected
/// request, and changes an accepted one as `forwarding` sets.
pub fn check(filter: &ApiKeyAuth, route: Option<&PerRoute<ApiKeyAuthPerRoute>>, parts: &mut Parts) -> Result<(), Box<Response<ResponseBody>>> {
    let route = match route {
        Some(PerRoute::Disabled) => return Ok(()),
        Some(PerRoute::Override(route)) => Some(&**route),
        None => None,
    };
    let credentials = route.map(|r| &r.credentials).filter(|c| !c.is_empty()).unwrap_or(&filter.credentials);
    let sources = route.map(|r| &r.key_sources).filter(|s| !s.is_empty()).unwrap_or(&filter.key_sources);
    let forwarding = route.and_then(|r| r.forwarding.as_ref()).unwrap_or(&filter.forwarding);

    let Some((source, key)) = find_key(sources, parts) else {
        debug!("request has no API key");
        return Err(Box::new(local_reply(StatusCode::UNAUTHORIZED, "missing API key")));
    };
    let Some(credential) = matching_credential(credentials, key.as_bytes()) else {
        debug!("API key matches no credential");
        return Err(Box::new(local_reply(StatusCode::FORBIDDEN, "API key not allowed")));
    };
    let allowed = route.is_none_or(|r| r.allowed_clients.is_empty() || r.allowed_clients.contains(&credential.client));
    if !allowed {
        debug!(client = %credential.client, "API key client not allowed on this route");
        return Err(Box::new(local_reply(StatusCode::FORBIDDEN, "API key not allowed")));
    }

    let client = credential.client.as_str();
    if forwarding.hide_credentials {
        hide_key(source, parts);
    }
    if let Some(name) = &forwarding.header {
        if let Ok(value) = HeaderValue::from_str(client) {
            parts.headers.insert(name.clone(), value);
        }
    }
    Ok(())
}

/// Finds the key in the first source the request carries.
fn find_key<'a, 'p>(sources: &'a [KeySource], parts: &'p Parts) -> Option<(&'a KeySource, &'p str)> {
    sources.iter().find_map(|source| {
        let key = match source {
            KeySource::Header(name) => {
                let value = parts.headers.get(name)?.to_str().ok()?;
                value.strip_prefix("Bearer ").unwrap_or(value)
            }
            KeySource::Query(name) => query_value(&parts.uri, name)?,
            KeySource::Cookie(name) => cookie_value(&parts.headers, name)?,
        };
        (!key.is_empty()).then_some((source, key))
    })
}

/// Compares the key with every credential, each in time that depends only
/// on the lengths, so the reply time does not reveal how much of a key matched.
fn matching_credential<'a>(credentials: &'a [ApiKeyCredential], key: &[u8]) -> Option<&'a ApiKeyCredential> {
    let mut found = None;
    for credential in credentials {
        if constant_time_eq(credential.key.as_bytes(), key) {
            found = Some(credential);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// Removes the key from where it was found before the request goes upstream.
fn hide_key(source: &KeySource, parts: &mut Parts) {
    match source {
        KeySource::Header(name) => {
            parts.headers.remove(name);
        }
        KeySource::Query(name) => {
            if let Some(uri) = without_query_parameter(&parts.uri, name) {
                parts.uri = uri;
            }
        }
        KeySource::Cookie(name) => {
            let kept: Vec<String> = parts
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(cookie, _)| cookie != name))
                .map(str::to_string)
                .collect();
            parts.headers.remove(header::COOKIE);
            if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
                if !kept.is_empty() {
                    parts.headers.insert(header::COOKIE, value);
                }
            }
        }
    }
}

fn without_query_parameter(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query.split('&').filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name).collect();
    let mut path_and_query = uri.path().to_string();
    if !kept.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_config::model::ApiKeyForwarding;

    fn filter() -> ApiKeyAuth {
        ApiKeyAuth {
            credentials: vec![ApiKeyCredential { key: "key-one".into(), client: "one".into() }],
            key_sources: vec![KeySource::Header(http::HeaderName::from_static("x-api-key")), KeySource::Query("api_key".into())],
            forwarding: ApiKeyForwarding { header: Some(http::HeaderName::from_static("x-client")), hide_credentials: true },
        }
    }

    fn parts(uri: &str, key_header: Option<&str>) -> Parts {
        let mut builder = http::Request::get(uri);
        if let Some(key) = key_header {
            builder = builder.header("x-api-key", key);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn missing_wrong_and_right_keys() {
        let filter = filter();
        assert_eq!(check(&filter, None, &mut parts("/", None)).unwrap_err().status(), 401);
        assert_eq!(check(&filter, None, &mut parts("/", Some("key-two"))).unwrap_err().status(), 403);
        let mut accepted = parts("/", Some("Bearer key-one"));
        assert!(check(&filter, None, &mut accepted).is_ok());
        assert_eq!(accepted.headers["x-client"], "one");
        assert!(!accepted.headers.contains_key("x-api-key"), "hide_credentials removes the key");
    }

    #[test]
    fn query_key_is_hidden() {
        let mut accepted = parts("/a?x=1&api_key=key-one&y=2", None);
        assert!(check(&filter(), None, &mut accepted).is_ok());
        assert_eq!(accepted.uri.to_string(), "/a?x=1&y=2");
    }

    #[test]
    fn route_allowed_clients_and_disable() {
        let route = PerRoute::Override(std::sync::Arc::new(ApiKeyAuthPerRoute { allowed_clients: vec!["two".into()], ..Default::default() }));
        assert_eq!(check(&filter(), Some(&route), &mut parts("/", Some("key-one"))).unwrap_err().status(), 403);
        assert!(check(&filter(), Some(&PerRoute::Disabled), &mut parts("/", None)).is_ok());
    }
}
