//! Request path normalization, done before routing so that every spelling
//! of a path meets the route, and the auth policy, of its plain form.
//!
//! The steps run in Envoy's order: escaped slashes first, then RFC 3986
//! normalization, then slash merging. A path that needs none of them is
//! left as it is, without allocating.

use std::borrow::Cow;

use legate_config::model::{EscapedSlashes, PathNormalization};

/// The outcome of checking a request's path.
#[derive(Debug, PartialEq, Eq)]
pub enum PathVerdict<'a> {
    /// Route the request with this path (borrowed when unchanged).
    Route(Cow<'a, str>),
    /// Reply 400, because the path contains an escaped slash and the config rejects those.
    Reject,
    /// Redirect to this path, with the escaped slashes unescaped.
    Redirect(String),
}

/// Applies `config` to `path` (the path alone, without the query string).
pub fn normalize<'a>(path: &'a str, config: &PathNormalization) -> PathVerdict<'a> {
    let mut path = Cow::Borrowed(path);

    if has_escaped_slash(&path) {
        match config.escaped_slashes {
            EscapedSlashes::Keep => {}
            EscapedSlashes::Reject => return PathVerdict::Reject,
            EscapedSlashes::UnescapeAndRedirect => {
                let unescaped = unescape_slashes(&path);
                return PathVerdict::Redirect(normalize_unescaped(unescaped, config));
            }
            EscapedSlashes::UnescapeAndForward => path = Cow::Owned(unescape_slashes(&path)),
        }
    }

    if config.normalize && needs_normalizing(&path) {
        path = Cow::Owned(remove_dot_segments(&decode_unreserved(&path)));
    }
    if config.merge_slashes && path.contains("//") {
        path = Cow::Owned(merge_slashes(&path));
    }
    PathVerdict::Route(path)
}

/// Runs the remaining steps on a path whose slashes were just unescaped.
fn normalize_unescaped(path: String, config: &PathNormalization) -> String {
    let unescaped = PathNormalization { escaped_slashes: EscapedSlashes::Keep, ..*config };
    match normalize(&path, &unescaped) {
        PathVerdict::Route(Cow::Owned(normalized)) => normalized,
        _ => path,
    }
}

fn has_escaped_slash(path: &str) -> bool {
    path.as_bytes().windows(3).any(|window| escaped_slash(window).is_some())
}

/// Returns the slash or backslash that a three-byte escape such as `%2F` encodes.
fn escaped_slash(window: &[u8]) -> Option<char> {
    match window {
        [b'%', b'2', b'f' | b'F'] => Some('/'),
        [b'%', b'5', b'c' | b'C'] => Some('\\'),
        _ => None,
    }
}

fn unescape_slashes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut unescaped = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        if let Some(slash) = bytes.get(index..index + 3).and_then(escaped_slash) {
            unescaped.push(slash);
            index += 3;
            continue;
        }
        let next = next_char_boundary(path, index);
        unescaped.push_str(&path[index..next]);
        index = next;
    }
    unescaped
}

fn next_char_boundary(text: &str, index: usize) -> usize {
    let mut next = index + 1;
    while !text.is_char_boundary(next) {
        next += 1;
    }
    next
}

/// Tells whether RFC 3986 normalization could change the path, because it
/// contains an escape, a backslash, or a `.` segment.
fn needs_normalizing(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.iter().any(|&byte| byte == b'%' || byte == b'\\') {
        return true;
    }
    path.split('/').any(|segment| segment == "." || segment == "..")
}

/// Decodes escapes of unreserved characters (letters, digits, `-._~`),
/// writes the other escapes in upper case, escapes a `%` that starts no
/// escape, and turns backslashes into slashes.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).and_then(|pair| Some((hex_value(pair[0])?, hex_value(pair[1])?)));
                match hex {
                    Some((high, low)) => {
                        let byte = high << 4 | low;
                        if is_unreserved(byte) {
                            decoded.push(char::from(byte));
                        } else {
                            decoded.push('%');
                            decoded.push(char::from(bytes[index + 1].to_ascii_uppercase()));
                            decoded.push(char::from(bytes[index + 2].to_ascii_uppercase()));
                        }
                        index += 3;
                    }
                    None => {
                        // A bare `%` is written as `%25`, so that decoding can
                        // never make a new escape out of it and what follows.
                        decoded.push_str("%25");
                        index += 1;
                    }
                }
            }
            b'\\' => {
                decoded.push('/');
                index += 1;
            }
            _ => {
                let next = next_char_boundary(path, index);
                decoded.push_str(&path[index..next]);
                index = next;
            }
        }
    }
    decoded
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|value| value as u8)
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Removes `.` and `..` segments (RFC 3986 section 5.2.4). A `..` above the
/// root stays at the root, and the result always starts with a slash.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').peekable();
    if path.starts_with('/') {
        parts.next();
    }
    let mut ends_in_directory = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => ends_in_directory = last,
            ".." => {
                segments.pop();
                ends_in_directory = last;
            }
            _ => {
                segments.push(segment);
                ends_in_directory = false;
            }
        }
    }

    let mut normalized = String::with_capacity(path.len() + 1);
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if ends_in_directory || normalized.is_empty() {
        normalized.push('/');
    }
    normalized
}

