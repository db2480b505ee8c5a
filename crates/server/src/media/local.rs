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
//!
//! Written in place, a part's bytes go where a finished clip's will be: so one upload at a
//! time writes a part's region ([`LocalStore::claim_region`]), and once assembly starts no
//! write reaches the file at all (the asset's gate is sealed; a late write is drained and
//! dropped). ARCHITECTURE.md, Invariants.

use std::collections::HashMap;
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
    /// SHA-256 of each planned asset's file so far, fed while its parts arrive.
    hashes: RunningHashes,
    /// What keeps writes out of an asset's file once it is being assembled.
    gates: Gates,
    /// Folders made durable (`uploads/<asset>`, the clips' `<date>/<TYPE>/<device>`).
    dirs: Arc<SyncedDirs>,
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
    /// The asset is being assembled (or is finished): nothing may reach its bytes any more.
    /// The body was read to its end and dropped.
    #[error("the asset is sealed; the part was discarded")]
    Sealed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

const COPY_BUFFER: usize = 1024 * 1024;
/// Reads for hashing: small enough to stay in the CPU's cache between the read and the hash,
/// and to be cheap to allocate (zeroed) once per part.
const HASH_BUFFER: usize = 256 * 1024;
/// At most this many chunks per `pwritev` (the kernel takes up to 1024).
const MAX_SLICES: usize = 512;

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
            hashes: RunningHashes::default(),
            gates: Gates::default(),
            dirs: Arc::default(),
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

    /// Claims `[offset, offset + len)` of a planned asset's file for one upload to write in
    /// place: `None` while another upload holds any of it (a stalled first copy of the part,
    /// say), and then this copy goes to a file of its own. The caller keeps the claim until
    /// its part is recorded (or it gave up): so whichever copy is recorded last is what the
    /// region holds whole, never bytes of two uploads mixed.
    pub fn claim_region(&self, asset_id: &str, offset: u64, len: u64) -> Option<Arc<RegionClaim>> {
        let gate = self.gates.gate(asset_id);
        let id = {
            let mut state = gate.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .claims
                .values()
                .any(|&claimed| ranges_overlap(claimed, (offset, len)))
            {
                return None;
            }
            state.next_claim += 1;
            let id = state.next_claim;
            state.claims.insert(id, (offset, len));
            id
        };
        Some(Arc::new(RegionClaim { gate, id, offset }))
    }

    /// Streams a part to disk, checking its length as it goes (so an oversized body is cut
    /// off at the first extra byte) and abandoning it if the sender goes quiet. With a
    /// claim ([`LocalStore::claim_region`]) the part is written in its region of the
    /// asset's file ([`IN_PLACE`]); without, to a file of its own. Returns the name the part
    /// is stored under once it is durable.
    pub async fn write_part<S, E>(
        &self,
        asset_id: &str,
        number: u32,
        expected: u64,
        body: S,
        idle: Duration,
        in_place: Option<Arc<RegionClaim>>,
    ) -> Result<String, PartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match in_place {
            Some(claim) => {
                self.write_in_place(asset_id, claim, expected, body, idle)
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
        claim: Arc<RegionClaim>,
        expected: u64,
        mut body: S,
        idle: Duration,
    ) -> Result<(), PartError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = claim.offset;
        let path = self.asset_file(asset_id);
        let gate = claim.gate.clone();
        // Opened only while the gate is open: once sealed, the name may be the finished
        // clip's (linked) or gone, and neither may be written.
        let opened = {
            let gate = gate.clone();
            tokio::task::spawn_blocking(move || {
                gate.land(|| {
                    let created = !path.exists();
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    io::Result::Ok((Arc::new(file), created))
                })
            })
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
        };
        let Ok(opened) = opened else {
            return drain_sealed(body, idle, 0, expected).await;
        };
        let (file, created) = opened?;
        if created {
            sync_dir(&self.media.join(".rushes-tmp")).await?;
        }
        // A part that continues what is hashed (a single-part file such as a 1 MiB still, the
        // first of a big file's parts in flight) is hashed from the chunks it writes: it is
        // not read back.
        let (write, mut hasher) = self.hashes.begin_write(asset_id, offset, expected);
        let write = Arc::new(write);
        // Network chunks are gathered, not copied, and written with one `pwritev` per MiB.
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut gathered: usize = 0;
        let mut written: u64 = 0;
        let mut received: u64 = 0;
        while let Some(chunk) = next_chunk(&mut body, idle, &mut received, expected).await? {
            if chunk.is_empty() {
                continue;
            }
            gathered += chunk.len();
            chunks.push(chunk);
            if gathered >= COPY_BUFFER || chunks.len() >= MAX_SLICES {
                (chunks, hasher) =
                    match write_chunks_at(&file, chunks, offset + written, hasher, &write, &claim)
                        .await
                    {
                        Err(PartError::Sealed) => {
                            return drain_sealed(body, idle, received, expected).await;
                        }
                        other => other?,
                    };
                written += gathered as u64;
                gathered = 0;
            }
        }
        if received != expected {
            return Err(PartError::WrongLength { expected, received });
        }
        if !chunks.is_empty() {
            (_, hasher) =
                write_chunks_at(&file, chunks, offset + written, hasher, &write, &claim).await?;
        }
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        let hashes = self.hashes.clone();
        let (asset_id, path) = (asset_id.to_owned(), self.asset_file(asset_id));
        tokio::task::spawn_blocking(move || hashes.complete(&asset_id, &path, &write, hasher))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
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
        if self.gates.gate(asset_id).is_sealed() {
            // Its copy would never be used; nor leave a folder behind the asset's clean-up.
            return drain_sealed(body, idle, 0, expected).await;
        }
        let dir = self.uploads.join(asset_id);
        {
            // Durable before the part is: its entry in `uploads/` is fsynced once, and
            // every part of the asset waits for that.
            let (dirs, uploads, dir) = (self.dirs.clone(), self.uploads.clone(), dir.clone());
            tokio::task::spawn_blocking(move || dirs.ensure(&uploads, &dir))
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
        }
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

    /// Removes the upload folders and asset files (left by crashes) of assets that are
    /// finished or unknown. `leftover` is asked about each file's asset as the file is
    /// reached, never from a list made before: the server is serving meanwhile (cameras
    /// reconnect the moment it is back), and an upload begun after such a list was made
    /// would lose parts already acknowledged.
    pub async fn sweep_uploads<F, Fut>(&self, leftover: F) -> io::Result<usize>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = io::Result<bool>>,
    {
        let mut removed = 0;
        for dir in [self.uploads.clone(), self.media.join(".rushes-tmp")] {
            let mut entries = tokio::fs::read_dir(&dir).await?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `<asset>`, or `<asset>.damaged`.
                let asset_id = name.split('.').next().unwrap_or_default().to_owned();
                if !leftover(asset_id).await? {
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
    fn min_part_size(&self) -> u64 {
        // No minimum here: parts are written at their offsets, whatever their size. A
        // camera maker tests against S3-backed Frame.io, where a count giving parts under
        // 5 MiB would not be honoured; but a device that asks for one, and then PUTs the
        // parts it planned whatever the answer says (as the camera in the field does),
        // is better served by the plan it asked for, which this store can take.
        1
    }

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
        let hashes = self.hashes.clone();
        let asset_id = target.asset_id.clone();
        let hold = target.hold;
        let gate = self.gates.gate(&asset_id);
        let (dirs, media) = (self.dirs.clone(), self.media.clone());
        tokio::task::spawn_blocking(move || {
            // From here on no write reaches the file: those under way are waited for, and
            // any later one is turned away.
            gate.seal();
            let running = hashes.take(&asset_id);
            let damaged = temp.with_extension("damaged");
            if damaged.exists() {
                // An earlier attempt found the file had lost bytes: what a new one would
                // build around the missing parts is no better.
                return Err(io::Error::other(format!(
                    "{} lost bytes while its parts arrived (see {})",
                    temp.display(),
                    damaged.display()
                ))
                .into());
            }
            let copied_any = assemble_blocking(&sources, &temp)?;
            let assembled = finish_hash(&temp, running, copied_any, &sources)?;
            if !hold {
                link_into_place(&temp, &final_path, &assembled, &dirs, &media)?;
            }
            Ok(assembled)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    async fn place(
        &self,
        target: &AssetTarget,
        assembled: &Assembled,
    ) -> Result<(), AssembleError> {
        let final_path = self.asset_path(&target.project_dir, &target.path);
        let temp = self.asset_file(&target.asset_id);
        let assembled = assembled.clone();
        let (dirs, media) = (self.dirs.clone(), self.media.clone());
        tokio::task::spawn_blocking(move || {
            link_into_place(&temp, &final_path, &assembled, &dirs, &media)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    async fn discard_duplicate(&self, target: &AssetTarget) -> io::Result<()> {
        // Held, so never linked: the bytes are only in the asset's own files.
        self.discard_parts(&target.asset_id).await;
        Ok(())
    }

    async fn discard_part(&self, asset_id: &str, stored_as: &str) {
        if stored_as != IN_PLACE {
            let _ = tokio::fs::remove_file(self.uploads.join(asset_id).join(stored_as)).await;
        }
    }

    async fn discard_parts(&self, asset_id: &str) {
        self.hashes.forget(asset_id);
        let _ = tokio::fs::remove_dir_all(self.uploads.join(asset_id)).await;
        let _ = tokio::fs::remove_file(self.asset_file(asset_id)).await;
        // Only now that the name is gone: a writer let in after this opens a new file, never
        // the clip the name was linked to.
        self.gates.forget(asset_id);
        self.dirs.forget(&self.uploads.join(asset_id));
    }

    async fn open_clip(
        &self,
        clip: super::ClipLocation<'_>,
    ) -> io::Result<Option<super::ClipBytes>> {
        read_clip_file(self.asset_path(clip.project_dir, clip.path)).await
    }
}

/// Where the bytes of one part are: in a file of its own (`path`), or already in the
/// asset's file; and where they belong in it (`offset`; `None`: after the previous part).
struct Source {
    path: Option<PathBuf>,
    size: u64,
    offset: Option<u64>,
}

/// Brings every part into `temp` (copying only those not written there in place) and makes
/// it durable; true if anything was copied in (then the running hash no longer holds).
fn assemble_blocking(sources: &[Source], temp: &Path) -> Result<bool, AssembleError> {
    let in_place = sources.iter().any(|s| s.offset.is_some());
    if !in_place {
        // Rebuilt from its parts: a new file, never one an earlier run linked into place.
        match std::fs::remove_file(temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let copied_any = {
        // A planned asset's file already holds what was written in place; anything else
        // is built from its parts.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!in_place)
            .open(temp)?;
        // Allocated (and zeroed) only if a part is to be copied: usually none is.
        let mut buf = Vec::new();
        let mut end = 0u64;
        let mut copied_any = !in_place;
        for source in sources {
            let offset = source.offset.unwrap_or(end);
            end = offset + source.size;
            let Some(path) = &source.path else {
                continue;
            };
            copied_any = true;
            if buf.is_empty() {
                buf = vec![0u8; COPY_BUFFER];
            }
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
        copied_any
    };
    Ok(copied_any)
}

/// Hashes the joined file `temp`, checking it against what was received: its size against
/// the parts', and, where the parts were hashed as they arrived, that the file still holds
/// those bytes. A file removed or truncated while its parts arrived (an operator's
/// clean-up, a sweep) reads back short, or with a hole where later parts re-created it;
/// it is never put in place under the hash of the bytes it lost.
fn finish_hash(
    temp: &Path,
    running: Option<(Sha256, u64)>,
    copied_any: bool,
    sources: &[Source],
) -> Result<Assembled, AssembleError> {
    let expected: u64 = sources.iter().map(|s| s.size).sum();
    let len = std::fs::metadata(temp)?.len();
    if len != expected {
        return Err(io::Error::other(format!(
            "{} holds {len} bytes, not the {expected} received: it was truncated or removed while the parts arrived",
            temp.display()
        ))
        .into());
    }
    // What was hashed as the parts arrived is still what the file holds unless a part was
    // copied in just now; then the file is hashed from the start.
    let (hasher, hashed) = match running {
        Some(running) if !copied_any => running,
        _ => (Sha256::new(), 0),
    };
    if hashed > 0 && !holds_what_was_hashed(temp, &hasher, hashed)? {
        // Kept aside, so that a retry does not take the damaged file for the clip.
        let damaged = temp.with_extension("damaged");
        std::fs::rename(temp, &damaged)?;
        return Err(io::Error::other(format!(
            "{} no longer holds the bytes received (it was removed or truncated while the parts arrived); kept as {}",
            temp.display(),
            damaged.display()
        ))
        .into());
    }
    let (sha256, size) = hash_file_from(temp, hasher, hashed)?;
    if size != expected {
        return Err(io::Error::other(format!(
            "{} holds {size} bytes, not {expected}",
            temp.display()
        ))
        .into());
    }
    Ok(Assembled { sha256, size })
}

/// Whether the first `hashed` bytes of `temp` are still those `hasher` saw. Trusted as they
/// are unless the file has a hole among them (bytes written are never a hole where files
/// are stored; a file removed or cut short, then extended by later parts, is): then they
/// are read back and compared.
fn holds_what_was_hashed(temp: &Path, hasher: &Sha256, hashed: u64) -> io::Result<bool> {
    let file = std::fs::File::open(temp)?;
    // A file system that cannot tell answers its end: no hole.
    let first_hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(0)).unwrap_or(0);
    if first_hole >= hashed {
        return Ok(true);
    }
    let mut again = Sha256::new();
    hash_range(&file, &mut again, 0, hashed)?;
    Ok(again.finalize() == hasher.clone().finalize())
}

/// Links the joined file `temp` into place without ever replacing a file.
fn link_into_place(
    temp: &Path,
    final_path: &Path,
    assembled: &Assembled,
    dirs: &SyncedDirs,
    media: &Path,
) -> Result<(), AssembleError> {
    let Assembled { sha256, size } = assembled;
    let dir = final_path
        .parent()
        .ok_or_else(|| io::Error::other("asset path has no folder"))?;
    dirs.ensure(media, dir)?;
    match std::fs::hard_link(temp, final_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Ours from a run that crashed before recording it, or somebody else's file
            // (then the asset takes another name; its bytes stay in `temp` for that).
            if hash_file(final_path)? != (sha256.clone(), *size) {
                return Err(AssembleError::PathTaken);
            }
        }
        Err(e) => return Err(e.into()),
    }
    std::fs::File::open(dir)?.sync_all()?;
    // `temp` goes with the parts once the asset is recorded complete (`discard_parts`): a
    // run interrupted before that finds it again, linked to the same bytes.
    Ok(())
}

fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    hash_file_from(path, Sha256::new(), 0)
}

/// Finishes `hasher`, which has seen the file's first `start` bytes, over the rest of it.
fn hash_file_from(path: &Path, mut hasher: Sha256, start: u64) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    // Usually nothing is left (the parts were hashed as they arrived): no buffer to speak of.
    let left = file.metadata()?.len().saturating_sub(start);
    let mut buf = vec![
        0u8;
        usize::try_from(left)
            .unwrap_or(HASH_BUFFER)
            .clamp(1, HASH_BUFFER)
    ];
    let mut size = start;
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

/// Reads the rest of a body whose part is not wanted (its asset was sealed), so the device
/// hears 200 as for any late part (c2c-api.md §4), and reports [`PartError::Sealed`].
async fn drain_sealed<T, S, E>(
    mut body: S,
    idle: Duration,
    mut received: u64,
    expected: u64,
) -> Result<T, PartError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while next_chunk(&mut body, idle, &mut received, expected)
        .await?
        .is_some()
    {}
    Err(PartError::Sealed)
}

/// Writes `chunks` back to back from `offset` (`pwritev`, on the blocking pool), feeding
/// them to `hasher` if there is one; returns the vector, emptied, for reuse, and the hasher.
/// `write` is held until the bytes are in the file, even if the caller is gone by then.
/// Nothing is written once the asset's gate is sealed ([`PartError::Sealed`]).
async fn write_chunks_at(
    file: &Arc<std::fs::File>,
    mut chunks: Vec<Bytes>,
    offset: u64,
    mut hasher: Option<Sha256>,
    write: &Arc<InPlaceWrite>,
    claim: &Arc<RegionClaim>,
) -> Result<(Vec<Bytes>, Option<Sha256>), PartError> {
    let file = file.clone();
    let write = write.clone();
    // Held until the bytes are in: the region stays this upload's while they land.
    let claim = claim.clone();
    tokio::task::spawn_blocking(move || {
        let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        write.landing(offset, total);
        let written = claim.gate.land(|| write_all_at(&file, &chunks, offset));
        write.landed();
        written.map_err(|Sealed| PartError::Sealed)??;
        // Hashed once written, while the disk takes them.
        if let Some(hasher) = &mut hasher {
            for chunk in &chunks {
                hasher.update(chunk);
            }
        }
        chunks.clear();
        Ok((chunks, hasher))
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Writes `chunks` back to back from `offset` with `pwritev`, then starts their writeback.
fn write_all_at(file: &std::fs::File, chunks: &[Bytes], offset: u64) -> io::Result<()> {
    let mut at = offset;
    let mut first = 0;
    // Bytes of `chunks[first]` already written (a write may stop inside a chunk).
    let mut done_in_first = 0;
    loop {
        // Empty chunks carry nothing; `pwritev` of nothing but them would return 0.
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == chunks.len() {
            break;
        }
        let slices: Vec<io::IoSlice<'_>> = std::iter::once(&chunks[first][done_in_first..])
            .chain(chunks[first + 1..].iter().map(|c| &c[..]))
            .map(io::IoSlice::new)
            .collect();
        let mut n = rustix::io::pwritev(file, &slices, at)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        at += n as u64;
        // Skip what went out; a chunk written in part keeps its rest.
        while n > 0 {
            let left = chunks[first].len() - done_in_first;
            if n >= left {
                n -= left;
                first += 1;
                done_in_first = 0;
            } else {
                done_in_first += n;
                n = 0;
            }
        }
    }
    // Start writing these pages to disk now rather than at the part's `fdatasync`, so the
    // disk stays busy while the network delivers the rest. (On Linux, DONTNEED starts
    // writeback of dirty pages and drops only clean ones.)
    if let Some(len) = std::num::NonZeroU64::new(at - offset) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    Ok(())
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

/// SHA-256 of planned assets' files, computed while their parts arrive rather than in one
/// pass after the last. A part that starts where the hash has got to (every single-part
/// file, and the first of a big file's parts in flight) is hashed from its bytes as they
/// are written. Any other part, once durable, is read back and hashed if it continues what
/// was hashed (from the page cache, where it just went), or left for the part before it
/// to pick up. Assembly then hashes only what is left, usually nothing. Kept in memory:
/// after a restart, or for parts another server received, assembly hashes the file itself.
#[derive(Clone, Default)]
struct RunningHashes(Arc<std::sync::Mutex<HashMap<String, Arc<RunningHash>>>>);

#[derive(Default)]
struct RunningHash {
    state: std::sync::Mutex<HashState>,
    /// Signalled when a thread stops hashing (assembly waits for it).
    idle: std::sync::Condvar,
}

struct HashState {
    /// `None` while a thread is hashing (it holds the hasher), or once given up.
    hasher: Option<Sha256>,
    /// The file's first `hashed` bytes are in the hasher.
    hashed: u64,
    /// Durable parts not yet hashed: offset → length.
    waiting: std::collections::BTreeMap<u64, u64>,
    /// The part a thread is reading back and hashing (it holds the hasher): offset, length.
    reading: Option<(u64, u64)>,
    /// In-place writes in progress, by id ([`InPlaceWrite`]).
    writing: HashMap<u64, Writing>,
    next_write: u64,
    /// The hash cannot be trusted: part of the file was written twice, or bytes landed
    /// where it had already been.
    broken: bool,
}

impl Default for HashState {
    fn default() -> HashState {
        HashState {
            hasher: Some(Sha256::new()),
            hashed: 0,
            waiting: Default::default(),
            reading: None,
            writing: HashMap::new(),
            next_write: 0,
            broken: false,
        }
    }
}

struct Writing {
    offset: u64,
    len: u64,
    /// Another write of an overlapping range ran while this one did.
    disturbed: bool,
    /// The bytes it is putting into the file right now (one `pwritev`): offset, length.
    landing: Option<(u64, u64)>,
}

/// An in-place write of part of an asset's file, from [`RunningHashes::begin_write`]. Two
/// writes of overlapping ranges at once disturb each other: the file may end up with some
/// bytes of each. Each batch of bytes it puts into the file is announced
/// ([`InPlaceWrite::landing`]): bytes landing where the hash has been (or is being read
/// back) make the hash untrustworthy, whether the write then completes or fails. A write
/// that fails without landing anything there (a stale upload that times out after its
/// retry was hashed) costs nothing.
struct InPlaceWrite {
    entry: Arc<RunningHash>,
    id: u64,
    offset: u64,
    len: u64,
}

impl InPlaceWrite {
    /// The write is over; returns whether it was disturbed. `state` is its entry's.
    fn unregister(&self, state: &mut HashState) -> bool {
        state.writing.remove(&self.id).is_none_or(|w| w.disturbed)
    }

    #[cfg(test)]
    fn finish(&self) -> bool {
        let mut state = self.entry.state.lock().unwrap_or_else(|e| e.into_inner());
        self.unregister(&mut state)
    }

    /// Bytes `[at, at + len)` are about to go into the file.
    fn landing(&self, at: u64, len: u64) {
        let mut state = self.entry.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.hashed_over(at, len) {
            // Under what was hashed, or what is being read back: the file no longer
            // holds what the hash saw.
            state.broken = true;
        }
        if let Some(this) = state.writing.get_mut(&self.id) {
            this.landing = Some((at, len));
        }
    }

    /// The bytes announced by [`InPlaceWrite::landing`] are in the file (or failed to go).
    fn landed(&self) {
        let mut state = self.entry.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(this) = state.writing.get_mut(&self.id) {
            this.landing = None;
        }
    }
}

impl Drop for InPlaceWrite {
    fn drop(&mut self) {
        // Completed (then this finds nothing), failed, or its request went away. Its
        // blocking writes hold it, so none is still landing; what they landed was checked
        // as it went.
        let mut state = self.entry.state.lock().unwrap_or_else(|e| e.into_inner());
        self.unregister(&mut state);
    }
}

/// Folders this process has made durable: created if missing and their entry fsynced in
/// their parent, once each. A file fsynced in a folder whose own entry is not durable can
/// vanish with it in a crash, so nothing is acknowledged before its folder chain is synced;
/// a caller finding a folder another is creating waits for that one's fsync rather than
/// going on without it.
#[derive(Default)]
struct SyncedDirs {
    done: std::sync::Mutex<HashMap<PathBuf, Arc<std::sync::Mutex<bool>>>>,
    /// The parents fsynced, in order (what the tests can see of it).
    #[cfg(test)]
    synced: std::sync::Mutex<Vec<PathBuf>>,
}

impl SyncedDirs {
    /// Makes `dir`, below `root` (which exists), and each folder between them durable
    /// (blocking).
    fn ensure(&self, root: &Path, dir: &Path) -> io::Result<()> {
        let below = dir.strip_prefix(root).map_err(|_| {
            io::Error::other(format!("{} is outside {}", dir.display(), root.display()))
        })?;
        let mut path = root.to_owned();
        for component in below.components() {
            let parent = path.clone();
            path.push(component);
            let once = self
                .done
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(path.clone())
                .or_default()
                .clone();
            let mut done = once.lock().unwrap_or_else(|e| e.into_inner());
            // Made and synced by this process, and still there: an operator may have
            // removed or moved a folder (a day's, a device's) since, and then it is made
            // and synced again rather than every later clip of it failing to link.
            if *done && path.is_dir() {
                continue;
            }
            match std::fs::create_dir(&path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                // Found already there (made by an earlier run, which may have crashed before
                // its fsync): synced all the same.
                _ => {}
            }
            std::fs::File::open(&parent)?.sync_all()?;
            #[cfg(test)]
            self.synced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(parent);
            *done = true;
        }
        Ok(())
    }

    /// `dir` was removed: a folder of that name made later is synced again.
    fn forget(&self, dir: &Path) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(dir);
    }
}

/// The gates of the assets being uploaded to this process: an asset's gate is open while
/// its parts arrive and sealed, for good, when assembly starts. A write of the asset's file
/// enters it for each batch of bytes ([`Gate::land`]); sealing waits for those inside to
/// leave, and turns away every later one. So once assembly reads and links the file, no byte
/// of it changes, whatever a stalled or misbehaving upload does afterwards: it cannot be a
/// matter of timing, as a lock taken and checked in several places would be.
#[derive(Default)]
struct Gates(std::sync::Mutex<HashMap<String, Arc<Gate>>>);

impl Gates {
    fn gate(&self, asset_id: &str) -> Arc<Gate> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(asset_id.to_owned()).or_default().clone()
    }

    fn forget(&self, asset_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(asset_id);
    }
}

#[derive(Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    /// Signalled when the last write inside leaves (sealing waits for it).
    empty: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    sealed: bool,
    /// Writes between entering and leaving.
    inside: usize,
    /// Regions of the file held by one upload each ([`RegionClaim`]): id → (offset, length).
    claims: HashMap<u64, (u64, u64)>,
    next_claim: u64,
}

/// A region of an asset's file that one upload alone may write, from
/// [`LocalStore::claim_region`]; released when the last handle goes.
pub struct RegionClaim {
    gate: Arc<Gate>,
    id: u64,
    offset: u64,
}

impl Drop for RegionClaim {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        state.claims.remove(&self.id);
    }
}

/// The gate was sealed: the write did not happen.
#[derive(Debug)]
struct Sealed;

impl Gate {
    fn is_sealed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).sealed
    }

    /// Runs `write` unless the gate is sealed; sealing waits until it has returned.
    fn land<T>(&self, write: impl FnOnce() -> T) -> Result<T, Sealed> {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.sealed {
                return Err(Sealed);
            }
            state.inside += 1;
        }
        // Leaves on the way out, even by a panic: a seal must never wait for ever.
        struct Leave<'a>(&'a Gate);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
                state.inside -= 1;
                if state.inside == 0 {
                    self.0.empty.notify_all();
                }
            }
        }
        let _leave = Leave(self);
        Ok(write())
    }

    /// Closes the gate for good and waits for the writes inside to leave (blocking).
    fn seal(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.sealed = true;
        while state.inside > 0 {
            state = self.empty.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Whether two ranges of a file, each (offset, length), share a byte.
fn ranges_overlap((a, a_len): (u64, u64), (b, b_len): (u64, u64)) -> bool {
    a < b + b_len && b < a + a_len
}

impl HashState {
    /// Whether `[offset, offset + len)` was hashed already or is being read back to be.
    fn hashed_over(&self, offset: u64, len: u64) -> bool {
        offset < self.hashed
            || self
                .reading
                .is_some_and(|reading| ranges_overlap(reading, (offset, len)))
    }

    /// Whether `[offset, offset + len)` was hashed already, is being hashed, or waits to be:
    /// then that part of the file was written twice, and what was hashed may not be what
    /// the file holds.
    fn overlaps(&self, offset: u64, len: u64) -> bool {
        self.hashed_over(offset, len)
            || self
                .waiting
                .range(..offset + len)
                .next_back()
                .is_some_and(|(&o, &l)| o + l > offset)
    }
}

impl RunningHashes {
    fn entry(&self, asset_id: &str) -> Arc<RunningHash> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(asset_id.to_owned()).or_default().clone()
    }

    /// A part written whole, `[offset, offset + len)`, without a hasher.
    #[cfg(test)]
    fn add(&self, asset_id: &str, path: &Path, offset: u64, len: u64) {
        let (write, _) = self.begin_write(asset_id, offset, len);
        self.complete(asset_id, path, &write, None);
    }

    /// An in-place write of `[offset, offset + len)` begins. With it, the hash of the file
    /// up to `offset` if that is exactly how far it has got: the write can feed its bytes
    /// to it, then give it back with [`RunningHashes::complete`] instead of being read
    /// back.
    fn begin_write(&self, asset_id: &str, offset: u64, len: u64) -> (InPlaceWrite, Option<Sha256>) {
        let entry = self.entry(asset_id);
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut disturbed = false;
        for other in state.writing.values_mut() {
            if ranges_overlap((other.offset, other.len), (offset, len)) {
                other.disturbed = true;
                disturbed = true;
            }
        }
        let id = state.next_write;
        state.next_write += 1;
        state.writing.insert(
            id,
            Writing {
                offset,
                len,
                disturbed,
                landing: None,
            },
        );
        let hasher = if !state.broken && state.hashed == offset {
            state.hasher.clone()
        } else {
            None
        };
        drop(state);
        let write = InPlaceWrite {
            entry,
            id,
            offset,
            len,
        };
        (write, hasher)
    }

    /// The in-place write is complete and its range of the asset's file (`path`) durable:
    /// hash it and any parts waiting behind it, unless another thread is already at it.
    /// With `hasher` (from [`RunningHashes::begin_write`], fed the write's bytes), it
    /// becomes the running hash, unless the hash moved meanwhile or another write of the
    /// range ran at the same time (the file may hold some of its bytes): then the part is
    /// read back like any other, or found written twice. All under one lock, so that a
    /// write starting just after is seen by whatever follows it.
    fn complete(&self, asset_id: &str, path: &Path, write: &InPlaceWrite, hasher: Option<Sha256>) {
        let (offset, len) = (write.offset, write.len);
        let mut state = write.entry.state.lock().unwrap_or_else(|e| e.into_inner());
        let disturbed = write.unregister(&mut state);
        let overlaps = state.overlaps(offset, len);
        match hasher {
            Some(hasher)
                if !disturbed
                    && !overlaps
                    && !state.broken
                    && state.hashed == offset
                    && state.hasher.is_some() =>
            {
                state.hasher = Some(hasher);
                state.hashed = offset + len;
            }
            _ => {
                if overlaps {
                    // A part written again in place (its first copy was never recorded).
                    state.broken = true;
                }
                state.waiting.insert(offset, len);
            }
        }
        drop(state);
        self.catch_up(asset_id, &write.entry, path);
    }

    /// Reads back and hashes the parts waiting where the hash has got to, in order, unless
    /// another thread holds the hasher (it will do the same when it is done).
    fn catch_up(&self, asset_id: &str, entry: &RunningHash, path: &Path) {
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut file: Option<std::fs::File> = None;
        while !state.broken {
            let start = state.hashed;
            let Some(len) = state.waiting.get(&start).copied() else {
                break;
            };
            if state
                .writing
                .values()
                .filter_map(|w| w.landing)
                .any(|landing| ranges_overlap(landing, (start, len)))
            {
                // Bytes going in as it would read them: what it hashes may not stay.
                state.broken = true;
                break;
            }
            let Some(mut hasher) = state.hasher.take() else {
                break;
            };
            state.waiting.remove(&start);
            state.reading = Some((start, len));
            drop(state);
            let read = (|| {
                let file = match &mut file {
                    Some(f) => f,
                    None => file.insert(std::fs::File::open(path)?),
                };
                hash_range(file, &mut hasher, start, len)
            })();
            state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
            state.reading = None;
            match read {
                Ok(()) => {
                    state.hashed = start + len;
                    state.hasher = Some(hasher);
                }
                Err(e) => {
                    tracing::debug!(asset = asset_id, error = %e, "hashing a part as it arrived failed; assembly will hash the file");
                    state.broken = true;
                }
            }
            entry.idle.notify_all();
        }
    }

    /// The hash so far and how many bytes it covers, once no thread is adding to it.
    fn take(&self, asset_id: &str) -> Option<(Sha256, u64)> {
        let entry = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(asset_id)?;
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.hasher.is_none() && !state.broken {
            state = entry.idle.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.broken {
            return None;
        }
        let hashed = state.hashed;
        state.hasher.take().map(|h| (h, hashed))
    }

    fn forget(&self, asset_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(asset_id);
    }
}

/// Feeds bytes `[start, start + len)` of `file` to `hasher`.
fn hash_range(file: &std::fs::File, hasher: &mut Sha256, start: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; HASH_BUFFER.min(len as usize)];
    let mut at = start;
    let end = start + len;
    while at < end {
        let want = buf.len().min((end - at) as usize);
        file.read_exact_at(&mut buf[..want], at)?;
        hasher.update(&buf[..want]);
        at += want as u64;
    }
    Ok(())
}

/// How much of a clip one read takes, and how many such chunks are read ahead of the
/// reader: reading goes on while the previous chunk is hashed.
const CLIP_READ_CHUNK: usize = 4 * 1024 * 1024;
const CLIP_READ_AHEAD: usize = 4;

/// Streams a finished clip's file from a blocking thread of its own (plain sequential
/// `read`s, as fast as the disk gives them), `CLIP_READ_AHEAD` chunks ahead; the thread
/// stops when the stream is dropped. `None`: no file there.
async fn read_clip_file(path: PathBuf) -> io::Result<Option<super::ClipBytes>> {
    use std::io::Read;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f.into_std().await,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(CLIP_READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = vec![0u8; CLIP_READ_CHUNK];
            let mut filled = 0;
            let result = loop {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let end = filled < buf.len() || result.is_err();
            buf.truncate(filled);
            if filled > 0 && tx.blocking_send(Ok(buf.into())).is_err() {
                return;
            }
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if end {
                return;
            }
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(Some(Box::pin(chunks)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("asset");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn finish(running: Option<(Sha256, u64)>, path: &Path) -> (String, u64) {
        let (hasher, hashed) = running.unwrap_or((Sha256::new(), 0));
        hash_file_from(path, hasher, hashed).unwrap()
    }

    #[test]
    fn parts_hashed_out_of_order_give_the_files_hash() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (_dir, path) = file_with(&bytes);
        let hashes = RunningHashes::default();
        // Parts of 3000 bytes arriving 2, 4, 1, 3.
        for (offset, len) in [(3000, 3000), (9000, 1000), (0, 3000), (6000, 3000)] {
            hashes.add("a", &path, offset, len);
        }
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(10_000));
        assert_eq!(finish(running, &path), hash_file(&path).unwrap());
    }

    #[test]
    fn a_missing_part_leaves_the_rest_to_assembly() {
        let bytes = vec![5u8; 9000];
        let (_dir, path) = file_with(&bytes);
        let hashes = RunningHashes::default();
        hashes.add("a", &path, 0, 3000);
        hashes.add("a", &path, 6000, 3000);
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(3000));
        assert_eq!(finish(running, &path), hash_file(&path).unwrap());
    }

    #[test]
    fn a_part_that_cannot_be_read_back_leaves_the_hash_to_assembly() {
        let dir = tempfile::tempdir().unwrap();
        let hashes = RunningHashes::default();
        hashes.add("a", &dir.path().join("gone"), 0, 3000);
        assert!(hashes.take("a").is_none());
    }

    #[test]
    fn a_part_written_twice_is_not_trusted() {
        let (_dir, path) = file_with(&[1u8; 6000]);
        let hashes = RunningHashes::default();
        hashes.add("a", &path, 0, 3000);
        hashes.add("a", &path, 0, 3000);
        hashes.add("a", &path, 3000, 3000);
        assert!(hashes.take("a").is_none());
    }

    fn sha256_hex(parts: &[&[u8]]) -> String {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hex(&hasher.finalize())
    }

    #[test]
    fn a_part_hashed_as_it_was_written_is_not_read_back() {
        // On disk the first part is zeros; as written (in memory) it was ones: the hash
        // can only come out as below if the first part was not read back and the second,
        // waiting behind it, was.
        let mut on_disk = vec![0u8; 3000];
        on_disk.extend((0..3000u32).map(|i| (i % 251) as u8));
        let (_dir, path) = file_with(&on_disk);
        let hashes = RunningHashes::default();
        hashes.add("a", &path, 3000, 3000);
        let (write, hasher) = hashes.begin_write("a", 0, 3000);
        let mut hasher = hasher.expect("the hash is at 0");
        let written = [1u8; 3000];
        hasher.update(written);
        hashes.complete("a", &path, &write, Some(hasher));
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(6000));
        assert_eq!(
            finish(running, &path).0,
            sha256_hex(&[&written, &on_disk[3000..]])
        );
    }

    #[test]
    fn a_part_hashed_as_written_after_the_same_part_was_hashed_is_not_trusted() {
        let (_dir, path) = file_with(&[1u8; 6000]);
        let hashes = RunningHashes::default();
        let (write, hasher) = hashes.begin_write("a", 0, 3000);
        let mut hasher = hasher.expect("the hash is at 0");
        hasher.update([1u8; 3000]);
        // Another copy of the same part was recorded first.
        hashes.add("a", &path, 0, 3000);
        hashes.complete("a", &path, &write, Some(hasher));
        assert!(hashes.take("a").is_none());
    }

    #[test]
    fn a_part_hashed_as_written_while_another_write_of_it_ran_is_read_back() {
        let (_dir, path) = file_with(&[0u8; 3000]);
        let hashes = RunningHashes::default();
        let (write, hasher) = hashes.begin_write("a", 0, 3000);
        let mut hasher = hasher.expect("the hash is at 0");
        // A stale upload of the same part writes there too, then fails.
        let (stale, _) = hashes.begin_write("a", 0, 3000);
        drop(stale);
        hasher.update([1u8; 3000]);
        hashes.complete("a", &path, &write, Some(hasher));
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(3000));
        assert_eq!(
            finish(running, &path),
            hash_file(&path).unwrap(),
            "read back"
        );
    }

    #[test]
    fn two_writes_of_the_same_range_at_once_disturb_each_other() {
        let hashes = RunningHashes::default();
        let (first, _) = hashes.begin_write("a", 0, 3000);
        let (second, _) = hashes.begin_write("a", 1000, 3000);
        let (beside, _) = hashes.begin_write("a", 4000, 3000);
        assert!(first.finish());
        assert!(second.finish());
        assert!(!beside.finish());
        let (after, _) = hashes.begin_write("a", 0, 3000);
        assert!(!after.finish(), "the others were over");
    }

    #[test]
    fn bytes_landing_over_hashed_bytes_leave_the_hash_to_assembly() {
        let (_dir, path) = file_with(&[1u8; 6000]);
        let hashes = RunningHashes::default();
        hashes.add("a", &path, 0, 3000);
        let (failed, _) = hashes.begin_write("a", 0, 3000);
        failed.landing(0, 1000);
        failed.landed();
        drop(failed);
        hashes.add("a", &path, 3000, 3000);
        assert!(hashes.take("a").is_none());
    }

    #[test]
    fn a_stale_write_that_fails_after_its_retry_was_hashed_costs_nothing() {
        let (_dir, path) = file_with(&[1u8; 6000]);
        let hashes = RunningHashes::default();
        // The first upload of the part lands some bytes, then its connection goes quiet.
        let (stale, _) = hashes.begin_write("a", 0, 3000);
        stale.landing(0, 1000);
        stale.landed();
        // The device sends the part again, whole; it is read back (the stale one ran).
        let (retry, hasher) = hashes.begin_write("a", 0, 3000);
        hashes.complete("a", &path, &retry, hasher);
        // Long after, the stale upload times out, having landed nothing more.
        drop(stale);
        hashes.add("a", &path, 3000, 3000);
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(6000), "no second pass");
        assert_eq!(finish(running, &path), hash_file(&path).unwrap());
    }

    #[test]
    fn a_part_is_not_read_back_while_bytes_land_in_it() {
        let (_dir, path) = file_with(&[1u8; 3000]);
        let hashes = RunningHashes::default();
        let (landing, _) = hashes.begin_write("a", 0, 3000);
        landing.landing(0, 1000);
        hashes.add("a", &path, 0, 3000);
        landing.landed();
        drop(landing);
        assert!(hashes.take("a").is_none());
    }

    #[test]
    fn a_write_that_fails_ahead_of_the_hash_changes_nothing() {
        let (_dir, path) = file_with(&[1u8; 6000]);
        let hashes = RunningHashes::default();
        let (failed, _) = hashes.begin_write("a", 3000, 3000);
        drop(failed);
        hashes.add("a", &path, 0, 3000);
        hashes.add("a", &path, 3000, 3000);
        let running = hashes.take("a");
        assert_eq!(running.as_ref().map(|r| r.1), Some(6000));
        assert_eq!(finish(running, &path), hash_file(&path).unwrap());
    }

    #[test]
    fn only_a_write_where_the_hash_has_got_to_may_hash_as_it_writes() {
        let (_dir, path) = file_with(&[1u8; 9000]);
        let hashes = RunningHashes::default();
        hashes.add("a", &path, 0, 3000);
        let hasher_at = |offset| {
            let (write, hasher) = hashes.begin_write("a", offset, 3000);
            write.finish();
            hasher.is_some()
        };
        assert!(!hasher_at(0));
        assert!(!hasher_at(6000));
        assert!(hasher_at(3000));
        hashes.add("a", &path, 0, 3000);
        assert!(!hasher_at(3000), "written twice: nothing is trusted");
    }

    #[test]
    fn a_range_overlapping_the_one_being_read_back_counts_as_written_twice() {
        let state = HashState {
            reading: Some((3000, 3000)),
            ..HashState::default()
        };
        assert!(state.overlaps(5999, 10));
        assert!(state.overlaps(0, 3001));
        assert!(!state.overlaps(6000, 3000));
        assert!(
            !state.overlaps(0, 3000),
            "nothing hashed yet, nothing waiting"
        );
    }

    #[tokio::test]
    async fn gathered_chunks_land_back_to_back_empty_ones_included() {
        let (_dir, path) = file_with(b"");
        let file = Arc::new(std::fs::OpenOptions::new().write(true).open(&path).unwrap());
        let chunks = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defg"),
            Bytes::new(),
        ];
        let hashes = RunningHashes::default();
        let write = Arc::new(hashes.begin_write("a", 2, 7).0);
        let claim = Arc::new(RegionClaim {
            gate: Arc::new(Gate::default()),
            id: 0,
            offset: 2,
        });
        let (left, hasher) = write_chunks_at(&file, chunks, 2, Some(Sha256::new()), &write, &claim)
            .await
            .unwrap();
        assert!(left.is_empty());
        let hashed = hex(&hasher.expect("given back").finalize());
        assert_eq!(hashed, sha256_hex(&[b"abcdefg"]), "the chunks, in order");
        let (left, _) = write_chunks_at(&file, vec![Bytes::new()], 9, None, &write, &claim)
            .await
            .unwrap();
        assert!(left.is_empty());
        assert!(!write.finish());
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcdefg");
    }

    #[test]
    fn sealing_waits_for_the_write_inside_and_turns_away_every_later_one() {
        let gate = Arc::new(Gate::default());
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let inside = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.land(|| {
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    "landed"
                })
            })
        };
        entered_rx.recv().unwrap();
        let sealer = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.seal())
        };
        // The seal is taken at once (the write inside is still there)...
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gate.is_sealed() {
            assert!(std::time::Instant::now() < deadline, "never sealed");
            std::thread::yield_now();
        }
        assert!(gate.land(|| ()).is_err(), "a later write is turned away");
        assert!(!sealer.is_finished(), "sealing waits for the write inside");
        go_tx.send(()).unwrap();
        assert_eq!(inside.join().unwrap().unwrap(), "landed");
        sealer.join().unwrap();
        assert!(gate.land(|| ()).is_err(), "sealed for good");
    }

    #[tokio::test]
    async fn the_sweep_asks_about_each_files_asset_as_it_reaches_it() {
        let data = tempfile::tempdir().unwrap();
        let store = LocalStore::new(data.path(), UrlSigner::new(b"k".to_vec())).unwrap();
        for id in ["done", "live", "born-during-the-sweep"] {
            std::fs::create_dir_all(store.uploads.join(id)).unwrap();
            std::fs::write(store.uploads.join(id).join("00001-x.part"), b"p").unwrap();
            std::fs::write(store.asset_file(id), b"a").unwrap();
        }
        std::fs::write(store.media.join(".rushes-tmp").join("done.damaged"), b"d").unwrap();
        // What the database says at the moment each file is reached: an asset created
        // after the sweep began is unfinished, like any other.
        let asked = std::sync::Mutex::new(Vec::new());
        let removed = store
            .sweep_uploads(|id| {
                asked.lock().unwrap().push(id.clone());
                async move { Ok(id == "done") }
            })
            .await
            .unwrap();
        assert_eq!(removed, 3);
        assert_eq!(asked.lock().unwrap().len(), 7, "asked once per file");
        for id in ["live", "born-during-the-sweep"] {
            assert!(store.uploads.join(id).join("00001-x.part").exists(), "{id}");
            assert!(store.asset_file(id).exists(), "{id}");
        }
        assert!(!store.uploads.join("done").exists());
        assert!(!store.asset_file("done").exists());
        assert!(
            !store
                .media
                .join(".rushes-tmp")
                .join("done.damaged")
                .exists()
        );
    }

    #[test]
    fn a_folder_removed_while_the_server_runs_is_made_and_synced_again() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let dirs = SyncedDirs::default();
        let deep = root.join("2026_12_08/VIDEO/cam");
        dirs.ensure(root, &deep).unwrap();
        std::fs::remove_dir_all(root.join("2026_12_08")).unwrap();
        dirs.ensure(root, &deep).unwrap();
        assert!(deep.is_dir());
        let synced = dirs.synced.lock().unwrap().clone();
        assert_eq!(
            synced
                .iter()
                .filter(|p| *p == &root.join("2026_12_08"))
                .count(),
            2,
            "the new day folder was synced in its parent again: {synced:?}"
        );
    }

    #[test]
    fn each_new_folder_is_synced_in_its_parent_once_and_callers_wait_for_it() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let dirs = Arc::new(SyncedDirs::default());
        let deep = root.join("2026_12_08/VIDEO/cam");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dirs, root, deep) = (dirs.clone(), root.to_owned(), deep.clone());
                std::thread::spawn(move || {
                    dirs.ensure(&root, &deep).unwrap();
                    // Whoever returns finds every folder there and its parent synced.
                    let synced = dirs.synced.lock().unwrap().clone();
                    assert!(deep.is_dir());
                    synced
                })
            })
            .collect();
        let chain = vec![
            root.to_owned(),
            root.join("2026_12_08"),
            root.join("2026_12_08/VIDEO"),
        ];
        for thread in threads {
            assert_eq!(
                thread.join().unwrap(),
                chain,
                "each parent synced once, before any return"
            );
        }
        dirs.ensure(root, &root.join("2026_12_08/VIDEO/other"))
            .unwrap();
        let mut expected = chain.clone();
        expected.push(
            root.join("2026_12_08/VIDEO/cam")
                .parent()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(
            *dirs.synced.lock().unwrap(),
            expected,
            "only the new folder's parent"
        );
        assert!(dirs.ensure(root, Path::new("/elsewhere")).is_err());
    }

    #[test]
    fn a_region_is_held_by_one_upload_until_it_lets_go() {
        let data = tempfile::tempdir().unwrap();
        let store = LocalStore::new(data.path(), UrlSigner::new(b"k".to_vec())).unwrap();
        let first = store.claim_region("a", 0, 3000).expect("free");
        assert!(store.claim_region("a", 2999, 10).is_none(), "overlaps");
        let beside = store.claim_region("a", 3000, 3000).expect("beside it");
        assert!(store.claim_region("b", 0, 3000).is_some(), "another asset");
        let held = first.clone();
        drop(first);
        assert!(store.claim_region("a", 0, 3000).is_none(), "still held");
        drop(held);
        assert!(store.claim_region("a", 0, 3000).is_some(), "let go");
        drop(beside);
    }
}
