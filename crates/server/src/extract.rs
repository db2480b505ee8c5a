//! Request extractors: the authenticated device, and the lenient body parsers cameras need
//! (auth forms as multipart or urlencoded, asset bodies as JSON or urlencoded).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use rushes_proto::error::oauth;
use serde_json::{Map, Value};

use crate::db::Authenticated;
use crate::error::ApiError;
use crate::state::AppState;

/// The device id of an authenticated request, filled in by [`Device`] for the request log.
#[derive(Clone, Default)]
pub struct LogDevice(pub Arc<OnceLock<String>>);

/// A request from a paired device with a current access token.
pub struct Device(pub Authenticated);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let device = state
            .db
            .authenticate(token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        if let Some(slot) = parts.extensions.get::<LogDevice>() {
            let _ = slot.0.set(device.device_id.clone());
        }
        if let Some(limiter) = &state.token_limiter
            && let Err(wait) = limiter.check(&device.grant_id)
        {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: crate::throttle::retry_after_secs(wait),
            });
        }
        let version = client_version(&parts.headers);
        state
            .db
            .touch_device(
                &device.device_id,
                &version,
                (&device.client_version, device.last_seen_at),
            )
            .await?;
        Ok(Device(device))
    }
}

/// The firmware version a device reports (`x-client-version`), bounded and printable.
pub fn client_version(headers: &HeaderMap) -> String {
    headers
        .get(rushes_proto::CLIENT_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or(rushes_proto::DEFAULT_CLIENT_VERSION)
        .to_owned()
}

/// The fields of an auth request: query parameters plus a multipart or urlencoded body.
/// Anything unreadable is `invalid_request`.
pub struct AuthFields(pub HashMap<String, String>);

impl AuthFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or(ApiError::OAuth(oauth::INVALID_REQUEST))
    }
}

impl<S: Send + Sync> FromRequest<S> for AuthFields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        fn bad(e: impl axum::response::IntoResponse + std::error::Error) -> ApiError {
            // The reason, never the fields (they may hold secrets), for whoever integrates
            // a device whose forms we cannot read. Its causes too: axum's multipart error
            // says only "Error parsing `multipart/form-data` request", and the parser's
            // own error (a field's name at most, never a value) is its source.
            let reason = crate::error::with_causes(&e);
            tracing::warn!(reason, "an auth request's form could not be read");
            if e.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                    "The request body is too large.",
                )
            } else {
                ApiError::OAuth(oauth::INVALID_REQUEST)
            }
        }
        let mut fields = match req.uri().query() {
            Some(_) => {
                Query::<HashMap<String, String>>::try_from_uri(req.uri())
                    .map_err(bad)?
                    .0
            }
            None => HashMap::new(),
        };
        let content_type = content_type(req.headers());
        if content_type.starts_with("multipart/form-data") {
            // Read whole before parsing (the body limit still applies): multer 3.1 fails a
            // streamed form as "incomplete" when its first read finds nothing yet and the
            // whole rest, end included, arrives before its second (about 1 request in 3,000
            // on a loaded server). Given all at once, it has nothing to wait for.
            let (headers, extensions) = (req.headers().clone(), req.extensions().clone());
            let whole = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(bad)?;
            // The same request again (its headers for the boundary, its extensions for the
            // route's body limit), with the body it had.
            let mut req = Request::new(axum::body::Body::from(whole));
            *req.headers_mut() = headers;
            *req.extensions_mut() = extensions;
            let mut multipart = Multipart::from_request(req, state).await.map_err(bad)?;
            while let Some(field) = multipart.next_field().await.map_err(bad)? {
                let Some(name) = field.name().map(str::to_owned) else {
                    continue;
                };
                let value = field.text().await.map_err(bad)?;
                fields.insert(name, value);
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(body) = Form::<HashMap<String, String>>::from_request(req, state)
                .await
                .map_err(bad)?;
            fields.extend(body);
        }
        Ok(AuthFields(fields))
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body of an asset request as a JSON object; urlencoded forms become string values.
///
/// Devices label their bodies loosely (no `Content-Type`, `text/plain`,
/// `application/octet-stream`, a charset), so the body decides: one that parses as a JSON
/// object is JSON whatever its label; otherwise a urlencoded form, when labelled so or when
/// unlabelled and shaped like one. Anything else is 400 (or 415 when its label says it is
/// some other format).
pub struct Fields {
    pub map: Map<String, Value>,
    /// Whether the body was JSON (real-time uploads require it).
    pub is_json: bool,
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(req.headers());
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Payload Too Large",
                        "The request body is too large.",
                    )
                } else {
                    ApiError::bad_request(format!("The body could not be read: {}", e.body_text()))
                }
            })?;
        let labelled_form = content_type.starts_with("application/x-www-form-urlencoded");
        let json_error = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut map)) => {
                accept_nested_strings(&mut map);
                return Ok(Fields { map, is_json: true });
            }
            Ok(_) if !labelled_form => {
                return Err(ApiError::bad_request("The JSON body must be an object."));
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        let unlabelled = matches!(
            media_type(&content_type),
            "" | "text/plain" | "application/octet-stream"
        );
        if labelled_form || (unlabelled && looks_like_form(&body)) {
            // The body again, labelled as what it is, for axum's form parser.
            let form = Request::builder()
                .method(axum::http::Method::POST)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(body))
                .map_err(|e| {
                    ApiError::bad_request(format!("The form body could not be read: {e}"))
                })?;
            let Form(pairs) = Form::<HashMap<String, String>>::from_request(form, state)
                .await
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "The form body could not be read: {}",
                        e.body_text()
                    ))
                })?;
            let map = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            return Ok(Fields {
                map,
                is_json: false,
            });
        }
        let looks_like_json = unlabelled
            || media_type(&content_type).ends_with("json")
            || media_type(&content_type).ends_with("+json");
        match json_error {
            Some(e) if looks_like_json => Err(ApiError::bad_request(format!(
                "The body is neither a JSON object nor a form: {}",
                if body.is_empty() {
                    "it is empty".to_owned()
                } else {
                    e.to_string()
                }
            ))),
            _ => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                "Send a JSON object (application/json) or application/x-www-form-urlencoded.",
            )),
        }
    }
}

