//! Protocol switches (WebSocket): once the upstream responds with 101, the two
//! connections become a byte pipe in both directions.

use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

/// Joins the downstream and upstream connections once both have switched
/// protocols, copying bytes each way until both sides are done. A FIN from
/// one side is passed on without closing the other direction.
pub(super) fn bridge(downstream: OnUpgrade, upstream: OnUpgrade, endpoint: SocketAddr) {
    tokio::spawn(async move {
        let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                debug!(upstream.addr = %endpoint, %error, "protocol switch failed");
                return;
            }
        };
        let mut downstream = TokioIo::new(downstream);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
            Ok((sent, received)) => debug!(upstream.addr = %endpoint, sent, received, "upgraded connection closed"),
            Err(error) => debug!(upstream.addr = %endpoint, %error, "upgraded connection failed"),
        }
    });
}
