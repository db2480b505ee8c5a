//! The HTTP surface: which path goes to which handler, and what wraps every request
//! (the request log line, the timeout, body limits).

mod assets;
mod auth;
mod channels;
mod devices;
mod socket;
mod upload;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::error::{ApiError, unknown_route};
use crate::extract::LogDevice;
use crate::state::AppState;

/// Largest JSON or form body accepted (a 10,000-part real-time registration fits).
const MAX_BODY: usize = 2 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    let realtime = post(assets::register_parts);
    let api = Router::new()
        .route("/health", get(health))
        .route("/v2/health", get(health))
        .route("/ca.crt", get(ca_certificate))
        .route("/ca.pem", get(ca_certificate))
        .route("/ROOT.CRT", get(ca_certificate))
        .route("/v2/auth/device/code", post(auth::device_code))
        .route("/v2/auth/token", post(auth::token).get(auth::token))
        .route("/v2/auth/revoke", post(auth::revoke))
        .route("/v2/devices/me", get(devices::me))
        .route("/v2/me", get(devices::user_me))
        .route("/v2/accounts/{account_id}", get(devices::account))
        .route("/v2/devices/heartbeat", post(devices::heartbeat))
        .route("/v2/devices/assets", post(assets::create))
        .route("/v2/assets", post(assets::create))
        .route(
            "/v2/devices/assets/{id}/realtime_upload/parts",
            realtime.clone(),
        )
        .route("/v2/assets/{id}/realtime_upload/parts", realtime.clone())
        .route("/v2/devices/assets/{id}/realtime-upload-parts", realtime)
        .route("/v2/devices/assets/{id}/upload", get(assets::upload_status))
        .route("/v2/devices/assets/{id}/comments", post(channels::comment))
        .route("/v2/devices/channels", post(channels::create))
        .route(
            "/v2/devices/channels/disconnect",
            post(channels::disconnect_all),
        )
        .route(
            "/v2/devices/channels/{id}/disconnect",
            post(channels::disconnect),
        )
        .route(
            "/v2/devices/channels/{id}/inputs/{index}/trigger",
            post(channels::trigger),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            MAX_BODY,
            crate::transport::refuse_oversized,
        ));
    // Part bodies are streamed to disk with their own length check and idle timeout; a
    // status socket has its own idle timeout too.
    let uploads = Router::new()
        .route("/upload/{asset_id}/{number}", put(upload::put_part))
        .route("/devices/websocket", get(socket::upgrade))
        .route("/v2/devices/websocket", get(socket::upgrade));
    api.merge(uploads)
        .merge(crate::web::router(state.clone()))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_and_time_out,
        ))
        .with_state(state)
}

/// One structured line per request: method, route, status, latency, device. The route is
/// the matched pattern, never the raw URI, so signatures in query strings stay out of logs
/// (an unknown route's path is logged through the redaction of [`crate::capture`]). Device
/// API requests are also handed to the traffic record (errors always, all with `--capture`).
async fn log_and_time_out(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let route = matched
        .clone()
        .unwrap_or_else(|| crate::capture::redact::path(req.uri().path()));
    let device = LogDevice::default();
    req.extensions_mut().insert(device.clone());
    let watch = state.traffic.watch(matched.as_deref(), &mut req);
    let is_upload = route.starts_with("/upload/") || route.ends_with("/websocket");
    let mut response = if is_upload {
        next.run(req).await
    } else {
        match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
            Ok(res) => res,
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "The request took too long.",
            )
            .into_response(),
        }
    };
    if let Some(watch) = watch {
        response = watch
            .finish(&state.traffic, response, device.0.get().cloned())
            .await;
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let device = device.0.get().map(String::as_str).unwrap_or("-");
    if status >= 500 {
        tracing::warn!(%method, route, status, latency_ms, device, "request");
    } else {
        tracing::info!(%method, route, status, latency_ms, device, "request");
    }
    response
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        format!("{method} is not allowed on {}.", uri.path()),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The root certificate cameras and clients must trust (`ROOT.CRT` is the name Canon
/// cameras look for on the card).
async fn ca_certificate(State(state): State<AppState>) -> Response {
    match &state.ca_pem {
        Some(pem) => {
            let mut res = pem.to_string().into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-x509-ca-cert"),
            );
            res
        }
        None => {
            ApiError::not_found("This server uses the operator's own certificate.").into_response()
        }
    }
}
