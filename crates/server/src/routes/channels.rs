//! Channels, comments and markers from devices (c2c-api.md §5): a device registers its
//! data sources, disconnects them, comments on its own clips, and logs moments (markers)
//! on the clip a channel is recording.
//!
//! Like every device route, these only ever touch the calling device's own channels and
//! assets: any other id, existing or not, is 404.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rushes_proto::device::{Channel, Comment};
use serde_json::Value;

use crate::clock::rfc3339;
use crate::db::{ChannelCreated, ChannelRow, DeviceRecord, MAX_CHANNEL, NewChannel, NewMarker};
use crate::domain::timecode::{Rate, Timecode};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Device, Fields, require_asset_create};
use crate::state::AppState;

/// Longest comment, in characters (the contract's bound).
const MAX_COMMENT_CHARS: usize = 4096;
/// Longest `client_id`, `device_model_id` or channel name a device may register.
const MAX_LABEL_CHARS: usize = 255;
/// Frame numbers beyond this (35 years at 1000 fps) are nonsense, not footage.
const MAX_FRAME: i64 = 1 << 40;
const MAX_INPUT_INDEX: i64 = 1024;

fn no_such_channel() -> ApiError {
    ApiError::not_found("No such channel on this device.")
}

/// A short label a device names something with: printable, bounded. Numbers are taken as
/// their decimal text (some devices send ids as numbers).
fn label(fields: &Fields, name: &str, required: bool) -> ApiResult<Option<String>> {
    let text = match fields.map.get(name) {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => fields.string(name)?,
    };
    match text {
        None if required => Err(ApiError::invalid_field(name, "is required")),
        None => Ok(None),
        Some(t) => {
            let t = t.trim();
            if t.chars().count() > MAX_LABEL_CHARS || t.chars().any(char::is_control) {
                Err(ApiError::invalid_field(
                    name,
                    format!("must be at most {MAX_LABEL_CHARS} printable characters"),
                ))
            } else {
                Ok(Some(t.to_owned()))
            }
        }
    }
}

/// The status a channel shows: `offline` once disconnected, `paused` while it or its
/// whole device is paused, else `online` (the device is calling, or was listed by a person).
fn status(disconnected: bool, paused: bool) -> &'static str {
    if disconnected {
        "offline"
    } else if paused {
        "paused"
    } else {
        "online"
    }
}

fn channel_object(row: ChannelRow, paused: bool) -> Channel {
    Channel {
        status: status(row.disconnected_at.is_some(), paused).to_owned(),
        project_device_id: row.device_id,
        id: row.id,
        name: row.name,
        external_index: row.external_index,
        asset_type: row.asset_type,
        real_time_logging_capable: row.real_time_logging_capable != 0,
        inserted_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

/// Every channel of the device for `/v2/devices/me`, channel 0 first, and whether the
/// whole device is paused.
pub(crate) async fn listed(
    state: &AppState,
    record: &DeviceRecord,
) -> ApiResult<(Vec<Channel>, bool)> {
    let paused = state.db.paused_channels(&record.id).await?;
    let device_paused = paused.contains(&None);
    let is_paused = |index: i64| device_paused || paused.contains(&Some(index));
    let mut channels = vec![Channel {
        id: record.id.clone(),
        name: record.name.clone(),
        external_index: 0,
        asset_type: None,
        project_device_id: record.id.clone(),
        real_time_logging_capable: true,
        status: status(false, is_paused(0)).to_owned(),
        inserted_at: rfc3339(record.created_at),
        updated_at: rfc3339(record.updated_at),
    }];
    for row in state.db.device_channels(&record.id).await? {
        let paused = is_paused(row.external_index);
        channels.push(channel_object(row, paused));
    }
    Ok((channels, device_paused))
}

/// `POST /v2/devices/channels`: `client_id` and `device_model_id` required; `name`,
/// `asset_type` and `real_time_logging_capable` optional (**Decision**: the contract names
/// no way to set a channel's type, so a device may say it here). The same `client_id` while
/// connected → 409; after a disconnect it is the same channel again, reconnected.
pub async fn create(
    State(state): State<AppState>,
    Device(device): Device,
    fields: Fields,
) -> ApiResult<Json<Channel>> {
    require_asset_create(&device)?;
    let client_id = label(&fields, "client_id", true)?.unwrap_or_default();
    let device_model_id = label(&fields, "device_model_id", true)?.unwrap_or_default();
    let name = label(&fields, "name", false)?;
    let asset_type = fields
        .string("asset_type")?
        .map(|t| {
            crate::db::media_type(&t).ok_or_else(|| {
                ApiError::invalid_field("asset_type", "must be video, audio or data")
            })
        })
        .transpose()?;
    let real_time_logging_capable = fields.bool("real_time_logging_capable")?;
    let created = state
        .db
        .create_channel(
            &device.device_id,
            &NewChannel {
                client_id,
                device_model_id,
                name,
                asset_type,
                real_time_logging_capable,
            },
        )
        .await?;
    let row = match created {
        ChannelCreated::Created(row) | ChannelCreated::Reconnected(row) => row,
        ChannelCreated::Full => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Too Many Channels",
                format!("This device has {MAX_CHANNEL} channels connected, as many as it may."),
            ));
        }
        ChannelCreated::Exists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Device channel already exists",
                "This device already has a connected channel with that client_id.",
            ));
        }
    };
    tracing::info!(channel = %row.id, index = row.external_index, "device channel connected");
    let paused = state
        .db
        .paused_channels(&device.device_id)
        .await?
        .iter()
        .any(|c| c.is_none() || *c == Some(row.external_index));
    Ok(Json(channel_object(row, paused)))
}

