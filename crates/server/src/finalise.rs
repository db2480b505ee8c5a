//! Finalisation: when the last part of an asset has arrived, join the parts into the
//! finished file, record its size and SHA-256, and drop the parts.
//!
//! The database claims an asset for finalisation (state `assembling`) in the same
//! transaction that records its last part, so exactly one task finalises it, and an asset
//! left `assembling` by a crash is finalised again at the next start.
//!
//! A clip that completes with the same name, size and SHA-256 as a complete clip of the
//! same device in the same folder (a card sent again from the start) is recorded as a
//! duplicate of it and its bytes dropped: when such a clip exists, the bytes are joined and
//! hashed before they are put in place (S3 can only hash a completed object, so there the
//! duplicate's object is deleted instead).

use std::time::Duration;

use crate::db::{AssetState, DbResult, PartRecord, run_to_end};
use crate::media::{AssembleError, Assembled, AssetTarget, StoredPart};
use crate::state::AppState;

/// Finalises in the background, retrying with growing pauses when the store fails (a full
/// disk, say); whatever is still unfinished when the process stops is resumed at start.
pub fn spawn(state: AppState, asset_id: String) {
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=RETRIES {
            match finalise(&state, &asset_id).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(asset = %asset_id, attempt, error = format!("{e:#}"), "finalising failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 4).min(Duration::from_secs(300));
                }
            }
        }
    });
}

const RETRIES: u32 = 12;

/// Records a received part and, if it was the last, starts finalising: one step that runs
/// to the end even when the request that brought the part is dropped halfway (its client
/// went away). Otherwise the asset could be claimed for assembly, the commit done, and
/// nobody left to assemble it until the next restart. `held` (the upload's claim on the
/// part's region of the file) is kept until the record is committed or has failed, for
/// the same reason.
pub async fn record_part<H: Send + 'static>(
    state: &AppState,
    asset_id: &str,
    number: u32,
    size: u64,
    stored_as: &str,
    held: H,
) -> DbResult<PartRecord> {
    let (state, asset_id, stored_as) = (state.clone(), asset_id.to_owned(), stored_as.to_owned());
    run_to_end(async move {
        let record = state
            .db
            .record_part(&asset_id, number, size, &stored_as)
            .await;
        drop(held);
        let record = record?;
        if let PartRecord::Recorded { ready: true, .. } = record {
            spawn(state, asset_id);
        }
        Ok(record)
    })
    .await
}

/// Claims a real-time asset whose parts are all in and starts finalising it (see
/// [`record_part`] for why this cannot be cut short); true if it was claimed.
pub async fn claim_if_ready(state: &AppState, asset_id: &str) -> DbResult<bool> {
    let (state, asset_id) = (state.clone(), asset_id.to_owned());
    run_to_end(async move {
        let claimed = state.db.claim_if_ready(&asset_id).await?;
        if claimed {
            spawn(state, asset_id);
        }
        Ok(claimed)
    })
    .await
}

