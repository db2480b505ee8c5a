//! Device traffic capture: what a device nobody has tried actually sent, so that whoever
//! brings up a new camera model can see (and report) why it fails.
//!
//! Two records, both written off the request's path (a bounded channel to one writer; a
//! full channel drops the record and counts it, never delays the answer):
//! - always: device-API requests answered 4xx/5xx or sent to an unknown route under the
//!   device API's prefixes go to the database ([`crate::db`]'s `device_traffic`, kept to
//!   the newest `traffic_rows`), so every server of an installation sees every server's.
//!   Since anyone can cause a failure, what reaches the database is bounded (see
//!   [`RecordBound`]): no flood turns each refused request into a write, and nobody
//!   without a token can push a device's records out of the table;
//! - with `rushes serve --capture`: every device-API request goes to
//!   `<data>/captures/YYYY-MM-DD.jsonl` (UTC date), one JSON object a line, for a support
//!   bundle. Part bodies are reduced to their length and SHA-256, computed as they stream.
//!
//! Nothing leaves this module without passing [`redact`]: headers, query, body prefix,
//! even the path and the error detail.

pub mod redact;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::StreamExt;
use governor::{DefaultKeyedRateLimiter, Quota};
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
/// Bytes of lines waiting for the capture file writer before new ones are dropped (a
/// record can be some 20 KiB with its headers and body, so the count alone would allow
/// tens of MiB).
const LINE_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Database records of requests no device is known for, per remote IP address and
/// minute (a burst of this many, then one every 60/N s).
const UNATTRIBUTED_PER_MINUTE: u32 = 10;
/// Remote addresses or devices remembered by a bound before idle ones are forgotten.
const FORGET_ABOVE: usize = 10_000;

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
    bound: RecordBound,
    lines: Option<LineQueue>,
    dropped_rows: AtomicU64,
}

/// What of the failures may become database rows. Anyone on the network can make the
/// server answer 4xx, and the table keeps only the newest `traffic_rows`, so without a
/// bound a flood would cost a write per request and push out the records someone needs:
/// - a request no device is known for (no token, or one that names no device): at most
///   [`UNATTRIBUTED_PER_MINUTE`] a minute per remote IP address;
/// - a 429 (a device over its request limit, THREATS row 15): once a minute per device,
///   so refusing a flood does not write it down request by request.
///
/// Kept in memory per server, like the request limit. Attributed failures other than
/// 429 are bounded by the device's own request limit.
pub struct RecordBound {
    unattributed: DefaultKeyedRateLimiter<IpAddr>,
    refused: DefaultKeyedRateLimiter<String>,
}

impl RecordBound {
    fn new() -> RecordBound {
        let per_minute = NonZeroU32::new(UNATTRIBUTED_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        RecordBound {
            unattributed: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            refused: DefaultKeyedRateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)),
        }
    }

    /// Whether a failure of `device_id` (if known) from `remote` may be written.
    fn admit(&self, device_id: Option<&str>, remote: Option<IpAddr>, status: u16) -> bool {
        if self.unattributed.len() > FORGET_ABOVE {
            self.unattributed.retain_recent();
        }
        if self.refused.len() > FORGET_ABOVE {
            self.refused.retain_recent();
        }
        match device_id {
            None => self
                .unattributed
                .check_key(&remote.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
                .is_ok(),
            Some(device) if status == 429 => self.refused.check_key(&device.to_owned()).is_ok(),
            Some(_) => true,
        }
    }
}

/// The capture file writer's queue, bounded by count and by bytes.
struct LineQueue {
    sender: std::sync::mpsc::SyncSender<Line>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    max_bytes: usize,
}

/// A serialized record with its time (for the file of its day).
struct Line {
    at: i64,
    bytes: Vec<u8>,
}

