//! Creating assets, registering real-time parts, and the resume extension.
//!
//! A device only ever sees its own assets: any other id, existing or not, is 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rushes_proto::asset::{
    Asset as AssetBody, MissingPart, RealtimeAsset, UploadStatus, UploadUrls,
};
use rushes_proto::parts::{MAX_FILESIZE, MAX_PART_SIZE, MIN_PART_SIZE, PartPlan};
use serde_json::Value;

use crate::clock::{date_folder, now_ms, rfc3339};
use crate::db::{Asset, AssetState, Authenticated, MAX_CHANNEL, NewAsset, Superseding};
use crate::domain::names::{folder_name, mime_from_name, parse_mime};
use crate::domain::{AssetName, MediaType};
use crate::error::{ApiError, ApiResult};
use crate::extract::{BaseUrl, Device, Fields, require_asset_create};
use crate::media::BeginError;
use crate::state::AppState;
use crate::{finalise, part_watch};

/// Recording offsets beyond this (about 50 years) are nonsense rather than old footage.
const MAX_OFFSET_SECS: i64 = 50 * 365 * 24 * 3600;

fn url_expiry(state: &AppState) -> i64 {
    now_ms() / 1000 + i64::try_from(state.config.upload_url_lifetime.as_secs()).unwrap_or(86_400)
}

pub async fn create(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    Device(device): Device,
    fields: Fields,
) -> ApiResult<Response> {
    require_asset_create(&device)?;
    let realtime = fields.bool("is_realtime_upload")?;
    if realtime && !fields.is_json {
        return Err(ApiError::invalid_field(
            "is_realtime_upload",
            "real-time uploads must be created with a JSON body",
        ));
    }
    let offset = fields.int("offset")?.unwrap_or(0);
    if offset.abs() > MAX_OFFSET_SECS {
        return Err(ApiError::invalid_field("offset", "is out of range"));
    }
    let channel = fields.int("channel")?.unwrap_or(0);
    if !(0..=MAX_CHANNEL).contains(&channel) {
        return Err(ApiError::invalid_field(
            "channel",
            format!("must be between 0 and {MAX_CHANNEL}"),
        ));
    }
    let auto_version_id = fields
        .string("auto_version_id")?
        .map(|id| {
            uuid::Uuid::parse_str(id.trim())
                .map(|u| u.to_string())
                .map_err(|_| ApiError::invalid_field("auto_version_id", "must be a UUID"))
        })
        .transpose()?;
    let recorded_at = now_ms() - offset * 1000;

    let name_field = fields.string("name")?;
    let name = match (&name_field, realtime) {
        (Some(raw), _) => AssetName::parse(raw).map_err(|e| ApiError::invalid_field("name", e))?,
        (None, false) => return Err(ApiError::invalid_field("name", "is required")),
        (None, true) => {
            let extension = fields.string("extension")?.unwrap_or_default();
            let ok = extension.is_empty()
                || (extension.starts_with('.')
                    && (2..=16).contains(&extension.len())
                    && extension[1..].bytes().all(|b| b.is_ascii_alphanumeric()));
            if !ok {
                return Err(ApiError::invalid_field("extension", "must look like .mov"));
            }
            let stamp = rfc3339(recorded_at)
                .replace([':', '-'], "")
                .replace('T', "_");
            let stamp = stamp
                .split('.')
                .next()
                .unwrap_or_default()
                .trim_end_matches('Z')
                .to_owned();
            AssetName::parse(&format!("Recording {stamp}{extension}"))
                .map_err(|e| ApiError::invalid_field("name", e))?
        }
    };
    let filetype = match fields.string("filetype")? {
        Some(raw) => parse_mime(&raw).map_err(|e| ApiError::invalid_field("filetype", e))?,
        None if realtime => {
            return Err(ApiError::invalid_field(
                "filetype",
                "is required for real-time uploads",
            ));
        }
        None => mime_from_name(name.as_str()),
    };
    let filesize = match fields.int("filesize")? {
        Some(size) if size < 1 || size as u64 > MAX_FILESIZE => {
            return Err(ApiError::invalid_field(
                "filesize",
                "must be between 1 byte and 5 TiB",
            ));
        }
        Some(size) => Some(size as u64),
        None if realtime => None,
        None => return Err(ApiError::invalid_field("filesize", "is required")),
    };

    if device.maybe_paused_at(recorded_at)
        && state
            .db
            .was_paused_at(&device.device_id, channel, recorded_at)
            .await?
    {
        return Err(ApiError::channel_paused());
    }
    // A create whose answer was lost (the device retries it) gets the asset it made, not a
    // second one: same device, name, size and recording time, nothing received yet.
    if let (false, Some(size)) = (realtime, filesize)
        && let Some(asset) =
            retried_create(&state, &device, name.as_str(), size, recorded_at, channel).await?
    {
        tracing::info!(asset = %asset.id, path = %asset.path, "asset create repeated; answering with the asset it made");
        // The first create may still be starting its store upload.
        let asset = racing_twin_started(&state, asset).await?;
        return planned_answer(&state, &base_url, asset);
    }
    // A channel that declared its asset_type decides the TYPE folder (c2c-api.md §5).
    let channel_type = state.db.channel_media_type(&device.device_id, channel);
    let media_type = channel_type
        .await?
        .unwrap_or_else(|| MediaType::of_mime(&filetype));
    let folder = format!(
        "Cloud Devices/{}/{}/{}",
        date_folder(recorded_at),
        media_type.folder(),
        folder_name(&device.device_name)
    );
    let plan = match (realtime, filesize) {
        (false, Some(size)) => Some(
            requested_parts(&fields)
                .and_then(|n| {
                    PartPlan::requested(
                        size,
                        n,
                        state.media.min_part_size(),
                        state.config.max_parts,
                    )
                })
                .unwrap_or_else(|| {
                    PartPlan::new(size, state.config.part_size, state.config.max_parts)
                }),
        ),
        _ => None,
    };
    let new = NewAsset {
        project_id: device.project_id.clone(),
        device_id: device.device_id.clone(),
        name,
        folder,
        filetype,
        filesize,
        channel,
        offset_secs: offset,
        recorded_at,
        auto_version_id,
        plan,
    };
    let (asset, superseded) = match (plan, filesize) {
        (Some(_), Some(size)) => match create_or_supersede(&state, &new, size).await? {
            Created::New(asset, superseded) => (asset, superseded),
            Created::Racing(asset) => return planned_answer(&state, &base_url, asset),
        },
        _ => (state.db.create_asset(&new).await?, Vec::new()),
    };
    let asset = begin_upload(&state, asset, !superseded.is_empty()).await?;
    for old in &superseded {
        state.media.discard_parts(old).await;
        tracing::info!(asset = %asset.id, superseded = %old, path = %asset.path, "asset created again before it finished; the new one takes its place");
    }
    tracing::info!(asset = %asset.id, path = %asset.path, realtime, "asset created");
    if plan.is_none() {
        return Ok(Json(RealtimeAsset {
            id: asset.id,
            name: asset.name,
        })
        .into_response());
    }
    planned_answer(&state, &base_url, asset)
}

