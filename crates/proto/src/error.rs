//! The two error body shapes of the API: OAuth style on `/v2/auth/*`, detailed elsewhere.

use serde::{Deserialize, Serialize};

/// `{"error": "<code>"}`, answered with HTTP 400 by the auth endpoints (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthErrorBody {
    pub error: String,
}

/// The detailed shape every non-auth endpoint uses for errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: u16,
    pub errors: Vec<ErrorEntry>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    pub code: u16,
    pub detail: String,
    pub status: u16,
    pub title: String,
}

impl ErrorBody {
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        let title = title.into();
        ErrorBody {
            code: status,
            errors: vec![ErrorEntry {
                code: status,
                detail: detail.into(),
                status,
                title: title.clone(),
            }],
            message: title,
        }
    }

    /// The human text of the first error, for messages shown to users.
    pub fn detail(&self) -> &str {
        self.errors.first().map_or(&self.message, |e| &e.detail)
    }
}

/// OAuth error codes of the device grant (RFC 8628 §3.5, RFC 6749 §5.2).
pub mod oauth {
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const INVALID_CLIENT: &str = "invalid_client";
    pub const INVALID_GRANT: &str = "invalid_grant";
    pub const INVALID_SCOPE: &str = "invalid_scope";
    pub const UNSUPPORTED_GRANT_TYPE: &str = "unsupported_grant_type";
    pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
    pub const SLOW_DOWN: &str = "slow_down";
    pub const ACCESS_DENIED: &str = "access_denied";
    pub const EXPIRED_TOKEN: &str = "expired_token";
}
