//! The S3-compatible media store: devices upload straight into a bucket.
//!
//! Each asset is one S3 multipart upload, started when the asset is created; its object key
//! is `<project folder>/<asset path>`, the same layout as the local store. The part URLs
//! handed to devices are presigned `UploadPart` URLs, so the bytes never pass through
//! Rushes. They sign `x-amz-acl: private` (real devices always send it, and S3 refuses
//! unsigned `x-amz-*` headers) and the part's exact `Content-Length` (S3 then refuses a
//! part of the wrong length instead of storing it); `Content-Type` is left unsigned.
//!
//! Nothing tells the server that a part arrived: `part_watch` lists the parts of pending
//! uploads. Once every part is in, [`MediaStore::assemble`] completes the multipart upload
//! and reads the object back once to record its SHA-256 (S3 keeps no whole-object SHA-256
//! of a multipart object).
//!
//! Requests are signed with `rusty-s3` (a sans-IO presigner) and sent with `reqwest`,
//! which the workspace already builds; the AWS SDK would double the build for the six
//! calls used here.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use instant_xml::FromXml;
use reqwest::{Method, StatusCode, Url};
use rusty_s3::actions::{CreateMultipartUpload, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use sha2::{Digest, Sha256};

use super::{
    AssembleError, Assembled, AssetTarget, BeginError, ClipBytes, ClipLocation, MediaStore,
    RemoteUpload, StoredPart,
};
use crate::secrets::hex;

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `https://s3.example.net`: used by the server and handed to devices in part URLs.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Bucket in the path (`endpoint/bucket/key`), which every S3-compatible store
    /// accepts, rather than in the host name (`bucket.endpoint/key`).
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
}

