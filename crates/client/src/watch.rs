//! Watching a folder (a memory card, a recorder's output): every new file is uploaded;
//! a file still being written is uploaded while it grows, as a real-time upload, so the
//! clip is complete on the server seconds after recording stops.
//!
//! The folder is rescanned every `scan_interval` rather than watched through inotify:
//! scanning works the same on SD cards, USB drives and network mounts, where change
//! notifications are often missing, and a scan of a card's few thousand entries is cheap.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rushes_proto::asset::{CreateAsset, RealtimePart, RealtimeParts};
use rushes_proto::parts::MIN_PART_SIZE;

use crate::Error;
use crate::events::{Event, FileState};
use crate::upload::{Device, file_name, mtime_ns};

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// A file unchanged for this long is finished.
    pub settle: Duration,
    /// How often the folder is rescanned.
    pub scan_interval: Duration,
    /// How often the device reports it is alive.
    pub heartbeat: Duration,
    /// Part size of real-time uploads (at least 5 MiB).
    pub realtime_part_size: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            settle: Duration::from_secs(3),
            scan_interval: Duration::from_millis(500),
            heartbeat: Duration::from_secs(120),
            realtime_part_size: MIN_PART_SIZE,
        }
    }
}

/// Files cameras and operating systems write that are not media.
pub fn is_ignored(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with('~')
        || [
            ".tmp",
            ".temp",
            ".part",
            ".partial",
            ".crdownload",
            ".swp",
            ".download",
        ]
        .iter()
        .any(|s| lower.ends_with(s))
        || ["thumbs.db", "desktop.ini"].contains(&lower.as_str())
}

struct Seen {
    size: u64,
    mtime_ns: i64,
    changed_at: Instant,
    /// The file changed while watched: it is being written.
    growing: bool,
}

