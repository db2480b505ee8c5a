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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub number: i64,
    pub status: String,
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
