//! How every failure becomes an HTTP answer in one of the contract's two error shapes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rushes_proto::error::{ErrorBody, OAuthErrorBody};

#[derive(Debug)]
pub enum ApiError {
    /// `/v2/auth/*`: HTTP 400 `{"error": code}`.
    OAuth(&'static str),
    /// Everything else: the detailed shape.
    Detailed {
        status: StatusCode,
        title: &'static str,
        detail: String,
    },
    /// The device is over its request limit (429, `Retry-After`).
    TooManyRequests { retry_after_secs: u64 },
    /// A fault of ours (or of the database): logged, answered 500 or 503 without detail.
    Internal(anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The `detail` (or OAuth error code) an error answered with, attached to the response so
/// the device traffic record ([`crate::capture`]) can say why a request failed.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// `res` carrying `detail` for the traffic record.
fn with_detail(mut res: Response, detail: String) -> Response {
    res.extensions_mut().insert(ErrorDetail(detail));
    res
}

impl ApiError {
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::Detailed {
            status,
            title,
            detail: detail.into(),
        }
    }

    pub fn unauthorized() -> ApiError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Not Authorized",
            "The access token is missing, unknown, expired or revoked.",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "Not Found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail)
    }

    /// 422 naming the offending field.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> ApiError {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid Argument",
            format!("{field}: {problem}"),
        )
    }

    /// The media store cannot be reached; the device should retry (503, `Retry-After`).
    pub fn store_unavailable() -> ApiError {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "The media store is unavailable; try again shortly.",
        )
    }

    /// 507: the disk holding media or metadata has no room left.
    pub fn disk_full(detail: impl Into<String>) -> ApiError {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "Insufficient Storage",
            detail,
        )
    }

    pub fn channel_paused() -> ApiError {
        Self::new(
            StatusCode::CONFLICT,
            "Channel Paused",
            "The channel you're uploading from is currently paused.",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::OAuth(code) => {
                let mut res = (
                    StatusCode::BAD_REQUEST,
                    Json(OAuthErrorBody {
                        error: code.to_owned(),
                    }),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                with_detail(res, code.to_owned())
            }
            ApiError::Detailed {
                status,
                title,
                detail,
            } => {
                let mut res = (
                    status,
                    Json(ErrorBody::new(status.as_u16(), title, detail.clone())),
                )
                    .into_response();
                if status == StatusCode::UNAUTHORIZED {
                    res.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                }
                with_detail(res, detail)
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let detail = format!(
                    "This device is over its request limit; try again in {retry_after_secs} s."
                );
                let mut res = (
                    status,
                    Json(ErrorBody::new(
                        status.as_u16(),
                        "Too Many Requests",
                        detail.clone(),
                    )),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                with_detail(res, detail)
            }
            ApiError::Internal(e) if is_disk_full(&e) => {
                tracing::error!(error = format!("{e:#}"), "the disk is full");
                let mut res = ApiError::disk_full(
                    "The server's disk is full; nothing was stored. Try again once space is freed.",
                )
                .into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                res
            }
            ApiError::Internal(e) => {
                let busy = e.downcast_ref::<sqlx::Error>().is_some_and(|e| {
                    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
                        || matches!(e, sqlx::Error::Database(d) if d.message().contains("locked") || d.message().contains("busy"))
                });
                if busy {
                    tracing::warn!(error = %e, "metadata store busy or unreachable");
                    let mut res = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Service Unavailable",
                        "The server is busy; try again shortly.",
                    )
                    .into_response();
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return res;
                }
                tracing::error!(error = format!("{e:#}"), "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                    "Something went wrong on the server.",
                )
                .into_response()
            }
        }
    }
}

/// Whether a failure was the disk filling up: SQLite's `SQLITE_FULL` (also when it failed a
/// group commit, which reaches callers as the commit's message), PostgreSQL's `disk_full`
/// (53100), or a write the file system refused for want of space.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::StorageFull
                || io.to_string().contains("database or disk is full");
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(d)) => {
                d.code().is_some_and(|c| c == "13" || c == "53100")
                    || d.message().contains("database or disk is full")
            }
            Some(sqlx::Error::Io(io)) => {
                io.kind() == std::io::ErrorKind::StorageFull
                    || io.to_string().contains("database or disk is full")
            }
            _ => false,
        }
    })
}

/// 404 for any unknown route, in the detailed shape; logged so operators can report calls a
/// camera makes that Rushes lacks (the query too, which may say what the call wanted, with
/// its secrets redacted: a socket's token travels there).
pub async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path = crate::capture::redact::path(uri.path());
    if path.starts_with("/v2/") {
        let query = uri.query().map(crate::capture::redact::query);
        tracing::warn!(%method, path, query, "unknown API route");
    }
    ApiError::not_found(format!("No route for {method} {path}."))
}

/// `e` and its causes, `outer: inner: ...`: for errors that say little themselves and put
/// the detail in their source (a multipart parser's, a connection's).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut chain = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        chain.push_str(": ");
        chain.push_str(&c.to_string());
        cause = c.source();
    }
    chain
}
