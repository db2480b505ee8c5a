//! Device traffic capture: what a device nobody has tried actually sent, so that whoever
//! brings up a new camera model can see (and report) why it fails.
//!
//! Two records, both written off the request's path (a bounded channel to one writer; a
//! full channel drops the record and counts it, never delays the answer):
//! - always: device-API requests answered 4xx/5xx or sent to an unknown route go to the
//!   database ([`crate::db`]'s `device_traffic`, kept to the newest `traffic_rows`), so
//!   every server of an installation sees every server's;
//! - with `rushes serve --capture`: every device-API request goes to
//!   `<data>/captures/YYYY-MM-DD.jsonl` (UTC date), one JSON object a line, for a support
//!   bundle. Part bodies are reduced to their length and SHA-256, computed as they stream.
//!
//! Nothing leaves this module without passing [`redact`]: headers, query, body prefix,
//! even the path and the error detail.

pub mod redact;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::now_ms;
use crate::config::Config;
use crate::db::Db;
use crate::error::ErrorDetail;

/// How much of a non-part body a record keeps.
pub const BODY_PREFIX: usize = 4096;
/// Records waiting for the database writer before new ones are dropped.
const ROW_QUEUE: usize = 256;
/// Lines waiting for the capture file writer before new ones are dropped.
const LINE_QUEUE: usize = 4096;

/// One device-API request as recorded (database row and capture line alike), already
/// redacted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficRecord {
    /// Time-ordered (UUIDv7): the same request has the same id in the database and in a
    /// capture file.
    pub id: String,
    /// When the request arrived, ms since the epoch.
    pub at: i64,
    pub device_id: Option<String>,
    /// Filled in when read back from the database (the device's name then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    pub remote_addr: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The first [`BODY_PREFIX`] bytes of a non-part body, as redacted text.
    pub body: Option<String>,
    /// Body bytes the server read.
    pub body_length: u64,
    /// SHA-256 of a part body (capture files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    pub status: u16,
    /// The `detail` of the error that answered (an OAuth error's code).
    pub detail: Option<String>,
    /// False when no route matched.
    pub known_route: bool,
}

impl TrafficRecord {
    /// Whether the database keeps it: a failure, or a call Rushes lacks.
    pub fn is_error(&self) -> bool {
        self.status >= 400 || !self.known_route
    }
}

/// The recorders, shared by every request.
pub struct Traffic {
    /// To name the device of an unknown route's request by its token.
    db: Db,
    rows: tokio::sync::mpsc::Sender<TrafficRecord>,
    lines: Option<std::sync::mpsc::SyncSender<TrafficRecord>>,
    dropped_rows: AtomicU64,
    dropped_lines: Arc<AtomicU64>,
}

