//! The web UI on the same HTTPS port: sign-in, the pairing page, projects with their
//! devices and live media browser, clip playback, and the setup page. Rendered on the
//! server (askama templates, auto-escaped) with a little JavaScript for live progress; no
//! external CDN, so it works on a set without internet.

mod assets;
mod auth;
mod limits;
mod pairing;
mod projects;
mod session;

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

pub use limits::RateLimiter;
use session::{Nav, SignedIn};

use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(projects::list))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/pair", get(pairing::page).post(pairing::lookup))
        .route("/pair/decide", post(pairing::decide))
        .route("/setup", get(setup))
        .route("/projects/{id}", get(projects::page))
        .route("/projects/{id}/media", get(projects::media))
        .route("/projects/{id}/devices", get(projects::devices))
        .route("/projects/{id}/events", get(projects::events))
        .route("/devices/{id}/{action}", post(projects::device_action))
        .route("/assets/{id}", get(assets::page))
        .route("/assets/{id}/file", get(assets::file))
        .route(
            "/static/app.css",
            get(|| async {
                asset_response(
                    "text/css; charset=utf-8",
                    include_str!("../../static/app.css"),
                )
            }),
        )
        .route(
            "/static/app.js",
            get(|| async {
                asset_response(
                    "text/javascript; charset=utf-8",
                    include_str!("../../static/app.js"),
                )
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            state,
            security_headers,
        ))
}

fn asset_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// No inline script, no third-party anything, no framing.
async fn security_headers(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// Renders a page; a template that fails to render is our bug, answered 500.
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

/// An HTML error page (the web UI's counterpart of the API's error bodies).
pub(crate) fn error_page(nav: Nav, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_owned();
    let mut res = render(&ErrorPage {
        nav,
        title,
        message: message.to_owned(),
    });
    *res.status_mut() = status;
    res
}

/// 404 for anything the user may not see, whether or not it exists.
pub(crate) fn not_found(nav: Nav) -> Response {
    error_page(
        nav,
        StatusCode::NOT_FOUND,
        "There is nothing here, or it is not in one of your projects.",
    )
}

pub(crate) fn internal(nav: Nav, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "web page failed");
    error_page(
        nav,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong on the server.",
    )
}

/// The media store cannot be reached (503 with `Retry-After`).
pub(crate) fn unavailable(nav: Nav) -> Response {
    let mut res = error_page(
        nav,
        StatusCode::SERVICE_UNAVAILABLE,
        "The media store is unavailable; try again shortly.",
    );
    res.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    res
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    nav: Nav,
    fingerprint: Option<String>,
    base_url: String,
    /// Administrators only: the newest failed device requests (`None` for other users).
    device_errors: Option<Vec<DeviceError>>,
}

/// A row of the Setup page's "Recent device errors".
struct DeviceError {
    at: String,
    device: String,
    method: String,
    path: String,
    status: u16,
    detail: String,
}

/// How many failed device requests the Setup page lists.
const SETUP_DEVICE_ERRORS: i64 = 20;

async fn setup(
    State(state): State<AppState>,
    user: SignedIn,
    crate::extract::BaseUrl(base_url): crate::extract::BaseUrl,
) -> Response {
    let fingerprint = state
        .ca_pem
        .as_deref()
        .and_then(|pem| crate::tls::fingerprint(pem).ok());
    let device_errors = if user.user.is_admin != 0 {
        match state.db.traffic(None, SETUP_DEVICE_ERRORS).await {
            Ok(records) => Some(
                records
                    .into_iter()
                    .map(|r| DeviceError {
                        at: crate::clock::rfc3339(r.at),
                        device: r.device_name.or(r.device_id).unwrap_or_else(|| "-".into()),
                        method: r.method,
                        path: r.path,
                        status: r.status,
                        detail: r.detail.unwrap_or_default(),
                    })
                    .collect(),
            ),
            Err(e) => return internal(user.nav(), e),
        }
    } else {
        None
    };
    render(&SetupPage {
        nav: user.nav(),
        fingerprint,
        base_url,
        device_errors,
    })
}

/// Human-readable byte counts.
pub(crate) fn human_size(bytes: Option<i64>) -> String {
    let Some(bytes) = bytes else {
        return "size unknown".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// `2026-11-29 05:04` (UTC).
pub(crate) fn short_time(ms: i64) -> String {
    let full = crate::clock::rfc3339(ms);
    format!(
        "{} {} UTC",
        full.get(..10).unwrap_or(""),
        full.get(11..16).unwrap_or("")
    )
}
