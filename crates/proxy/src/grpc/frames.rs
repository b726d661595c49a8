//! gRPC message framing (a 5-byte prefix: flag byte and big-endian length)
//! read as it streams, gRPC-Web trailer frames, and streaming base64 for
//! the gRPC-Web text mode.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;

/// Flag byte of a gRPC-Web frame that carries trailers.
const TRAILER_FLAG: u8 = 0x80;

/// Counts the length-prefixed messages in a stream of chunks split at any
/// byte, without copying them.
#[derive(Debug, Default)]
pub struct MessageCounter {
    /// Prefix bytes seen of the message being read (0 to 5).
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes still to skip.
    remaining: u64,
    pub messages: u64,
}

impl MessageCounter {
    /// Reads one chunk and returns how many messages started in it.
    pub fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let before = self.messages;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len() as u64);
                self.remaining -= skip;
                chunk = &chunk[skip as usize..];
                continue;
            }
            let take = (5 - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                self.remaining = u64::from(u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]));
                self.messages += 1;
            }
        }
        self.messages - before
    }

    /// Tells whether the stream so far ends at a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0
    }
}

/// Builds a gRPC-Web trailer frame: flag 0x80, a 4-byte length, then each
/// trailer as `name:value\r\n` with the lower-case names HTTP/2 uses.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let length: usize = trailers.iter().map(|(name, value)| name.as_str().len() + value.len() + 3).sum();
    let mut frame = BytesMut::with_capacity(5 + length);
    frame.put_u8(TRAILER_FLAG);
    frame.put_u32(length as u32);
    for (name, value) in trailers {
        frame.put_slice(name.as_str().as_bytes());
        frame.put_u8(b':');
        frame.put_slice(value.as_bytes());
        frame.put_slice(b"\r\n");
    }
    frame.freeze()
}

/// Base64-encodes a stream in 3-byte groups, carrying a partial group to
/// the next chunk so that only the last segment is padded.
#[derive(Debug, Default)]
pub struct Base64Encoder {
    carry: Vec<u8>,
}

impl Base64Encoder {
    /// Encodes the complete groups of `carry + chunk`; returns `None` when
    /// nothing complete is ready yet.
    pub fn encode(&mut self, chunk: &[u8]) -> Option<Bytes> {
        let total = self.carry.len() + chunk.len();
        let whole = total - total % 3;
        if whole == 0 {
            self.carry.extend_from_slice(chunk);
            return None;
        }
        let from_chunk = whole - self.carry.len();
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(&chunk[..from_chunk]);
        self.carry.extend_from_slice(&chunk[from_chunk..]);
        Some(Bytes::from(STANDARD.encode(&input)))
    }

    /// Encodes what is left, padded; returns `None` when nothing is left.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.carry.is_empty() {
            return None;
        }
        let text = STANDARD.encode(&self.carry);
        self.carry.clear();
        Some(Bytes::from(text))
    }
}

/// A body that is not valid gRPC-Web text (base64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gRPC-Web text body is not valid base64")]
pub struct InvalidBase64;

