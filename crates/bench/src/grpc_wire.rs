//! gRPC bytes on the wire, pre-encoded once: the 5-byte message prefix, a
//! protobuf message of a given size, and the gRPC-Web text form.

use base64::Engine;

/// Content types of the three request forms the harness sends.
pub const GRPC: &str = "application/grpc";
pub const GRPC_WEB: &str = "application/grpc-web+proto";
pub const GRPC_WEB_TEXT: &str = "application/grpc-web-text+proto";

/// Path of the unary method the gRPC upstream serves.
pub const UNARY_PATH: &str = "/bench.Echo/Unary";
/// Path of the server-streaming method.
pub const STREAM_PATH: &str = "/bench.Echo/ServerStream";

/// Bytes of the 5-byte length prefix before each message.
pub const PREFIX_BYTES: usize = 5;

/// Prefixes `message` with the uncompressed flag and its big-endian length.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a benchmark message fits in 4 GiB");
    let mut framed = Vec::with_capacity(PREFIX_BYTES + message.len());
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Encodes a protobuf message of field 1 of type `bytes`, filled with 'x',
/// as large as fits in `total_bytes`. That is exactly `total_bytes` except
/// where the length varint grows by a byte (130 gives 129). Sizes below 2
/// cannot hold a field and give an empty message.
pub fn bytes_message(total_bytes: usize) -> Vec<u8> {
    if total_bytes < 2 {
        return Vec::new();
    }
    // The length varint shrinks the payload, so pick the largest payload
    // whose tag, varint and bytes fit in `total_bytes`.
    let payload = (0..total_bytes).rev().find(|payload| 1 + varint_len(*payload) + payload <= total_bytes).unwrap_or(0);
    let mut message = Vec::with_capacity(total_bytes);
    message.push(0x0a);
    let mut value = payload;
    while value >= 0x80 {
        message.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    message.push(value as u8);
    message.resize(message.len() + payload, b'x');
    message
}

fn varint_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Base64 of a gRPC-Web body, as `application/grpc-web-text` sends it.
pub fn web_text(body: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.encode(body).into_bytes()
}

/// Decodes a gRPC-Web text response body (possibly several base64 chunks,
/// each with its own padding).
pub fn decode_web_text(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut decoded = Vec::new();
    let mut start = 0;
    for end in 1..=body.len() {
        // A chunk ends after its padding, where a '=' is followed by data or by the end.
        let chunk_ends = end == body.len() || (body[end - 1] == b'=' && body[end] != b'=');
        if chunk_ends {
            decoded.extend(base64::engine::general_purpose::STANDARD.decode(&body[start..end])?);
            start = end;
        }
    }
    Ok(decoded)
}

/// Reads `grpc-status` from the trailer frame (flag 0x80) at the end of a
/// gRPC-Web response body.
pub fn web_trailer_status(body: &[u8]) -> Option<String> {
    let mut rest = body;
    while rest.len() >= PREFIX_BYTES {
        let flags = rest[0];
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let content = rest.get(PREFIX_BYTES..PREFIX_BYTES + length)?;
        if flags & 0x80 != 0 {
            let text = std::str::from_utf8(content).ok()?;
            return text.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("grpc-status").then(|| value.trim().to_string())
            });
        }
        rest = &rest[PREFIX_BYTES + length..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_prefixes_flag_and_length() {
        assert_eq!(frame(b"abc"), vec![0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn bytes_message_has_the_exact_size() {
        for total in [2, 3, 64, 129, 131, 1024, 20_000] {
            let message = bytes_message(total);
            assert_eq!(message.len(), total, "size {total}");
            assert_eq!(message[0], 0x0a);
        }
        assert_eq!(bytes_message(130).len(), 129, "no payload gives 130 with a minimal varint");
        // 1021 payload bytes: varint 0xfd 0x07, then the bytes.
        assert_eq!(&bytes_message(1024)[..4], &[0x0a, 0xfd, 0x07, b'x']);
        assert!(bytes_message(1).is_empty());
    }

    #[test]
    fn web_text_round_trips_in_chunks() {
        let first = web_text(&frame(b"hello"));
        let second = web_text(b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
        let body = [first, second].concat();
        let decoded = decode_web_text(&body).unwrap();
        assert_eq!(web_trailer_status(&decoded).as_deref(), Some("0"));
    }

    #[test]
    fn trailer_status_missing_without_a_trailer_frame() {
        assert_eq!(web_trailer_status(&frame(b"data")), None);
        assert_eq!(web_trailer_status(b"\x80\x00\x00\x00\x0egrpc-status: 7"), Some("7".into()));
    }
}
