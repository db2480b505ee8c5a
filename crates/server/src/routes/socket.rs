//! The status socket (`GET /devices/websocket`, c2c-api.md §3): cameras keep it open to
//! learn at once that they were paused or resumed, and an open socket is how they show
//! as online. The Phoenix protocol itself is `crate::phoenix`; changes made on any server
//! arrive through `crate::status_feed`. Everything a socket can cost is bounded: message
//! size, joined topics, sockets per server and per grant, a send that the device does not
//! read, and silence (the idle timeout).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::clock::{Millis, now_ms};
use crate::db::{Authenticated, DeviceStatus};
use crate::error::ApiError;
use crate::extract::{LogDevice, client_version};
use crate::phoenix::{Channels, Message, Vsn, status_payload};
use crate::state::AppState;
use crate::status_feed::{Admission, MAX_SOCKETS_PER_GRANT, Refused};

/// Largest message (and frame) a device may send; Phoenix messages are a few hundred bytes.
const MAX_MESSAGE: usize = 64 * 1024;
/// What is read from the connection at once (larger messages are assembled from reads).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes waiting to be sent; a device that does not read ends its socket first.
const MAX_WRITE_BUFFER: usize = 2 * MAX_MESSAGE;
/// A frame the device does not take within this long ends the socket (no queue grows).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an open socket refreshes `last_seen_at` (well inside the 5 min online window).
const TOUCH_EVERY_MS: Millis = 60 * 1000;

pub async fn upgrade(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    log: Option<Extension<LogDevice>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // An unreadable query holds no token: 401 like any other missing token.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let token =
        crate::capture::access_token(&query, &headers).ok_or_else(ApiError::unauthorized)?;
    let device = state
        .db
        .authenticate(&token)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if let Some(Extension(slot)) = log {
        let _ = slot.0.set(device.device_id.clone());
    }
    if let Some(limiter) = &state.token_limiter
        && let Err(wait) = limiter.check(&device.grant_id)
    {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: crate::throttle::retry_after_secs(wait),
        });
    }
    let ws = ws.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "Upgrade Required",
            format!("This is a WebSocket: {e}."),
        )
    })?;
    let admission = match state.status_feed.admit(&device.grant_id) {
        Ok(admission) => admission,
        Err(Refused::ServerFull) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "Too many status sockets are open on this server.",
            ));
        }
        Err(Refused::GrantFull) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                format!(
                    "This device already has {MAX_SOCKETS_PER_GRANT} status sockets open; close one first."
                ),
            ));
        }
    };
    let vsn = Vsn::from_query(
        query
            .iter()
            .find(|(k, _)| k == "vsn")
            .map(|(_, v)| v.as_str()),
    );
    let version = client_version(&headers);
    // Subscribed before the upgrade is answered: no change made after that is missed.
    let changes = state.status_feed.subscribe();
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // tungstenite's defaults (a 128 KiB read buffer allocated up front, 128 KiB
        // gathered before a write) would make a thousand idle cameras cost 250 MiB.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "status socket upgrade failed"))
        .on_upgrade(move |ws| {
            Socket {
                state,
                device,
                version,
                vsn,
                changes,
                _admission: admission,
            }
            .run(ws)
        })
        .into_response())
}

/// One open status socket.
struct Socket {
    state: AppState,
    device: Authenticated,
    version: String,
    vsn: Vsn,
    changes: broadcast::Receiver<Arc<DeviceStatus>>,
    /// This socket's place under the per-server and per-grant caps, given back when it ends.
    _admission: Admission,
}

/// Why a socket ended.
enum End {
    /// The device closed it, or the connection broke (a camera switched off).
    Gone(String),
    Idle,
    Revoked,
    /// A frame could not be sent (the device stopped reading).
    Stuck,
}