async fn finalise(state: &AppState, asset_id: &str) -> anyhow::Result<()> {
    let Some(mut asset) = state.db.asset(asset_id).await? else {
        return Ok(());
    };
    if asset.state() != AssetState::Assembling {
        return Ok(());
    }
    let project = state
        .db
        .project(&asset.project_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("project vanished"))?;
    let parts: Vec<StoredPart> = state
        .db
        .parts(asset_id)
        .await?
        .into_iter()
        .filter_map(|p| {
            Some(StoredPart {
                number: p.number as u32,
                size: p.size as u64,
                stored_as: p.stored_as?,
            })
        })
        .collect();
    // Only a clip that may duplicate another is held back until its hash is known.
    let may_duplicate = state.db.complete_twin(&asset, None).await?.is_some();
    loop {
        let target = AssetTarget {
            asset_id: asset.id.clone(),
            project_dir: project.dir.clone(),
            path: asset.path.clone(),
            upload: asset.remote_upload(),
            part_size: asset.plan().map(|p| p.part_size),
            hold: may_duplicate,
        };
        let assembled = match state.media.assemble(&target, &parts).await {
            Ok(done) => {
                let expected = asset.filesize.map(|s| s as u64);
                if expected.is_some_and(|e| e != done.size) {
                    anyhow::bail!("assembled {} bytes, expected {expected:?}", done.size);
                }
                if may_duplicate {
                    if let Some(original) =
                        state.db.complete_twin(&asset, Some(&done.sha256)).await?
                    {
                        record_duplicate(state, &target, &original, &done).await?;
                        return Ok(());
                    }
                    state.media.place(&target, &done).await.map(|()| done)
                } else {
                    Ok(done)
                }
            }
            Err(e) => Err(e),
        };
        match assembled {
            Ok(done) => {
                state
                    .db
                    .complete_asset(asset_id, &asset.path, &done.sha256, done.size)
                    .await?;
                state.media.discard_parts(asset_id).await;
                tracing::info!(asset = %asset_id, path = %asset.path, size = done.size, sha256 = %done.sha256, "asset complete");
                return Ok(());
            }
            Err(AssembleError::PathTaken) => {
                asset.path = state.db.reserve_next_path(&asset).await?;
                tracing::warn!(asset = %asset_id, path = %asset.path, "a foreign file held the asset's name; renamed");
            }
            Err(AssembleError::Io(e)) => return Err(e.into()),
        }
    }
}

/// Records an assembled asset as a duplicate of `original` and drops its bytes.
async fn record_duplicate(
    state: &AppState,
    target: &AssetTarget,
    original: &str,
    done: &Assembled,
) -> anyhow::Result<()> {
    let asset_id = &target.asset_id;
    if state
        .db
        .mark_duplicate(asset_id, original, &done.sha256, done.size)
        .await?
    {
        // Recorded first: a crash before the bytes go leaves an object `recover` deletes,
        // never a duplicate listed.
        state.media.discard_duplicate(target).await?;
        state.db.forget_object(asset_id).await?;
        state.media.discard_parts(asset_id).await;
        tracing::info!(asset = %asset_id, original = %original, sha256 = %done.sha256, "clip sent again; recorded as a duplicate of the one already stored");
    }
    Ok(())
}

/// After a start: finish what a crash interrupted and sweep leftovers of finished uploads.
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    if let Some(s3) = &state.s3 {
        for (asset_id, key) in state.db.duplicate_objects().await? {
            match s3.delete(&key).await {
                Ok(()) => state.db.forget_object(&asset_id).await?,
                Err(e) => {
                    tracing::warn!(asset = %asset_id, key = %key, error = %e, "deleting a duplicate's object failed")
                }
            }
        }
    }
    for asset_id in state.db.assets_to_assemble().await? {
        tracing::info!(asset = %asset_id, "resuming an interrupted finalisation");
        if let Err(e) = finalise(state, &asset_id).await {
            tracing::error!(asset = %asset_id, error = format!("{e:#}"), "finalising failed");
        }
    }
    if let Some(local) = &state.local {
        let swept = local
            .sweep_uploads(|asset_id| async move {
                let asset = state
                    .db
                    .asset(&asset_id)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(is_leftover(asset.map(|a| a.state())))
            })
            .await?;
        if swept > 0 {
            tracing::info!(count = swept, "removed leftover upload folders");
        }
    }
    Ok(())
}

/// Whether the upload files of an asset in `state` (`None`: no such asset) are leftovers
/// the sweep may remove: only once nothing will write or read them again. An asset still
/// `uploading` or `assembling` keeps them, whenever it was created.
fn is_leftover(state: Option<AssetState>) -> bool {
    match state {
        None => true,
        Some(AssetState::Uploading | AssetState::Assembling) => false,
        Some(
            AssetState::Complete
            | AssetState::Abandoned
            | AssetState::Superseded
            | AssetState::Duplicate,
        ) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_of_finished_or_unknown_assets_are_leftovers() {
        assert!(is_leftover(None));
        assert!(!is_leftover(Some(AssetState::Uploading)));
        assert!(!is_leftover(Some(AssetState::Assembling)));
        for done in [
            AssetState::Complete,
            AssetState::Abandoned,
            AssetState::Superseded,
            AssetState::Duplicate,
        ] {
            assert!(is_leftover(Some(done)), "{done:?}");
        }
    }
}
