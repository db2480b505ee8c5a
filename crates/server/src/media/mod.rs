//! The media store: where an asset's bytes live.
//!
//! The API layer needs three things from it, whatever it is: a URL a device can PUT each
//! part to, a way to join the parts into the finished asset (with its SHA-256), and a way to
//! drop the parts of an upload. [`MediaStore`] is that interface. The local file-system
//! store ([`local::LocalStore`]) also receives the part bytes itself, through the server's
//! own upload endpoint; an S3 store lets devices upload straight to the bucket.

pub mod local;

use async_trait::async_trait;

/// Where a finished asset goes: its project's folder and its path inside the project.
#[derive(Debug, Clone)]
pub struct AssetTarget {
    pub asset_id: String,
    pub project_dir: String,
    pub path: String,
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
    /// URL that accepts one PUT of part `number` (`size` bytes) until `expires` (Unix s).
    /// `base_url` is this server as the device reaches it, for stores it receives itself.
    fn part_url(
        &self,
        base_url: &str,
        asset_id: &str,
        number: u32,
        size: u64,
        expires: i64,
    ) -> String;

    /// Joins `parts` in order into the asset at `target`. Idempotent: after a crash it can
    /// run again over the same parts and finds its own earlier result.
    async fn assemble(
        &self,
        target: &AssetTarget,
        parts: &[StoredPart],
    ) -> Result<Assembled, AssembleError>;

    /// Forgets one stored copy of a part (superseded by a re-upload).
    async fn discard_part(&self, asset_id: &str, stored_as: &str);

    /// Forgets every part of an upload (after assembly).
    async fn discard_parts(&self, asset_id: &str);
}
