//! A paired device and its upload engine: the durable queue drained file by file, parts
//! in parallel, every step retried through network faults.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::{Stream, StreamExt};
use rushes_proto::asset::{Asset, CreateAsset};
use serde::Serialize;

use crate::api::{Api, Progress};
use crate::credentials;
use crate::events::{Event, Events, FileState};
use crate::journal::{FileRow, Journal, NewFile, QueueCounts, Queueing};
use crate::session::Session;
use crate::{Error, ServerOptions};

/// How uploads behave.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Parts of one file sent at once.
    pub parallel_parts: usize,
    /// Files uploaded at once (a card of stills is many small files: one at a time would
    /// leave the link idle between them).
    pub parallel_files: usize,
    /// Longest pause between two attempts of a failing step.
    pub max_backoff: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            parallel_parts: 4,
            parallel_files: 8,
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What `upload_queue` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub completed: u64,
    pub failed: u64,
    pub paused_rejected: u64,
}

/// What [`Device::enqueue`] did with the paths it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub queued: u64,
    pub already_uploaded: u64,
    /// Paths that are missing, unreadable or not files.
    pub failed: u64,
}

/// What `rushes device status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub server: String,
    pub project: String,
    pub device_name: String,
    pub client_id: String,
    /// Unix milliseconds.
    pub access_token_expires_at: i64,
    pub queue: QueueCounts,
}

/// A paired device.
pub struct Device {
    pub(crate) state_dir: PathBuf,
    pub(crate) session: Arc<Session>,
    pub(crate) journal: Journal,
    pub(crate) events: Events,
    pub(crate) options: UploadOptions,
}

/// How one file's upload ended, short of a fatal error.
pub(crate) enum Outcome {
    Done,
    Paused,
    Failed(String),
}

