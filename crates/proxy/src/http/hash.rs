//! The request hash that RING_HASH and MAGLEV clusters pick endpoints by,
//! from the route's `hash_policy` list, as Envoy computes it: each policy
//! that finds its value adds it to the hash, and a terminal one stops there.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Uri;
use xxhash_rust::xxh64::xxh64;

use legate_config::model::{HashPolicy, HashSource};

/// The hash, and a cookie to send back when a policy made one.
#[derive(Debug, Default)]
pub(super) struct RequestHash {
    pub hash: Option<u64>,
    pub set_cookie: Option<HeaderValue>,
}

pub(super) fn request_hash(policies: &[HashPolicy], headers: &HeaderMap, uri: &Uri, remote: SocketAddr) -> RequestHash {
    let mut result = RequestHash::default();
    for policy in policies {
        let Some(value) = policy_hash(&policy.source, headers, uri, remote, &mut result.set_cookie) else {
            continue;
        };
        result.hash = Some(match result.hash {
            Some(hash) => hash.rotate_left(1) ^ value,
            None => value,
        });
        if policy.terminal {
            break;
        }
    }
    result
}

fn policy_hash(
    source: &HashSource,
    headers: &HeaderMap,
    uri: &Uri,
    remote: SocketAddr,
    set_cookie: &mut Option<HeaderValue>,
) -> Option<u64> {
    match source {
        HashSource::Header(name) => headers.get(name.as_str()).map(|value| xxh64(value.as_bytes(), 0)),
        HashSource::SourceIp => Some(xxh64(remote.ip().to_string().as_bytes(), 0)),
        HashSource::QueryParameter(name) => query_value(uri, name).map(|value| xxh64(value.as_bytes(), 0)),
        HashSource::Cookie { name, ttl, path } => match cookie_value(headers, name) {
            Some(value) => Some(xxh64(value.as_bytes(), 0)),
            None => {
                let ttl = (*ttl)?;
                let value = format!("{:016x}", fastrand::u64(..));
                *set_cookie = new_cookie(name, &value, ttl, path.as_deref());
                Some(xxh64(value.as_bytes(), 0))
            }
        },
    }
}

/// Finds a cookie in the `Cookie` headers; quotes around the value are not
/// part of it.
pub(super) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

pub(super) fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value)
}

fn new_cookie(name: &str, value: &str, ttl: Duration, path: Option<&str>) -> Option<HeaderValue> {
    let mut cookie = format!("{name}=\"{value}\"");
    if !ttl.is_zero() {
        cookie.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(path) = path {
        cookie.push_str(&format!("; Path={path}"));
    }
    cookie.push_str("; HttpOnly");
    HeaderValue::from_str(&cookie).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(source: HashSource, terminal: bool) -> HashPolicy {
        HashPolicy { source, terminal }
    }

    fn remote() -> SocketAddr {
        "10.1.2.3:5555".parse().unwrap()
    }

    #[test]
    fn header_and_query_hash_by_value() {
        let policies = [policy(HashSource::Header("x-user".into()), false)];
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        let uri: Uri = "/p?user=alice".parse().unwrap();
        let first = request_hash(&policies, &headers, &uri, remote()).hash;
        assert_eq!(first, Some(xxh64(b"alice", 0)));

        let by_query = [policy(HashSource::QueryParameter("user".into()), false)];
        assert_eq!(request_hash(&by_query, &HeaderMap::new(), &uri, remote()).hash, first);
        assert_eq!(request_hash(&policies, &HeaderMap::new(), &uri, remote()).hash, None, "absent header, no hash");
    }

    #[test]
    fn terminal_policy_stops() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("2"));
        let uri: Uri = "/".parse().unwrap();
        let terminal = [policy(HashSource::Header("x-a".into()), true), policy(HashSource::Header("x-b".into()), false)];
        let only_a = [policy(HashSource::Header("x-a".into()), false)];
        let both = [policy(HashSource::Header("x-a".into()), false), policy(HashSource::Header("x-b".into()), false)];
        let terminal_hash = request_hash(&terminal, &headers, &uri, remote()).hash;
        assert_eq!(terminal_hash, request_hash(&only_a, &headers, &uri, remote()).hash);
        assert_ne!(terminal_hash, request_hash(&both, &headers, &uri, remote()).hash);
    }

    #[test]
    fn missing_cookie_with_ttl_is_made() {
        let policies = [policy(HashSource::Cookie { name: "sticky".into(), ttl: Some(Duration::from_secs(60)), path: Some("/".into()) }, false)];
        let uri: Uri = "/".parse().unwrap();
        let made = request_hash(&policies, &HeaderMap::new(), &uri, remote());
        let cookie = made.set_cookie.expect("a cookie is made").to_str().unwrap().to_string();
        assert!(cookie.starts_with("sticky=\"") && cookie.ends_with("; Max-Age=60; Path=/; HttpOnly"), "got {cookie}");

        let value = cookie.split('"').nth(1).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; sticky=\"{value}\"")).unwrap());
        let again = request_hash(&policies, &headers, &uri, remote());
        assert_eq!(again.hash, made.hash, "the returned cookie hashes the same");
        assert!(again.set_cookie.is_none());
    }
}
