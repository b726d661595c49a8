//! Header rules for forwarding: hop-by-hop headers removed (RFC 9110
//! section 7.6.1), forwarding headers added.

use std::net::SocketAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::Version;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop headers every message loses, besides those its
/// `Connection` header names.
static HOP_BY_HOP: [&HeaderName; 6] =
    [&header::CONNECTION, &KEEP_ALIVE, &PROXY_CONNECTION, &header::TE, &header::TRANSFER_ENCODING, &header::UPGRADE];

/// Returns the request's host: the authority of the request target (the
/// `:authority` of HTTP/2, or an HTTP/1.1 absolute-form target), else the
/// `Host` header. The target wins when both are present (RFC 9112 section
/// 3.2.2, RFC 9113 section 8.3.1).
pub fn parts_host(parts: &http::request::Parts) -> Option<&str> {
    match parts.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => parts.headers.get(header::HOST)?.to_str().ok(),
    }
}

/// Returns the protocol a request upgrades to, when it is an upgrade: `Connection` lists the
/// `upgrade` token (case-insensitively, among others) and `Upgrade` is set.
pub fn upgrade_type(headers: &HeaderMap) -> Option<&str> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade")).then_some(upgrade.trim())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Removes hop-by-hop headers: those named in `Connection` and the fixed
/// set. `keep_te_trailers` keeps `te: trailers`, which HTTP/2 upstreams
/// such as gRPC servers need.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry none of the fixed set, and a header named in
    // `Connection` needs `Connection` itself. One pass over the names is
    // cheaper than a hashed lookup per name of the set.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name)) {
        return;
    }

    let named: Vec<HeaderName> =
        connection_tokens(headers).filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok()).collect();
    for name in named {
        headers.remove(name);
    }

    let te_trailers = keep_te_trailers
        && headers.get(header::TE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes hop-by-hop headers from a message that arrived over `version`.
/// An HTTP/2 message cannot carry them, because h2 rejects one with a
/// connection-specific header or with `te` other than `trailers` (RFC 9113
/// section 8.2.2). So only `te` is left to handle there, which saves a
/// lookup per header name on every HTTP/2 request and response.
pub fn remove_hop_by_hop_from(version: Version, headers: &mut HeaderMap, keep_te_trailers: bool) {
    if version != Version::HTTP_2 {
        remove_hop_by_hop(headers, keep_te_trailers);
    } else if !keep_te_trailers {
        headers.remove(header::TE);
    }
}

/// Formats the downstream address for `x-forwarded-for`, once per
/// connection.
pub fn client_address_value(remote: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&remote.ip().to_string()).expect("an IP address is a valid header value")
}

