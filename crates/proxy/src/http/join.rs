//! Joining the body bytes that are already buffered into one chunk. Each
//! chunk handed to the other side becomes one write on an HTTP/1
//! connection and one DATA frame on an HTTP/2 connection. An HTTP/2 peer
//! sends a stream of small messages as one DATA frame each, so joining them
//! forwards a whole read's worth with one frame header and fewer copies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Bytes one chunk collects before it is handed on: HTTP/2's default
/// maximum frame size, so a joined chunk still fits one DATA frame.
pub const CHUNK_LIMIT: usize = 16 * 1024;

/// A body whose data frames come out joined: after each data frame it reads
/// on while more are ready, up to [`CHUNK_LIMIT`] bytes. Trailers, the end
/// or an error found that way are returned by the next poll.
pub struct Joined<B: Body> {
    inner: B,
    read_ahead: Option<ReadAhead<B::Error>>,
}

// Nothing is pinned through a `Joined` but its inner body.
impl<B: Body + Unpin> Unpin for Joined<B> {}

/// A frame, the end or an error, read after the data a poll returned.
enum ReadAhead<E> {
    Frame(Frame<Bytes>),
    Error(E),
    End,
}

impl<B: Body<Data = Bytes> + Unpin> Joined<B> {
    pub fn new(inner: B) -> Self {
        Joined { inner, read_ahead: None }
    }

    fn join_ready_data(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut chunk = Chunk::new(first);
        while !chunk.is_full() && !self.inner.is_end_stream() {
            let read_ahead = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        chunk.push(data);
                        continue;
                    }
                    Err(frame) => ReadAhead::Frame(frame),
                },
                Poll::Ready(Some(Err(error))) => ReadAhead::Error(error),
                Poll::Ready(None) => ReadAhead::End,
            };
            self.read_ahead = Some(read_ahead);
            break;
        }
        chunk.into_bytes()
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Joined<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match this.read_ahead.take() {
            Some(ReadAhead::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
            Some(ReadAhead::Error(error)) => return Poll::Ready(Some(Err(error))),
            Some(ReadAhead::End) => return Poll::Ready(None),
            None => {}
        }
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let frame = match frame.into_data() {
            Ok(data) => Frame::data(this.join_ready_data(data, cx)),
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.read_ahead {
            None => self.inner.is_end_stream(),
            Some(read_ahead) => matches!(read_ahead, ReadAhead::End),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.read_ahead {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

/// The data frames of one chunk. The first is kept as it came, and bytes are
/// copied only when a second frame joins it.
struct Chunk {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Chunk {
    fn new(first: Bytes) -> Self {
        Chunk { first, joined: None }
    }

    fn is_full(&self) -> bool {
        self.len() >= CHUNK_LIMIT
    }

    fn push(&mut self, more: Bytes) {
        let joined = self.joined.get_or_insert_with(|| {
            let mut joined = BytesMut::with_capacity(CHUNK_LIMIT.max(self.first.len() + more.len()));
            joined.extend_from_slice(&self.first);
            joined
        });
        joined.extend_from_slice(&more);
    }

    fn into_bytes(self) -> Bytes {
        match self.joined {
            Some(joined) => joined.freeze(),
            None => self.first,
        }
    }

    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), BytesMut::len)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    enum Step {
        Data(Vec<u8>),
        Trailers,
        Error(&'static str),
        Pending,
    }

    /// A body that takes one step per poll and ends after the last.
    struct Scripted(VecDeque<Step>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            let frame = match self.0.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Pending) => return Poll::Pending,
                Some(Step::Data(bytes)) => Ok(Frame::data(Bytes::from(bytes))),
                Some(Step::Trailers) => Ok(Frame::trailers(http::HeaderMap::new())),
                Some(Step::Error(error)) => Err(error),
            };
            Poll::Ready(Some(frame))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn data(text: &str) -> Step {
        Step::Data(text.as_bytes().to_vec())
    }

    /// Polls the joined body of `steps` to its end and lists what came out:
    /// data as text, trailers as `[trailers]`, errors as `!error`.
    fn drain(steps: Vec<Step>) -> Vec<String> {
        let mut body = Joined::new(Scripted(steps.into()));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        for _ in 0..100 {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Pending => continue,
                Poll::Ready(None) => return out,
                Poll::Ready(Some(Err(error))) => out.push(format!("!{error}")),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => out.push(String::from_utf8_lossy(&data).into_owned()),
                    Err(_) => out.push("[trailers]".into()),
                },
            }
        }
        panic!("the body did not end");
    }

    #[test]
    fn joined_frames_end_at_pending_read() {
        assert_eq!(drain(vec![data("a"), data("b"), Step::Pending, data("c"), data("d")]), ["ab", "cd"]);
    }

    #[test]
    fn joined_read_ahead_follows_data() {
        assert_eq!(drain(vec![data("a"), data("b"), Step::Trailers]), ["ab", "[trailers]"]);
        assert_eq!(drain(vec![data("a"), Step::Error("reset"), data("b")]), ["a", "!reset", "b"]);
    }

    #[test]
    fn chunk_stops_at_limit() {
        let big = || Step::Data(vec![b'x'; 6000]);
        let lengths: Vec<usize> = drain(vec![big(), big(), big(), big()]).iter().map(String::len).collect();
        assert_eq!(lengths, [18000, 6000]);
    }

    #[test]
    fn chunk_keeps_single_frame_uncopied() {
        let first = Bytes::from_static(b"only");
        let pointer = first.as_ptr();
        assert_eq!(Chunk::new(first).into_bytes().as_ptr(), pointer);
    }
}