/// The device's own part count (`parts`, a number or a numeric string). Anything else is
/// ignored rather than refused: the server's plan then stands, and the number of URLs in
/// the answer tells the device.
fn requested_parts(fields: &Fields) -> Option<i64> {
    fields.int("parts").ok().flatten()
}

/// How long after a superseded asset's last URL expires its store upload is aborted: the
/// rounding of URL expiry to seconds, and some slack for the store's clock.
const SUPERSEDED_ABORT_SLACK_MS: i64 = 5_000;

/// What [`create_or_supersede`] made.
enum Created {
    /// A new asset (its store upload not started yet), and the ids of the assets it
    /// superseded, whose parts are to be dropped once the new upload is started.
    New(Asset, Vec<String>),
    /// A create racing another create of the same file (the device retrying before the
    /// first answer came): the other's asset, upload started, is the answer.
    Racing(Asset),
}

/// How long a create racing another create of the same file waits for that one's store
/// upload to be started before answering 503 (the device retries).
const RACING_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Creates a planned asset, superseding the device's unfinished assets of the same file
/// (same name, size, channel and folder) if there are any (c2c-api.md §4, re-created
/// assets): the new asset takes their place and name, and their received parts are
/// dropped. A create that found no such asset but lost the name to a racing create of the
/// same file answers with that one (see `Db::yield_to_racing_twin`).
async fn create_or_supersede(state: &AppState, new: &NewAsset, size: u64) -> ApiResult<Created> {
    // Nearly every create supersedes nothing: it goes the usual (batched) way.
    if state.db.unfinished_twin(new, size).await?.is_none() {
        let asset = state.db.create_asset(new).await?;
        if asset.path == format!("{}/{}", new.folder, new.name.as_str()) {
            return Ok(Created::New(asset, Vec::new()));
        }
        let Some(twin) = state.db.yield_to_racing_twin(&asset).await? else {
            return Ok(Created::New(asset, Vec::new()));
        };
        tracing::info!(asset = %twin.id, path = %twin.path, "asset created twice at once; answering with the first");
        return Ok(Created::Racing(racing_twin_started(state, twin).await?));
    }
    // Every URL handed out for the earlier asset expires within one lifetime from now; its
    // store upload (S3) stays open until then, so a late PUT is still answered 200.
    let abort_at = now_ms()
        + i64::try_from(state.config.upload_url_lifetime.as_millis()).unwrap_or(i64::MAX / 2)
        + SUPERSEDED_ABORT_SLACK_MS;
    match state.db.create_superseding(new, size, abort_at).await? {
        Superseding::Created(asset, superseded) => Ok(Created::New(asset, superseded)),
        Superseding::Retried(first) => {
            tracing::info!(asset = %first.id, path = %first.path, "asset create repeated at once; answering with the asset it made");
            Ok(Created::Racing(racing_twin_started(state, first).await?))
        }
    }
}

