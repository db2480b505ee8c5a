//! Creating assets, registering real-time parts and resuming uploads.

use serde::{Deserialize, Serialize};

/// Body of `POST /v2/devices/assets` as our own client sends it. The server parses the
/// body field by field instead (devices send numbers as strings, forms, and so on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAsset {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filetype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesize: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_realtime_upload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_version_id: Option<String>,
}

/// Answer to a non-realtime asset creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub name: String,
    pub filetype: String,
    pub filesize: u64,
    pub project_id: String,
    pub upload_urls: Vec<String>,
    #[serde(rename = "_type")]
    pub kind: String,
    pub inserted_at: String,
    pub offset: i64,
    pub channel: i64,
    pub recorded_at: String,
    pub path: String,
}

/// Answer to a realtime asset creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimeAsset {
    pub id: String,
    pub name: String,
}

/// Body of `POST /v2/devices/assets/{id}/realtime_upload/parts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimeParts {
    pub parts: Vec<RealtimePart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_filesize: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimePart {
    pub number: u32,
    pub size: u64,
    #[serde(default)]
    pub is_final: bool,
}

/// Answer to a realtime part registration: one URL per part, in the request's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadUrls {
    pub upload_urls: Vec<String>,
}

/// Extension: answer to `GET /v2/devices/assets/{id}/upload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub id: String,
    /// `uploading` or `complete`.
    pub state: String,
    pub part_count: u32,
    pub part_size: u64,
    /// Part numbers (1-based) that have arrived.
    pub received_parts: Vec<u32>,
    /// Fresh URLs for the parts that have not arrived, by part number.
    pub missing: Vec<MissingPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingPart {
    pub number: u32,
    pub size: u64,
    pub url: String,
}