/// `POST /v2/devices/channels/{channel_id}/disconnect`.
pub async fn disconnect(
    State(state): State<AppState>,
    Device(device): Device,
    Path(channel_id): Path<String>,
) -> ApiResult<StatusCode> {
    if state
        .db
        .disconnect_channel(&device.device_id, &channel_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_channel())
    }
}

/// `POST /v2/devices/channels/disconnect`: every channel but 0.
pub async fn disconnect_all(
    State(state): State<AppState>,
    Device(device): Device,
) -> ApiResult<StatusCode> {
    state.db.disconnect_channels(&device.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/devices/assets/{asset_id}/comments`.
pub async fn comment(
    State(state): State<AppState>,
    Device(device): Device,
    Path(asset_id): Path<String>,
    fields: Fields,
) -> ApiResult<Json<Comment>> {
    require_asset_create(&device)?;
    // A comment on an asset that was re-created, or sent again as a duplicate, goes to the
    // clip that took its place: the superseded asset and the duplicate are never shown.
    let Some(clip) = state
        .db
        .live_clip(&asset_id, &device.device_id, &device.project_id)
        .await?
    else {
        return Err(ApiError::not_found("No such asset."));
    };
    let text = match fields.map.get("text") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid_field("text", "is required")),
        Some(_) => return Err(ApiError::invalid_field("text", "must be a string")),
    };
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_COMMENT_CHARS || text.contains('\0') {
        return Err(ApiError::invalid_field(
            "text",
            format!("must be 1 to {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let frame = fields.int("timestamp")?;
    if frame.is_some_and(|f| !(0..=MAX_FRAME).contains(&f)) {
        return Err(ApiError::invalid_field(
            "timestamp",
            "must be a frame number from 0",
        ));
    }
    let row = state
        .db
        .add_comment(&clip, &device.device_id, &text, frame)
        .await?;
    Ok(Json(Comment {
        id: row.id,
        text: row.body,
        timestamp: row.frame,
        asset_id: row.asset_id,
        owner_id: row.device_id,
        inserted_at: rfc3339(row.created_at),
    }))
}

/// A frame rate as a JSON number or a string of one (`25`, `"29.97"`).
fn rate(fields: &Fields) -> ApiResult<Rate> {
    let fps = match fields.map.get("rate") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        None | Some(Value::Null) => return Err(ApiError::invalid_field("rate", "is required")),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::invalid_field("rate", "must be a number of frames per second"))?;
    Rate::parse(fps).map_err(|e| ApiError::invalid_field("rate", e))
}

/// `POST /v2/devices/channels/{channel_id}/inputs/{index}/trigger`: a marker on the clip
/// the channel is recording (see `db::comments`).
pub async fn trigger(
    State(state): State<AppState>,
    Device(device): Device,
    Path((channel_id, input)): Path<(String, String)>,
    fields: Fields,
) -> ApiResult<StatusCode> {
    require_asset_create(&device)?;
    let Some(channel) = state
        .db
        .channel_index(&device.device_id, &channel_id)
        .await?
    else {
        return Err(no_such_channel());
    };
    let input_index = input
        .parse::<i64>()
        .ok()
        .filter(|i| (0..=MAX_INPUT_INDEX).contains(i))
        .ok_or_else(|| {
            ApiError::invalid_field("index", format!("must be between 0 and {MAX_INPUT_INDEX}"))
        })?;
    let rate = rate(&fields)?;
    let raw = fields
        .string("smpte_timecode")?
        .ok_or_else(|| ApiError::invalid_field("smpte_timecode", "is required"))?;
    let timecode =
        Timecode::parse(&raw, rate).map_err(|e| ApiError::invalid_field("smpte_timecode", e))?;
    state
        .db
        .add_marker(
            &device.project_id,
            &NewMarker {
                device_id: &device.device_id,
                channel,
                input_index,
                timecode: timecode.as_str(),
                rate_millis: rate.millis(),
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
