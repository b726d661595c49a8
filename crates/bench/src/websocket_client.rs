//! WebSocket connections from the harness for scenario 7: many idle ones
//! held open, and an echo loop over some of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Maximum time one handshake or one echo may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight while opening connections.
const OPENING_CONCURRENCY: usize = 64;

pub type Socket = WebSocketStream<TcpStream>;

async fn open_one(port: u16) -> anyhow::Result<Socket> {
    let attempt = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("failed to connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        let (socket, response) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/ws"), stream).await?;
        anyhow::ensure!(response.status() == 101, "upgrade returned HTTP status {}, expected 101", response.status());
        Ok(socket)
    };
    tokio::time::timeout(TIMEOUT, attempt).await.context("WebSocket handshake timed out")?
}

/// Opens `count` WebSocket connections to 127.0.0.1:`port`, a few
/// handshakes at a time, and fails on the first that does not upgrade.
pub async fn open(port: u16, count: usize) -> anyhow::Result<Vec<Socket>> {
    futures_util::stream::iter((0..count).map(|_| open_one(port))).buffer_unordered(OPENING_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}

/// Totals of an echo run.
#[derive(Debug, Clone, Default)]
pub struct EchoLoad {
    pub messages: u64,
    /// Connections whose echo failed, timed out or came back changed.
    pub errors: u64,
    /// The error of the first failed connection, for the log.
    pub first_error: Option<String>,
    pub seconds: f64,
}

/// Sends a `message_bytes` binary message on every socket and waits for its
/// echo before sending the next, until `duration` has passed. Returns the
/// sockets for another run. Each socket runs as its own task so that the
/// runtime schedules them fairly. Polled together from one task, some
/// sockets waited over 10 seconds for their turn.
pub async fn echo_load(sockets: Vec<Socket>, message_bytes: usize, duration: Duration) -> (Vec<Socket>, EchoLoad) {
    let started = Instant::now();
    let deadline = started + duration;
    let payload: Arc<[u8]> = vec![b'x'; message_bytes].into();
    let loops: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let result = echo_loop(&mut socket, &payload, deadline).await;
                (socket, result)
            })
        })
        .collect();

    let mut sockets = Vec::with_capacity(loops.len());
    let mut load = EchoLoad::default();
    for task in loops {
        let Ok((socket, (messages, failed))) = task.await else {
            load.errors += 1;
            continue;
        };
        sockets.push(socket);
        load.messages += messages;
        if failed.is_some() {
            load.errors += 1;
            load.first_error = load.first_error.or(failed);
        }
    }
    load.seconds = started.elapsed().as_secs_f64();
    (sockets, load)
}

/// Returns the echoes received and the error the loop stopped on, if any.
async fn echo_loop(socket: &mut Socket, payload: &[u8], deadline: Instant) -> (u64, Option<String>) {
    let mut messages = 0;
    while Instant::now() < deadline {
        let round_trip = async {
            socket.send(Message::binary(payload.to_vec())).await?;
            match socket.next().await {
                Some(Ok(Message::Binary(echo))) if echo.as_ref() == payload => Ok(()),
                other => anyhow::bail!("expected the echo, received {other:?}"),
            }
        };
        match tokio::time::timeout(TIMEOUT, round_trip).await {
            Ok(Ok(())) => messages += 1,
            Ok(Err(error)) => return (messages, Some(format!("{error:#}"))),
            Err(_) => return (messages, Some(format!("no echo within {TIMEOUT:?}"))),
        }
    }
    (messages, None)
}

/// Opens one connection to 127.0.0.1:`port` and checks one echo.
pub fn check_echo(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let sockets = open(port, 1).await?;
        let (_, load) = echo_load(sockets, 16, Duration::from_millis(1)).await;
        anyhow::ensure!(load.errors == 0 && load.messages > 0, "no WebSocket echo came back through 127.0.0.1:{port}");
        Ok(())
    })
}
