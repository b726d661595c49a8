//! Protocol upgrades (WebSocket). An HTTP/1.1 `Upgrade` request, or an
//! HTTP/2 extended CONNECT (RFC 8441), goes upstream as an HTTP/1.1 upgrade.
//! Once the upstream responds with 101, the two connections become a byte
//! pipe in both directions until both sides are done, the pipe is idle for
//! too long, or a drain closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tracing::debug;

use legate_config::model::WebSocketFrames;

use super::body::ResponseBody;
use super::headers::upgrade_type;
use super::frames::relay_frames;
use super::local_reply::local_reply;
use super::pipe::{copy_both_ways, Transferred};
use crate::activity::{Activity, ActivityIo};
use crate::listener::OpenConnection;
use crate::stats::{CloseReasonLabels, DirectionLabels, ProxyStats, UpgradeResultLabels};

const WEBSOCKET_VERSION: &str = "13";

/// An upgrade a downstream request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UpgradeRequest {
    /// Protocol token, lowercased (`websocket`).
    pub protocol: String,
    /// For an HTTP/2 extended CONNECT: the `Sec-WebSocket-Key` the proxy
    /// made for the upstream handshake.
    pub extended_connect_key: Option<String>,
}

impl UpgradeRequest {
    /// Finds the upgrade in a request: `Connection: upgrade` with an
    /// `Upgrade` header over HTTP/1.1, or CONNECT with a `:protocol` over
    /// HTTP/2.
    pub fn detect<B>(request: &Request<B>) -> Option<UpgradeRequest> {
        if request.method() == Method::CONNECT {
            let protocol = request.extensions().get::<hyper::ext::Protocol>()?;
            return Some(UpgradeRequest {
                protocol: protocol.as_str().to_ascii_lowercase(),
                extended_connect_key: Some(tungstenite::handshake::client::generate_key()),
            });
        }
        let protocol = upgrade_type(request.headers())?.to_ascii_lowercase();
        if protocol == "h2c" {
            // As Envoy does, a cleartext HTTP/2 upgrade offer is dropped and
            // the request served as HTTP/1.1: hop-by-hop removal takes out
            // `Upgrade` and the `HTTP2-Settings` that `Connection` names.
            return None;
        }
        Some(UpgradeRequest { protocol, extended_connect_key: None })
    }

    /// Turns the upstream request into an HTTP/1.1 upgrade, with the protocol
    /// token in lower case. For an extended
    /// CONNECT it becomes a complete WebSocket handshake: GET with a fresh
    /// key, as RFC 8441 section 5 describes.
    pub fn prepare_upstream(&self, method: &mut Method, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let upgrade = HeaderValue::from_str(&self.protocol).unwrap_or(HeaderValue::from_static("websocket"));
        headers.insert(header::UPGRADE, upgrade);

        if let Some(key) = &self.extended_connect_key {
            *method = Method::GET;
            if let Ok(key) = HeaderValue::from_str(key) {
                headers.insert(header::SEC_WEBSOCKET_KEY, key);
            }
            if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
                headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(WEBSOCKET_VERSION));
            }
        }
    }

    /// Builds the downstream response to the upstream's 101 and starts the
    /// byte pipe. An extended CONNECT gets 200 without the HTTP/1.1
    /// handshake headers, after the upstream's accept key is checked.
    pub fn complete(
        &self,
        mut response: Response<ResponseBody>,
        upstream: OnUpgrade,
        downstream: OnUpgrade,
        pipe: PipeSettings,
    ) -> Response<ResponseBody> {
        if let Some(key) = &self.extended_connect_key {
            let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let accepted = response.headers().get(header::SEC_WEBSOCKET_ACCEPT).is_some_and(|value| value == expected.as_str());
            if !accepted {
                debug!(upstream.addr = %pipe.endpoint, "upstream WebSocket handshake has a wrong Sec-WebSocket-Accept");
                return local_reply(StatusCode::BAD_GATEWAY, "upstream WebSocket handshake failed");
            }
            *response.status_mut() = StatusCode::OK;
            for name in [header::CONNECTION, header::UPGRADE, header::SEC_WEBSOCKET_ACCEPT] {
                response.headers_mut().remove(name);
            }
            *response.body_mut() = ResponseBody::Local(None);
        }

        pipe.stats.websocket.upgrades.get_or_create(&UpgradeResultLabels { result: "accepted" }).inc();
        tokio::spawn(run_pipe(downstream, upstream, pipe));
        response
    }
}

