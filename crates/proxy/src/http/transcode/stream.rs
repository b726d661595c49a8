//! Server-streaming responses as JSON, converted message by message as the
//! upstream sends them: a JSON array (`[a,b]`), or newline-delimited JSON
//! with `stream_newline_delimited`. An error status after the first message
//! cannot change the HTTP status any more, so it is sent as a last element
//! `{"error": <google.rpc.Status>}` and as `grpc-status` trailers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use prost_reflect::{DynamicMessage, FieldDescriptor, MessageDescriptor};

use legate_config::transcoder::GrpcJsonTranscoder;

use super::json::{message_json, value_json};
use crate::grpc::Code;
use crate::http::body::ResponseBody;
use crate::upstream::UpstreamError;

/// The body of a transcoded server-streaming response.
pub struct JsonStreamBody {
    inner: ResponseBody,
    config: Arc<GrpcJsonTranscoder>,
    output: MessageDescriptor,
    response_body: Option<FieldDescriptor>,
    /// Bytes of a gRPC message not yet complete.
    partial: BytesMut,
    started: bool,
    /// Trailers to send after the closing bytes.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl JsonStreamBody {
    pub(super) fn new(inner: ResponseBody, config: Arc<GrpcJsonTranscoder>, output: MessageDescriptor, response_body: Option<FieldDescriptor>) -> Self {
        JsonStreamBody { inner, config, output, response_body, partial: BytesMut::new(), started: false, trailers: None, done: false }
    }

    fn newline_delimited(&self) -> bool {
        self.config.print.stream_newline_delimited
    }

    /// Converts every complete message in `partial` and returns the JSON
    /// text for them, or the text that ends the stream on a bad message.
    fn drain(&mut self) -> BytesMut {
        let mut output = BytesMut::new();
        while let Some((compressed, frame)) = take_message(&mut self.partial) {
            let json = match decode(&self.output, compressed, frame) {
                Ok(message) => message_json(&message, &self.config.print, self.response_body.as_ref()).map_err(|error| error.to_string()),
                Err(reason) => Err(reason),
            };
            match json {
                Ok(json) => self.push_element(&mut output, &json),
                Err(reason) => {
                    tracing::debug!(reason, "a streamed response message cannot be transcoded");
                    self.finish(&mut output, Code::Internal, &reason);
                    break;
                }
            }
        }
        output
    }

    fn push_element(&mut self, output: &mut BytesMut, json: &[u8]) {
        if self.newline_delimited() {
            output.extend_from_slice(json);
            output.extend_from_slice(b"\n");
        } else {
            output.extend_from_slice(if self.started { b"," } else { b"[" });
            output.extend_from_slice(json);
        }
        self.started = true;
    }

    /// Ends the stream with `code`: an error element unless OK, the closing
    /// bracket, and the status as trailers.
    fn finish(&mut self, output: &mut BytesMut, code: Code, message: &str) {
        self.done = true;
        self.partial.clear();
        if code != Code::Ok {
            let error = serde_json::json!({ "error": { "code": code as u8, "message": message } });
            let json = value_json(&error, &self.config.print).unwrap_or_default();
            self.push_element(output, &json);
        }
        if !self.newline_delimited() {
            output.extend_from_slice(if self.started { b"]" } else { b"[]" });
        }
        let mut trailers = HeaderMap::with_capacity(2);
        trailers.insert("grpc-status", code.header_value());
        if code != Code::Ok {
            trailers.insert("grpc-message", crate::grpc::encode_message(message));
        }
        self.trailers = Some(trailers);
    }
}

/// Removes the first whole length-prefixed gRPC message from `partial` and
/// returns its compressed flag and bytes, or `None` until one is complete.
fn take_message(partial: &mut BytesMut) -> Option<(bool, Bytes)> {
    if partial.len() < 5 {
        return None;
    }
    let length = u32::from_be_bytes([partial[1], partial[2], partial[3], partial[4]]) as usize;
    if partial.len() < 5 + length {
        return None;
    }
    let compressed = partial[0] & 1 == 1;
    partial.advance(5);
    Some((compressed, partial.split_to(length).freeze()))
}

fn decode(output: &MessageDescriptor, compressed: bool, frame: Bytes) -> Result<DynamicMessage, String> {
    if compressed {
        return Err("the upstream sent a compressed message, which the transcoder does not decode".to_string());
    }
    DynamicMessage::decode(output.clone(), frame).map_err(|error| format!("the upstream sent an invalid message: {error}"))
}

impl Body for JsonStreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
            }
            let mut output = BytesMut::new();
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.partial.extend_from_slice(&data);
                        output = this.drain();
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let code = trailers.get("grpc-status").map_or(Code::Unknown, Code::from_header);
                        let message = trailers
                            .get("grpc-message")
                            .map(|value| percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy().into_owned())
                            .unwrap_or_default();
                        this.finish(&mut output, code, &message);
                    }
                },
                Some(Err(error)) => {
                    tracing::debug!(%error, "a transcoded stream ended by an upstream error");
                    let (code, message) = crate::grpc::error_status(&error);
                    this.finish(&mut output, code, message);
                }
                None => this.finish(&mut output, Code::Internal, "the upstream response ended without a gRPC status"),
            }
            if !output.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(output.freeze()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_are_taken_whole() {
        let stream = [&[0u8, 0, 0, 0, 2, 7, 8][..], &[1, 0, 0, 0, 0], &[0, 0, 0, 0, 1, 9]].concat();
        for size in 1..stream.len() {
            let mut partial = BytesMut::new();
            let mut messages = Vec::new();
            for chunk in stream.chunks(size) {
                partial.extend_from_slice(chunk);
                while let Some(message) = take_message(&mut partial) {
                    messages.push(message);
                }
            }
            let expected = vec![(false, Bytes::from_static(&[7, 8])), (true, Bytes::new()), (false, Bytes::from_static(&[9]))];
            assert_eq!(messages, expected, "chunks of {size} bytes");
            assert!(partial.is_empty());
        }
    }
}
