//! The WebSocket upstream of scenario 7: accepts any upgrade request and
//! sends every text or binary message back on the same connection.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, clap::Args)]
pub struct WebSocketArgs {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
}

/// Runs the WebSocket echo upstream on one thread until the process is stopped.
pub fn serve(args: WebSocketArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(echo(stream));
        }
    })
}

async fn echo(stream: TcpStream) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
    while let Some(Ok(message)) = socket.next().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            return;
        }
    }
}
