//! A socket wrapper that gathers an HTTP/2 connection's frames into fewer
//! writes.
//!
//! The h2 codec (0.4) hands every DATA frame of 256 bytes or more to the
//! socket on its own and flushes after it. A connection that sends eight
//! 1 KiB responses thus makes eight or more `writev` calls where one would
//! do. This wrapper copies small writes into a buffer, and the first
//! flush after new data wakes the connection's task instead of writing. The
//! task runs again after the other ready tasks, which may queue more frames
//! meanwhile. That next poll of the connection writes the whole buffer at
//! once. Copying a few KiB costs far less than a system call.
//!
//! Batching is for the current-thread runtime (`--concurrency 1`) only. On
//! the multi-thread runtime, tokio 1.54 also wakes an idle worker thread
//! whenever a task wakes itself, and at low load, with one response per
//! batch, that cost more system calls than the batch saved. There every
//! connection passes its writes straight through.
//!
//! The wrapper separates one poll of the connection from the next by its
//! reads: h2 reads until the socket has nothing more before it writes, so a
//! read that finds nothing starts a new poll.
//!
//! NOTE: hyper's HTTP/2 server (hyper 1.13) polls h2's connection again
//! after each request it accepts, within the same poll of the task. On a
//! downstream connection that receives new requests, the flush after that
//! poll's empty read writes the buffer before other tasks run. The batch
//! then holds only the frames of one h2 poll.
//!
//! HTTP/1 connections gain nothing (hyper writes one response with one
//! call), so a downstream connection whose codec is not known yet passes
//! writes straight through until its first bytes read are the HTTP/2
//! connection preface.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes at which a write goes to the socket without waiting for
/// a flush. Writes at least this large skip the buffer when it is empty.
const BATCH_LIMIT: usize = 64 * 1024;

/// The connection preface that starts every HTTP/2 connection (RFC 9113,
/// section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether writes are batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Batched,
    PassThrough,
    /// Passing through while reads match this many bytes of the preface.
    Detecting(usize),
}

pub struct BatchedWrites<T> {
    inner: T,
    mode: Mode,
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already written to `inner`.
    written: usize,
    /// Whether bytes were buffered since the last flush.
    fresh: bool,
    /// Reads that found nothing to read, as a count of polls.
    polls: u32,
    /// The poll in which a flush was put off, while one is.
    deferred_in: Option<u32>,
}

impl<T> BatchedWrites<T> {
    /// Batches every write of a connection that speaks HTTP/2, on the
    /// current-thread runtime.
    pub fn http2(inner: T) -> Self {
        let mode = if batching_pays() { Mode::Batched } else { Mode::PassThrough };
        BatchedWrites::with_mode(inner, mode)
    }

    /// Batches writes on the current-thread runtime once the first bytes read
    /// turn out to be the HTTP/2 preface. Until then, and for any other
    /// protocol, passes them through.
    pub fn detect(inner: T) -> Self {
        let mode = if batching_pays() { Mode::Detecting(0) } else { Mode::PassThrough };
        BatchedWrites::with_mode(inner, mode)
    }

    /// Passes every write straight through.
    pub fn pass_through(inner: T) -> Self {
        BatchedWrites::with_mode(inner, Mode::PassThrough)
    }

    fn with_mode(inner: T, mode: Mode) -> Self {
        BatchedWrites { inner, mode, buffer: Vec::new(), written: 0, fresh: false, polls: 0, deferred_in: None }
    }

    /// Compares newly read bytes with the preface and settles the mode once
    /// they match all of it or differ from it.
    fn watch_preface(&mut self, read: &[u8]) {
        let Mode::Detecting(matched) = self.mode else { return };
        let expected = &HTTP2_PREFACE[matched..];
        let compared = read.len().min(expected.len());
        self.mode = if read[..compared] != expected[..compared] {
            Mode::PassThrough
        } else if matched + compared == HTTP2_PREFACE.len() {
            Mode::Batched
        } else {
            Mode::Detecting(matched + compared)
        };
    }

    fn pending(&self) -> usize {
        self.buffer.len() - self.written
    }
}

/// Returns whether the task runs on the current-thread runtime, where a
/// task that wakes itself only goes to the back of the run queue.
fn batching_pays() -> bool {
    let handle = tokio::runtime::Handle::try_current();
    handle.is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

impl<T: AsyncWrite + Unpin> BatchedWrites<T> {
    /// Writes the buffer to `inner` until it is empty, then frees it, so an
    /// idle connection keeps no buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buffer.len() {
            let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buffer[self.written..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += written;
        }

        self.buffer = Vec::new();
        self.written = 0;
        self.deferred_in = None;
        Poll::Ready(Ok(()))
    }

    /// Buffers `slices`, first writing out what is buffered when they would
    /// not fit. Slices as large as the limit go straight to `inner`.
    fn poll_batch(&mut self, cx: &mut Context<'_>, slices: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = slices.iter().map(|slice| slice.len()).sum();
        if self.pending() + total > BATCH_LIMIT {
            std::task::ready!(self.poll_drain(cx))?;
        }
        if self.pending() == 0 && total >= BATCH_LIMIT {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, slices);
        }

        // After a partial write, drop the written front before appending,
        // so that the buffer stays within the limit.
        if self.written > 0 {
            self.buffer.drain(..self.written);
            self.written = 0;
        }
        self.buffer.reserve(total);
        for slice in slices {
            self.buffer.extend_from_slice(slice);
        }
        self.fresh |= total > 0;
        Poll::Ready(Ok(total))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        match result {
            Poll::Pending => self.polls = self.polls.wrapping_add(1),
            Poll::Ready(Ok(())) if matches!(self.mode, Mode::Detecting(_)) => self.watch_preface(&buf.filled()[before..]),
            Poll::Ready(_) => {}
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.mode {
            Mode::Batched => self.poll_batch(cx, slices),
            Mode::PassThrough | Mode::Detecting(_) => Pin::new(&mut self.inner).poll_write_vectored(cx, slices),
        }
    }

    /// Reports vectored writes while batching, because every slice is
    /// copied into the buffer and h2 then chains its DATA frames.
    fn is_write_vectored(&self) -> bool {
        self.mode == Mode::Batched || self.inner.is_write_vectored()
    }

    /// Puts off writing while the flush follows new data in the same poll,
    /// and wakes the task once so that the next poll writes. Any other flush
    /// writes everything buffered.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.fresh && this.pending() > 0 && this.deferred_in.is_none_or(|poll| poll == this.polls) {
            this.fresh = false;
            if this.deferred_in.is_none() {
                this.deferred_in = Some(this.polls);
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(Ok(()));
        }

        this.fresh = false;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fresh = false;
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
