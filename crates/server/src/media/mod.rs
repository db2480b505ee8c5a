//! The media store: where an asset's bytes live.
//!
//! The API layer needs three things from it, whatever it is: a URL a device can PUT each
//! part to, a way to join the parts into the finished asset (with its SHA-256), and a way to
//! drop the parts of an upload. [`MediaStore`] is that interface. The local file-system
//! store ([`local::LocalStore`]) also receives the part bytes itself, through the server's
//! own upload endpoint; the S3 store ([`s3::S3Store`]) lets devices upload straight to the
//! bucket, and `part_watch` notices the parts arriving there.

pub mod local;
pub mod s3;

use std::sync::Arc;

use async_trait::async_trait;

/// Where a finished asset goes: its project's folder and its path inside the project.
#[derive(Debug, Clone)]
pub struct AssetTarget {
    pub asset_id: String,
    pub project_dir: String,
    pub path: String,
    /// The store's own upload, for stores that have one (S3's multipart upload).
    pub upload: Option<RemoteUpload>,
    /// A planned upload's part size (part `n` starts at `(n - 1) * part_size`); `None` for
    /// real-time uploads, whose parts follow each other.
    pub part_size: Option<u64>,
    /// Join and hash only, leaving the bytes out of `path` until [`MediaStore::place`]: the
    /// asset may turn out to duplicate a clip already there. A store that can only join
    /// the bytes at their key (S3) ignores it.
    pub hold: bool,
}

/// An upload held by the store itself: an S3 multipart upload, named by its object key and
/// upload id. Recorded with the asset when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUpload {
    pub key: String,
    pub upload_id: String,
}

/// Where a finished clip's bytes are: its project's folder, its path in the project, and
/// the store's own upload it was joined from (which names its S3 key), if any.
#[derive(Debug, Clone, Copy)]
pub struct ClipLocation<'a> {
    pub project_dir: &'a str,
    pub path: &'a str,
    pub upload: Option<&'a RemoteUpload>,
}

/// A clip's bytes, in order from the first, as the store holds them now.
pub type ClipBytes = futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// The media store of an installation, opened by an admin command to read finished clips:
/// the S3 bucket `s3` names, else the data directory's. (The server builds its own in
/// `startup`, with the URL signer its uploads need.)
pub fn open_for_reading(
    data_dir: &std::path::Path,
    s3: Option<&s3::S3Config>,
) -> anyhow::Result<Arc<dyn MediaStore>> {
    // Several crates link rustls; name the provider once for the whole process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Ok(match s3 {
        Some(config) => Arc::new(s3::S3Store::new(config)?),
        // Reading signs no URL: any key will do.
        None => Arc::new(local::LocalStore::new(
            data_dir,
            crate::signing::UrlSigner::new(Vec::new()),
        )?),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// Something that is not a Rushes asset already sits at the key.
    #[error("the target path is taken")]
    PathTaken,
    #[error("the media store is unavailable: {0}")]
    Unavailable(String),
}

/// The bytes of one received part, as the store named them when they arrived.
#[derive(Debug, Clone)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    pub stored_as: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// Something that is not this asset already sits at the target path.
    #[error("the target path is taken")]
    PathTaken,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// The smallest part but the last this store accepts: what a device's own part count
    /// (the create's `parts`) must respect to be honoured.
    fn min_part_size(&self) -> u64;

    /// URL that accepts one PUT of part `number` (`size` bytes) until `expires` (Unix s).
    /// `base_url` is this server as the device reaches it, for stores it receives itself.
    /// `None` when the asset's upload was started on another kind of store (the operator
    /// switched stores while it was in flight).
    fn part_url(
        &self,
        base_url: &str,
        asset_id: &str,
        upload: Option<&RemoteUpload>,
        number: u32,
        size: u64,
        expires: i64,
    ) -> Option<String>;

    /// Prepares the store for a new asset to be uploaded as `key` (`<project dir>/<path>`).
    async fn begin_upload(
        &self,
        key: &str,
        filetype: &str,
    ) -> Result<Option<RemoteUpload>, BeginError>;

    /// Joins `parts` in order into the asset at `target`. Idempotent: after a crash it can
    /// run again over the same parts and finds its own earlier result.
    async fn assemble(
        &self,
        target: &AssetTarget,
        parts: &[StoredPart],
    ) -> Result<Assembled, AssembleError>;

    /// Puts an asset assembled with [`AssetTarget::hold`] into its place.
    async fn place(&self, target: &AssetTarget, assembled: &Assembled)
    -> Result<(), AssembleError>;

    /// Drops the bytes of an assembled asset found to duplicate a clip already stored.
    async fn discard_duplicate(&self, target: &AssetTarget) -> std::io::Result<()>;

    /// Forgets one stored copy of a part (superseded by a re-upload).
    async fn discard_part(&self, asset_id: &str, stored_as: &str);

    /// Forgets every part of an upload (after assembly).
    async fn discard_parts(&self, asset_id: &str);

    /// Opens a finished clip for reading from its first byte; `Ok(None)` when the store
    /// holds nothing at its place. What scrubbing re-reads to compare with the record.
    async fn open_clip(&self, clip: ClipLocation<'_>) -> std::io::Result<Option<ClipBytes>>;
}
