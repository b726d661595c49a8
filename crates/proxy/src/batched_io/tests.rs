use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A real loopback socket that counts the writes reaching it. The count is
/// shared, so a test can read it after h2 takes the socket.
struct CountedSocket {
    stream: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl CountedSocket {
    fn writes(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }
}

impl AsyncRead for CountedSocket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
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
    (CountedSocket { stream: near, writes: Arc::default() }, far)
}

/// Returns a waker for a task polled by hand, and the count of its wakes.
fn counting_waker() -> (Arc<WakeCount>, Waker) {
    let wakes = Arc::new(WakeCount::default());
    (wakes.clone(), Waker::from(wakes))
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
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);

    // One poll: three frames, each followed by a flush, as h2 writes them.
    poll_empty_read(&mut io, &mut cx);
    for frame in [&b"first"[..], b"second", b"third"] {
        assert!(matches!(Pin::new(&mut io).poll_write(&mut cx, frame), Poll::Ready(Ok(n)) if n == frame.len()));
        assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    }
    assert_eq!(io.inner.writes(), 0, "nothing reaches the socket in the poll that buffered it");
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "the task is woken once to write");

    // The next poll: the read finds nothing, then the flush writes.
    poll_empty_read(&mut io, &mut cx);
    assert!(matches!(Pin::new(&mut io).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(io.inner.writes(), 1);
    assert_eq!(read_exactly(&mut far, 16).await, b"firstsecondthird");
    assert_eq!(io.buffer.capacity(), 0, "an emptied buffer is freed");
}

#[tokio::test]
async fn next_poll_writes_old_and_new_frames() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);

    poll_empty_read(&mut io, &mut cx);
    assert!(Pin::new(&mut io).poll_write(&mut cx, b"first").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes(), 0);

    // The next poll buffers a frame of its own before it flushes. That flush
    // must not be put off again, because the task was woken only once.
    poll_empty_read(&mut io, &mut cx);
    assert!(Pin::new(&mut io).poll_write(&mut cx, b"second").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes(), 1);
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    assert_eq!(read_exactly(&mut far, 11).await, b"firstsecond");
}

#[tokio::test]
async fn flush_without_new_data_writes() {
    let (near, mut far) = socket_pair().await;
    let mut io = BatchedWrites::http2(near);
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);

    assert!(Pin::new(&mut io).poll_write(&mut cx, b"frame").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes(), 0);

    // Even without a read in between, a second flush with nothing new
    // buffered must not leave the frame waiting.
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    assert_eq!(io.inner.writes(), 1);
    assert_eq!(read_exactly(&mut far, 5).await, b"frame");
}

#[tokio::test]
async fn flush_reaches_inner_writer() {
    let (near, mut far) = socket_pair().await;
    // The BufWriter is an inner stream with a buffer of its own, one that
    // sends buffered bytes only when flushed.
    let mut io = BatchedWrites::http2(tokio::io::BufWriter::new(near.stream));
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);

    assert!(Pin::new(&mut io).poll_write(&mut cx, b"frame").is_ready());
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
    poll_empty_read(&mut io, &mut cx);
    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
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
    assert_eq!(io.inner.writes(), 0, "frames that fit stay buffered");
    io.write_all(&frame).await.unwrap();
    assert!(io.inner.writes() >= 1, "the buffer went out once the next frame did not fit");
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
    let (_, waker) = counting_waker();
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

    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut io).poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n").is_ready());
    assert_eq!(io.inner.writes(), 1);
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

/// Returns `len` bytes that repeat a 251-byte cycle, so that a lost, doubled
/// or reordered chunk changes the bytes received.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8).collect()
}

#[tokio::test]
async fn stalled_peer_gets_every_byte() {
    let (near, mut far) = socket_pair().await;
    let frame_len = 1000;
    let frames = 8 * 1024;
    let sent = pattern(frame_len * frames);

    // The peer reads nothing at first, so the socket buffers fill and
    // writes return Pending partway through the batch buffer.
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut received = Vec::new();
        far.read_to_end(&mut received).await.map(|_| received)
    });
    let mut io = BatchedWrites::http2(near);
    for frame in sent.chunks(frame_len) {
        io.write_all(frame).await.unwrap();
        assert!(io.buffer.len() <= BATCH_LIMIT, "the buffer grew to {} bytes", io.buffer.len());
        io.flush().await.unwrap();
    }
    io.shutdown().await.unwrap();

    let received = tokio::time::timeout(Duration::from_secs(20), reader).await.unwrap().unwrap().unwrap();
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the bytes received differ from the bytes sent");
}