/// Adds `x-forwarded-for` (appending `client`, from
/// [`client_address_value`]), sets `x-forwarded-proto` (https when
/// `secure`).
pub fn add_forwarding_headers(headers: &mut HeaderMap, client: &HeaderValue, secure: bool) {
    let appended = match headers.get(&X_FORWARDED_FOR) {
        Some(existing) if !existing.as_bytes().trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + client.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(value) = appended {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }

    let proto = if secure { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

/// Adds an `x-request-id` unless the client sent one, and a W3C
/// `traceparent` unless the client sent a valid one. It runs before the
/// access log reads the request, so the log shows the ids sent upstream.
pub fn add_trace_context(headers: &mut HeaderMap) {
    // One lookup per header, because the entry both shows whether the
    // header is present and takes the new value.
    if let Entry::Vacant(entry) = headers.entry(&X_REQUEST_ID) {
        if let Some(value) = generated_value(&new_request_id()) {
            entry.insert(value);
        }
    }

    // W3C Trace Context: a valid `traceparent` passes unchanged; a missing
    // or malformed one is replaced by a new trace, and a `tracestate` that
    // belonged to a malformed parent goes with it.
    let malformed = match headers.entry(&TRACEPARENT) {
        Entry::Occupied(entry) if is_valid_traceparent(entry.get().as_bytes()) => return,
        Entry::Occupied(mut entry) => {
            if let Some(value) = generated_value(&new_traceparent()) {
                entry.insert(value);
            }
            true
        }
        Entry::Vacant(entry) => {
            if let Some(value) = generated_value(&new_traceparent()) {
                entry.insert(value);
            }
            false
        }
    };
    if malformed {
        headers.remove(&TRACESTATE);
    }
}

/// Converts a generated id to a header value marked as [`never_indexed`].
fn generated_value(text: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(text).ok().map(never_indexed)
}

/// Marks a value that is new on every request, so that HTTP/2's HPACK
/// encoder sends it as a literal and leaves the connection's dynamic table
/// alone. Inserting it would evict entries that later requests reuse.
fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Checks the `version-traceid-parentid-flags` form of W3C Trace Context:
/// lowercase hex fields, trace and parent ids not all zeros, version not
/// `ff`, and for version 00 nothing after the flags.
fn is_valid_traceparent(value: &[u8]) -> bool {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return false;
    }
    let hex = |field: &[u8]| field.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let not_zero = |field: &[u8]| field.iter().any(|b| *b != b'0');
    let (version, trace, parent, flags) = (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let fields_valid = hex(version) && hex(trace) && hex(parent) && hex(flags) && version != b"ff";
    let length_valid = value.len() == 55 || (version != b"00" && value[55] == b'-');
    fields_valid && not_zero(trace) && not_zero(parent) && length_valid
}

/// Creates a sampled trace: `00-<32 hex trace id>-<16 hex parent id>-01`.
fn new_traceparent() -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    write_hex(&mut out[3..35], &fastrand::u128(1..).to_be_bytes());
    write_hex(&mut out[36..52], &fastrand::u64(1..).to_be_bytes());
    out
}

/// Generates a random version 4 UUID in its 36-character text form. Written into a
/// stack buffer because it runs on every request, where `format!` cost two
/// heap allocations and the formatting machinery.
fn new_request_id() -> [u8; 36] {
    let bits = fastrand::u128(..);
    let bits = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let bytes = bits.to_be_bytes();
    let mut text = [b'-'; 36];
    write_hex(&mut text[0..8], &bytes[0..4]);
    write_hex(&mut text[9..13], &bytes[4..6]);
    write_hex(&mut text[14..18], &bytes[6..8]);
    write_hex(&mut text[19..23], &bytes[8..10]);
    write_hex(&mut text[24..36], &bytes[10..16]);
    text
}

/// Writes `bytes` into `out` as lowercase hex, two digits per byte.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), 2 * bytes.len(), "two hex digits per byte");
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xF)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_parts(target: &str, host: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::get(target);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn target_authority_wins_over_host() {
        assert_eq!(parts_host(&request_parts("http://target.test:81/x", Some("other.test"))), Some("target.test:81"));
        assert_eq!(parts_host(&request_parts("/x", Some("other.test:8080"))), Some("other.test:8080"));
        assert_eq!(parts_host(&request_parts("/x", None)), None);
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        remove_hop_by_hop(&mut headers, false);
        assert!(!headers.contains_key("x-secret"));
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn lone_fixed_header_removed() {
        for name in ["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-kept", HeaderValue::from_static("1"));
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            remove_hop_by_hop(&mut headers, false);
            assert!(!headers.contains_key(name), "{name} removed");
            assert!(headers.contains_key("x-kept"));
        }
    }

    #[test]
    fn http2_message_keeps_only_te_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop_from(Version::HTTP_2, &mut headers, true);
        assert_eq!(headers[header::TE], "trailers", "kept for an HTTP/2 upstream");
        remove_hop_by_hop_from(Version::HTTP_2, &mut headers, false);
        assert!(!headers.contains_key(header::TE), "removed for an HTTP/1.1 upstream");
        assert!(headers.contains_key("x-kept"));

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        remove_hop_by_hop_from(Version::HTTP_11, &mut headers, false);
        assert!(headers.is_empty(), "HTTP/1.1 messages get the full removal: {headers:?}");
    }

    #[test]
    fn upgrade_token_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(upgrade_type(&headers), Some("WebSocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(upgrade_type(&headers), None);
    }

    #[test]
    fn request_id_is_uuid_v4() {
        let id = new_request_id();
        let id = std::str::from_utf8(&id).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn hex_written_in_order() {
        let mut out = [b'.'; 9];
        write_hex(&mut out[..8], &0x0123_abcd_u32.to_be_bytes());
        assert_eq!(&out, b"0123abcd.");
    }

    #[test]
    fn client_request_id_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("client-id"));
        add_trace_context(&mut headers);
        assert_eq!(headers["x-request-id"], "client-id");

        let mut headers = HeaderMap::new();
        add_trace_context(&mut headers);
        assert_eq!(headers["x-request-id"].len(), 36, "a missing id is created");
    }

    #[test]
    fn forwarded_for_appends_client() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarding_headers(&mut headers, &client_address_value("127.0.0.5:1000".parse().unwrap()), false);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.5");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }

    #[test]
    fn traceparent_kept_or_created() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(valid));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        add_trace_context(&mut headers);
        assert_eq!(headers["traceparent"], valid, "a valid parent passes unchanged");
        assert_eq!(headers["tracestate"], "vendor=1");

        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        add_trace_context(&mut headers);
        let created = headers["traceparent"].to_str().unwrap().to_string();
        assert!(is_valid_traceparent(created.as_bytes()), "a malformed parent is replaced: {created}");
        assert!(!headers.contains_key("tracestate"), "its tracestate goes with it");

        let mut headers = HeaderMap::new();
        add_trace_context(&mut headers);
        assert!(is_valid_traceparent(headers["traceparent"].as_bytes()), "a missing parent is created");
    }
}