impl Traffic {
    /// Starts the database writer (a task) and, with `--capture`, the file writer (a
    /// thread, since it does blocking file I/O).
    pub fn start(db: Db, config: &Config) -> Arc<Traffic> {
        let (rows, receiver) = tokio::sync::mpsc::channel(ROW_QUEUE);
        tokio::spawn(write_rows(db.clone(), receiver, config.traffic_rows));
        let dropped_lines = Arc::new(AtomicU64::new(0));
        let lines = config.capture.then(|| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(LINE_QUEUE);
            let dir = captures_dir(&config.data_dir);
            let dropped = dropped_lines.clone();
            std::thread::Builder::new()
                .name("rushes-capture".into())
                .spawn(move || write_lines(&dir, &receiver, &dropped))
                .map_err(|e| tracing::error!(error = %e, "cannot start the capture writer"))
                .ok()
                .map(|_| sender)
        });
        Arc::new(Traffic {
            db,
            rows,
            lines: lines.flatten(),
            dropped_rows: AtomicU64::new(0),
            dropped_lines,
        })
    }

    /// Starts watching a request, if it is one of the device API's: notes what it asked
    /// and wraps its body so the bytes are counted (and hashed, or their start kept) as the
    /// handler reads them. `matched` is the route pattern, `None` for an unknown route.
    pub fn watch(&self, matched: Option<&str>, req: &mut Request) -> Option<Watch> {
        let path = req.uri().path().to_owned();
        if !is_device_api(&path, matched) {
            return None;
        }
        let is_part = path.starts_with("/upload/");
        let keep_prefix = !is_part;
        let hash = is_part && self.lines.is_some();
        let seen = (keep_prefix || hash || self.lines.is_some()).then(|| {
            let seen = Arc::new(Mutex::new(Seen {
                length: 0,
                prefix: Vec::new(),
                keep_prefix,
                hasher: hash.then(Sha256::new),
            }));
            let observer = seen.clone();
            let body = std::mem::take(req.body_mut());
            *req.body_mut() = Body::from_stream(body.into_data_stream().map(move |chunk| {
                if let (Ok(bytes), Ok(mut seen)) = (&chunk, observer.lock()) {
                    seen.observe(bytes);
                }
                chunk
            }));
            seen
        });
        Some(Watch {
            id: crate::db::new_id(),
            at: now_ms(),
            remote_addr: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "-".to_owned(), |c| c.0.to_string()),
            method: req.method().to_string(),
            path,
            query: req.uri().query().map(str::to_owned),
            headers: req.headers().clone(),
            known_route: matched.is_some(),
            seen,
        })
    }

    fn record(&self, record: TrafficRecord) {
        if record.is_error() && self.rows.try_send(record.clone()).is_err() {
            let n = self.dropped_rows.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n,
                    "device error records dropped: the database writer is behind"
                );
            }
        }
        if let Some(lines) = &self.lines
            && lines.try_send(record).is_err()
        {
            self.dropped_lines.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The device API: `/v2/*`, `/upload/*`, `/devices/*` (the status socket) but not the web
/// UI's device actions (`/devices/{id}/{action}`), and every unknown route.
fn is_device_api(path: &str, matched: Option<&str>) -> bool {
    match matched {
        None => true,
        Some("/devices/{id}/{action}") => false,
        Some(_) => {
            path.starts_with("/v2/")
                || path.starts_with("/upload/")
                || path.starts_with("/devices/")
        }
    }
}

pub fn captures_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("captures")
}

/// What passed through a watched body.
struct Seen {
    length: u64,
    prefix: Vec<u8>,
    keep_prefix: bool,
    hasher: Option<Sha256>,
}

impl Seen {
    fn observe(&mut self, bytes: &[u8]) {
        self.length += bytes.len() as u64;
        if self.keep_prefix && self.prefix.len() < BODY_PREFIX {
            let room = BODY_PREFIX - self.prefix.len();
            self.prefix
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        }
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
    }
}

/// A device-API request being answered.
pub struct Watch {
    id: String,
    at: i64,
    remote_addr: String,
    method: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    known_route: bool,
    seen: Option<Arc<Mutex<Seen>>>,
}

/// Error answers that are not [`crate::error::ApiError`]s (axum's own rejections) carry
/// their reason as a short text body; up to this much of it becomes the detail.
const REJECTION_TEXT: usize = 1024;

