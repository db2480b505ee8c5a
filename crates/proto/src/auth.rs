//! Pairing (OAuth 2.0 device authorization grant, RFC 8628) and token bodies.

use serde::{Deserialize, Serialize};

pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

/// The scopes a device may ask for. `asset_create` lets it upload; `offline` earns a
/// refresh token.
pub const SCOPE_ASSET_CREATE: &str = "asset_create";
pub const SCOPE_OFFLINE: &str = "offline";
pub const KNOWN_SCOPES: [&str; 2] = [SCOPE_ASSET_CREATE, SCOPE_OFFLINE];

/// Answer to `POST /v2/auth/device/code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCodeResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
    pub name: String,
}

/// Answer to a successful `POST /v2/auth/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Answer to `POST /v2/auth/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub success: bool,
}