impl LineQueue {
    /// Queues a line, or drops (and counts) it when the queue is full.
    fn offer(&self, line: Line) {
        let len = line.bytes.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.max_bytes || self.sender.try_send(line).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Traffic {
    /// Starts the database writer (a task) and, with `--capture`, the file writer (a
    /// thread, since it does blocking file I/O).
    pub fn start(db: Db, config: &Config) -> Arc<Traffic> {
        let (rows, receiver) = tokio::sync::mpsc::channel(ROW_QUEUE);
        tokio::spawn(write_rows(db.clone(), receiver, config.traffic_rows));
        let lines = config.capture.then(|| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(LINE_QUEUE);
            let queue = LineQueue {
                sender,
                queued_bytes: Arc::new(AtomicUsize::new(0)),
                dropped: Arc::new(AtomicU64::new(0)),
                max_bytes: LINE_QUEUE_BYTES,
            };
            let dir = captures_dir(&config.data_dir);
            let (queued, dropped) = (queue.queued_bytes.clone(), queue.dropped.clone());
            std::thread::Builder::new()
                .name("rushes-capture".into())
                .spawn(move || write_lines(&dir, &receiver, &queued, &dropped))
                .map_err(|e| tracing::error!(error = %e, "cannot start the capture writer"))
                .ok()
                .map(|_| queue)
        });
        Arc::new(Traffic {
            db,
            rows,
            bound: RecordBound::new(),
            lines: lines.flatten(),
            dropped_rows: AtomicU64::new(0),
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
            remote: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            method: req.method().to_string(),
            path,
            query: req.uri().query().map(str::to_owned),
            headers: req.headers().clone(),
            known_route: matched.is_some(),
            seen,
        })
    }

    fn record(&self, record: TrafficRecord, remote: Option<IpAddr>) {
        if let Some(lines) = &self.lines
            && let Ok(mut bytes) = serde_json::to_vec(&record)
        {
            bytes.push(b'\n');
            lines.offer(Line {
                at: record.at,
                bytes,
            });
        }
        if record.is_error()
            && self
                .bound
                .admit(record.device_id.as_deref(), remote, record.status)
            && self.rows.try_send(record).is_err()
        {
            let n = self.dropped_rows.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n,
                    "device error records dropped: the database writer is behind"
                );
            }
        }
    }
}

/// The device API: `/v2/*`, `/upload/*`, `/devices/*` (the status socket), known routes
/// or not, but not the web UI's device actions (`/devices/{id}/{action}`). Unknown routes
/// elsewhere (`/favicon.ico`, a scanner's `/wp-login.php`) are not a device's.
fn is_device_api(path: &str, matched: Option<&str>) -> bool {
    matched != Some("/devices/{id}/{action}")
        && (path.starts_with("/v2/")
            || path.starts_with("/upload/")
            || path.starts_with("/devices/"))
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
    remote: Option<SocketAddr>,
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
            && let Some(token) = access_token(&query_pairs(self.query.as_deref()), &self.headers)
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
                let rule =
                    redact::BodyRule::for_path(&self.path, seen.length > seen.prefix.len() as u64);
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
        traffic.record(
            TrafficRecord {
                id: self.id,
                at: self.at,
                device_id,
                device_name: None,
                remote_addr: self
                    .remote
                    .map_or_else(|| "-".to_owned(), |a| a.to_string()),
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
            },
            self.remote.map(|a| a.ip()),
        );
        response
    }
}