impl Watch {
    /// Hands the record to the writers (without waiting for them) and returns the response,
    /// unchanged but for a short plain-text error body read to learn its reason.
    pub async fn finish(
        self,
        traffic: &Traffic,
        response: Response,
        mut device_id: Option<String>,
    ) -> Response {
        let status = response.status().as_u16();
        if status < 400 && self.known_route && traffic.lines.is_none() {
            return response;
        }
        // No handler authenticated an unknown route's request; its token still says who
        // sent it, which is the point of the record (a read, on a request that failed).
        if device_id.is_none()
            && !self.known_route
            && let Some(token) = bearer_token(&self.headers, self.query.as_deref())
        {
            device_id = traffic
                .db
                .authenticate(&token)
                .await
                .ok()
                .flatten()
                .map(|a| a.device_id);
        }
        let mut detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map(|d| d.0.clone());
        let mut response = response;
        if detail.is_none() && status >= 400 && is_short_text(&response) {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, REJECTION_TEXT)
                .await
                .unwrap_or_default();
            detail = Some(String::from_utf8_lossy(&bytes).trim().to_owned());
            response = Response::from_parts(parts, Body::from(bytes));
        }
        let (length, body, sha256) = match self.seen.as_ref().and_then(|s| s.lock().ok()) {
            Some(mut seen) => {
                let content_type = self
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                let rule = redact::BodyRule::for_path(
                    &self.path,
                    seen.length > seen.prefix.len() as u64,
                );
                let body = seen
                    .keep_prefix
                    .then(|| redact::body(content_type, &seen.prefix, rule))
                    .filter(|b| !b.is_empty());
                let sha256 = seen
                    .hasher
                    .take()
                    .map(|h| crate::secrets::hex(&h.finalize()));
                (seen.length, body, sha256)
            }
            None => (0, None, None),
        };
        traffic.record(TrafficRecord {
            id: self.id,
            at: self.at,
            device_id,
            device_name: None,
            remote_addr: self.remote_addr,
            method: self.method,
            path: redact::path(&self.path),
            query: self.query.as_deref().map(redact::query),
            headers: redact::headers(&self.headers),
            body,
            body_length: length,
            body_sha256: sha256,
            status,
            detail: detail.as_deref().map(redact::scrub),
            known_route: self.known_route,
        });
        response
    }
}

/// The access token a request carries: `Authorization: Bearer`, or in the query as a
/// status socket sends it (`Authorization=Bearer%20..`, `token=..`).
fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let from_query = || {
        query?.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = redact::percent_decode(value);
            match name.to_ascii_lowercase().as_str() {
                "token" | "access_token" => Some(value),
                "authorization" => value
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim().to_owned()),
                _ => None,
            }
        })
    };
    from_header.or_else(from_query).filter(|t| !t.is_empty())
}

/// A plain-text answer whose whole body is known and short (axum's rejections are).
fn is_short_text(response: &Response) -> bool {
    use axum::body::HttpBody;
    let text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    let short = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= REJECTION_TEXT as u64);
    text && short
}

/// The database writer: takes what waits, writes it in one transaction with the prune.
async fn write_rows(db: Db, mut receiver: tokio::sync::mpsc::Receiver<TrafficRecord>, keep: usize) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, 64).await > 0 {
        if let Err(e) = db.record_traffic(&batch, keep).await {
            tracing::warn!(error = %e, count = batch.len(), "recording device errors failed");
        }
        batch.clear();
    }
}

/// The capture file writer: one line per record, appended to the day's file; flushed
/// whenever nothing more waits, so a line is whole on disk before the next day's starts.
/// Records dropped for a full queue are noted in the file as `{"dropped": n}`.
fn write_lines(
    dir: &Path,
    receiver: &std::sync::mpsc::Receiver<TrafficRecord>,
    dropped: &AtomicU64,
) {
    let mut open: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    let mut reported_drops = 0;
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            let day = day_of(record.at);
            if open.as_ref().is_none_or(|(d, _)| *d != day) {
                if let Some((_, mut old)) = open.take() {
                    let _ = old.flush();
                }
                match open_capture(dir, &day) {
                    Ok(file) => open = Some((day, std::io::BufWriter::new(file))),
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %dir.display(), "cannot open the capture file");
                    }
                }
            }
            if let Some((_, file)) = &mut open {
                let drops = dropped.load(Ordering::Relaxed);
                if drops > reported_drops {
                    let note =
                        serde_json::json!({"at": record.at, "dropped": drops - reported_drops});
                    let _ = writeln!(file, "{note}");
                    reported_drops = drops;
                }
                if let Ok(mut line) = serde_json::to_vec(&record) {
                    line.push(b'\n');
                    if let Err(e) = file.write_all(&line) {
                        tracing::warn!(error = %e, "writing the capture file failed");
                    }
                }
            }
            next = receiver.try_recv().ok();
        }
        if let Some((_, file)) = &mut open {
            let _ = file.flush();
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a time in ms.
fn day_of(ms: i64) -> String {
    crate::clock::date_folder(ms).replace('_', "-")
}

fn open_capture(dir: &Path, day: &str) -> std::io::Result<std::fs::File> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        builder.mode(0o700);
        options.mode(0o600);
    }
    builder.create(dir)?;
    options.open(dir.join(format!("{day}.jsonl")))
}

