//! The local file-system media store (the default).
//!
//! Layout under the data directory:
//! - `media/<project>/Cloud Devices/<date>/<TYPE>/<device>/<clip>`: finished assets, the
//!   operator's view;
//! - `media/.rushes-tmp/<asset id>`: the asset's bytes while it is uploaded and joined
//!   (same file system as the targets, so the final step is a link, never a copy);
//! - `uploads/<asset id>/<part>-<uuid>.part`: parts that cannot go straight to their place
//!   (real-time parts, whose offsets are unknown until every size is, and parts sent again
//!   after they were received) until assembly.
//!
//! A planned upload's parts are written where they belong in the asset's file (its offset
//! is `(n - 1) * part_size`), so each byte reaches the disk once: assembly only hashes the
//! file and links it into place. Every file becomes visible only complete: fsynced before
//! its part is acknowledged, and hard-linked into place (a link never replaces anything),
//! with the directory fsynced after.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{
    AssembleError, Assembled, AssetTarget, BeginError, MediaStore, RemoteUpload, StoredPart,
};
use crate::secrets::hex;
use crate::signing::{PartGrant, UrlSigner};

pub struct LocalStore {
    media: PathBuf,
    uploads: PathBuf,
    signer: UrlSigner,
}

/// Why a part upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("the part must be exactly {expected} bytes; {received} were sent")]
    WrongLength { expected: u64, received: u64 },
    #[error("no data arrived for {0:?}")]
    Idle(Duration),
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

const COPY_BUFFER: usize = 1024 * 1024;

/// `stored_as` of a part written in place in the asset's file.
pub const IN_PLACE: &str = "in-place";

impl LocalStore {
    pub fn new(data_dir: &Path, signer: UrlSigner) -> io::Result<LocalStore> {
        let media = data_dir.join("media");
        let uploads = data_dir.join("uploads");
        std::fs::create_dir_all(media.join(".rushes-tmp"))?;
        std::fs::create_dir_all(&uploads)?;
        Ok(LocalStore {
            media,
            uploads,
            signer,
        })
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// Where a finished asset lives on disk.
    pub fn asset_path(&self, project_dir: &str, path: &str) -> PathBuf {
        self.media.join(project_dir).join(path)
    }

    /// The file a planned asset's parts are written into.
    fn asset_file(&self, asset_id: &str) -> PathBuf {
        self.media.join(".rushes-tmp").join(asset_id)
    }

    /// Streams a part to disk, checking its length as it goes (so an oversized body is cut
    /// off at the first extra byte) and abandoning it if the sender goes quiet. With an
    /// `offset` the part is written there in the asset's file ([`IN_PLACE`]); without, to a
    /// file of its own. Returns the name the part is stored under once it is durable.
    pub async fn write_part<S, E>(
        &self,
        asset_id: &str,
        number: u32,
        expected: u64,
        body: S,
        idle: Duration,
        offset: Option<u64>,
    ) -> Result<String, PartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match offset {
            Some(offset) => {
                self.write_in_place(asset_id, offset, expected, body, idle)
                    .await?;
                Ok(IN_PLACE.to_owned())
            }
            None => {
                self.write_part_file(asset_id, number, expected, body, idle)
                    .await
            }
        }
    }