pub struct S3Store {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

/// A part as the store lists it.
#[derive(Debug, Clone)]
pub struct ListedPart {
    pub number: u32,
    pub size: u64,
    /// Some S3-compatible stores leave it out of listings.
    pub etag: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The multipart upload is gone (completed, aborted, or expired by a bucket rule).
    #[error("the store no longer knows this upload")]
    NoSuchUpload,
    #[error("the S3 store answered {status}: {code} {message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("the S3 store could not be reached: {0}")]
    Unreachable(String),
    #[error("the S3 store sent an answer that is not understood: {0}")]
    Garbled(String),
}

impl From<S3Error> for io::Error {
    fn from(e: S3Error) -> io::Error {
        io::Error::other(e.to_string())
    }
}

/// How long the server's own signed requests stay valid.
const OWN_REQUEST_LIFETIME: Duration = Duration::from_secs(300);
/// SigV4 presigned URLs live at most 7 days.
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;
/// S3 lists at most 1,000 parts per page; 10,000 parts take ten pages.
const MAX_LIST_PAGES: usize = 10;
/// The read-back's range size and how many ranges are fetched ahead: at most 32 MiB held
/// per asset being finalised.
const READ_RANGE: u64 = 8 * 1024 * 1024;
const READ_AHEAD: usize = 4;
const S3_XML_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

impl S3Store {
    pub fn new(config: &S3Config) -> anyhow::Result<S3Store> {
        let endpoint: Url = config
            .endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("--s3-endpoint {:?}: {e}", config.endpoint))?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| anyhow::anyhow!("S3 bucket {:?}: {e}", config.bucket))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(S3Store {
            bucket,
            credentials: Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            http,
        })
    }

    /// Fails with a clear message when the bucket cannot be used (checked at start).
    pub async fn check_bucket(&self) -> Result<(), S3Error> {
        let url = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(OWN_REQUEST_LIFETIME);
        let res = self.send(self.http.head(url)).await?;
        if res.status().is_success() {
            return Ok(());
        }
        Err(refused(res).await)
    }

    /// Lists every part received so far.
    pub async fn list_parts(&self, upload: &RemoteUpload) -> Result<Vec<ListedPart>, S3Error> {
        let mut parts = Vec::new();
        let mut marker: Option<u16> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut action =
                self.bucket
                    .list_parts(Some(&self.credentials), &upload.key, &upload.upload_id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = action.sign(OWN_REQUEST_LIFETIME);
            let res = self.send(self.http.get(url)).await?;
            if !res.status().is_success() {
                return Err(refused(res).await);
            }
            let text = res
                .text()
                .await
                .map_err(|e| S3Error::Unreachable(e.to_string()))?;
            let page: ListPartsResult =
                instant_xml::from_str(&text).map_err(|e| S3Error::Garbled(e.to_string()))?;
            parts.extend(page.parts.into_iter().filter_map(|p| {
                Some(ListedPart {
                    number: u32::from(p.number?),
                    size: p.size?,
                    etag: p.etag.filter(|e| !e.is_empty()),
                })
            }));
            match (page.is_truncated, page.next_part_number_marker) {
                (Some(true), Some(next)) if Some(next) != marker && next > 0 => marker = Some(next),
                _ => return Ok(parts),
            }
        }
        Ok(parts)
    }

    /// Abandons an upload and frees the storage of its parts. An upload that is already
    /// gone counts as aborted.
    pub async fn abort(&self, upload: &RemoteUpload) -> Result<(), S3Error> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), &upload.key, &upload.upload_id)
            .sign(OWN_REQUEST_LIFETIME);
        let res = self.send(self.http.delete(url)).await?;
        if res.status().is_success() {
            return Ok(());
        }
        match refused(res).await {
            S3Error::NoSuchUpload => Ok(()),
            e => Err(e),
        }
    }

    /// Deletes the object `key`; one already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(OWN_REQUEST_LIFETIME);
        let res = self.send(self.http.delete(url)).await?;
        if res.status().is_success() || res.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(refused(res).await)
    }

    /// Fetches the object `key`, passing a browser's `Range` and `If-Range` through so
    /// playback can seek and downloads can resume. The answer streams.
    pub async fn get(
        &self,
        key: &str,
        head: bool,
        range: Option<&str>,
        if_range: Option<&str>,
    ) -> Result<reqwest::Response, S3Error> {
        let (method, url) = if head {
            let url = self
                .bucket
                .head_object(Some(&self.credentials), key)
                .sign(OWN_REQUEST_LIFETIME);
            (Method::HEAD, url)
        } else {
            let url = self
                .bucket
                .get_object(Some(&self.credentials), key)
                .sign(OWN_REQUEST_LIFETIME);
            (Method::GET, url)
        };
        let mut req = self.http.request(method, url);
        if let Some(range) = range {
            req = req.header(reqwest::header::RANGE, range);
        }
        if let Some(tag) = if_range {
            req = req.header(reqwest::header::IF_RANGE, tag);
        }
        self.send(req).await
    }

    async fn object_exists(&self, key: &str) -> Result<bool, S3Error> {
        let res = self.get(key, true, None, None).await?;
        match res.status() {
            s if s.is_success() => Ok(true),
            // S3 answers 403 rather than 404 for a missing key to a caller that may not list
            // the bucket; wrong credentials fail loudly at the next call anyway.
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(false),
            _ => Err(refused(res).await),
        }
    }

    async fn complete(&self, upload: &RemoteUpload, parts: &[StoredPart]) -> Result<(), S3Error> {
        let url = self
            .bucket
            .complete_multipart_upload(
                Some(&self.credentials),
                &upload.key,
                &upload.upload_id,
                std::iter::empty(),
            )
            .sign(OWN_REQUEST_LIFETIME);
        let res = self
            .send(self.http.post(url).body(complete_body(parts)))
            .await?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| S3Error::Unreachable(e.to_string()))?;
        // S3 may answer 200 and still fail: the error then comes in the body.
        if status.is_success() && !text.contains("<Error>") {
            return Ok(());
        }
        Err(parse_error(status, &text))
    }

    /// Reads the object once, hashing it: in ranges of [`READ_RANGE`], [`READ_AHEAD`] of
    /// them fetched at once and hashed in order. One GET stream is bound by the store's
    /// per-request pace (S3 serves about 100 MB/s per connection; s3s-fs measured 127 MiB/s
    /// for one stream and 230 MiB/s for four), and this read-back is on the way from the
    /// last part to "complete". A store that ignores `Range` answers the whole object,
    /// which is hashed as it streams.
    async fn hash_object(&self, key: &str) -> Result<Assembled, S3Error> {
        let first = self
            .get(key, false, Some(&range_header(0, READ_RANGE)), None)
            .await?;
        let status = first.status();
        let mut hasher = Sha256::new();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Only an empty object has no byte 0.
            return Ok(Assembled {
                sha256: hex(&hasher.finalize()),
                size: 0,
            });
        }
        if !status.is_success() {
            return Err(refused(first).await);
        }
        if status != StatusCode::PARTIAL_CONTENT {
            let size = hash_body(first, &mut hasher).await?;
            return Ok(Assembled {
                sha256: hex(&hasher.finalize()),
                size,
            });
        }
        let total = object_size(first.headers())?;
        let mut size = hash_body(first, &mut hasher).await?;
        if size != total.min(READ_RANGE) {
            return Err(S3Error::Garbled(format!(
                "asked for bytes 0-{} of {total}, got {size}",
                total.min(READ_RANGE) - 1
            )));
        }
        let rest = (1..total.div_ceil(READ_RANGE)).map(|i| i * READ_RANGE);
        let mut ranges = futures_util::stream::iter(rest)
            .map(|start| self.fetch_range(key, start, (start + READ_RANGE).min(total)))
            .buffered(READ_AHEAD);
        while let Some(bytes) = ranges.next().await {
            let bytes = bytes?;
            hasher.update(&bytes);
            size += bytes.len() as u64;
        }
        Ok(Assembled {
            sha256: hex(&hasher.finalize()),
            size,
        })
    }

    /// Bytes `start..end` of an object, all of them or an error.
    async fn fetch_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, S3Error> {
        let res = self
            .get(key, false, Some(&range_header(start, end - start)), None)
            .await?;
        if res.status() != StatusCode::PARTIAL_CONTENT {
            return Err(if res.status().is_success() {
                S3Error::Garbled(format!("asked for bytes {start}-{}, got them all", end - 1))
            } else {
                refused(res).await
            });
        }
        let bytes = res
            .bytes()
            .await
            .map_err(|e| S3Error::Unreachable(e.to_string()))?;
        if bytes.len() as u64 != end - start {
            return Err(S3Error::Garbled(format!(
                "asked for bytes {start}-{}, got {} bytes",
                end - 1,
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, S3Error> {
        req.send()
            .await
            .map_err(|e| S3Error::Unreachable(crate::error::with_causes(&e)))
    }
}

#[async_trait]
impl MediaStore for S3Store {
    fn min_part_size(&self) -> u64 {
        rushes_proto::parts::MIN_PART_SIZE
    }

    fn part_url(
        &self,
        _base_url: &str,
        _asset_id: &str,
        upload: Option<&RemoteUpload>,
        number: u32,
        size: u64,
        expires: i64,
    ) -> Option<String> {
        let upload = upload?;
        let number = u16::try_from(number).ok()?;
        let mut action = self.bucket.upload_part(
            Some(&self.credentials),
            &upload.key,
            number,
            &upload.upload_id,
        );
        action.headers_mut().insert("x-amz-acl", "private");
        action
            .headers_mut()
            .insert("content-length", size.to_string());
        let lifetime = expires - crate::clock::now_ms() / 1000;
        let lifetime = u64::try_from(lifetime)
            .unwrap_or(1)
            .clamp(1, MAX_PRESIGN_SECS);
        let lifetime = Duration::from_secs(lifetime);
        Some(action.sign(lifetime).to_string())
    }

    async fn begin_upload(
        &self,
        key: &str,
        filetype: &str,
    ) -> Result<Option<RemoteUpload>, BeginError> {
        // Never overwrite: an object already at this key (put there by someone else) makes
        // the asset take the next free name.
        if self.object_exists(key).await? {
            return Err(BeginError::PathTaken);
        }
        let mut action = CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
        action
            .headers_mut()
            .insert("content-type", filetype.to_owned());
        let url = action.sign(OWN_REQUEST_LIFETIME);
        let res = self
            .send(
                self.http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, filetype),
            )
            .await?;
        if !res.status().is_success() {
            return Err(refused(res).await.into());
        }
        let text = res
            .text()
            .await
            .map_err(|e| S3Error::Unreachable(e.to_string()))?;
        let created = CreateMultipartUpload::parse_response(&text)
            .map_err(|e| S3Error::Garbled(format!("{e}: {text}")))?;
        Ok(Some(RemoteUpload {
            key: key.to_owned(),
            upload_id: created.upload_id().to_owned(),
        }))
    }

    async fn assemble(
        &self,
        target: &AssetTarget,
        parts: &[StoredPart],
    ) -> Result<Assembled, AssembleError> {
        let upload = target
            .upload
            .as_ref()
            .ok_or_else(|| io::Error::other("the asset has no S3 upload"))?;
        match self.complete(upload, parts).await {
            Ok(()) => {}
            // Completed by an earlier attempt that crashed before recording it: the
            // object is there and is read back below.
            Err(S3Error::NoSuchUpload) if self.object_exists(&upload.key).await? => {}
            Err(e) => return Err(io::Error::from(e).into()),
        }
        Ok(self.hash_object(&upload.key).await?)
    }

    async fn place(
        &self,
        _target: &AssetTarget,
        _assembled: &Assembled,
    ) -> Result<(), AssembleError> {
        // Completing the multipart upload already put the object at its key.
        Ok(())
    }

    async fn discard_duplicate(&self, target: &AssetTarget) -> io::Result<()> {
        // The object was completed under the asset's own key (S3 can only hash what it
        // holds): delete it. The key was free when the upload began and no other asset
        // takes it until this one gives it up, so the object is this asset's.
        let upload = target
            .upload
            .as_ref()
            .ok_or_else(|| io::Error::other("the asset has no S3 upload"))?;
        Ok(self.delete(&upload.key).await?)
    }

    async fn discard_part(&self, _asset_id: &str, _stored_as: &str) {
        // A re-sent part replaces the earlier copy inside the store.
    }

    async fn discard_parts(&self, _asset_id: &str) {
        // Completing the multipart upload released its parts.
    }

    async fn open_clip(&self, clip: ClipLocation<'_>) -> io::Result<Option<ClipBytes>> {
        let key = clip.upload.map_or_else(
            || format!("{}/{}", clip.project_dir, clip.path),
            |u| u.key.clone(),
        );
        let res = self.get(&key, false, None, None).await?;
        match res.status() {
            s if s.is_success() => {
                Ok(Some(Box::pin(res.bytes_stream().map(|chunk| {
                    chunk.map_err(|e| io::Error::other(e.to_string()))
                }))))
            }
            // As for `object_exists`: 403 is how S3 says "no such key" to some callers.
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(None),
            _ => Err(refused(res).await.into()),
        }
    }
}

impl From<S3Error> for BeginError {
    fn from(e: S3Error) -> BeginError {
        BeginError::Unavailable(e.to_string())
    }
}

impl From<S3Error> for AssembleError {
    fn from(e: S3Error) -> AssembleError {
        AssembleError::Io(e.into())
    }
}

/// `CompleteMultipartUpload`'s body: the parts in ascending order, with the ETags S3
/// reported (left out where the store listed none).
fn complete_body(parts: &[StoredPart]) -> String {
    let mut sorted: Vec<&StoredPart> = parts.iter().collect();
    sorted.sort_by_key(|p| p.number);
    let mut xml = String::from("<CompleteMultipartUpload>");
    for part in sorted {
        xml.push_str("<Part>");
        if !part.stored_as.is_empty() {
            xml.push_str("<ETag>");
            xml.push_str(&escape(&part.stored_as));
            xml.push_str("</ETag>");
        }
        xml.push_str(&format!("<PartNumber>{}</PartNumber></Part>", part.number));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

/// `Range` asking for `len` bytes from `start`.
fn range_header(start: u64, len: u64) -> String {
    format!("bytes={start}-{}", start + len - 1)
}

/// The whole object's size, from a ranged answer's `Content-Range: bytes 0-9/1234`.
fn object_size(headers: &reqwest::header::HeaderMap) -> Result<u64, S3Error> {
    let value = headers
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    value
        .rsplit_once('/')
        .and_then(|(_, total)| total.parse().ok())
        .ok_or_else(|| S3Error::Garbled(format!("a ranged answer with Content-Range {value:?}")))
}

/// Feeds a whole answer body to `hasher`; its length.
async fn hash_body(res: reqwest::Response, hasher: &mut Sha256) -> Result<u64, S3Error> {
    let mut size = 0u64;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| S3Error::Unreachable(e.to_string()))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok(size)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn refused(res: reqwest::Response) -> S3Error {
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    parse_error(status, &text)
}

fn parse_error(status: StatusCode, text: &str) -> S3Error {
    let body: Option<ErrorBody> = instant_xml::from_str(text).ok();
    let code = body
        .as_ref()
        .and_then(|b| b.code.clone())
        .unwrap_or_default();
    if code == "NoSuchUpload" {
        return S3Error::NoSuchUpload;
    }
    S3Error::Refused {
        status,
        message: body.and_then(|b| b.message).unwrap_or_else(|| {
            // A HEAD answer has no body; say what the status means.
            status.canonical_reason().unwrap_or("").to_owned()
        }),
        code,
    }
}

#[derive(Debug, FromXml)]
#[xml(rename = "Error")]
struct ErrorBody {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// `ListParts`' answer, every field optional: stores differ in what they include.
#[derive(Debug, FromXml)]
#[xml(rename = "ListPartsResult", ns(S3_XML_NS))]
struct ListPartsResult {
    parts: Vec<ListedPartXml>,
    #[xml(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[xml(rename = "NextPartNumberMarker")]
    next_part_number_marker: Option<u16>,
}

#[derive(Debug, FromXml)]
#[xml(rename = "Part", ns(S3_XML_NS))]
struct ListedPartXml {
    #[xml(rename = "PartNumber")]
    number: Option<u16>,
    #[xml(rename = "ETag")]
    etag: Option<String>,
    #[xml(rename = "Size")]
    size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parts_without_etags_parses() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId><Part><LastModified>2026-11-29T08:00:00.000Z</LastModified><PartNumber>2</PartNumber><Size>5242880</Size></Part><Part><ETag>"abc"</ETag><PartNumber>1</PartNumber><Size>7</Size></Part></ListPartsResult>"#;
        let page: ListPartsResult = instant_xml::from_str(xml).unwrap();
        assert_eq!(page.parts.len(), 2);
        assert_eq!(page.parts[0].number, Some(2));
        assert_eq!(page.parts[0].etag, None);
        assert_eq!(page.parts[1].etag.as_deref(), Some("\"abc\""));
        assert_eq!(page.is_truncated, None);
    }

    #[test]
    fn read_back_ranges_and_the_object_size_they_report() {
        assert_eq!(range_header(0, READ_RANGE), "bytes=0-8388607");
        assert_eq!(range_header(16, 4), "bytes=16-19");
        let mut headers = reqwest::header::HeaderMap::new();
        for (value, size) in [
            ("bytes 0-8388607/2147483648", Some(2_147_483_648)),
            ("bytes 0-6/7", Some(7)),
            ("bytes 0-6/*", None),
            ("garbage", None),
        ] {
            headers.insert(reqwest::header::CONTENT_RANGE, value.parse().unwrap());
            assert_eq!(object_size(&headers).ok(), size, "{value}");
        }
        headers.clear();
        assert!(matches!(object_size(&headers), Err(S3Error::Garbled(_))));
    }

    /// A store that misbehaves on purpose, by key. Reading: `ranged` honours `Range`, `whole`
    /// ignores it, `empty` is an empty object (416 for byte 0), `short-first` and
    /// `short-later` send fewer bytes than asked in the first or a later range,
    /// `whole-later` ignores `Range` after the first, anything else is 404.
    async fn misbehaving_store(object: Bytes) -> S3Store {
        use axum::http::{HeaderMap, header};
        use axum::response::IntoResponse;

        let serve = move |axum::extract::Path(key): axum::extract::Path<String>,
                          headers: HeaderMap| {
            let object = object.clone();
            async move {
                let total = object.len();
                let range = headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes="))
                    .and_then(|v| v.split_once('-'))
                    .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                let whole = || (StatusCode::OK, object.clone()).into_response();
                let Some((start, last)) = range else {
                    return whole();
                };
                let end = (last + 1).min(total);
                let mut body = object.slice(start..end);
                match key.as_str() {
                    "whole" => return whole(),
                    "whole-later" if start > 0 => return whole(),
                    "empty" => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
                    "short-first" if start == 0 => body.truncate(body.len() / 2),
                    "short-later" if start > 0 => body.truncate(body.len() / 2),
                    "ranged" | "whole-later" | "short-first" | "short-later" => {}
                    _ => return StatusCode::NOT_FOUND.into_response(),
                }
                let content_range = format!("bytes {start}-{}/{total}", end - 1);
                (
                    StatusCode::PARTIAL_CONTENT,
                    [(header::CONTENT_RANGE, content_range)],
                    body,
                )
                    .into_response()
            }
        };
        // Aborting a multipart upload: `aborts` succeeds, `gone` has no such upload,
        // `refuses` is refused (a policy without the permission, say).
        let abort = |axum::extract::Path(key): axum::extract::Path<String>| async move {
            let error = |status, code| {
                let xml = format!("<Error><Code>{code}</Code><Message>no</Message></Error>");
                (status, xml).into_response()
            };
            match key.as_str() {
                "aborts" => StatusCode::NO_CONTENT.into_response(),
                "gone" => error(StatusCode::NOT_FOUND, "NoSuchUpload"),
                _ => error(StatusCode::FORBIDDEN, "AccessDenied"),
            }
        };
        let app =
            axum::Router::new().route("/bucket/{key}", axum::routing::get(serve).delete(abort));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        S3Store::new(&S3Config {
            endpoint,
            bucket: "bucket".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key: "key".into(),
            secret_key: "secret".into(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_read_back_hashes_what_the_store_sends_and_refuses_short_answers() {
        // Three ranges, the last one short of a full range.
        let object: Vec<u8> = (0..2 * READ_RANGE + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        let expected = hex(&Sha256::digest(&object));
        let store = misbehaving_store(Bytes::from(object.clone())).await;

        for key in ["ranged", "whole"] {
            let read = store.hash_object(key).await.unwrap();
            assert_eq!(
                (read.sha256.as_str(), read.size),
                (expected.as_str(), object.len() as u64),
                "{key}"
            );
        }
        let empty = store.hash_object("empty").await.unwrap();
        assert_eq!(empty.sha256, hex(&Sha256::digest(b"")));
        assert_eq!(empty.size, 0);
        for key in ["short-first", "short-later", "whole-later"] {
            match store.hash_object(key).await {
                Err(S3Error::Garbled(message)) => {
                    assert!(message.contains("asked for bytes"), "{key}: {message}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        match store.hash_object("missing").await {
            Err(S3Error::Refused { status, .. }) => assert_eq!(status, StatusCode::NOT_FOUND),
            other => panic!("missing: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_abort_is_done_when_the_upload_is_gone_and_fails_when_refused() {
        let store = misbehaving_store(Bytes::new()).await;
        let upload = |key: &str| RemoteUpload {
            key: key.to_owned(),
            upload_id: "u".to_owned(),
        };
        store.abort(&upload("aborts")).await.unwrap();
        store.abort(&upload("gone")).await.unwrap();
        match store.abort(&upload("refuses")).await {
            Err(S3Error::Refused { status, code, .. }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (StatusCode::FORBIDDEN, "AccessDenied")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_their_code() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>";
        assert!(matches!(
            parse_error(StatusCode::NOT_FOUND, xml),
            S3Error::NoSuchUpload
        ));
        match parse_error(StatusCode::FORBIDDEN, "") {
            S3Error::Refused { status, .. } => assert_eq!(status, StatusCode::FORBIDDEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_lists_parts_in_order_with_known_etags() {
        let parts = [
            StoredPart {
                number: 2,
                size: 1,
                stored_as: String::new(),
            },
            StoredPart {
                number: 1,
                size: 1,
                stored_as: "\"e1\"".into(),
            },
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload><Part><ETag>&quot;e1&quot;</ETag><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"
        );
    }
}