/// Every record in the capture files of `data_dir`, oldest file first (lines that are not
/// records, or torn by a crash, are skipped).
pub fn read_captures(data_dir: &Path) -> std::io::Result<Vec<TrafficRecord>> {
    let dir = captures_dir(data_dir);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort();
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        records.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<TrafficRecord>(line).ok()),
        );
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_api_is_what_devices_call() {
        assert!(is_device_api("/v2/devices/me", Some("/v2/devices/me")));
        assert!(is_device_api(
            "/upload/a/1",
            Some("/upload/{asset_id}/{number}")
        ));
        assert!(is_device_api(
            "/devices/websocket",
            Some("/devices/websocket")
        ));
        assert!(is_device_api("/favicon.ico", None));
        assert!(!is_device_api(
            "/devices/x/pause",
            Some("/devices/{id}/{action}")
        ));
        assert!(!is_device_api("/setup", Some("/setup")));
        assert!(!is_device_api("/health", Some("/health")));
    }

    #[test]
    fn a_body_keeps_its_start_and_hashes_all() {
        let mut seen = Seen {
            length: 0,
            prefix: Vec::new(),
            keep_prefix: true,
            hasher: Some(Sha256::new()),
        };
        seen.observe(&[1; 4000]);
        seen.observe(&[2; 200]);
        assert_eq!(seen.length, 4200);
        assert_eq!(seen.prefix.len(), BODY_PREFIX);
        assert_eq!(seen.prefix[4095], 2);
        let mut all = vec![1u8; 4000];
        all.extend([2u8; 200]);
        let hash = crate::secrets::hex(&seen.hasher.take().unwrap().finalize());
        assert_eq!(hash, crate::secrets::hex(&Sha256::digest(&all)));
        assert_eq!(day_of(1_764_392_690_000), "2025-11-29");
    }

    fn record_at(at: i64) -> TrafficRecord {
        TrafficRecord {
            id: format!("{at:020}"),
            at,
            device_id: None,
            device_name: None,
            remote_addr: "127.0.0.1:1".into(),
            method: "GET".into(),
            path: "/v2/x".into(),
            query: None,
            headers: Vec::new(),
            body: None,
            body_length: 0,
            body_sha256: None,
            status: 200,
            detail: None,
            known_route: true,
        }
    }

    #[test]
    fn lines_go_to_the_file_of_their_day_with_drops_noted() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, receiver) = std::sync::mpsc::sync_channel(8);
        let day = 86_400_000;
        sender.send(record_at(20_000 * day + 5)).unwrap();
        sender.send(record_at(20_000 * day + 6)).unwrap();
        sender.send(record_at(20_001 * day)).unwrap();
        drop(sender);
        let dropped = AtomicU64::new(3);
        write_lines(&captures_dir(dir.path()), &receiver, &dropped);
        let first = std::fs::read_to_string(dir.path().join("captures/2024-10-04.jsonl")).unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines.len(), 3, "{first}");
        assert!(lines[0].contains(r#""dropped":3"#), "{first}");
        let second = std::fs::read_to_string(dir.path().join("captures/2024-10-05.jsonl")).unwrap();
        assert_eq!(second.lines().count(), 1);
        // Read back in order; the note is not a record.
        let back: Vec<i64> = read_captures(dir.path())
            .unwrap()
            .iter()
            .map(|r| r.at)
            .collect();
        assert_eq!(back, [20_000 * day + 5, 20_000 * day + 6, 20_001 * day]);
    }
}