fn merge_slashes(path: &str) -> String {
    let mut merged = String::with_capacity(path.len());
    for character in path.chars() {
        if character == '/' && merged.ends_with('/') {
            continue;
        }
        merged.push(character);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathNormalization {
        PathNormalization { normalize: true, merge_slashes, escaped_slashes }
    }

    fn routed(path: &str, config: &PathNormalization) -> String {
        match normalize(path, config) {
            PathVerdict::Route(path) => path.into_owned(),
            other => panic!("{path} was not routed: {other:?}"),
        }
    }

    #[test]
    fn dot_segments_resolve_to_plain_path() {
        let config = config(true, EscapedSlashes::Keep);
        for path in ["/admin", "/./admin", "/%2e/admin", "/a/../admin", "/a/%2E%2e/admin", "//admin", "/../../admin", "\\admin", "/x/.%2E/admin"] {
            assert_eq!(routed(path, &config), "/admin", "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_decode_and_others_turn_upper_case() {
        let config = config(false, EscapedSlashes::Keep);
        assert_eq!(routed("/%41%7e%2d/x%3f%3a", &config), "/A~-/x%3F%3A");
        assert_eq!(routed("/100%/%zz", &config), "/100%25/%25zz");
        assert_eq!(routed("/%%32%65%%32%65/admin", &config), "/%252e%252e/admin");
        assert_eq!(routed("/a/b/..", &config), "/a/");
        assert_eq!(routed("/a/.", &config), "/a/");
        assert_eq!(routed("/ünï/./cödé", &config), "/ünï/cödé");
    }

    #[test]
    fn clean_paths_are_borrowed() {
        let config = config(true, EscapedSlashes::Keep);
        assert!(matches!(normalize("/api/v1/users.json", &config), PathVerdict::Route(Cow::Borrowed(_))));
        assert!(matches!(normalize("/", &config), PathVerdict::Route(Cow::Borrowed(_))));
    }

    #[test]
    fn slashes_merge_only_when_configured() {
        assert_eq!(routed("/a//b///c", &config(false, EscapedSlashes::Keep)), "/a//b///c");
        assert_eq!(routed("/a//b///c", &config(true, EscapedSlashes::Keep)), "/a/b/c");
    }

    #[test]
    fn escaped_slashes_follow_the_configured_action() {
        let path = "/api%2F..%2fadmin";
        assert_eq!(routed(path, &config(false, EscapedSlashes::Keep)), "/api%2F..%2Fadmin");
        assert_eq!(normalize(path, &config(false, EscapedSlashes::Reject)), PathVerdict::Reject);
        assert_eq!(normalize(path, &config(false, EscapedSlashes::UnescapeAndRedirect)), PathVerdict::Redirect("/admin".into()));
        assert_eq!(routed("/a%5Cb", &config(false, EscapedSlashes::UnescapeAndForward)), "/a/b");
    }

    #[test]
    fn normalization_off_keeps_the_path() {
        let config = PathNormalization { normalize: false, merge_slashes: false, escaped_slashes: EscapedSlashes::Keep };
        assert_eq!(routed("/a/../%2e/b", &config), "/a/../%2e/b");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_config() -> impl Strategy<Value = PathNormalization> {
            let actions = prop_oneof![
                Just(EscapedSlashes::Keep),
                Just(EscapedSlashes::UnescapeAndForward),
                Just(EscapedSlashes::UnescapeAndRedirect),
            ];
            (any::<bool>(), any::<bool>(), actions)
                .prop_map(|(normalize, merge_slashes, escaped_slashes)| PathNormalization { normalize, merge_slashes, escaped_slashes })
        }

        /// Paths built from the pieces that matter to normalization.
        fn any_path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/"), Just("."), Just(".."), Just("%2e"), Just("%2F"), Just("%5c"), Just("\\"), Just("%"),
                Just("%4"), Just("%41"), Just("%c3%a9"), Just("a"), Just("é"), Just("~"), Just("%7E"),
            ];
            prop::collection::vec(piece, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
        }

        fn result(path: &str, config: &PathNormalization) -> Option<String> {
            match normalize(path, config) {
                PathVerdict::Route(path) => Some(path.into_owned()),
                PathVerdict::Redirect(path) => Some(path),
                PathVerdict::Reject => None,
            }
        }

        proptest! {
            #[test]
            fn normalizing_is_idempotent(path in any_path(), config in any_config()) {
                let once = result(&path, &config).expect("no config here rejects");
                let twice = result(&once, &config).expect("no config here rejects");
                prop_assert_eq!(&once, &twice, "from {}", path);
            }

            #[test]
            fn normalized_paths_have_no_dot_segments(path in any_path()) {
                let config = PathNormalization { normalize: true, merge_slashes: true, escaped_slashes: EscapedSlashes::UnescapeAndForward };
                let normalized = result(&path, &config).unwrap();
                prop_assert!(normalized.starts_with('/'));
                prop_assert!(!normalized.split('/').any(|segment| segment == "." || segment == ".."), "{} from {}", normalized, path);
                prop_assert!(!normalized.contains("//"));
            }

            #[test]
            fn any_text_is_handled(path in "\\PC{0,64}", config in any_config()) {
                let _ = normalize(&path, &config);
            }
        }
    }
}
