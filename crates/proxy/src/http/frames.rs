//! Frame-aware WebSocket relaying, the opt-in alternative to the byte pipe.
//! Both legs are parsed as WebSocket streams, so the proxy can enforce a
//! message size limit (close code 1009), count messages, and close both
//! sides with 1001 Going Away when it drains, instead of cutting TCP.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use legate_config::model::WebSocketFrames;

use super::pipe::Transferred;
use super::upgrade::PipeSettings;
use crate::activity::{Activity, ActivityIo};

type Leg = WebSocketStream<ActivityIo<TokioIo<Upgraded>>>;

/// Time a side gets to reply to a Close before its connection is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Effect of one relayed message on the relay.
enum Step {
    Continue,
    Closed(&'static str),
}

pub(super) async fn relay_frames(
    downstream: Upgraded,
    upstream: Upgraded,
    pipe: &mut PipeSettings,
    frames: WebSocketFrames,
    transferred: &mut Transferred,
) -> &'static str {
    let activity = Activity::new();
    let config = WebSocketConfig::default()
        .max_message_size(Some(frames.max_message_bytes))
        .max_frame_size(Some(frames.max_message_bytes));
    let downstream_io = ActivityIo::new(TokioIo::new(downstream), activity.clone());
    let upstream_io = ActivityIo::new(TokioIo::new(upstream), activity.clone());
    let mut client = WebSocketStream::from_raw_socket(downstream_io, Role::Server, Some(config)).await;
    let mut server = WebSocketStream::from_raw_socket(upstream_io, Role::Client, Some(config)).await;

    let idle_timeout = pipe.idle_timeout;
    // Set when a drain starts: messages keep flowing until then.
    let mut draining: Option<(&'static str, tokio::time::Instant)> = None;
    let ending = loop {
        let idle_check = async {
            match idle_timeout {
                Some(timeout) => tokio::time::sleep_until(activity.idle_deadline(timeout)).await,
                None => std::future::pending().await,
            }
        };
        let drain_end = async {
            match draining {
                Some((_, deadline)) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let step = tokio::select! {
            message = client.next() => relay(message, &mut client, &mut server, &mut transferred.forward).await,
            message = server.next() => relay(message, &mut server, &mut client, &mut transferred.backward).await,
            _ = idle_check => {
                let timeout = idle_timeout.unwrap_or_default();
                if tokio::time::Instant::now() < activity.idle_deadline(timeout) {
                    continue;
                }
                Step::Closed("idle_timeout")
            }
            _ = drain_end => Step::Closed(draining.map_or("listener_drain", |(reason, _)| reason)),
            _ = pipe.listener_drain.changed(), if draining.is_none() => {
                draining = Some(("listener_drain", tokio::time::Instant::now() + pipe.drain_timeout));
                Step::Continue
            }
            _ = pipe.endpoint_membership.changed(), if draining.is_none() => {
                draining = Some(("endpoint_removed", tokio::time::Instant::now() + pipe.drain_timeout));
                Step::Continue
            }
        };
        if let Step::Closed(reason) = step {
            break reason;
        }
    };

    if matches!(ending, "idle_timeout" | "listener_drain" | "endpoint_removed") {
        debug!(upstream.addr = %pipe.endpoint, reason = ending, "closing WebSocket with 1001 Going Away");
        let going_away = || Some(CloseFrame { code: CloseCode::Away, reason: "proxy closing the connection".into() });
        close_within_grace(&mut client, going_away()).await;
        close_within_grace(&mut server, going_away()).await;
    }
    ending
}

/// Relays one message read from `from` to `to`. A Close is passed on with
/// its code and reason; a message over the size limit closes both sides
/// with 1009.
async fn relay(message: Option<Result<Message, WsError>>, from: &mut Leg, to: &mut Leg, relayed: &mut u64) -> Step {
    match message {
        Some(Ok(Message::Close(frame))) => {
            // Pass the Close on and wait for the other side's reply, then
            // send the reply that tungstenite queued for `from` and let it
            // finish, so both peers complete the closing handshake.
            close_within_grace(to, frame).await;
            finish_within_grace(from).await;
            Step::Closed("peers_closed")
        }
        Some(Ok(Message::Frame(_))) => Step::Continue,
        Some(Ok(message)) => {
            *relayed += message.len() as u64;
            match to.send(message).await {
                Ok(()) => Step::Continue,
                Err(_) => {
                    close_within_grace(from, None).await;
                    Step::Closed("error")
                }
            }
        }
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            debug!(size, max_size, "WebSocket message over the size limit");
            let too_big = || Some(CloseFrame { code: CloseCode::Size, reason: "message too big".into() });
            close_within_grace(from, too_big()).await;
            close_within_grace(to, too_big()).await;
            Step::Closed("message_too_big")
        }
        Some(Err(_)) | None => {
            close_within_grace(to, None).await;
            Step::Closed("peers_closed")
        }
    }
}

/// Flushes the Close reply queued for a peer that closed first and waits
/// briefly for it to end the connection.
async fn finish_within_grace(leg: &mut Leg) {
    let finishing = async {
        let _ = leg.flush().await;
        while let Some(Ok(_)) = leg.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, finishing).await;
}

/// Sends a Close and waits briefly for the other end to finish, so the
/// frame is delivered rather than cut off by dropping the connection.
async fn close_within_grace(leg: &mut Leg, frame: Option<CloseFrame>) {
    let closing = async {
        if leg.close(frame).await.is_ok() {
            while let Some(Ok(_)) = leg.next().await {}
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, closing).await;
}