/// `type/subtype` of a lower-cased `Content-Type`, without its parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// An unlabelled body that can only be a urlencoded form: `name=value` pairs of printable
/// characters (a form parser reads any text as one, so the shape is checked first).
fn looks_like_form(body: &[u8]) -> bool {
    !body.is_empty()
        && body.contains(&b'=')
        && body.iter().all(|b| b.is_ascii_graphic())
        && !body.starts_with(b"{")
        && !body.starts_with(b"[")
}

/// Numbers and booleans as strings inside the objects of a list (`"parts": [{"number":
/// "1", "size": "5242880", "is_final": "false"}]`), as some cameras send them, become
/// numbers and booleans. Top-level fields are left alone: their typed accessors below
/// read both forms, and a top-level string such as a name may well be all digits.
fn accept_nested_strings(map: &mut Map<String, Value>) {
    for value in map.values_mut() {
        let Value::Array(items) = value else {
            continue;
        };
        for item in items {
            let Value::Object(fields) = item else {
                continue;
            };
            for field in fields.values_mut() {
                let Value::String(s) = field else {
                    continue;
                };
                let text = s.trim();
                if let Ok(n) = text.parse::<u64>() {
                    *field = Value::from(n);
                } else if let Ok(n) = text.parse::<i64>() {
                    *field = Value::from(n);
                } else if text.eq_ignore_ascii_case("true") {
                    *field = Value::Bool(true);
                } else if text.eq_ignore_ascii_case("false") {
                    *field = Value::Bool(false);
                }
            }
        }
    }
}

/// Typed access to [`Fields`], with 422 errors naming the field. Numbers may arrive as
/// JSON numbers or as strings (forms, and some cameras' JSON).
impl Fields {
    pub fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_field(name, "must be a string")),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::invalid_field(name, "must be a whole number in range")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::invalid_field(name, "must be a whole number in range")),
            Some(_) => Err(ApiError::invalid_field(name, "must be a whole number")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(ApiError::invalid_field(name, "must be true or false")),
            },
            Some(_) => Err(ApiError::invalid_field(name, "must be true or false")),
        }
    }
}