impl Device {
    /// Uploads every new file under `dir` until the future is dropped (Ctrl-C).
    pub async fn watch(self: &Arc<Self>, dir: &Path, options: WatchOptions) -> Result<(), Error> {
        let dir = std::path::absolute(dir)?;
        if !dir.is_dir() {
            return Err(Error::Other(format!("{} is not a folder", dir.display())));
        }
        let active: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::unbounded_channel::<Error>();

        // Planned uploads drain in the background whenever the scanner queues something.
        let uploader = {
            let device = self.clone();
            let wake = wake.clone();
            let fatal = fatal_tx.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = device.upload_queue().await {
                        let _ = fatal.send(e);
                        return;
                    }
                    wake.notified().await;
                }
            })
        };
        let heartbeat = {
            let device = self.clone();
            let every = options.heartbeat;
            tokio::spawn(async move {
                loop {
                    if let Err(e) = device.heartbeat().await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        // Real-time uploads a previous run left unfinished.
        for row in self.journal.unfinished_realtime().await? {
            let path = row.path();
            active.lock().map_err(Error::other)?.insert(path.clone());
            self.spawn_realtime(
                path,
                Some(row.id),
                options.clone(),
                active.clone(),
                fatal_tx.clone(),
            );
        }

        let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
        let result = loop {
            if let Ok(e) = fatal_rx.try_recv() {
                break Err(e);
            }
            let mut queued_any = false;
            let mut present = HashSet::new();
            for (path, meta) in scan(&dir) {
                present.insert(path.clone());
                if active.lock().map_err(Error::other)?.contains(&path) {
                    continue;
                }
                let (size, mtime) = (meta.len(), mtime_ns(&meta));
                let now = Instant::now();
                let entry = seen.entry(path.clone()).or_insert(Seen {
                    size,
                    mtime_ns: mtime,
                    changed_at: now,
                    growing: false,
                });
                if entry.size != size || entry.mtime_ns != mtime {
                    *entry = Seen {
                        size,
                        mtime_ns: mtime,
                        changed_at: now,
                        growing: true,
                    };
                }
                if size == 0 {
                    continue;
                }
                if entry.growing && size > options.realtime_part_size.max(MIN_PART_SIZE) {
                    // Being recorded and big enough for a first part: upload as it grows.
                    if self.journal.knows_path(&path).await? {
                        continue;
                    }
                    seen.remove(&path);
                    active.lock().map_err(Error::other)?.insert(path.clone());
                    self.events.emit(Event::Recording { file: path.clone() });
                    self.spawn_realtime(
                        path,
                        None,
                        options.clone(),
                        active.clone(),
                        fatal_tx.clone(),
                    );
                    continue;
                }
                if now.duration_since(entry.changed_at) >= options.settle {
                    seen.remove(&path);
                    if !self.journal.is_uploaded(&path, size, mtime).await?
                        && self.enqueue(&[path]).await?.queued > 0
                    {
                        queued_any = true;
                    }
                }
            }
            seen.retain(|p, _| present.contains(p));
            if queued_any {
                wake.notify_one();
            }
            tokio::time::sleep(options.scan_interval).await;
        };
        uploader.abort();
        heartbeat.abort();
        result
    }

    fn spawn_realtime(
        self: &Arc<Self>,
        path: PathBuf,
        resume: Option<i64>,
        options: WatchOptions,
        active: Arc<Mutex<HashSet<PathBuf>>>,
        fatal: tokio::sync::mpsc::UnboundedSender<Error>,
    ) {
        let device = self.clone();
        tokio::spawn(async move {
            let result = device.realtime_upload(&path, resume, &options).await;
            if let Ok(mut set) = active.lock() {
                set.remove(&path);
            }
            match result {
                Ok(()) => {}
                Err(e) if e.is_fatal() => {
                    let _ = fatal.send(e);
                }
                Err(e) => device.events.emit(Event::Failed {
                    file: path,
                    error: e.to_string(),
                }),
            }
        });
    }

    /// Uploads a growing file: registers and sends a part each time `part_size` more bytes
    /// are written, and the final part once the file has been still for `settle`.
    async fn realtime_upload(
        &self,
        path: &Path,
        resume: Option<i64>,
        options: &WatchOptions,
    ) -> Result<(), Error> {
        let part_size = options.realtime_part_size.max(MIN_PART_SIZE);
        let content_type = mime_guess::from_path(path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();
        let (file_id, asset_id) = match resume {
            Some(id) => (id, self.journal.asset_id(id).await?),
            None => {
                let mtime = std::fs::metadata(path).map(|m| mtime_ns(&m)).unwrap_or(0);
                let body = CreateAsset {
                    name: Some(file_name(path)),
                    filetype: Some(content_type.clone()),
                    is_realtime_upload: true,
                    extension: path
                        .extension()
                        .map(|e| format!(".{}", e.to_string_lossy())),
                    ..CreateAsset::default()
                };
                let created = self
                    .retrying(Some(path), || {
                        let api = self.session.api.clone();
                        let body = body.clone();
                        self.session.call(move |t| {
                            let api = api.clone();
                            let body = body.clone();
                            async move { api.create_asset(&t, &body).await }
                        })
                    })
                    .await;
                let value = match created {
                    Ok(v) => v,
                    Err(e) if e.status() == Some(409) => {
                        self.events.emit(Event::PausedRejected {
                            file: path.to_owned(),
                        });
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let asset_id = value["id"].as_str().unwrap_or_default().to_owned();
                (
                    self.journal.start_realtime(path, mtime, &asset_id).await?,
                    asset_id,
                )
            }
        };
        self.events.emit(Event::Started {
            file: path.to_owned(),
            size: 0,
            asset_id: asset_id.clone(),
            resumed_bytes: 0,
        });

        let known = self.journal.parts(file_id).await?;
        let mut registered: u64 = known.iter().map(|p| p.1).sum();
        let mut next = known.iter().map(|p| p.0).max().unwrap_or(0) + 1;
        // Parts registered before a restart but never acknowledged: fresh URLs, send them.
        if known.iter().any(|p| !p.3) {
            let status = self.fresh_status(path, &asset_id).await?;
            for missing in status.missing {
                let offset = known
                    .iter()
                    .filter(|p| p.0 < missing.number)
                    .map(|p| p.1)
                    .sum();
                self.send_realtime_part(
                    file_id,
                    path,
                    &content_type,
                    missing.number,
                    offset,
                    missing.size,
                    false,
                    missing.url,
                )
                .await?;
            }
            if known.iter().any(|p| p.2) {
                return self.finish_realtime(file_id, path, &asset_id).await;
            }
        }

        let mut last = (u64::MAX, 0i64);
        let mut still_since = Instant::now();
        loop {
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) => {
                    self.journal
                        .finish(file_id, FileState::Failed, Some(&e.to_string()))
                        .await?;
                    return Err(Error::Other(format!(
                        "{} vanished while recording: {e}",
                        path.display()
                    )));
                }
            };
            let (size, mtime) = (meta.len(), mtime_ns(&meta));
            if (size, mtime) != last {
                last = (size, mtime);
                still_since = Instant::now();
            }
            if size > registered + part_size {
                self.register_and_send(
                    file_id,
                    path,
                    &asset_id,
                    &content_type,
                    next,
                    registered,
                    part_size,
                    None,
                )
                .await?;
                registered += part_size;
                next += 1;
                continue;
            }
            if still_since.elapsed() >= options.settle && size > registered {
                let last_part = size - registered;
                self.register_and_send(
                    file_id,
                    path,
                    &asset_id,
                    &content_type,
                    next,
                    registered,
                    last_part,
                    Some(size),
                )
                .await?;
                self.journal.set_size(file_id, size).await?;
                self.journal.set_mtime(file_id, mtime).await?;
                return self.finish_realtime(file_id, path, &asset_id).await;
            }
            tokio::time::sleep(options.scan_interval).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn register_and_send(
        &self,
        file_id: i64,
        path: &Path,
        asset_id: &str,
        content_type: &str,
        number: u32,
        offset: u64,
        size: u64,
        final_size: Option<u64>,
    ) -> Result<(), Error> {
        let is_final = final_size.is_some();
        let body = RealtimeParts {
            parts: vec![RealtimePart {
                number,
                size,
                is_final,
            }],
            asset_filesize: final_size,
            asset_name: None,
        };
        let body = &body;
        let urls = self
            .authed(Some(path), |api, token| async move {
                api.register_parts(&token, asset_id, body).await
            })
            .await?;
        self.journal
            .record_part(file_id, number, size, is_final, false)
            .await?;
        let url = urls
            .upload_urls
            .into_iter()
            .next()
            .ok_or_else(|| Error::Other("the server sent no upload URL".into()))?;
        self.send_realtime_part(
            file_id,
            path,
            content_type,
            number,
            offset,
            size,
            is_final,
            url,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_realtime_part(
        &self,
        file_id: i64,
        path: &Path,
        content_type: &str,
        number: u32,
        offset: u64,
        size: u64,
        is_final: bool,
        url: String,
    ) -> Result<(), Error> {
        self.send_part(&url, path, offset, size, content_type)
            .await?;
        self.journal
            .record_part(file_id, number, size, is_final, true)
            .await?;
        self.events.emit(Event::PartDone {
            file: path.to_owned(),
            number,
            size,
        });
        Ok(())
    }

    async fn finish_realtime(
        &self,
        file_id: i64,
        path: &Path,
        asset_id: &str,
    ) -> Result<(), Error> {
        self.journal
            .finish(file_id, FileState::Complete, None)
            .await?;
        self.events.emit(Event::Completed {
            file: path.to_owned(),
            asset_id: asset_id.to_owned(),
        });
        Ok(())
    }
}

/// Every regular, non-ignored file under `dir`, recursively (hidden folders skipped).
fn scan(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_ignored(&path) {
                continue;
            }
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(path),
                Ok(meta) if meta.is_file() => found.push((path, meta)),
                _ => {}
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_and_system_clutter_is_ignored() {
        for ignored in [
            ".DS_Store",
            "._A001.MOV",
            "~lock",
            "clip.mov.tmp",
            "x.part",
            "Thumbs.db",
            "DESKTOP.INI",
        ] {
            assert!(is_ignored(Path::new(ignored)), "{ignored}");
        }
        for kept in ["A001C001.MOV", "take1.wav", "notes.pdf", "IMG_0001.JPG"] {
            assert!(!is_ignored(Path::new(kept)), "{kept}");
        }
    }
}
