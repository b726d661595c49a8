//! A bidirectional byte pipe for upgraded connections that keeps no buffer
//! while idle. Each direction reads into a stack buffer and writes straight
//! on. Only bytes the writer cannot take at once are copied to the heap, and
//! that copy is freed as soon as it is written. A WebSocket that is quiet
//! therefore costs no buffer memory in the proxy.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per wakeup; on the stack, so it costs nothing between reads.
const SCRATCH: usize = 16 * 1024;

/// Bytes copied each way; kept outside the copy so that they can be read
/// even when the copy is cut short.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transferred {
    /// From the first stream to the second.
    pub forward: u64,
    /// From the second stream to the first.
    pub backward: u64,
}

/// Copies both ways until both directions have seen end of stream. A FIN
/// from one side is passed on with a write shutdown while the other
/// direction keeps flowing.
pub async fn copy_both_ways<A, B>(a: &mut A, b: &mut B, transferred: &mut Transferred) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll(cx, a, b, &mut transferred.forward)?;
        let backward = b_to_a.poll(cx, b, a, &mut transferred.backward)?;
        if forward.is_ready() && backward.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[derive(Default)]
struct Direction {
    /// Bytes read but not yet written, kept only while the writer is full.
    pending: Option<Pending>,
    read_done: bool,
    done: bool,
    needs_flush: bool,
}

struct Pending {
    bytes: Box<[u8]>,
    written: usize,
}

impl Direction {
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, reader: &mut R, writer: &mut W, copied: &mut u64) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.poll_write_pending(cx, writer, copied))?;

            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }

            // Uninitialized, so that each read does not first zero 16 KiB.
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut buffer = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *reader).poll_read(cx, &mut buffer) {
                Poll::Pending => {
                    if self.needs_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.needs_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }

            let data = buffer.filled();
            if data.is_empty() {
                self.read_done = true;
                continue;
            }
            self.write_now_or_keep(cx, writer, data, copied)?;
        }
    }

    /// Writes as much of `data` as the writer takes now and keeps the rest.
    fn write_now_or_keep<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        data: &[u8],
        copied: &mut u64,
    ) -> io::Result<()> {
        let mut written = 0;
        while written < data.len() {
            match Pin::new(&mut *writer).poll_write(cx, &data[written..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(count)) => written += count,
                Poll::Ready(Err(error)) => return Err(error),
                Poll::Pending => break,
            }
        }
        *copied += written as u64;
        self.needs_flush = true;
        if written < data.len() {
            self.pending = Some(Pending { bytes: data[written..].into(), written: 0 });
        }
        Ok(())
    }

    fn poll_write_pending<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        copied: &mut u64,
    ) -> Poll<io::Result<()>> {
        let Some(pending) = &mut self.pending else {
            return Poll::Ready(Ok(()));
        };
        while pending.written < pending.bytes.len() {
            let count = ready!(Pin::new(&mut *writer).poll_write(cx, &pending.bytes[pending.written..]))?;
            if count == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.written += count;
            *copied += count as u64;
        }
        self.pending = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut proxy_down) = duplex(64);
        let (mut proxy_up, mut server) = duplex(64);
        let pipe = tokio::spawn(async move {
            let mut transferred = Transferred::default();
            copy_both_ways(&mut proxy_down, &mut proxy_up, &mut transferred).await.map(|()| transferred)
        });

        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await.unwrap();
            reply
        });

        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, payload, "every byte arrives through a 64-byte pipe, in order");
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();

        assert_eq!(writer.await.unwrap(), b"done", "the other direction works after a FIN");
        let transferred = pipe.await.unwrap().unwrap();
        assert_eq!((transferred.forward, transferred.backward), (100_000, 4));
    }
}