/// This server's base URL as the calling device reaches it: `--public-url` when set,
/// otherwise the `Host` the request came with (a camera that reached `api.frame.io` can
/// reach it again), otherwise the one derived from the listen address.
pub struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.public_url.is_none() {
            let host = parts
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    parts
                        .headers
                        .get(axum::http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                });
            let valid = |h: &str| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            };
            if let Some(host) = host.filter(|h| valid(h)) {
                return Ok(BaseUrl(format!("https://{host}")));
            }
        }
        Ok(BaseUrl(state.public_url.to_string()))
    }
}

/// 403 unless the device's token was granted the `asset_create` scope, which every route
/// that makes something for the device (assets, parts, channels, comments, markers) needs.
pub fn require_asset_create(device: &Authenticated) -> Result<(), ApiError> {
    if device.scopes.asset_create() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "This token was not granted the asset_create scope.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use axum::body::{Body, Bytes};
    use axum::response::IntoResponse;

    use super::*;

    /// A form as reqwest sends it: each boundary, header block and value its own chunk.
    fn form_chunks(boundary: &str, fields: &[(&str, &str)]) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        for (name, value) in fields {
            chunks.push(format!("--{boundary}\r\n"));
            chunks.push(format!(
                "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            ));
            chunks.push((*value).to_owned());
            chunks.push("\r\n".to_owned());
        }
        chunks.push(format!("--{boundary}--\r\n"));
        chunks.into_iter().map(Bytes::from).collect()
    }

    async fn fields(label: Option<&str>, body: &'static str) -> Result<Fields, ApiError> {
        let mut req = Request::builder().method("POST");
        if let Some(label) = label {
            req = req.header(CONTENT_TYPE, label);
        }
        Fields::from_request(req.body(Body::from(body)).unwrap(), &()).await
    }

    #[tokio::test]
    async fn a_json_object_is_json_whatever_its_label() {
        for label in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let f = fields(label, r#"{"filesize": "24638557", "channel": null}"#)
                .await
                .unwrap_or_else(|_| panic!("{label:?}"));
            assert!(f.is_json);
            assert_eq!(f.int("filesize").unwrap(), Some(24638557));
            assert_eq!(f.int("channel").unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_form_is_read_when_labelled_or_shaped_like_one() {
        for label in [Some("application/x-www-form-urlencoded"), None] {
            let f = fields(label, "name=A.MP4&filesize=10").await.unwrap();
            assert!(!f.is_json);
            assert_eq!(f.string("name").unwrap().as_deref(), Some("A.MP4"));
        }
        for (label, body, status) in [
            (None, "hello camera", StatusCode::BAD_REQUEST),
            (None, "", StatusCode::BAD_REQUEST),
            (Some("application/json"), "[1]", StatusCode::BAD_REQUEST),
            (
                Some("application/xml"),
                "<a/>",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
        ] {
            let Err(e) = fields(label, body).await else {
                panic!("{label:?} {body:?} was accepted");
            };
            assert_eq!(e.into_response().status(), status, "{label:?} {body:?}");
        }
    }

    #[test]
    fn strings_inside_listed_objects_become_numbers_and_booleans() {
        let mut map = serde_json::json!({
            "name": "1234", "parts": [{"number": "2", "size": " 5242880", "is_final": "TRUE",
                                       "note": "x"}]
        });
        let Value::Object(map) = &mut map else {
            unreachable!()
        };
        accept_nested_strings(map);
        assert_eq!(map["name"], "1234");
        assert_eq!(
            map["parts"][0],
            serde_json::json!({"number": 2, "size": 5242880, "is_final": true, "note": "x"})
        );
    }

    #[tokio::test]
    async fn a_multipart_form_whose_first_read_finds_nothing_yet_is_read_whole() {
        // The body has nothing at its first read, then everything at once, end included:
        // what a camera's form looks like when it arrives just after the server looked.
        let boundary = "0123456789abcdef-0123456789abcdef";
        let mut chunks = form_chunks(
            boundary,
            &[("client_id", "cam-1"), ("scope", "asset_create offline")],
        )
        .into_iter();
        let mut waited = false;
        let body = futures_util::stream::poll_fn(move |cx| {
            if !waited {
                waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(chunks.next().map(Ok::<_, std::io::Error>))
        });
        let req = Request::builder()
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from_stream(body))
            .unwrap();
        let fields = AuthFields::from_request(req, &()).await.unwrap();
        assert_eq!(fields.get("client_id"), Some("cam-1"));
        assert_eq!(fields.get("scope"), Some("asset_create offline"));
    }
}