/// Decodes a whole gRPC-Web text body. It may hold several padded segments
/// (a client may pad each message), and a last segment without padding.
pub fn decode_base64_segments(text: &[u8]) -> Result<Vec<u8>, InvalidBase64> {
    let cleaned: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut decoded = Vec::with_capacity(cleaned.len() / 4 * 3 + 3);
    let mut rest = cleaned.as_slice();
    while !rest.is_empty() {
        // A segment ends after the quadruplet that contains its padding.
        let end = match rest.iter().position(|&b| b == b'=') {
            Some(first_pad) => {
                let quad_end = (first_pad / 4 + 1) * 4;
                if quad_end > rest.len() {
                    return Err(InvalidBase64);
                }
                quad_end
            }
            None => rest.len(),
        };
        let (segment, next) = rest.split_at(end);
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode_vec(segment.strip_suffix(b"==").or(segment.strip_suffix(b"=")).unwrap_or(segment), &mut decoded)
            .map_err(|_| InvalidBase64)?;
        rest = next;
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_handles_split_prefixes() {
        let stream = [&[0u8, 0, 0, 0, 3, 1, 2, 3][..], &[0, 0, 0, 0, 0], &[0, 0, 0, 0, 2, 9, 9]].concat();
        for split in 0..stream.len() {
            let mut counter = MessageCounter::default();
            counter.feed(&stream[..split]);
            counter.feed(&stream[split..]);
            assert_eq!(counter.messages, 3, "split at {split}");
            assert!(counter.at_boundary());
        }
    }

    #[test]
    fn trailer_frame_has_lowercase_lines() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frame = trailer_frame(&trailers);
        assert_eq!(&frame[..], b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n");
    }

    #[test]
    fn encoder_pads_only_at_end() {
        let mut encoder = Base64Encoder::default();
        let mut text = Vec::new();
        for chunk in [&b"a"[..], b"bcd", b"ef", b"g"] {
            text.extend(encoder.encode(chunk).unwrap_or_default());
        }
        text.extend(encoder.finish().unwrap_or_default());
        assert_eq!(text, b"YWJjZGVmZw==");
    }

    #[test]
    fn segments_decode() {
        let frame = b"\x00\x00\x00\x00\x05\x0a\x03foo";
        assert_eq!(decode_base64_segments(b"AAAAAAUKA2Zvbw==").unwrap(), frame);
        assert_eq!(decode_base64_segments(b"AAAAAAUKA2Zvbw").unwrap(), frame);
        assert_eq!(decode_base64_segments(b"AAAAAAUKA2Zvbw==AAAAAAUKA2Zvbw==").unwrap(), [&frame[..], frame].concat());
        assert!(decode_base64_segments(b"AAAA*AUKA2Zvbw==").is_err());
        assert!(decode_base64_segments(b"AAAAA").is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Cuts `bytes` at the given fractions of its length, in order.
        fn chunks(bytes: &[u8], cuts: &[f64]) -> Vec<Vec<u8>> {
            let mut points: Vec<usize> = cuts.iter().map(|cut| (cut * bytes.len() as f64) as usize).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                pieces.push(bytes[start..point].to_vec());
                start = point;
            }
            pieces
        }

        fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
            let mut stream = Vec::new();
            for message in messages {
                stream.push(0);
                stream.extend_from_slice(&(message.len() as u32).to_be_bytes());
                stream.extend_from_slice(message);
            }
            stream
        }

        proptest! {
            #[test]
            fn streamed_base64_round_trips(data in prop::collection::vec(any::<u8>(), 0..512), cuts in prop::collection::vec(0.0..1.0f64, 0..8)) {
                let mut encoder = Base64Encoder::default();
                let mut text = Vec::new();
                for chunk in chunks(&data, &cuts) {
                    text.extend(encoder.encode(&chunk).unwrap_or_default());
                }
                text.extend(encoder.finish().unwrap_or_default());
                let expected = STANDARD.encode(&data);
                prop_assert_eq!(&text, expected.as_bytes());
                prop_assert_eq!(decode_base64_segments(&text).unwrap(), data);
            }

            #[test]
            fn padded_segments_decode_to_their_concatenation(messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..6)) {
                let text: String = messages.iter().map(|message| STANDARD.encode(message)).collect();
                prop_assert_eq!(decode_base64_segments(text.as_bytes()).unwrap(), messages.concat());
            }

            #[test]
            fn any_text_body_decodes_or_fails(text in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode_base64_segments(&text);
            }

            #[test]
            fn counting_ignores_chunk_boundaries(messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6), cuts in prop::collection::vec(0.0..1.0f64, 0..10)) {
                let stream = framed(&messages);
                let mut counter = MessageCounter::default();
                let started: u64 = chunks(&stream, &cuts).iter().map(|chunk| counter.feed(chunk)).sum();
                prop_assert_eq!(started, messages.len() as u64);
                prop_assert!(counter.at_boundary());
            }
        }
    }
}
