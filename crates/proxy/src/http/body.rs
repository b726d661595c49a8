//! Body types that flow through the proxy without buffering: downstream
//! request bodies go upstream as they arrive, and upstream response bodies
//! go downstream the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use super::join::Joined;
use crate::activity::Activity;
use crate::stats::RouteStats;
use crate::upstream::{UpstreamBody, UpstreamError};

/// Failure to read a downstream request body to its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the request body from downstream failed")]
    Downstream(#[source] hyper::Error),
    /// The connection manager's `request_timeout` passed before the whole
    /// request arrived.
    #[error("the request was not received within the request timeout")]
    Timeout,
}

/// Body of a request sent upstream.
pub enum RequestBody {
    Empty,
    /// A body streamed from downstream. Each frame touches `activity`, the
    /// stream's idle clock when it has an idle timeout.
    Streaming { incoming: DownstreamBody, deadline: Option<Pin<Box<Sleep>>>, received: Counter, activity: Option<Activity> },
    /// A body kept for retries.
    Replay(ReplayBody),
    /// A whole body the proxy built itself, such as an authorization check;
    /// `None` once sent.
    Full(Option<Bytes>),
}

/// A downstream request body as the router forwards it: streamed as it
/// arrives, or already read whole (a decoded gRPC-Web body). For a gRPC
/// call with statistics, its messages are counted as they pass.
pub struct DownstreamBody {
    source: DownstreamSource,
    grpc: Option<(crate::grpc::MessageCounter, Arc<crate::grpc::GrpcCall>)>,
    /// Bytes received, for the access log's `%BYTES_RECEIVED%`.
    received: Option<Arc<std::sync::atomic::AtomicU64>>,
}

enum DownstreamSource {
    Incoming(Joined<Incoming>),
    Buffered(Option<Bytes>),
}

impl DownstreamBody {
    pub fn incoming(incoming: Incoming) -> Self {
        DownstreamBody { source: DownstreamSource::Incoming(Joined::new(incoming)), grpc: None, received: None }
    }

    pub fn buffered(bytes: Bytes) -> Self {
        DownstreamBody { source: DownstreamSource::Buffered(Some(bytes).filter(|bytes| !bytes.is_empty())), grpc: None, received: None }
    }

    /// Adds the body's bytes to `received` as they pass.
    pub fn count_bytes(&mut self, received: Arc<std::sync::atomic::AtomicU64>) {
        self.received = Some(received);
    }

