//! The HTTP calls of the C2C device API, and the translation of every failure into an
//! [`Error`] a person can act on (an untrusted certificate says which flag fixes it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Certificate, Client, RequestBuilder, Response};
use rushes_proto::asset::{CreateAsset, RealtimeParts, UploadStatus, UploadUrls};
use rushes_proto::auth::{
    DeviceCodeResponse, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, TokenResponse,
};
use rushes_proto::device::DeviceMe;
use rushes_proto::error::{ErrorBody, OAuthErrorBody};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{CLIENT_SECRET, CLIENT_VERSION, Error};

/// Where the server is and what to trust.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Base URL, e.g. `https://rushes.local:8443`.
    pub server: String,
    /// The server's `ca.crt`, trusted on top of the system's roots.
    pub ca: Option<PathBuf>,
}

/// Progress callback: bytes that just left for the server.
pub(crate) type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Api {
    http: Client,
    base: String,
}

/// A token-endpoint answer: tokens, or the OAuth error code.
pub(crate) type TokenAnswer = Result<TokenResponse, String>;

impl Api {
    pub fn new(options: &ServerOptions) -> Result<Api, Error> {
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // A stalled transfer is abandoned and retried rather than waited on forever.
            .read_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(format!("rushes-device/{CLIENT_VERSION}"));
        if let Some(ca) = &options.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::Other(format!("cannot read --ca {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                Error::Other(format!(
                    "--ca {} is not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Other(format!("cannot set up HTTPS: {e}")))?;
        Ok(Api {
            http,
            base: options.server.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn versioned(&self, req: RequestBuilder) -> RequestBuilder {
        req.header(rushes_proto::CLIENT_VERSION_HEADER, CLIENT_VERSION)
    }

    pub async fn device_code(
        &self,
        client_id: &str,
        name: Option<&str>,
    ) -> Result<DeviceCodeResponse, Error> {
        let mut form = vec![
            ("client_id", client_id),
            ("client_secret", CLIENT_SECRET),
            ("scope", "asset_create offline"),
        ];
        if let Some(name) = name {
            form.push(("device_name", name));
        }
        let res =
            send(self.versioned(self.http.post(self.url("/v2/auth/device/code")).form(&form)))
                .await?;
        match token_endpoint::<DeviceCodeResponse>(res).await? {
            Ok(code) => Ok(code),
            Err(code) => Err(Error::Other(format!(
                "the server refused to start pairing: {code}"
            ))),
        }
    }

    pub async fn poll(&self, client_id: &str, device_code: &str) -> Result<TokenAnswer, Error> {
        let form = [
            ("grant_type", GRANT_DEVICE_CODE),
            ("client_id", client_id),
            ("client_secret", CLIENT_SECRET),
            ("device_code", device_code),
        ];
        let res =
            send(self.versioned(self.http.post(self.url("/v2/auth/token")).form(&form))).await?;
        token_endpoint(res).await
    }

    pub async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<TokenAnswer, Error> {
        let form = [
            ("grant_type", GRANT_REFRESH_TOKEN),
            ("client_id", client_id),
            ("client_secret", CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ];
        let res =
            send(self.versioned(self.http.post(self.url("/v2/auth/token")).form(&form))).await?;
        token_endpoint(res).await
    }

    pub async fn revoke(&self, client_id: &str, token: &str) -> Result<(), Error> {
        let form = [
            ("client_id", client_id),
            ("client_secret", CLIENT_SECRET),
            ("token", token),
        ];
        let res =
            send(self.versioned(self.http.post(self.url("/v2/auth/revoke")).form(&form))).await?;
        json::<serde_json::Value>(res).await.map(|_| ())
    }

    pub async fn me(&self, token: &str) -> Result<DeviceMe, Error> {
        json(
            send(self.versioned(self.http.get(self.url("/v2/devices/me")).bearer_auth(token)))
                .await?,
        )
        .await
    }

    pub async fn heartbeat(&self, token: &str) -> Result<(), Error> {
        let res = send(
            self.versioned(
                self.http
                    .post(self.url("/v2/devices/heartbeat"))
                    .bearer_auth(token),
            ),
        )
        .await?;
        check(res).await.map(|_| ())
    }

    /// Creates an asset; the answer is the full asset, or `{id, name}` for real-time ones.
    pub async fn create_asset(
        &self,
        token: &str,
        body: &CreateAsset,
    ) -> Result<serde_json::Value, Error> {
        let req = self
            .http
            .post(self.url("/v2/devices/assets"))
            .bearer_auth(token)
            .json(body);
        json(send(self.versioned(req)).await?).await
    }

    pub async fn register_parts(
        &self,
        token: &str,
        asset_id: &str,
        body: &RealtimeParts,
    ) -> Result<UploadUrls, Error> {
        let path = format!("/v2/devices/assets/{asset_id}/realtime_upload/parts");
        let req = self
            .http
            .post(self.url(&path))
            .bearer_auth(token)
            .json(body);
        json(send(self.versioned(req)).await?).await
    }

    pub async fn upload_status(&self, token: &str, asset_id: &str) -> Result<UploadStatus, Error> {
        let path = format!("/v2/devices/assets/{asset_id}/upload");
        json(send(self.versioned(self.http.get(self.url(&path)).bearer_auth(token))).await?).await
    }

    /// PUTs `len` bytes of `file` from `offset` to a part URL, streaming from disk.
    pub async fn put_part(
        &self,
        url: &str,
        file: &Path,
        offset: u64,
        len: u64,
        content_type: &str,
        progress: Progress,
    ) -> Result<(), Error> {
        let mut handle = tokio::fs::File::open(file).await?;
        handle.seek(std::io::SeekFrom::Start(offset)).await?;
        let reader = handle.take(len);
        let stream =
            tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    progress(bytes.len() as u64);
                }
                chunk
            });
        let req = self
            .http
            .put(url)
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len)
            .header("x-amz-acl", "private")
            .body(reqwest::Body::wrap_stream(stream));
        check(send(req).await?).await.map(|_| ())
    }
}

async fn send(req: RequestBuilder) -> Result<Response, Error> {
    req.send().await.map_err(classify)
}

/// Turns a transport failure into an error that says what to do.
fn classify(e: reqwest::Error) -> Error {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if chain.contains("not valid yet") || chain.contains("certificate expired") {
        return Error::WrongClock(chain);
    }
    if chain.contains("certificate") || chain.contains("UnknownIssuer") {
        return Error::Untrusted(chain);
    }
    Error::Network(chain)
}

/// Passes 2xx answers through; turns others into [`Error::Http`] with the server's detail.
async fn check(res: Response) -> Result<Response, Error> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = res.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.detail().to_owned())
        .unwrap_or_else(|_| text.chars().take(300).collect());
    Err(Error::Http {
        status,
        detail,
        retry_after,
    })
}

async fn json<T: DeserializeOwned>(res: Response) -> Result<T, Error> {
    let res = check(res).await?;
    // A body cut off by the network is a network error (retried), not a bad answer.
    let body = res.bytes().await.map_err(classify)?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Other(format!("unexpected answer from the server: {e}")))
}

/// The token endpoints answer 400 `{"error": code}` for the protocol's expected outcomes.
async fn token_endpoint<T: DeserializeOwned>(res: Response) -> Result<Result<T, String>, Error> {
    if res.status() == reqwest::StatusCode::BAD_REQUEST {
        let text = res.text().await.unwrap_or_default();
        return match serde_json::from_str::<OAuthErrorBody>(&text) {
            Ok(body) => Ok(Err(body.error)),
            Err(_) => Err(Error::Http {
                status: 400,
                detail: text,
                retry_after: None,
            }),
        };
    }
    json(res).await.map(Ok)
}
