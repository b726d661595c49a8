//! Route match evaluation: path and header matchers.

use http::HeaderMap;

use legate_config::model::{HeaderMatch, HeaderMatcher, PathMatch, RouteMatch};

pub(crate) fn matches(matcher: &RouteMatch, path: &str, headers: &HeaderMap) -> bool {
    path_matches(&matcher.path, matcher.case_sensitive, path)
        && (!matcher.grpc || crate::grpc::Protocol::of(headers) == crate::grpc::Protocol::Grpc)
        && matcher.headers.iter().all(|header| header_matches(header, headers))
}

fn path_matches(matcher: &PathMatch, case_sensitive: bool, path: &str) -> bool {
    match matcher {
        PathMatch::Prefix(prefix) if case_sensitive => path.starts_with(prefix.as_str()),
        PathMatch::Prefix(prefix) => {
            path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        PathMatch::Exact(exact) if case_sensitive => path == exact,
        PathMatch::Exact(exact) => path.eq_ignore_ascii_case(exact),
        PathMatch::Regex(regex) => regex.is_match(path),
    }
}

/// Evaluates one header matcher. A header sent several times is matched
/// against its values joined with commas, as Envoy does.
fn header_matches(matcher: &HeaderMatcher, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(matcher.name.as_str()).iter().peekable();
    let present = values.peek().is_some();

    let result = match &matcher.matcher {
        HeaderMatch::Present(expected) => present == *expected,
        _ if !present && !matcher.treat_missing_as_empty => return false,
        value_matcher => {
            let joined = join_values(values);
            value_matches(value_matcher, &joined)
        }
    };
    result != matcher.invert
}

fn join_values<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> String {
    let mut joined = String::new();
    for value in values {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    joined
}

pub(crate) fn value_matches(matcher: &HeaderMatch, value: &str) -> bool {
    match matcher {
        HeaderMatch::Present(_) => true,
        HeaderMatch::Exact { value: expected, ignore_case } => compare(value, expected, *ignore_case, |v, e| v == e),
        HeaderMatch::Prefix { value: expected, ignore_case } => {
            compare(value, expected, *ignore_case, |v, e| v.starts_with(e))
        }
        HeaderMatch::Suffix { value: expected, ignore_case } => compare(value, expected, *ignore_case, |v, e| v.ends_with(e)),
        HeaderMatch::Contains { value: expected, ignore_case } => compare(value, expected, *ignore_case, |v, e| v.contains(e)),
        HeaderMatch::Regex(regex) => regex.is_match(value),
    }
}

fn compare(value: &str, expected: &str, ignore_case: bool, test: impl Fn(&str, &str) -> bool) -> bool {
    if ignore_case {
        test(&value.to_ascii_lowercase(), &expected.to_ascii_lowercase())
    } else {
        test(value, expected)
    }
}
