//! The local file-system media store (the default).
//!
//! Layout under the data directory:
//! - `media/<project>/Cloud Devices/<date>/<TYPE>/<device>/<clip>`: finished assets, the
//!   operator's view;
//! - `uploads/<asset id>/<part>-<uuid>.part`: received parts until assembly;
//! - `media/.rushes-tmp/`: assemblies in progress (same file system as the targets, so the
//!   final step is a link, never a copy).
//!
//! Every file becomes visible only complete: written under a temporary name, fsynced,
//! then renamed (parts) or hard-linked (assets, which must never replace anything), with
//! the directory fsynced after.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
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

    /// Streams a part to disk, checking its length as it goes (so an oversized body is cut
    /// off at the first extra byte) and abandoning it if the sender goes quiet. Returns the
    /// name the part is stored under once it is durable.
    pub async fn write_part<S, E>(
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
            loop {
                let chunk = match tokio::time::timeout(idle, body.next()).await {
                    Err(_) => return Err(PartError::Idle(idle)),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(PartError::Body(e.to_string())),
                    Ok(Some(Ok(chunk))) => chunk,
                };
                received += chunk.len() as u64;
                if received > expected {
                    return Err(PartError::WrongLength { expected, received });
                }
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

    /// Removes upload folders that no asset in `live` refers to (left by crashes).
    pub async fn sweep_uploads(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> io::Result<usize> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.uploads).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                tokio::fs::remove_dir_all(entry.path()).await?;
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
        let temp = self.media.join(".rushes-tmp").join(&target.asset_id);
        let sources: Vec<(PathBuf, u64)> = parts
            .iter()
            .map(|p| {
                (
                    self.uploads.join(&target.asset_id).join(&p.stored_as),
                    p.size,
                )
            })
            .collect();
        tokio::task::spawn_blocking(move || assemble_blocking(&sources, &temp, &final_path))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    async fn discard_part(&self, asset_id: &str, stored_as: &str) {
        let _ = tokio::fs::remove_file(self.uploads.join(asset_id).join(stored_as)).await;
    }

    async fn discard_parts(&self, asset_id: &str) {
        let _ = tokio::fs::remove_dir_all(self.uploads.join(asset_id)).await;
    }
}

/// Concatenates the parts into `temp` while hashing, makes it durable, then links it into
/// place without ever replacing a file.
fn assemble_blocking(
    sources: &[(PathBuf, u64)],
    temp: &Path,
    final_path: &Path,
) -> Result<Assembled, AssembleError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    {
        let mut out = std::fs::File::create(temp)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        for (path, expected) in sources {
            let mut part = std::fs::File::open(path)?;
            let mut copied = 0u64;
            loop {
                let n = part.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                copied += n as u64;
            }
            if copied != *expected {
                return Err(io::Error::other(format!(
                    "{} holds {copied} bytes, not {expected}",
                    path.display()
                ))
                .into());
            }
            size += copied;
        }
        out.sync_all()?;
    }
    let sha256 = hex(&hasher.finalize());
    let dir = final_path
        .parent()
        .ok_or_else(|| io::Error::other("asset path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    match std::fs::hard_link(temp, final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Ours from a run that crashed before recording it, or somebody else's file.
            if hash_file(final_path)? != (sha256.clone(), size) {
                let _ = std::fs::remove_file(temp);
                return Err(AssembleError::PathTaken);
            }
        }
        Err(e) => return Err(e.into()),
    }
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_file(temp)?;
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

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}