/// Serves h2 over `io` and sends each response from its own task, with a
/// body of `body_len` bytes of `pattern`. Starts a graceful shutdown (GOAWAY) once
/// `streams` requests have arrived and returns when the connection closes.
async fn serve_h2<T>(io: T, streams: usize, body_len: usize)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = h2::server::handshake(io).await.unwrap();
    let mut accepted = 0;
    while let Some(request) = connection.accept().await {
        let (_, mut respond) = request.unwrap();
        tokio::spawn(async move {
            let mut body = respond.send_response(http::Response::new(()), false).unwrap();
            body.send_data(bytes::Bytes::from(pattern(body_len)), true).unwrap();
        });
        accepted += 1;
        if accepted == streams {
            connection.graceful_shutdown();
        }
    }
}

/// Sends `streams` requests at once over `io` with plain h2 and returns the
/// response bodies, after the connection has closed.
///
/// The client must write nothing once the server has sent its GOAWAY. A
/// frame that reaches the server after it closed its socket gets a reset
/// back, and the client then fails with a broken pipe or a reset
/// connection, with or without batching. So the flow-control windows hold
/// every body and no capacity is released. Every body stream also stays
/// open until the connection closes, because dropping one releases its
/// capacity (a WINDOW_UPDATE) and dropping the last makes the client send
/// its own GOAWAY.
async fn fetch_h2(io: TcpStream, streams: usize, body_len: usize) -> Vec<Vec<u8>> {
    let stream_window = u32::try_from(body_len).unwrap();
    let connection_window = u32::try_from(streams * body_len).unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);

    let mut responses = Vec::new();
    for _ in 0..streams {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::get("http://127.0.0.1/").body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        responses.push(response);
    }
    drop(client);

    let mut bodies = Vec::new();
    let mut finished = Vec::new();
    for response in responses {
        let mut body = response.await.unwrap().into_body();
        let mut received = Vec::new();
        while let Some(chunk) = body.data().await {
            received.extend_from_slice(&chunk.unwrap());
        }
        bodies.push(received);
        finished.push(body);
    }
    driver.await.unwrap().unwrap();
    drop(finished);
    bodies
}

/// Runs `serve_h2` over `server_io` and `fetch_h2` against it, fails when
/// either takes longer than 10 seconds, and checks each body.
async fn exchange_h2<T>(server_io: T, client_io: TcpStream, streams: usize, body_len: usize)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let server = tokio::spawn(serve_h2(server_io, streams, body_len));
    let bodies = tokio::time::timeout(Duration::from_secs(10), fetch_h2(client_io, streams, body_len)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();

    assert_eq!(bodies.len(), streams);
    let expected = pattern(body_len);
    for body in &bodies {
        assert!(*body == expected, "a response body of {} bytes differs from the one sent", body.len());
    }
}

#[tokio::test]
async fn h2_detected_preface_batches_responses() {
    let (near, far) = socket_pair().await;
    let writes = near.writes.clone();
    let streams = 64;

    exchange_h2(BatchedWrites::detect(near), far, streams, 1024).await;

    // Each 1 KiB DATA frame costs h2 a write of its own without batching.
    let writes = writes.load(Ordering::Relaxed);
    assert!(writes < streams / 2, "{writes} writes for {streams} responses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_multi_thread_passes_through() {
    let (near, far) = socket_pair().await;
    let io = BatchedWrites::http2(near);
    assert_eq!(io.mode, Mode::PassThrough);

    exchange_h2(io, far, 200, 3000).await;
}

#[tokio::test]
async fn h2_large_bodies_arrive_whole() {
    let (near, far) = socket_pair().await;

    // About every fourth DATA frame of 16 KiB overflows the batch buffer.
    exchange_h2(BatchedWrites::http2(near), far, 16, 100 * 1024).await;
}