impl Device {
    /// Opens the paired device whose state lives in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Device, Error> {
        let file = credentials::load_or_create(state_dir)?;
        let pairing = file.pairing.clone().ok_or(Error::NotPaired)?;
        let api = Api::new(&ServerOptions {
            server: pairing.server.clone(),
            ca: pairing.ca.clone(),
        })?;
        Ok(Device {
            state_dir: state_dir.to_owned(),
            session: Arc::new(Session::new(state_dir.to_owned(), file, api)),
            journal: Journal::open(state_dir).await?,
            events: Events::new(),
            options: UploadOptions::default(),
        })
    }

    pub fn with_options(mut self, options: UploadOptions) -> Device {
        self.options = options;
        self
    }

    /// Everything the device reports from now on.
    pub fn events(&self) -> impl Stream<Item = Event> + Send + 'static {
        let rx = self.events.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    pub async fn status(&self) -> Result<Status, Error> {
        let pairing = self.session.pairing().await?;
        Ok(Status {
            server: pairing.server,
            project: pairing.project_name,
            device_name: pairing.device_name,
            client_id: self.session.client_id.clone(),
            access_token_expires_at: pairing.access_expires_at,
            queue: self.journal.counts().await?,
        })
    }

    /// Keeps the status socket open while the returned guard lives, reporting pauses and
    /// resumes as [`Event::Paused`] / [`Event::Resumed`]. It reconnects by itself and never
    /// affects uploads.
    pub async fn status_socket(&self) -> Result<crate::StatusSocket, Error> {
        let pairing = self.session.pairing().await?;
        Ok(crate::status_socket::spawn(
            self.session.clone(),
            self.events.downgrade(),
            ServerOptions {
                server: pairing.server,
                ca: pairing.ca,
            },
        ))
    }

    /// Asks the server who this device is (checks the pairing still stands).
    pub async fn check(&self) -> Result<rushes_proto::device::DeviceMe, Error> {
        let api = self.session.api.clone();
        self.session
            .call(|t| {
                let api = api.clone();
                async move { api.me(&t).await }
            })
            .await
    }

    pub async fn heartbeat(&self) -> Result<(), Error> {
        let api = self.session.api.clone();
        self.session
            .call(|t| {
                let api = api.clone();
                async move { api.heartbeat(&t).await }
            })
            .await
    }

    /// Queues files for upload; files uploaded before (same path, size and mtime) are
    /// skipped. Paths that are not readable files are reported (an [`Event::Failed`] each)
    /// and counted, not queued.
    pub async fn enqueue(&self, paths: &[PathBuf]) -> Result<Enqueued, Error> {
        let mut report = Enqueued::default();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => files.push((path, m.len(), mtime_ns(&m))),
                other => {
                    let error =
                        other.map_or_else(|e| e.to_string(), |_| "not a regular file".into());
                    report.failed += 1;
                    self.events.emit(Event::Failed { file: path, error });
                }
            }
        }
        let new_files: Vec<NewFile<'_>> = files
            .iter()
            .map(|(path, size, mtime_ns)| NewFile {
                path,
                size: *size,
                mtime_ns: *mtime_ns,
            })
            .collect();
        let outcomes = self.journal.enqueue(&new_files).await?;
        for ((path, size, _), outcome) in files.into_iter().zip(outcomes) {
            match outcome {
                Queueing::New => {
                    report.queued += 1;
                    self.events.emit(Event::Queued { file: path, size });
                }
                Queueing::AlreadyUploaded => {
                    report.already_uploaded += 1;
                    self.events.emit(Event::AlreadyUploaded { file: path });
                }
                Queueing::Pending => {}
            }
        }
        Ok(report)
    }

    /// Uploads everything queued, oldest first, until the queue is empty. A file that
    /// fails is marked failed and the queue moves on; only losing the pairing (or the
    /// journal) stops it.
    pub async fn upload_queue(&self) -> Result<Summary, Error> {
        let mut summary = Summary::default();
        let parallel = self.options.parallel_files.max(1);
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut ended = Vec::new();
        let mut in_flight: Vec<i64> = Vec::new();
        loop {
            // Keep `parallel` files going, oldest first.
            if in_flight.len() < parallel {
                let next = self.journal.next_pending(parallel * 2);
                let rows = driving(&mut running, &mut ended, next).await?;
                for row in rows {
                    if in_flight.len() >= parallel {
                        break;
                    }
                    if in_flight.contains(&row.id) {
                        continue;
                    }
                    in_flight.push(row.id);
                    running.push(async move { (row.id, self.run_file(&row).await) });
                }
            }
            let (id, result) = match ended.pop() {
                Some(end) => end,
                None => match running.next().await {
                    Some(end) => end,
                    None => return Ok(summary),
                },
            };
            in_flight.retain(|&i| i != id);
            match result? {
                Outcome::Done => summary.completed += 1,
                Outcome::Paused => summary.paused_rejected += 1,
                Outcome::Failed(_) => summary.failed += 1,
            }
        }
    }

    /// Uploads one file and journals how it ended. Errors are fatal ones only (losing the
    /// pairing or the journal); any other failure fails this file.
    async fn run_file(&self, row: &FileRow) -> Result<Outcome, Error> {
        let file = row.path();
        let outcome = match self.upload_file(row).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        match &outcome {
            Outcome::Done => {
                self.journal
                    .finish(row.id, FileState::Complete, None)
                    .await?;
                let asset_id = self.journal_asset(row).await;
                self.events.emit(Event::Completed { file, asset_id });
            }
            Outcome::Paused => {
                self.journal
                    .finish(row.id, FileState::PausedRejected, None)
                    .await?;
                self.events.emit(Event::PausedRejected { file });
            }
            Outcome::Failed(error) => {
                self.journal
                    .finish(row.id, FileState::Failed, Some(error))
                    .await?;
                self.events.emit(Event::Failed {
                    file,
                    error: error.clone(),
                });
            }
        }
        Ok(outcome)
    }

    async fn journal_asset(&self, row: &FileRow) -> String {
        match &row.asset_id {
            Some(id) => id.clone(),
            None => self.journal.asset_id(row.id).await.unwrap_or_default(),
        }
    }

    async fn upload_file(&self, row: &FileRow) -> Result<Outcome, Error> {
        let path = row.path();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return Ok(Outcome::Failed(format!("cannot read the file: {e}"))),
        };
        if meta.len() != row.size as u64 || mtime_ns(&meta) != row.mtime_ns {
            return Ok(Outcome::Failed(
                "the file changed after it was queued; queue it again".into(),
            ));
        }
        let size = meta.len();
        if size == 0 {
            return Ok(Outcome::Failed("the file is empty".into()));
        }
        let content_type = mime_guess::from_path(&path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();

        // The asset: created once, its id journaled before any byte is sent.
        let (asset_id, part_count, mut urls) = match &row.asset_id {
            Some(id) => (id.clone(), row.part_count.unwrap_or(1) as u32, Vec::new()),
            None => {
                let body = CreateAsset {
                    name: Some(file_name(&path)),
                    filetype: Some(content_type.clone()),
                    filesize: Some(size),
                    offset: Some(seconds_since(meta.modified().ok())),
                    ..CreateAsset::default()
                };
                let Some(value) = self.create_asset(&path, &body).await? else {
                    return Ok(Outcome::Paused);
                };
                let asset: Asset = serde_json::from_value(value).map_err(Error::other)?;
                let count = asset.upload_urls.len() as u32;
                let part_size = size.div_ceil(u64::from(count.max(1)));
                self.journal
                    .set_asset(row.id, &asset.id, count, part_size)
                    .await?;
                (
                    asset.id,
                    count,
                    asset
                        .upload_urls
                        .into_iter()
                        .enumerate()
                        .map(|(i, u)| (i as u32 + 1, u))
                        .collect(),
                )
            }
        };
        let plan = rushes_proto::parts::PartPlan::from_count(size, part_count);

        // Which parts the server still needs: after a restart, the server is the truth.
        let acked: Vec<u32> = self
            .journal
            .parts(row.id)
            .await?
            .into_iter()
            .filter(|p| p.3)
            .map(|p| p.0)
            .collect();
        if urls.is_empty() {
            let status = self.fresh_status(&path, &asset_id).await?;
            if status.state == "complete" {
                return Ok(Outcome::Done);
            }
            if status.state == "abandoned" {
                return Ok(Outcome::Failed(
                    "the server gave up on this upload after receiving nothing for too long; \
                     queue the file again"
                        .into(),
                ));
            }
            if status.state == "superseded" {
                return Ok(Outcome::Failed(
                    "the server replaced this upload with a newer one of the same file \
                     (created again by this device); queue the file again if it is not there"
                        .into(),
                ));
            }
            for &n in &status.received_parts {
                self.journal
                    .record_part(row.id, n, plan.len(n), false, true)
                    .await?;
            }
            urls = status
                .missing
                .into_iter()
                .map(|m| (m.number, m.url))
                .collect();
        } else {
            urls.retain(|(n, _)| !acked.contains(n));
        }
        let remaining: u64 = urls.iter().map(|(n, _)| plan.len(*n)).sum();
        self.events.emit(Event::Started {
            file: path.clone(),
            size,
            asset_id: asset_id.clone(),
            resumed_bytes: size - remaining,
        });

        let results: Vec<Result<Outcome, Error>> = futures_util::stream::iter(urls)
            .map(|(number, url)| {
                self.upload_part(row.id, &path, &asset_id, &content_type, plan, number, url)
            })
            .buffer_unordered(self.options.parallel_parts.max(1))
            .collect()
            .await;
        for result in results {
            match result? {
                Outcome::Done => {}
                other => return Ok(other),
            }
        }
        Ok(Outcome::Done)
    }

    /// Sends one part until the server acknowledges it, getting a fresh URL if the one in
    /// hand expired, and journals the acknowledgement.
    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        file_id: i64,
        path: &Path,
        asset_id: &str,
        content_type: &str,
        plan: rushes_proto::parts::PartPlan,
        number: u32,
        mut url: String,
    ) -> Result<Outcome, Error> {
        let (offset, len) = (plan.offset(number), plan.len(number));
        let mut renewed = false;
        loop {
            let result = self.send_part(&url, path, offset, len, content_type).await;
            match result {
                Ok(()) => break,
                // Expired (or refused) URL: ask for a fresh one, once.
                Err(e) if e.status() == Some(403) && !renewed => {
                    renewed = true;
                    let status = self.fresh_status(path, asset_id).await?;
                    match status.missing.into_iter().find(|m| m.number == number) {
                        Some(missing) => url = missing.url,
                        None => break, // the server has it already
                    }
                }
                Err(Error::Io(e)) => {
                    return Ok(Outcome::Failed(format!("cannot read the file: {e}")));
                }
                Err(e @ Error::Http { .. }) => {
                    return Ok(Outcome::Failed(format!("part {number}: {e}")));
                }
                Err(e) => return Err(e),
            }
        }
        // The part of a one-part file is journaled by the file's end, committed right after
        // (one synchronous commit per still instead of two). Were power lost in between,
        // the resume asks the server, which is the truth about parts anyway.
        if plan.count > 1 {
            self.journal
                .record_part(file_id, number, len, false, true)
                .await?;
        }
        self.events.emit(Event::PartDone {
            file: path.to_owned(),
            number,
            size: len,
        });
        Ok(Outcome::Done)
    }

    /// PUTs one part, retried through transient failures, reporting progress as it goes.
    pub(crate) async fn send_part(
        &self,
        url: &str,
        path: &Path,
        offset: u64,
        len: u64,
        content_type: &str,
    ) -> Result<(), Error> {
        self.retrying(Some(path), || {
            let events = self.events.clone();
            let file = path.to_owned();
            let progress: Progress = Arc::new(move |bytes| {
                events.emit(Event::Progress {
                    file: file.clone(),
                    bytes,
                })
            });
            self.session
                .api
                .put_part(url, path, offset, len, content_type, progress)
        })
        .await
    }

    /// An authenticated API call, retried through transient failures, refreshed on a 401.
    pub(crate) async fn authed<T, F, Fut>(&self, file: Option<&Path>, op: F) -> Result<T, Error>
    where
        F: Fn(Api, String) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.retrying(file, || {
            self.session
                .call(|token| op(self.session.api.clone(), token))
        })
        .await
    }

    /// Creates an asset for `path`; `None` when the server refuses it because the device
    /// is paused for the recording's time (409).
    pub(crate) async fn create_asset(
        &self,
        path: &Path,
        body: &CreateAsset,
    ) -> Result<Option<serde_json::Value>, Error> {
        match self
            .authed(Some(path), |api, token| async move {
                api.create_asset(&token, body).await
            })
            .await
        {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.status() == Some(409) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The resume extension, retried like any other step.
    pub(crate) async fn fresh_status(
        &self,
        path: &Path,
        asset_id: &str,
    ) -> Result<rushes_proto::asset::UploadStatus, Error> {
        self.retrying(Some(path), || {
            let api = self.session.api.clone();
            let id = asset_id.to_owned();
            self.session.call(move |t| {
                let api = api.clone();
                let id = id.clone();
                async move { api.upload_status(&t, &id).await }
            })
        })
        .await
    }

    /// Runs `op` until it succeeds or fails for a reason that waiting will not fix:
    /// jittered exponential backoff (capped), or the server's `Retry-After`.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        file: Option<&Path>,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut delays = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(self.options.max_backoff)
            .without_max_times()
            .build();
        loop {
            match op().await {
                Err(e) if e.is_transient() => {
                    let wait = e
                        .retry_after()
                        .map(|d| d.min(self.options.max_backoff))
                        .unwrap_or_else(|| delays.next().unwrap_or(self.options.max_backoff));
                    tracing::debug!(error = %e, ?wait, "retrying");
                    self.events.emit(Event::Retrying {
                        file: file.map(Path::to_owned),
                        error: e.to_string(),
                        in_secs: wait.as_secs_f64(),
                    });
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Unpairs: revokes the grant on the server (if reachable) and forgets the tokens.
    /// The identity (`client_id`) and the journal stay.
    pub async fn unpair(self) -> Result<(), Error> {
        if let Ok(pairing) = self.session.pairing().await {
            let token = pairing.refresh_token.unwrap_or(pairing.access_token);
            if let Err(e) = self
                .session
                .api
                .revoke(&self.session.client_id, &token)
                .await
            {
                tracing::warn!(error = %e, "could not revoke on the server; forgetting the tokens anyway");
            }
        }
        self.session.forget().await?;
        self.journal.close().await;
        Ok(())
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Whole seconds since `t` (the recording's end, for a camera file), never negative.
pub(crate) fn seconds_since(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "clip".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// Awaits `task` while still driving the files in flight, collecting those that end.
///
/// A file in flight may hold one of the journal's connections in the middle of a query,
/// and gives it back only when polled. Awaiting the journal without polling them
/// deadlocked as soon as more files were in flight than the journal has connections
/// (`--parallel-files 5` ended in a 30 s pool timeout).
async fn driving<S: Stream + Unpin, T>(
    running: &mut S,
    ended: &mut Vec<S::Item>,
    task: impl Future<Output = T>,
) -> T {
    let mut task = std::pin::pin!(task);
    loop {
        tokio::select! {
            biased;
            out = &mut task => return out,
            Some(end) = running.next() => ended.push(end),
        }
    }
}