/// The racing twin (or the asset that superseded it since, another racer) once its store
/// upload is started (at once with the local store) and it is visible to this request; 503
/// if that does not happen soon (the twin was undone: the store is unreachable).
async fn racing_twin_started(state: &AppState, twin: Asset) -> ApiResult<Asset> {
    let deadline = tokio::time::Instant::now() + RACING_UPLOAD_WAIT;
    loop {
        let live = state
            .db
            .live_clip(&twin.id, &twin.device_id, &twin.project_id)
            .await?;
        let asset = match live {
            Some(id) => state.db.asset(&id).await?,
            None => None,
        };
        match asset {
            Some(asset) if state.s3.is_none() || asset.remote_upload().is_some() => {
                return Ok(asset);
            }
            // Not started yet, or not visible yet (on SQLite the writer may not have
            // committed the other create's transaction to the readers), or gone (undone).
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            _ => return Err(ApiError::store_unavailable()),
        }
    }
}

/// The asset an identical create just made, if nothing was sent to it yet (see
/// `Db::retried_create`). With S3, parts sent to the bucket are only known once listed,
/// so a candidate's parts are listed first.
async fn retried_create(
    state: &AppState,
    device: &Authenticated,
    name: &str,
    size: u64,
    recorded_at: i64,
    channel: i64,
) -> ApiResult<Option<Asset>> {
    let find = || {
        state
            .db
            .retried_create(&device.device_id, name, size, recorded_at)
    };
    // The same file from another channel (a second recorder naming its clips the same
    // way) is another clip, not this create's retry.
    let Some(candidate) = find().await?.filter(|a| a.channel == channel) else {
        return Ok(None);
    };
    let Some(s3) = &state.s3 else {
        return Ok(Some(candidate));
    };
    if let Err(e) = part_watch::check(state, s3, &candidate.id).await {
        tracing::warn!(asset = %candidate.id, error = %e, "listing parts before answering a repeated create failed");
        return Err(ApiError::store_unavailable());
    }
    Ok(find().await?.filter(|again| again.id == candidate.id))
}

/// The answer to creating a planned asset: the asset and one URL per part.
fn planned_answer(state: &AppState, base_url: &str, asset: Asset) -> ApiResult<Response> {
    let plan = asset
        .plan()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a planned asset without a plan")))?;
    let upload_urls = part_urls(
        state,
        base_url,
        &asset,
        (1..=plan.count).map(|n| (n, plan.len(n))),
    )?;
    Ok(Json(AssetBody {
        id: asset.id,
        name: asset.name,
        filetype: asset.filetype,
        filesize: plan.filesize,
        project_id: asset.project_id,
        upload_urls,
        kind: "file".to_owned(),
        inserted_at: rfc3339(asset.created_at),
        offset: asset.offset_secs,
        channel: asset.channel,
        recorded_at: rfc3339(asset.recorded_at),
        path: asset.path,
    })
    .into_response())
}

