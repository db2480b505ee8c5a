//! What a paired device can ask about itself: `/v2/devices/me`, `/v2/me`, its account, and
//! the heartbeat. A device sees its own record and nothing else of the project.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rushes_proto::device::{Account, Authorization, DeviceMe, Me, ProjectRef};

use crate::clock::{now_ms, rfc3339};
use crate::db::DeviceRecord;
use crate::error::{ApiError, ApiResult};
use crate::extract::Device;
use crate::state::AppState;

pub(crate) async fn record(
    state: &AppState,
    device: &crate::db::Authenticated,
) -> ApiResult<DeviceRecord> {
    // The grant was current a moment ago; if it went since, the token is as good as revoked.
    state
        .db
        .device_record(&device.device_id, &device.grant_id)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

pub async fn me(
    State(state): State<AppState>,
    Device(device): Device,
) -> ApiResult<Json<DeviceMe>> {
    let record = record(&state, &device).await?;
    let (channels, device_paused) = super::channels::listed(&state, &record).await?;
    let now = now_ms();
    Ok(Json(DeviceMe {
        kind: "project_device".to_owned(),
        id: record.id,
        name: record.name,
        project_id: record.project_id.clone(),
        project: ProjectRef {
            id: record.project_id,
            name: record.project_name,
        },
        // The device is calling right now, so it is online unless paused.
        status: if device_paused { "paused" } else { "online" }.to_owned(),
        asset_type: "video".to_owned(),
        authorization: Authorization {
            scopes: device.scopes.as_map(),
            expires_at: rfc3339(record.grant_expires_at.unwrap_or(now)),
            inserted_at: rfc3339(record.grant_created_at),
        },
        channels,
        last_known_firmware_version: record.client_version.clone(),
        client_version: record.client_version,
        inserted_at: rfc3339(record.created_at),
        updated_at: rfc3339(record.updated_at),
        last_seen_at: Some(rfc3339(now)),
    }))
}

/// A minimal user-like object; the device's account is its project.
pub async fn user_me(State(state): State<AppState>, Device(device): Device) -> ApiResult<Json<Me>> {
    let record = record(&state, &device).await?;
    Ok(Json(Me {
        id: record.id,
        name: record.name,
        account_id: record.project_id,
    }))
}

pub async fn account(
    State(state): State<AppState>,
    Device(device): Device,
    Path(account_id): Path<String>,
) -> ApiResult<Json<Account>> {
    let record = record(&state, &device).await?;
    if account_id != record.project_id {
        return Err(ApiError::not_found("No such account."));
    }
    Ok(Json(Account {
        id: record.project_id,
        name: record.project_name,
    }))
}

/// Any authenticated call marks the device as seen; this one does nothing else.
pub async fn heartbeat(Device(_): Device) -> StatusCode {
    StatusCode::NO_CONTENT
}