    /// Counts the body's gRPC messages as received by `call`.
    pub fn count_messages(&mut self, call: Arc<crate::grpc::GrpcCall>) {
        self.grpc = Some((crate::grpc::MessageCounter::default(), call));
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.source {
            DownstreamSource::Incoming(incoming) => ready!(Pin::new(incoming).poll_frame(cx)),
            DownstreamSource::Buffered(bytes) => bytes.take().map(|bytes| Ok(Frame::data(bytes))),
        };
        if let (Some(received), Some(Ok(frame))) = (this.received.as_ref(), frame.as_ref()) {
            let size = frame.data_ref().map_or(0, |data| data.len() as u64);
            received.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        }
        if let (Some((counter, call)), Some(Ok(frame))) = (this.grpc.as_mut(), frame.as_ref()) {
            if let Some(data) = frame.data_ref() {
                call.add_received(counter.feed(data));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            DownstreamSource::Incoming(incoming) => incoming.is_end_stream(),
            DownstreamSource::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            DownstreamSource::Incoming(incoming) => incoming.size_hint(),
            DownstreamSource::Buffered(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            DownstreamSource::Buffered(None) => SizeHint::with_exact(0),
        }
    }
}

impl RequestBody {
    /// Streams `incoming`, failing it if it has not ended by `deadline`,
    /// counts its bytes in `received` and records each frame in `activity`.
    pub fn streaming(incoming: DownstreamBody, deadline: Option<Instant>, received: Counter, activity: Option<Activity>) -> Self {
        let deadline = deadline.filter(|_| !incoming.is_end_stream()).map(|at| Box::pin(tokio::time::sleep_until(at)));
        RequestBody::Streaming { incoming, deadline, received, activity }
    }
}

/// Body of a response sent downstream.
// Boxing the large upstream variant, the common one, would allocate once per
// response.
#[allow(clippy::large_enum_variant)]
pub enum ResponseBody {
    /// A response the proxy makes itself (errors, direct responses).
    Local(Option<Bytes>),
    Upstream(UpstreamBody),
    /// A response to a gRPC or gRPC-Web call.
    Grpc(Box<crate::grpc::GrpcResponseBody>),
    /// A gRPC server stream sent to a JSON client.
    Transcoded(Box<super::transcode::JsonStreamBody>),
}

impl ResponseBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Some(bytes.into()))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let (incoming, deadline, received, activity) = match self.get_mut() {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Replay(replay) => return Pin::new(replay).poll_frame(cx),
            RequestBody::Full(bytes) => return Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            RequestBody::Streaming { incoming, deadline, received, activity } => (incoming, deadline, received, activity),
        };
        match Pin::new(&mut *incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                if incoming.is_end_stream() || frame.is_none() {
                    *deadline = None;
                }
                if let (Some(activity), Some(Ok(_))) = (activity.as_ref(), frame.as_ref()) {
                    activity.touch();
                }
                if let Some(data) = frame.as_ref().and_then(|frame| frame.as_ref().ok()).and_then(Frame::data_ref) {
                    received.inc_by(data.len() as u64);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(RequestBodyError::Downstream)))
            }
            Poll::Pending => {
                let expired = deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Some(Err(RequestBodyError::Timeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming { incoming, .. } => incoming.is_end_stream(),
            RequestBody::Replay(replay) => replay.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming { incoming, .. } => incoming.size_hint(),
            RequestBody::Replay(_) => SizeHint::default(),
            RequestBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            ResponseBody::Local(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            ResponseBody::Upstream(upstream) => Pin::new(upstream).poll_frame(cx),
            ResponseBody::Grpc(grpc) => Pin::new(grpc.as_mut()).poll_frame(cx),
            ResponseBody::Transcoded(stream) => Pin::new(stream.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(bytes) => bytes.is_none(),
            ResponseBody::Upstream(upstream) => upstream.is_end_stream(),
            ResponseBody::Grpc(grpc) => grpc.is_end_stream(),
            ResponseBody::Transcoded(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Local(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream(upstream) => upstream.size_hint(),
            ResponseBody::Grpc(grpc) => grpc.size_hint(),
            ResponseBody::Transcoded(stream) => stream.size_hint(),
        }
    }
}

/// A downstream response body that records, once it ends or is dropped,
/// the request's duration and the bytes sent in its route's metrics.
pub struct RecordedBody {
    inner: ResponseBody,
    recorder: Option<Recorder>,
}

struct Recorder {
    stats: Arc<RouteStats>,
    start: Instant,
    sent: u64,
    log: Option<Box<crate::access_log::PendingLog>>,
}

impl Recorder {
    fn finish(self) {
        let duration = self.start.elapsed();
        self.stats.duration.observe(duration.as_secs_f64());
        self.stats.response_bytes.inc_by(self.sent);
        if let Some(log) = self.log {
            log.finish(duration, self.sent);
        }
    }
}

impl RecordedBody {
    pub fn new(inner: ResponseBody, stats: Arc<RouteStats>, start: Instant, log: Option<Box<crate::access_log::PendingLog>>) -> Self {
        RecordedBody { inner, recorder: Some(Recorder { stats, start, sent: 0, log }) }
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        let Some(mut recorder) = self.recorder.take() else { return };
        // hyper drops a body it has not read to the end only when the
        // downstream connection is gone.
        if !self.inner.is_end_stream() {
            recorder.stats.downstream_terminations.inc();
            if let Some(log) = recorder.log.as_mut() {
                log.flag.get_or_insert(crate::stats::ResponseFlag::DownstreamConnectionTermination);
            }
        }
        recorder.finish();
    }
}

impl Body for RecordedBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(recorder), Some(data)) = (this.recorder.as_mut(), frame.data_ref()) {
                    recorder.sent += data.len() as u64;
                }
            }
            Some(Err(_)) | None => {
                if let Some(recorder) = this.recorder.take() {
                    recorder.finish();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body kept for replay, so that a retry can send it again. The
/// first try streams it from downstream while a copy is kept, up to a limit;
/// past the limit the copy is dropped and the request can no longer be
/// retried. Tries run one after another, and a new try detaches the
/// previous one, so two tries never read the downstream body at once.
pub struct ReplayBody {
    shared: Arc<std::sync::Mutex<ReplayState>>,
    cursor: usize,
    generation: u64,
}

struct ReplayState {
    source: RequestBody,
    kept: Vec<Kept>,
    kept_bytes: usize,
    limit: usize,
    overflowed: bool,
    ended: bool,
    generation: u64,
}

enum Kept {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl ReplayBody {
    /// Wraps `source`, keeping up to `limit` bytes for replay.
    pub fn new(source: RequestBody, limit: usize) -> Self {
        let state = ReplayState { source, kept: Vec::new(), kept_bytes: 0, limit, overflowed: false, ended: false, generation: 0 };
        ReplayBody { shared: Arc::new(std::sync::Mutex::new(state)), cursor: 0, generation: 0 }
    }

    /// Returns a body for the next try that replays from the start. Any
    /// earlier try's body stops yielding frames.
    pub fn next_try(&self) -> ReplayBody {
        let mut state = self.lock();
        state.generation += 1;
        ReplayBody { shared: self.shared.clone(), cursor: 0, generation: state.generation }
    }

    /// Reports whether everything read so far was kept, so a retry can
    /// resend it.
    pub fn can_replay(&self) -> bool {
        !self.lock().overflowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayState> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        let mut state = this.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.generation != this.generation {
            return Poll::Ready(None);
        }
        if let Some(kept) = state.kept.get(this.cursor) {
            this.cursor += 1;
            let frame = match kept {
                Kept::Data(bytes) => Frame::data(bytes.clone()),
                Kept::Trailers(trailers) => Frame::trailers(trailers.clone()),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
        if state.ended {
            return Poll::Ready(None);
        }

        let frame = ready!(Pin::new(&mut state.source).poll_frame(cx));
        match &frame {
            None => state.ended = true,
            Some(Ok(frame)) => {
                if !state.overflowed {
                    let kept = match (frame.data_ref(), frame.trailers_ref()) {
                        (Some(data), _) => Some((Kept::Data(data.clone()), data.len())),
                        (None, Some(trailers)) => Some((Kept::Trailers(trailers.clone()), 0)),
                        _ => None,
                    };
                    if let Some((kept, size)) = kept {
                        if state.kept_bytes + size <= state.limit {
                            state.kept_bytes += size;
                            state.kept.push(kept);
                            this.cursor = state.kept.len();
                        } else {
                            state.overflowed = true;
                            state.kept.clear();
                        }
                    }
                }
            }
            Some(Err(_)) => state.overflowed = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        let state = self.lock();
        state.ended && self.cursor >= state.kept.len()
    }
}
