//! What the fuzz targets share: one Rushes server per process, in process (SQLite and the
//! local store in a temporary folder, no request limit), with a paired device and a
//! real-time asset of it, and [`Harness::send`], which hands it one request and fails the
//! run on a 500: bad input must get a clear 4xx, and a panic fails the run by itself.
//!
//! Fuzz input becomes requests through [`Body`] (JSON built from arbitrary values, a form,
//! a multipart form, or raw bytes), so the parsers see both well-formed bodies with strange
//! values and malformed bodies.

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Map, Value};
use tower::ServiceExt;

pub struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// A paired device's access token.
    pub token: String,
    /// A real-time asset of that device.
    pub asset_id: String,
    _dir: tempfile::TempDir,
}

/// The process's server, started on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(start)
}

fn start() -> Harness {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = rushes_server::Config::new(dir.path());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.requests_per_second = 0;
    let app = runtime
        .block_on(rushes_server::Application::build(config))
        .expect("server builds");
    let router = app.router();
    let mut harness = Harness {
        runtime,
        router,
        token: String::new(),
        asset_id: String::new(),
        _dir: dir,
    };
    let form = "client_id=fuzz-device&client_secret=fuzz-model&scope=asset_create+offline";
    let code = harness.json(Method::POST, "/v2/auth/device/code", "", form);
    let user_code = code["user_code"].as_str().expect("user_code").to_owned();
    let device_code = code["device_code"]
        .as_str()
        .expect("device_code")
        .to_owned();
    harness.runtime.block_on(async {
        let admin = rushes_server::admin::Admin::open(harness._dir.path(), None)
            .await
            .expect("admin");
        admin.approve(&user_code, "Default").await.expect("approve");
    });
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=fuzz-device&device_code={device_code}"
    );
    let tokens = harness.json(Method::POST, "/v2/auth/token", "", &form);
    harness.token = tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let body = r#"{"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}"#;
    let asset = harness.json(
        Method::POST,
        "/v2/devices/assets",
        &harness.token.clone(),
        body,
    );
    harness.asset_id = asset["id"].as_str().expect("asset id").to_owned();
    harness
}

impl Harness {
    /// A set-up request that must succeed; its JSON answer.
    fn json(&self, method: Method, uri: &str, token: &str, body: &str) -> Value {
        let content_type = if body.starts_with('{') {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type);
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let mut req = req.body(AxumBody::from(body.to_owned())).expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        self.runtime.block_on(async {
            let res = self.router.clone().oneshot(req).await.expect("infallible");
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .expect("body");
            assert!(status.is_success(), "{uri}: {status} {bytes:?}");
            serde_json::from_slice(&bytes).expect("JSON answer")
        })
    }

    /// Sends one request built from fuzz input (skipped when the input makes no valid HTTP
    /// request at all: a method or URI the HTTP layer would have refused before Rushes saw
    /// it). Fails the run on a 500.
    pub fn send(&self, method: Method, uri: &str, token: Option<&str>, peer: u32, body: Body) {
        let (content_type, bytes) = body.encode();
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(content_type) = &content_type {
            req = req.header("content-type", content_type.as_str());
        }
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let Ok(mut req) = req.body(AxumBody::from(bytes)) else {
            return;
        };
        // Each input from an address of its own, so the per-address limits of sign-in and
        // code entry do not hide the parsers behind 429s.
        let ip = std::net::Ipv4Addr::from(peer | 0x0A00_0000);
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        let status = self.runtime.block_on(async {
            let res = self.router.clone().oneshot(req).await.expect("infallible");
            res.status()
        });
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri} ({content_type:?}) answered 500"
        );
    }
}

/// A request body as fuzz input describes it.
#[derive(Debug, Arbitrary)]
pub enum Body {
    /// A JSON object of arbitrary fields.
    Json(Vec<(Key, Json)>),
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(Key, String)>),
    /// `multipart/form-data` with a fixed boundary.
    Multipart(Vec<(Key, String)>),
    /// Any bytes under any (or no) content type.
    Raw(Option<String>, Vec<u8>),
}

/// A field name: the ones the routes read, or anything.
#[derive(Debug, Arbitrary)]
pub enum Key {
    Known(u8),
    Other(String),
}

const KNOWN_KEYS: &[&str] = &[
    "name",
    "filesize",
    "filetype",
    "offset",
    "channel",
    "is_realtime_upload",
    "extension",
    "auto_version_id",
    "parts",
    "part_number",
    "part_size",
    "is_last",
    "client_id",
    "client_secret",
    "scope",
    "device_name",
    "grant_type",
    "device_code",
    "refresh_token",
    "refresh_tokem",
    "token",
    "username",
    "password",
    "csrf",
    "next",
    "code",
    "user_code",
    "project",
    "decision",
];

impl Key {
    pub fn name(&self) -> String {
        match self {
            Key::Known(i) => KNOWN_KEYS[usize::from(*i) % KNOWN_KEYS.len()].to_owned(),
            Key::Other(s) => s.clone(),
        }
    }
}

/// A JSON value, nested at most as deep as the input allows.
#[derive(Debug, Arbitrary)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(fields) => object(fields),
        }
    }
}

fn object(fields: &[(Key, Json)]) -> Value {
    let map: Map<String, Value> = fields.iter().map(|(k, v)| (k.name(), v.value())).collect();
    Value::Object(map)
}

const BOUNDARY: &str = "fuzzboundary7MA4YWxkTrZu0gW";

impl Body {
    fn encode(&self) -> (Option<String>, Vec<u8>) {
        match self {
            Body::Json(fields) => (
                Some("application/json".into()),
                object(fields).to_string().into_bytes(),
            ),
            Body::Form(fields) => {
                let mut out = String::new();
                for (k, v) in fields {
                    if !out.is_empty() {
                        out.push('&');
                    }
                    out.push_str(&encode_component(&k.name()));
                    out.push('=');
                    out.push_str(&encode_component(v));
                }
                (
                    Some("application/x-www-form-urlencoded".into()),
                    out.into_bytes(),
                )
            }
            Body::Multipart(fields) => {
                let mut out = String::new();
                for (k, v) in fields {
                    out.push_str(&format!(
                        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{v}\r\n",
                        k.name()
                    ));
                }
                out.push_str(&format!("--{BOUNDARY}--\r\n"));
                (
                    Some(format!("multipart/form-data; boundary={BOUNDARY}")),
                    out.into_bytes(),
                )
            }
            Body::Raw(content_type, bytes) => (content_type.clone(), bytes.clone()),
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn encode_component(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
