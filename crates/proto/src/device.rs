//! What a paired device can learn about itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v2/devices/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMe {
    #[serde(rename = "_type")]
    pub kind: String,
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub project: ProjectRef,
    /// `online`, `offline` or `paused`.
    pub status: String,
    /// `video`, `audio` or `data`.
    pub asset_type: String,
    pub authorization: Authorization,
    pub channels: Vec<Channel>,
    pub client_version: String,
    /// The last `x-client-version` the device sent (the name the real service uses).
    pub last_known_firmware_version: String,
    pub inserted_at: String,
    pub updated_at: String,
    pub last_seen_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub scopes: BTreeMap<String, bool>,
    pub expires_at: String,
    pub inserted_at: String,
}

/// One data source of a device (c2c-api.md §5): `POST /v2/devices/channels` answers it
/// and `/v2/devices/me` lists them, channel 0 first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    /// What an asset's `channel` field carries to pick this channel.
    pub external_index: i64,
    /// `video`, `audio` or `data`; `null` when the asset's MIME type decides.
    pub asset_type: Option<String>,
    pub project_device_id: String,
    pub real_time_logging_capable: bool,
    /// `online`, `paused` or `offline` (disconnected).
    pub status: String,
    pub inserted_at: String,
    pub updated_at: String,
}

/// `POST /v2/devices/assets/{asset_id}/comments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: String,
    pub text: String,
    /// Frame number from 0; `null` for a comment on the whole clip.
    pub timestamp: Option<i64>,
    pub asset_id: String,
    /// The device that wrote it.
    pub owner_id: String,
    pub inserted_at: String,
}

/// `GET /v2/me`: a minimal user-like object for the device's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: String,
    pub name: String,
    pub account_id: String,
}

/// `GET /v2/accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
}