/// Starts the media store's own upload for a new asset (S3's multipart upload). A key in
/// use (an object the database does not know, or the first key of a renamed upload) makes
/// the asset take the next free name; a store that cannot be reached undoes the asset and
/// answers 503, so the device retries. Undoing an asset that superseded others
/// (`superseding`) gives them back their place, names and notes, in one transaction.
async fn begin_upload(state: &AppState, mut asset: Asset, superseding: bool) -> ApiResult<Asset> {
    if state.s3.is_none() {
        // The local store has no upload to start and no object keys to collide.
        return Ok(asset);
    }
    let project = state
        .db
        .project(&asset.project_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("project vanished")))?;
    for _ in 0..100 {
        let key = format!("{}/{}", project.dir, asset.path);
        if state.db.object_key_taken(&key, &asset.id).await? {
            asset.path = state.db.reserve_next_path(&asset).await?;
            continue;
        }
        match state.media.begin_upload(&key, &asset.filetype).await {
            Ok(None) => return Ok(asset),
            Ok(Some(upload)) => {
                state
                    .db
                    .set_remote_upload(&asset.id, &upload, now_ms())
                    .await?;
                return Ok(state.db.asset(&asset.id).await?.unwrap_or(asset));
            }
            Err(BeginError::PathTaken) => {
                asset.path = state.db.reserve_next_path(&asset).await?;
            }
            Err(BeginError::Unavailable(why)) => {
                tracing::error!(asset = %asset.id, error = %why, "starting an upload in the media store failed");
                undo_new_asset(state, &asset.id, superseding).await?;
                return Err(ApiError::store_unavailable());
            }
        }
    }
    undo_new_asset(state, &asset.id, superseding).await?;
    Err(ApiError::Internal(anyhow::anyhow!(
        "no free name for {} in the media store",
        asset.path
    )))
}

async fn undo_new_asset(state: &AppState, id: &str, superseding: bool) -> ApiResult<()> {
    if superseding {
        state.db.undo_superseding(id).await?;
    } else {
        state.db.discard_new_asset(id).await?;
    }
    Ok(())
}

/// Upload URLs for `parts` (number, size) of `asset`, in order.
fn part_urls(
    state: &AppState,
    base_url: &str,
    asset: &Asset,
    parts: impl Iterator<Item = (u32, u64)>,
) -> ApiResult<Vec<String>> {
    let expires = url_expiry(state);
    let upload = asset.remote_upload();
    parts
        .map(|(n, size)| {
            state
                .media
                .part_url(base_url, &asset.id, upload.as_ref(), n, size, expires)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "This upload was started on another media store; create the asset again.",
                    )
                })
        })
        .collect()
}

/// The asset `id` if it belongs to the calling device; 404 otherwise, whether or not it
/// exists, so ids of other devices' assets cannot be probed.
async fn own_asset(state: &AppState, device: &Authenticated, id: &str) -> ApiResult<Asset> {
    match state.db.asset(id).await? {
        Some(asset) if asset.device_id == device.device_id => Ok(asset),
        _ => Err(ApiError::not_found("No asset with this id.")),
    }
}

pub async fn register_parts(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    Device(device): Device,
    Path(id): Path<String>,
    fields: Fields,
) -> ApiResult<Json<UploadUrls>> {
    require_asset_create(&device)?;
    let asset = own_asset(&state, &device, &id).await?;
    if !asset.is_realtime() {
        return Err(ApiError::invalid_field(
            "id",
            "this asset is not a real-time upload",
        ));
    }
    if !fields.is_json {
        return Err(ApiError::invalid_field("parts", "send the parts as JSON"));
    }
    let parts = parse_parts(fields.map.get("parts"), state.config.max_parts)?;
    let asset_filesize = match fields.int("asset_filesize")? {
        Some(size) if size < 1 || size as u64 > MAX_FILESIZE => {
            return Err(ApiError::invalid_field(
                "asset_filesize",
                "must be between 1 byte and 5 TiB",
            ));
        }
        other => other.map(|s| s as u64),
    };
    if asset_filesize.is_none() && parts.iter().any(|p| p.2) && asset.filesize.is_none() {
        return Err(ApiError::invalid_field(
            "asset_filesize",
            "is required once a part is final",
        ));
    }
    let rename = fields
        .string("asset_name")?
        .map(|n| AssetName::parse(&n).map_err(|e| ApiError::invalid_field("asset_name", e)))
        .transpose()?;
    state
        .db
        .register_parts(&asset.id, &parts, asset_filesize, rename.as_ref())
        .await?
        .map_err(|problem| ApiError::invalid_field("parts", problem))?;
    if !finalise::claim_if_ready(&state, &asset.id).await? {
        // Parts PUT before they were registered are only recorded by a listing.
        state.db.check_soon(&asset.id, now_ms()).await?;
    }
    let upload_urls = part_urls(
        &state,
        &base_url,
        &asset,
        parts.iter().map(|&(n, size, _)| (n, size)),
    )?;
    Ok(Json(UploadUrls { upload_urls }))
}

