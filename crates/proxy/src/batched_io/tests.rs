use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A real loopback socket that counts the writes reaching it.
struct CountedSocket {
    stream: TcpStream,
    writes: usize,
}

impl AsyncRead for CountedSocket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.writes += 1;
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts how often the task under test was woken.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Returns a connected pair: the near end counted, the far end plain.
async fn socket_pair() -> (CountedSocket, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (far, _) = listener.accept().await.unwrap();
    (CountedSocket { stream: near, writes: 0 }, far)
}

fn context(wakes: &Arc<WakeCount>) -> Waker {
    Waker::from(wakes.clone())
}

/// Reads exactly `len` bytes from `far`, or fails after a few seconds.
async fn read_exactly(far: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut received = vec![0; len];
    tokio::time::timeout(Duration::from_secs(5), far.read_exact(&mut received)).await.unwrap().unwrap();
    received
}

/// Polls one read of `io` that finds nothing, as h2 does at the start of
/// each poll of its connection.
fn poll_empty_read<T: AsyncRead + Unpin>(io: &mut BatchedWrites<T>, cx: &mut Context<'_>) {
    let mut space = [0u8; 64];
    let mut buf = ReadBuf::new(&mut space);
    assert!(Pin::new(io).poll_read(cx, &mut buf).is_pending());
}

#[tokio::test]
async fn batched_frames_leave_in_one_write() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);
    let wakes = Arc::new(WakeCount::default());
    let waker = context(&wakes);
    let mut cx = Context::from_waker(&waker);

    // One poll: three frames, each followed by a flush, as h2 writes them.
    poll_empty_read(&mut io, &mut cx);
    for frame in [&b"first"[..], b"second", b"third"] {
        assert!(matches!(Pin::new(&mut io).poll_write(&mut cx, frame), Poll::Ready(Ok(n)) if n == frame.len()));
        assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    }
    assert_eq!(io.inner.writes, 0, "nothing reaches the socket in the poll that buffered it");
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "the task is woken once to write");

    // The next poll: the read finds nothing, then the flush writes.
    poll_empty_read(&mut io, &mut cx);
    assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.inner.writes, 1);
    assert_eq!(read_exactly(&mut far, 16).await, b"firstsecondthird");
    assert_eq!(io.buffer.capacity(), 0, "an emptied buffer is freed");
}

#[tokio::test]
async fn flush_without_new_data_writes() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);
    let wakes = Arc::new(WakeCount::default());
    let waker = context(&wakes);
    let mut cx = Context::from_waker(&waker);

    assert!(Pin::new(&mut io).poll_write(&mut cx, b"frame").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes, 0);

    // Even without a read in between, a second flush with nothing new
    // buffered must not leave the frame waiting.
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes, 1);
    assert_eq!(read_exactly(&mut far, 5).await, b"frame");
}

#[tokio::test]
async fn full_buffer_writes_before_taking_more() {
    let (near, mut far) = socket_pair().await;
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        far.read_to_end(&mut received).await.map(|_| received)
    });
    let mut io = BatchedWrites::http2(near);

    let frame = vec![7u8; 1000];
    let frames = BATCH_LIMIT / frame.len() + 1;
    for _ in 0..frames - 1 {
        io.write_all(&frame).await.unwrap();
    }
    assert_eq!(io.inner.writes, 0, "frames that fit stay buffered");
    io.write_all(&frame).await.unwrap();
    assert!(io.inner.writes >= 1, "the buffer went out once the next frame did not fit");
    assert_eq!(io.pending(), frame.len());

    io.shutdown().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap().unwrap();
    assert_eq!(received.len(), frames * frame.len());
    assert!(received.iter().all(|byte| *byte == 7));
}

#[tokio::test]
async fn large_write_skips_buffer() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);

    let large = vec![1u8; BATCH_LIMIT];
    let written = io.write(&large).await.unwrap();
    assert!(written > 0);
    assert_eq!(io.buffer.capacity(), 0, "the large write was not copied");
    assert_eq!(read_exactly(&mut far, written).await, large[..written]);
}

#[tokio::test]
async fn shutdown_writes_buffer_first() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);
    let wakes = Arc::new(WakeCount::default());
    let waker = context(&wakes);
    let mut cx = Context::from_waker(&waker);

    assert!(Pin::new(&mut io).poll_write(&mut cx, b"goaway").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    io.shutdown().await.unwrap();

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), far.read_to_end(&mut received)).await.unwrap().unwrap();
    assert_eq!(received, b"goaway");
}

#[tokio::test]
async fn http1_connection_passes_through() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::detect(near);

    far.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut request = [0u8; 27];
    io.read_exact(&mut request).await.unwrap();
    assert_eq!(io.mode, Mode::PassThrough);

    let wakes = Arc::new(WakeCount::default());
    let waker = context(&wakes);
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut io).poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n").is_ready());
    assert_eq!(io.inner.writes, 1);
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    assert_eq!(read_exactly(&mut far, 17).await, b"HTTP/1.1 200 OK\r\n");
}

#[tokio::test]
async fn preface_split_across_reads_batches() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::detect(near);

    // "PRI " starts both the preface and an HTTP/1 request line with a
    // method named PRI, so the mode stays undecided until the rest arrives.
    let (head, tail) = HTTP2_PREFACE.split_at(4);
    far.write_all(head).await.unwrap();
    let mut first = [0u8; 4];
    io.read_exact(&mut first).await.unwrap();
    assert_eq!(io.mode, Mode::Detecting(4));

    far.write_all(tail).await.unwrap();
    let mut rest = vec![0u8; tail.len()];
    io.read_exact(&mut rest).await.unwrap();
    assert_eq!(io.mode, Mode::Batched);
}

#[tokio::test]
async fn preface_like_method_passes_through() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::detect(near);

    far.write_all(b"PRIX / HTTP/1.1\r\n").await.unwrap();
    let mut line = [0u8; 17];
    io.read_exact(&mut line).await.unwrap();
    assert_eq!(io.mode, Mode::PassThrough);
}
