//! The accept loop shared by the control plane's HTTP ports.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `listener` and hands each to `on_accept` until
/// `shutdown` completes. `port` names the port in logs.
pub(crate) async fn accept_until(
    listener: TcpListener,
    port: &'static str,
    shutdown: impl Future<Output = ()>,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(error) => {
                tracing::warn!(%error, port, "failed to accept a connection");
                // Out of file descriptors and similar errors persist for a
                // moment, so a pause keeps the loop from spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::info!(port, "stopped accepting connections");
}
