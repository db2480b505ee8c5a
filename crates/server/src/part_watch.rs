//! Noticing parts that devices PUT straight into an S3 bucket.
//!
//! S3 tells nobody when a part arrives, so every server lists the parts of pending uploads:
//! each upload on its own schedule, one `ListParts` per check (paged for >1,000 parts),
//! soon after progress and backing off (1 s doubling to `max_pause`) while nothing comes.
//! Checks are shared out through the database (see `db::remote`), so two servers never list
//! the same upload at once and a dead server's checks are picked up by the others.
//! What a listing shows is recorded like a part received by the local store; the part
//! that completes an asset hands it to `finalise`.
//!
//! The same loop aborts uploads that saw no new part for `abandon_after`, freeing the
//! storage their parts hold in the bucket, and the uploads of superseded assets (the device
//! created the file again) once every URL handed out for them has expired: until then a
//! late PUT from the device is answered 200 by the bucket, and its bytes go with the abort.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::clock::{Millis, now_ms};
use crate::db::{AssetState, PartRecord};
use crate::finalise;
use crate::media::s3::{S3Error, S3Store};
use crate::state::{AppState, ms};

/// How often the watcher looks for due checks.
const TICK: Duration = Duration::from_millis(250);
/// A claimed check not rescheduled within this (its server died) becomes due again.
const LEASE_MS: i64 = 60_000;
/// Checks run at once per server; bounds the load one server puts on the store.
const CONCURRENT_CHECKS: usize = 8;
const CHECKS_PER_TICK: i64 = 64;
/// How often idle uploads are looked for (more often when they are abandoned sooner).
const ABANDON_SWEEP: Duration = Duration::from_secs(30);
/// How often superseded uploads whose URLs have expired are looked for.
const SUPERSEDED_SWEEP: Duration = Duration::from_secs(5);

pub fn spawn(state: AppState, s3: Arc<S3Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<Instant> = None;
        let mut last_superseded_sweep: Option<Instant> = None;
        let sweep_every = ABANDON_SWEEP.min(state.config.s3_abandon_after / 2);
        loop {
            tick.tick().await;
            if let Err(e) = check_due(&state, &s3).await {
                tracing::warn!(error = %e, "listing pending S3 uploads failed");
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
                last_sweep = Some(Instant::now());
                if let Err(e) = abort_abandoned(&state, &s3).await {
                    tracing::warn!(error = %e, "looking for abandoned S3 uploads failed");
                }
            }
            if last_superseded_sweep.is_none_or(|t| t.elapsed() >= SUPERSEDED_SWEEP) {
                last_superseded_sweep = Some(Instant::now());
                if let Err(e) = abort_superseded(&state, &s3).await {
                    tracing::warn!(error = %e, "aborting superseded S3 uploads failed");
                }
            }
        }
    });
}

async fn check_due(state: &AppState, s3: &S3Store) -> anyhow::Result<()> {
    let now = now_ms();
    let due = state.db.due_checks(now, CHECKS_PER_TICK).await?;
    futures_util::stream::iter(due)
        .for_each_concurrent(CONCURRENT_CHECKS, |(id, seen)| async move {
            match state.db.claim_check(&id, seen, now + LEASE_MS).await {
                Ok(true) => {
                    if let Err(e) = check(state, s3, &id).await {
                        tracing::warn!(asset = %id, error = %e, "listing an upload's parts failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(asset = %id, error = %e, "claiming a check failed"),
            }
        })
        .await;
    Ok(())
}

/// Lists the parts of one upload, records what is new, and schedules the next check.
/// Also called directly when a device asks which parts arrived.
pub async fn check(state: &AppState, s3: &S3Store, asset_id: &str) -> anyhow::Result<()> {
    let Some(asset) = state.db.asset(asset_id).await? else {
        return Ok(());
    };
    let Some(upload) = asset.remote_upload() else {
        return Ok(());
    };
    if asset.state() != AssetState::Uploading {
        return Ok(());
    }
    let max_pause = ms(state.config.s3_max_check_pause);
    let listed = match s3.list_parts(&upload).await {
        Ok(listed) => listed,
        Err(S3Error::NoSuchUpload) => {
            // Aborted behind our back (a bucket lifecycle rule, say): nothing can complete it.
            if state.db.mark_abandoned(asset_id, Millis::MAX).await? {
                tracing::warn!(asset = %asset_id, "the store dropped this upload; marked abandoned");
            }
            return Ok(());
        }
        Err(e) => {
            state
                .db
                .schedule_check(asset_id, false, now_ms(), max_pause)
                .await?;
            return Err(e.into());
        }
    };
    let known = state.db.parts(asset_id).await?;
    let mut progressed = false;
    for part in listed {
        let etag = part.etag.unwrap_or_default();
        let seen = known.iter().any(|k| {
            k.number == i64::from(part.number)
                && k.stored_as.as_deref().is_some_and(|s| s == etag)
                && k.size == i64::try_from(part.size).unwrap_or(-1)
        });
        if seen {
            continue;
        }
        match finalise::record_part(state, asset_id, part.number, part.size, &etag, ()).await? {
            PartRecord::Recorded { ready, .. } => {
                progressed = true;
                if ready {
                    return Ok(());
                }
            }
            PartRecord::AlreadyComplete | PartRecord::Superseded => return Ok(()),
            PartRecord::WrongSize { expected } => {
                tracing::warn!(asset = %asset_id, part = part.number, size = part.size, expected, "a part of the wrong size is in the store; waiting for it to be sent again");
            }
            // A real-time part sent before it was registered: recorded on a later check.
            PartRecord::Unknown => {}
        }
    }
    state
        .db
        .schedule_check(asset_id, progressed, now_ms(), max_pause)
        .await?;
    Ok(())
}

async fn abort_abandoned(state: &AppState, s3: &S3Store) -> anyhow::Result<()> {
    let cutoff = now_ms() - ms(state.config.s3_abandon_after);
    for id in state.db.idle_remote_uploads(cutoff).await? {
        let Some(asset) = state.db.asset(&id).await? else {
            continue;
        };
        let Some(upload) = asset.remote_upload() else {
            continue;
        };
        // A last look: parts may have arrived since the last (backed-off) check.
        if let Err(e) = check(state, s3, &id).await {
            tracing::warn!(asset = %id, error = %e, "listing an idle upload's parts failed");
            continue;
        }
        if !state.db.mark_abandoned(&id, cutoff).await? {
            continue;
        }
        match s3.abort(&upload).await {
            Ok(()) => {
                tracing::info!(asset = %id, path = %asset.path, "aborted an upload abandoned for too long")
            }
            Err(e) => {
                tracing::error!(asset = %id, key = %upload.key, upload_id = %upload.upload_id, error = %e, "aborting an abandoned upload failed; a bucket lifecycle rule will have to free its parts")
            }
        }
    }
    Ok(())
}

/// Aborts the store's uploads of superseded assets whose URLs have all expired.
async fn abort_superseded(state: &AppState, s3: &S3Store) -> anyhow::Result<()> {
    for (id, upload) in state.db.superseded_uploads_due(now_ms()).await? {
        match s3.abort(&upload).await {
            Ok(()) => {
                state.db.superseded_upload_aborted(&id).await?;
                tracing::info!(asset = %id, "aborted the upload of a superseded asset");
            }
            Err(e) => {
                tracing::warn!(asset = %id, key = %upload.key, error = %e, "aborting a superseded upload failed; trying again later")
            }
        }
    }
    Ok(())
}