/// The access token a request carries, for the status socket and the traffic record
/// alike (one reading, so the two cannot disagree on who sent a request): in the query as
/// a socket sends it, `Authorization=Bearer <token>` (`%20` or `+`), `token=` or
/// `access_token=`, else an `Authorization: Bearer` header. `query` is decoded pairs.
pub fn access_token(query: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    fn bearer(value: &str) -> Option<&str> {
        value
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
    }
    let from_query = query.iter().find_map(|(k, v)| {
        if k.eq_ignore_ascii_case("authorization") {
            bearer(v)
        } else if k == "token" || k == "access_token" {
            Some(v.trim())
        } else {
            None
        }
    });
    let from_header = || {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
    };
    from_query
        .or_else(from_header)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// A raw query as decoded `(name, value)` pairs, as axum's `Query` reads it.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (redact::percent_decode(name), redact::percent_decode(value))
        })
        .collect()
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
    receiver: &std::sync::mpsc::Receiver<Line>,
    queued_bytes: &AtomicUsize,
    dropped: &AtomicU64,
) {
    let mut open: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    let mut reported_drops = 0;
    // Warned that the file cannot be opened (or written), until it can again: once, not
    // once per record.
    let mut warned = false;
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            queued_bytes.fetch_sub(line.bytes.len(), Ordering::Relaxed);
            let day = day_of(line.at);
            if open.as_ref().is_none_or(|(d, _)| *d != day) {
                if let Some((_, mut old)) = open.take() {
                    let _ = old.flush();
                }
                match open_capture(dir, &day) {
                    Ok(file) => {
                        open = Some((day, std::io::BufWriter::new(file)));
                        warned = false;
                    }
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, dir = %dir.display(), "cannot open the capture file; records are dropped until it can be");
                    }
                    Err(_) => {}
                }
            }
            if let Some((_, file)) = &mut open {
                let drops = dropped.load(Ordering::Relaxed);
                if drops > reported_drops {
                    let note =
                        serde_json::json!({"at": line.at, "dropped": drops - reported_drops});
                    let _ = writeln!(file, "{note}");
                    reported_drops = drops;
                }
                if let Err(e) = file.write_all(&line.bytes) {
                    if !warned {
                        tracing::warn!(error = %e, "writing the capture file failed");
                    }
                    warned = true;
                }
            } else {
                dropped.fetch_add(1, Ordering::Relaxed);
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

/// The newest `limit` records in the capture files of `data_dir` that `wanted` keeps,
/// oldest first. Files are read newest first, line by line, and older files are not
/// opened once `limit` are found (lines that are not records, or torn by a crash, are
/// skipped).
pub fn read_captures(
    data_dir: &Path,
    limit: usize,
    wanted: impl Fn(&TrafficRecord) -> bool,
) -> std::io::Result<Vec<TrafficRecord>> {
    use std::io::BufRead;
    let dir = captures_dir(data_dir);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort_unstable_by(|a, b| b.cmp(a));
    // Newest file first; within a file, only its newest `room` records are held.
    let mut newest_first: Vec<Vec<TrafficRecord>> = Vec::new();
    let mut found = 0;
    for file in files {
        if found >= limit {
            break;
        }
        let room = limit - found;
        let mut kept = std::collections::VecDeque::with_capacity(room.min(1024));
        let reader = std::io::BufReader::new(std::fs::File::open(&file)?);
        for line in reader.split(b'\n') {
            let Ok(record) = serde_json::from_slice::<TrafficRecord>(&line?) else {
                continue;
            };
            if wanted(&record) {
                if kept.len() == room {
                    kept.pop_front();
                }
                kept.push_back(record);
            }
        }
        found += kept.len();
        newest_first.push(kept.into());
    }
    Ok(newest_first.into_iter().rev().flatten().collect())
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
        assert!(is_device_api("/v2/whatever", None));
        assert!(is_device_api("/devices/x/y/z", None));
        assert!(!is_device_api("/favicon.ico", None));
        assert!(!is_device_api("/wp-login.php", None));
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

    fn line_at(at: i64) -> Line {
        let mut bytes = serde_json::to_vec(&record_at(at)).unwrap();
        bytes.push(b'\n');
        Line { at, bytes }
    }

    fn write_all(dir: &Path, lines: Vec<Line>, dropped: u64) -> u64 {
        let (sender, receiver) = std::sync::mpsc::sync_channel(lines.len().max(1));
        let queued = AtomicUsize::new(lines.iter().map(|l| l.bytes.len()).sum());
        for line in lines {
            sender.send(line).unwrap();
        }
        drop(sender);
        let dropped = AtomicU64::new(dropped);
        write_lines(&captures_dir(dir), &receiver, &queued, &dropped);
        assert_eq!(queued.load(Ordering::Relaxed), 0);
        dropped.load(Ordering::Relaxed)
    }

    #[test]
    fn lines_go_to_the_file_of_their_day_with_drops_noted() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        write_all(
            dir.path(),
            vec![
                line_at(20_000 * day + 5),
                line_at(20_000 * day + 6),
                line_at(20_001 * day),
            ],
            3,
        );
        let first = std::fs::read_to_string(dir.path().join("captures/2024-10-04.jsonl")).unwrap();
        let lines: Vec<&str> = first.lines().collect();
        assert_eq!(lines.len(), 3, "{first}");
        assert!(lines[0].contains(r#""dropped":3"#), "{first}");
        let second = std::fs::read_to_string(dir.path().join("captures/2024-10-05.jsonl")).unwrap();
        assert_eq!(second.lines().count(), 1);
        // Read back in order; the note is not a record.
        let back: Vec<i64> = read_captures(dir.path(), 100, |_| true)
            .unwrap()
            .iter()
            .map(|r| r.at)
            .collect();
        assert_eq!(back, [20_000 * day + 5, 20_000 * day + 6, 20_001 * day]);
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the folder should be: nothing can be opened.
        std::fs::write(captures_dir(dir.path()), b"").unwrap();
        let dropped = write_all(dir.path(), (0..50).map(line_at).collect(), 0);
        assert_eq!(dropped, 50);
    }

    #[test]
    fn reading_captures_takes_the_newest_files_first_and_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let mut lines: Vec<Line> = (0..5).map(|i| line_at(20_001 * day + i)).collect();
        lines.extend((0..5).map(|i| line_at(20_002 * day + i)));
        write_all(dir.path(), lines, 0);
        // An older "file" that cannot be read: reached only if the limit is not met.
        std::fs::create_dir(captures_dir(dir.path()).join("2024-10-01.jsonl")).unwrap();
        let back: Vec<i64> = read_captures(dir.path(), 7, |_| true)
            .unwrap()
            .iter()
            .map(|r| r.at - 20_001 * day)
            .collect();
        assert_eq!(back, [3, 4, day, day + 1, day + 2, day + 3, day + 4]);
        let even: Vec<i64> = read_captures(dir.path(), 3, |r| r.at % 2 == 0)
            .unwrap()
            .iter()
            .map(|r| r.at - 20_001 * day)
            .collect();
        assert_eq!(even, [day, day + 2, day + 4]);
        assert!(read_captures(dir.path(), 100, |_| true).is_err());
    }

    #[test]
    fn the_line_queue_is_bounded_by_bytes() {
        let (sender, _receiver) = std::sync::mpsc::sync_channel(1000);
        let queue = LineQueue {
            sender,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            max_bytes: 10_000,
        };
        for _ in 0..20 {
            queue.offer(Line {
                at: 0,
                bytes: vec![b'x'; 1000],
            });
        }
        assert_eq!(queue.queued_bytes.load(Ordering::Relaxed), 10_000);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn unattributed_records_and_refusals_are_bounded() {
        let bound = RecordBound::new();
        let scanner = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
        let admitted = (0..200).filter(|_| bound.admit(None, scanner, 404)).count();
        assert_eq!(admitted, UNATTRIBUTED_PER_MINUTE as usize);
        // Another address, and a known device, are not held back by the scanner.
        assert!(bound.admit(None, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)), 404));
        assert!((0..50).all(|_| bound.admit(Some("d"), scanner, 422)));
        // A device's 429s: one a minute.
        assert!(bound.admit(Some("d"), scanner, 429));
        assert!(!bound.admit(Some("d"), scanner, 429));
        assert!(bound.admit(Some("e"), scanner, 429));
    }

    #[test]
    fn the_access_token_is_read_from_the_query_first_then_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            axum::http::HeaderValue::from_static("Bearer from-header"),
        );
        let token = |q: &str, h: &HeaderMap| access_token(&query_pairs(Some(q)), h);
        assert_eq!(
            token("Authorization=Bearer%20from-query", &headers).as_deref(),
            Some("from-query")
        );
        assert_eq!(
            token("vsn=2.0.0&authorization=bearer+q2", &headers).as_deref(),
            Some("q2")
        );
        assert_eq!(token("token=t", &headers).as_deref(), Some("t"));
        assert_eq!(token("access_token=a", &headers).as_deref(), Some("a"));
        assert_eq!(token("vsn=2.0.0", &headers).as_deref(), Some("from-header"));
        assert_eq!(token("Authorization=Basic%20x", &HeaderMap::new()), None);
        assert_eq!(token("token=", &HeaderMap::new()), None);
    }
}