/// What ends an upgraded connection besides its peers.
pub(super) struct PipeSettings {
    pub endpoint: SocketAddr,
    /// Closes the pipe when no byte moves either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Time given to the pipe after a drain starts.
    pub drain_timeout: Duration,
    /// Changes when the listener drains.
    pub listener_drain: watch::Receiver<bool>,
    /// Closes when the endpoint leaves its cluster.
    pub endpoint_membership: watch::Receiver<()>,
    /// Counts the pipe as an open connection while the proxy shuts down.
    pub _open: OpenConnection,
    pub stats: Arc<ProxyStats>,
    /// Relays parsed frames instead of bytes when set.
    pub frames: Option<WebSocketFrames>,
    /// The WebSocket's place under the cluster's `max_requests`, held for
    /// as long as it is open.
    pub _request_slot: crate::upstream::Slot,
}

/// Copies bytes both ways. A FIN from one side is passed on without closing
/// the other direction, and the pipe ends when both directions are done.
// TODO: an idle proxied WebSocket still adds about 3 KiB of RSS (benchmark
// scenario 7) though the pipe keeps no buffer. This task, the two sockets and
// the upgrade state are not yet measured apart.
async fn run_pipe(downstream: OnUpgrade, upstream: OnUpgrade, mut pipe: PipeSettings) {
    let endpoint = pipe.endpoint;
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            debug!(upstream.addr = %endpoint, %error, "protocol switch failed");
            return;
        }
    };

    let stats = pipe.stats.clone();
    stats.websocket.active.inc();
    let mut transferred = Transferred::default();
    let reason = match pipe.frames {
        // Boxed, so that its state, twice the plain pipe's, is paid only by
        // the routes that inspect frames and not by every idle connection.
        Some(frames) => Box::pin(relay_frames(downstream, upstream, &mut pipe, frames, &mut transferred)).await,
        None => pipe_until_closed(downstream, upstream, &mut pipe, &mut transferred).await,
    };
    stats.websocket.active.dec();

    let websocket = &stats.websocket;
    websocket.bytes.get_or_create(&DirectionLabels { direction: "downstream_to_upstream" }).inc_by(transferred.forward);
    websocket.bytes.get_or_create(&DirectionLabels { direction: "upstream_to_downstream" }).inc_by(transferred.backward);
    websocket.closes.get_or_create(&CloseReasonLabels { reason }).inc();
    debug!(upstream.addr = %endpoint, reason, sent = transferred.forward, received = transferred.backward, "upgraded connection closed");
}

/// Pipes until the peers finish, the pipe idles out, or a drain ends it;
/// returns the reason, as the metrics label it.
async fn pipe_until_closed(
    downstream: hyper::upgrade::Upgraded,
    upstream: hyper::upgrade::Upgraded,
    pipe: &mut PipeSettings,
    transferred: &mut Transferred,
) -> &'static str {
    let activity = Activity::new();
    let mut downstream = ActivityIo::new(TokioIo::new(downstream), activity.clone());
    let mut upstream = ActivityIo::new(TokioIo::new(upstream), activity.clone());
    let copy = copy_both_ways(&mut downstream, &mut upstream, transferred);
    tokio::pin!(copy);

    let idle_timeout = pipe.idle_timeout;
    let drain_reason = loop {
        let idle_check = async {
            match idle_timeout {
                Some(timeout) => tokio::time::sleep_until(activity.idle_deadline(timeout)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut copy => {
                return match result {
                    Ok(()) => "peers_closed",
                    Err(error) => {
                        debug!(upstream.addr = %pipe.endpoint, %error, "upgraded connection failed");
                        "error"
                    }
                };
            }
            _ = idle_check => {
                let timeout = idle_timeout.unwrap_or_default();
                if tokio::time::Instant::now() >= activity.idle_deadline(timeout) {
                    return "idle_timeout";
                }
            }
            _ = pipe.listener_drain.changed() => break "listener_drain",
            _ = pipe.endpoint_membership.changed() => break "endpoint_removed",
        }
    };

    debug!(upstream.addr = %pipe.endpoint, reason = drain_reason, drain_ms = pipe.drain_timeout.as_millis() as u64, "draining upgraded connection");
    match tokio::time::timeout(pipe.drain_timeout, &mut copy).await {
        Ok(Ok(())) => "peers_closed",
        Ok(Err(_)) => "error",
        Err(_) => drain_reason,
    }
}