impl Socket {
    async fn run(mut self, mut ws: WebSocket) {
        let end = self.serve(&mut ws).await;
        let close = |code: u16, reason: &'static str| {
            Frame::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        };
        let device = self.device.device_id.as_str();
        match end {
            End::Gone(why) => tracing::debug!(device, why, "status socket closed"),
            End::Idle => {
                tracing::debug!(device, "status socket idle: closing it");
                let _ = send(&mut ws, close(1000, "idle timeout")).await;
            }
            End::Revoked => {
                tracing::info!(device, "status socket closed: the device was unpaired");
                let _ = send(&mut ws, close(1008, "unpaired or revoked")).await;
            }
            End::Stuck => tracing::debug!(device, "status socket not reading: dropped"),
        }
    }

    async fn serve(&mut self, ws: &mut WebSocket) -> End {
        let idle = self.state.config.socket_idle_timeout;
        let mut channels = Channels::default();
        let mut last_touch = self.device.last_seen_at;
        self.touch(&mut last_touch).await;
        // What the device is as the socket opens; changes come through the feed.
        let Some(mut paused) = self.current().await else {
            return End::Revoked;
        };
        let mut deadline = Instant::now() + idle;
        loop {
            tokio::select! {
                frame = ws.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) => return End::Gone(e.to_string()),
                        None => return End::Gone("closed".to_owned()),
                    };
                    deadline = Instant::now() + idle;
                    self.touch(&mut last_touch).await;
                    let text = match frame {
                        Frame::Text(text) => text,
                        Frame::Close(_) => return End::Gone("closed by the device".to_owned()),
                        // Pings are answered by the WebSocket layer; binary frames are not
                        // part of the JSON serializers.
                        _ => continue,
                    };
                    let Some(msg) = Message::decode(self.vsn, text.as_str()) else {
                        tracing::debug!(device = self.device.device_id, "status socket: not a Phoenix message");
                        continue;
                    };
                    let handled = channels.handle(msg);
                    if !self.send(ws, &handled.reply).await {
                        return End::Stuck;
                    }
                    if let Some(topic) = handled.joined
                        && let Some(push) = channels.push_to(&topic, "status_updated", &status_payload(paused))
                        && !self.send(ws, &push).await
                    {
                        return End::Stuck;
                    }
                }
                change = self.changes.recv() => {
                    let status = match change {
                        Ok(change) if change.device_id == self.device.device_id => {
                            self.still_paired(&change).then_some(change.paused())
                        }
                        Ok(_) => continue,
                        // Fell behind the feed: read the device's state afresh.
                        Err(RecvError::Lagged(_)) => self.current().await,
                        Err(RecvError::Closed) => return End::Gone("server stopping".to_owned()),
                    };
                    let Some(now_paused) = status else {
                        return End::Revoked;
                    };
                    if now_paused != paused {
                        paused = now_paused;
                        for push in channels.push_all("status_updated", &status_payload(paused)) {
                            if !self.send(ws, &push).await {
                                return End::Stuck;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => return End::Idle,
            }
        }
    }

    fn still_paired(&self, status: &DeviceStatus) -> bool {
        status.grant_id.as_deref() == Some(self.device.grant_id.as_str())
    }

    /// Whether the device is paused now; `None` if its grant no longer stands. A database
    /// error counts as "not paused" rather than closing a camera's socket.
    async fn current(&self) -> Option<bool> {
        match self.state.db.device_status(&self.device.device_id).await {
            Ok(Some(status)) => self.still_paired(&status).then_some(status.paused()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "status socket: reading the device's state failed");
                Some(false)
            }
        }
    }

    /// An open socket keeps the device online: `last_seen_at`, at most once a minute.
    async fn touch(&self, last_touch: &mut Option<Millis>) {
        let now = now_ms();
        if last_touch.is_some_and(|t| now - t < TOUCH_EVERY_MS) {
            return;
        }
        let known = (self.device.client_version.as_str(), *last_touch);
        match self
            .state
            .db
            .touch_device(&self.device.device_id, &self.version, known)
            .await
        {
            Ok(()) => *last_touch = Some(now),
            Err(e) => tracing::warn!(error = %e, "status socket: recording presence failed"),
        }
    }

    async fn send(&self, ws: &mut WebSocket, msg: &Message) -> bool {
        send(ws, Frame::Text(msg.encode(self.vsn).into())).await
    }
}

async fn send(ws: &mut WebSocket, frame: Frame) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, ws.send(frame)).await,
        Ok(Ok(()))
    )
}