/// `[{"number", "size", "is_final"}]`, checked against the contract's rules.
fn parse_parts(value: Option<&Value>, max_parts: u32) -> ApiResult<Vec<(u32, u64, bool)>> {
    let bad = |problem: String| ApiError::invalid_field("parts", problem);
    let list = value
        .and_then(Value::as_array)
        .ok_or_else(|| bad("must be a list of parts".into()))?;
    if list.is_empty() || list.len() > max_parts as usize {
        return Err(bad(format!("must hold 1 to {max_parts} parts")));
    }
    let mut parts = Vec::with_capacity(list.len());
    for item in list {
        let number = item
            .get("number")
            .and_then(Value::as_u64)
            .filter(|n| (1..=u64::from(max_parts)).contains(n));
        let Some(number) = number else {
            return Err(bad(format!(
                "each part needs a number from 1 to {max_parts}"
            )));
        };
        let number = number as u32;
        let is_final = item
            .get("is_final")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let size = item
            .get("size")
            .and_then(Value::as_u64)
            .filter(|s| (1..=MAX_PART_SIZE).contains(s));
        let Some(size) = size else {
            return Err(bad(format!(
                "part {number} needs a size from 1 byte to 5 GiB"
            )));
        };
        if !is_final && size < MIN_PART_SIZE {
            return Err(bad(format!(
                "part {number} is not final, so it must be at least {MIN_PART_SIZE} bytes"
            )));
        }
        if parts.iter().any(|&(n, _, _)| n == number) {
            return Err(bad(format!("part {number} is listed twice")));
        }
        parts.push((number, size, is_final));
    }
    Ok(parts)
}

/// Extension: which parts arrived, and fresh URLs for the rest.
pub async fn upload_status(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    Device(device): Device,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadStatus>> {
    let mut asset = own_asset(&state, &device, &id).await?;
    if let Some(s3) = &state.s3
        && asset.state() == AssetState::Uploading
    {
        // The store is the truth about which parts arrived: look now rather than answer
        // from the last scheduled listing.
        if let Err(e) = part_watch::check(&state, s3, &asset.id).await {
            tracing::warn!(asset = %asset.id, error = %e, "listing the parts for a device failed");
        }
        asset = own_asset(&state, &device, &id).await?;
    }
    let known = state.db.parts(&asset.id).await?;
    let received: Vec<u32> = known
        .iter()
        .filter(|p| p.stored_as.is_some())
        .map(|p| p.number as u32)
        .collect();
    let complete = asset.state() != AssetState::Uploading;
    let wanted: Vec<(u32, u64)> = if complete {
        Vec::new()
    } else if let Some(plan) = asset.plan() {
        (1..=plan.count)
            .filter(|n| !received.contains(n))
            .map(|n| (n, plan.len(n)))
            .collect()
    } else {
        known
            .iter()
            .filter(|p| p.stored_as.is_none())
            .map(|p| (p.number as u32, p.size as u64))
            .collect()
    };
    let urls = part_urls(&state, &base_url, &asset, wanted.iter().copied())?;
    let missing = wanted
        .into_iter()
        .zip(urls)
        .map(|((number, size), url)| MissingPart { number, size, url })
        .collect();
    let plan = asset.plan();
    let state = match asset.state() {
        // A duplicate's clip is in the project: the one sent before.
        AssetState::Complete | AssetState::Duplicate => "complete",
        // Nothing more can be sent to it: the device must create the asset again.
        AssetState::Abandoned => "abandoned",
        // The device created the file again; that asset is the one to send to.
        AssetState::Superseded => "superseded",
        AssetState::Uploading | AssetState::Assembling => "uploading",
    };
    Ok(Json(UploadStatus {
        id: asset.id,
        state: state.to_owned(),
        part_count: plan.map_or(known.len() as u32, |p| p.count),
        part_size: plan.map_or(0, |p| p.part_size),
        received_parts: received,
        missing,
    }))
}
