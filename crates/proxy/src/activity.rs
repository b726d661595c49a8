//! A record of when a connection or stream last moved bytes, so that one
//! idle for longer than its idle timeout can be closed, and a socket wrapper
//! that keeps it up to date.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Time of the last read or write, as milliseconds since `start`. Clones
/// share the time, so one side can record activity that another side checks.
#[derive(Clone, Debug)]
pub struct Activity {
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity { start: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    /// Records activity now: one clock read and one relaxed store, with no
    /// lock and no allocation.
    pub fn touch(&self) {
        let elapsed = self.start.elapsed().as_millis() as u64;
        self.last.store(elapsed, Ordering::Relaxed);
    }

    /// When the connection becomes idle for `timeout` if nothing moves.
    pub fn idle_deadline(&self, timeout: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + timeout
    }
}

pub struct ActivityIo<T> {
    inner: T,
    activity: Activity,
}

impl<T> ActivityIo<T> {
    pub fn new(inner: T, activity: Activity) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActivityIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActivityIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, buffers);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