    /// Writes a part at its offset in the asset's file, in large writes (one per MiB, not
    /// one per network chunk), then flushes the file's data to disk.
    async fn write_in_place<S, E>(
        &self,
        asset_id: &str,
        offset: u64,
        expected: u64,
        mut body: S,
        idle: Duration,
    ) -> Result<(), PartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.asset_file(asset_id);
        let (file, created) = tokio::task::spawn_blocking(move || {
            let created = !path.exists();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            io::Result::Ok((Arc::new(file), created))
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        if created {
            sync_dir(&self.media.join(".rushes-tmp")).await?;
        }
        let mut buffer = Vec::with_capacity(COPY_BUFFER);
        let mut received: u64 = 0;
        let mut written: u64 = 0;
        while let Some(chunk) = next_chunk(&mut body, idle, &mut received, expected).await? {
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= COPY_BUFFER {
                buffer = write_at(&file, buffer, offset + written).await?;
                written = received;
            }
        }
        if received != expected {
            return Err(PartError::WrongLength { expected, received });
        }
        if !buffer.is_empty() {
            write_at(&file, buffer, offset + written).await?;
        }
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(())
    }

    async fn write_part_file<S, E>(
        &self,
        asset_id: &str,
        number: u32,
        expected: u64,
        mut body: S,
        idle: Duration,
    ) -> Result<String, PartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let dir = self.uploads.join(asset_id);
        tokio::fs::create_dir_all(&dir).await?;
        let stored_as = format!("{number:05}-{}.part", uuid::Uuid::new_v4().simple());
        let temp = dir.join(format!(".{stored_as}.tmp"));
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            let mut received: u64 = 0;
            while let Some(chunk) = next_chunk(&mut body, idle, &mut received, expected).await? {
                file.write_all(&chunk).await?;
            }
            if received != expected {
                return Err(PartError::WrongLength { expected, received });
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        tokio::fs::rename(&temp, dir.join(&stored_as)).await?;
        sync_dir(&dir).await?;
        Ok(stored_as)
    }

    /// Removes upload folders and asset files that no asset in `live` refers to (left by
    /// crashes).
    pub async fn sweep_uploads(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for dir in [self.uploads.clone(), self.media.join(".rushes-tmp")] {
            let mut entries = tokio::fs::read_dir(&dir).await?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if live.contains(&name) {
                    continue;
                }
                if entry.file_type().await?.is_dir() {
                    tokio::fs::remove_dir_all(entry.path()).await?;
                } else {
                    tokio::fs::remove_file(entry.path()).await?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl MediaStore for LocalStore {
    fn part_url(
        &self,
        base_url: &str,
        asset_id: &str,
        _upload: Option<&RemoteUpload>,
        number: u32,
        size: u64,
        expires: i64,
    ) -> Option<String> {
        let grant = PartGrant {
            asset_id: asset_id.to_owned(),
            number,
            size,
            expires,
        };
        Some(format!(
            "{base_url}/upload/{asset_id}/{number}?{}",
            self.signer.query(&grant)
        ))
    }

    async fn begin_upload(
        &self,
        _key: &str,
        _filetype: &str,
    ) -> Result<Option<RemoteUpload>, BeginError> {
        // Parts arrive at this server; the path is checked on disk when they are joined.
        Ok(None)
    }

    async fn assemble(
        &self,
        target: &AssetTarget,
        parts: &[StoredPart],
    ) -> Result<Assembled, AssembleError> {
        let final_path = self.asset_path(&target.project_dir, &target.path);
        let temp = self.asset_file(&target.asset_id);
        let sources: Vec<Source> = parts
            .iter()
            .map(|p| Source {
                path: (p.stored_as != IN_PLACE)
                    .then(|| self.uploads.join(&target.asset_id).join(&p.stored_as)),
                size: p.size,
                offset: target
                    .part_size
                    .map(|size| u64::from(p.number.saturating_sub(1)) * size),
            })
            .collect();
        tokio::task::spawn_blocking(move || assemble_blocking(&sources, &temp, &final_path))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    async fn discard_part(&self, asset_id: &str, stored_as: &str) {
        if stored_as != IN_PLACE {
            let _ = tokio::fs::remove_file(self.uploads.join(asset_id).join(stored_as)).await;
        }
    }

    async fn discard_parts(&self, asset_id: &str) {
        let _ = tokio::fs::remove_dir_all(self.uploads.join(asset_id)).await;
        let _ = tokio::fs::remove_file(self.asset_file(asset_id)).await;
    }
}

/// Where the bytes of one part are: in a file of its own (`path`), or already in the
/// asset's file; and where they belong in it (`offset`; `None`: after the previous part).
struct Source {
    path: Option<PathBuf>,
    size: u64,
    offset: Option<u64>,
}

/// Brings every part into `temp` (copying only those not written there in place), makes
/// it durable, hashes it, then links it into place without ever replacing a file.
fn assemble_blocking(
    sources: &[Source],
    temp: &Path,
    final_path: &Path,
) -> Result<Assembled, AssembleError> {
    let in_place = sources.iter().any(|s| s.offset.is_some());
    if !in_place {
        // Rebuilt from its parts: a new file, never one an earlier run linked into place.
        match std::fs::remove_file(temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    {
        // A planned asset's file already holds what was written in place; anything else
        // is built from its parts.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!in_place)
            .open(temp)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut end = 0u64;
        let mut copied_any = !in_place;
        for source in sources {
            let offset = source.offset.unwrap_or(end);
            end = offset + source.size;
            let Some(path) = &source.path else {
                continue;
            };
            copied_any = true;
            out.seek(SeekFrom::Start(offset))?;
            let mut part = std::fs::File::open(path)?;
            let mut copied = 0u64;
            loop {
                let n = part.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                copied += n as u64;
            }
            if copied != source.size {
                return Err(io::Error::other(format!(
                    "{} holds {copied} bytes, not {}",
                    path.display(),
                    source.size
                ))
                .into());
            }
        }
        if copied_any {
            out.sync_all()?;
        }
    }
    let (sha256, size) = hash_file(temp)?;
    let expected: u64 = sources.iter().map(|s| s.size).sum();
    if size != expected {
        return Err(io::Error::other(format!(
            "{} holds {size} bytes, not {expected}",
            temp.display()
        ))
        .into());
    }
    let dir = final_path
        .parent()
        .ok_or_else(|| io::Error::other("asset path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    match std::fs::hard_link(temp, final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Ours from a run that crashed before recording it, or somebody else's file
            // (then the asset takes another name; its bytes stay in `temp` for that).
            if hash_file(final_path)? != (sha256.clone(), size) {
                return Err(AssembleError::PathTaken);
            }
        }
        Err(e) => return Err(e.into()),
    }
    std::fs::File::open(dir)?.sync_all()?;
    // `temp` goes with the parts once the asset is recorded complete (`discard_parts`): a
    // run interrupted before that finds it again, linked to the same bytes.
    Ok(Assembled { sha256, size })
}

fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// The next chunk of a part's body, counting it into `received`: an error if the sender
/// goes quiet for `idle`, the body breaks, or more than `expected` bytes arrive (cut off at
/// the first extra chunk); `None` at the end.
async fn next_chunk<S, E>(
    body: &mut S,
    idle: Duration,
    received: &mut u64,
    expected: u64,
) -> Result<Option<Bytes>, PartError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let chunk = match tokio::time::timeout(idle, body.next()).await {
        Err(_) => return Err(PartError::Idle(idle)),
        Ok(None) => return Ok(None),
        Ok(Some(Err(e))) => return Err(PartError::Body(e.to_string())),
        Ok(Some(Ok(chunk))) => chunk,
    };
    *received += chunk.len() as u64;
    if *received > expected {
        return Err(PartError::WrongLength {
            expected,
            received: *received,
        });
    }
    Ok(Some(chunk))
}

/// `pwrite`s `buffer` at `offset` on the blocking pool; returns the buffer, emptied, for
/// reuse.
async fn write_at(
    file: &Arc<std::fs::File>,
    mut buffer: Vec<u8>,
    offset: u64,
) -> io::Result<Vec<u8>> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        file.write_all_at(&buffer, offset)?;
        buffer.clear();
        Ok(buffer)
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}
