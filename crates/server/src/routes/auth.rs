//! `/v2/auth/*`: the OAuth 2.0 device authorization grant (RFC 8628), refresh rotation and
//! revocation (RFC 7009). Errors here are OAuth style: HTTP 400 `{"error": code}`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rushes_proto::auth::{
    DeviceCodeResponse, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, RevokeResponse, TokenResponse,
};
use rushes_proto::error::oauth;

use crate::db::{CodeRequest, IssuedTokens, PollOutcome, RefreshOutcome};
use crate::domain::Scopes;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthFields, BaseUrl, client_version};
use crate::state::{AppState, ms};

/// Longest `client_id` / `client_secret` accepted (serial numbers and UUIDs are far shorter).
const MAX_IDENTIFIER: usize = 256;

fn identifier<'a>(fields: &'a AuthFields, name: &str) -> ApiResult<&'a str> {
    let value = fields.require(name)?;
    if value.len() > MAX_IDENTIFIER || value.chars().any(char::is_control) {
        return Err(ApiError::OAuth(oauth::INVALID_REQUEST));
    }
    Ok(value)
}

pub async fn device_code(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    headers: HeaderMap,
    fields: AuthFields,
) -> ApiResult<Response> {
    let client_id = identifier(&fields, "client_id")?;
    let client_secret = identifier(&fields, "client_secret")?;
    let scopes: Scopes = fields
        .require("scope")?
        .parse()
        .map_err(|_| ApiError::OAuth(oauth::INVALID_SCOPE))?;
    if scopes.is_empty() {
        return Err(ApiError::OAuth(oauth::INVALID_SCOPE));
    }
    // Extension: our client (and integrators) may propose a device name.
    let name = fields
        .get("device_name")
        .or_else(|| fields.get("name"))
        .filter(|n| n.chars().count() <= 100 && !n.chars().any(char::is_control))
        .map(str::to_owned);
    let request = CodeRequest {
        client_id: client_id.to_owned(),
        client_secret: client_secret.to_owned(),
        scopes,
        client_version: client_version(&headers),
        name,
        lifetime_ms: ms(state.config.device_code_lifetime),
        interval_secs: i64::try_from(state.config.poll_interval.as_secs()).unwrap_or(5),
        strict: state.config.strict_clients,
    };
    let code = state
        .db
        .request_device_code(&request)
        .await?
        .ok_or(ApiError::OAuth(oauth::INVALID_CLIENT))?;
    let verification_uri = format!("{base_url}/pair");
    let body = DeviceCodeResponse {
        verification_uri_complete: format!("{verification_uri}?code={}", code.user_code),
        verification_uri,
        device_code: code.device_code,
        user_code: code.user_code,
        expires_in: state.config.device_code_lifetime.as_secs(),
        interval: state.config.poll_interval.as_secs(),
        name: code.device_name,
    };
    Ok(no_store(Json(body)))
}

pub async fn token(State(state): State<AppState>, fields: AuthFields) -> ApiResult<Response> {
    let grant_type = fields.require("grant_type")?;
    let client_id = identifier(&fields, "client_id")?;
    let tokens = match grant_type {
        GRANT_DEVICE_CODE => {
            let device_code = fields.require("device_code")?;
            let outcome = state
                .db
                .poll_device_code(
                    device_code,
                    client_id,
                    fields.get("client_secret"),
                    state.config.strict_clients,
                    state.lifetimes(),
                )
                .await?;
            match outcome {
                PollOutcome::Approved(tokens) => tokens,
                PollOutcome::Pending => return Err(ApiError::OAuth(oauth::AUTHORIZATION_PENDING)),
                PollOutcome::SlowDown => return Err(ApiError::OAuth(oauth::SLOW_DOWN)),
                PollOutcome::Denied => return Err(ApiError::OAuth(oauth::ACCESS_DENIED)),
                PollOutcome::Expired => return Err(ApiError::OAuth(oauth::EXPIRED_TOKEN)),
                PollOutcome::InvalidGrant => return Err(ApiError::OAuth(oauth::INVALID_GRANT)),
                PollOutcome::InvalidClient => return Err(ApiError::OAuth(oauth::INVALID_CLIENT)),
            }
        }
        GRANT_REFRESH_TOKEN => {
            // `refresh_tokem` is a misspelling published in an older spec; devices send it.
            let refresh_token = fields
                .get("refresh_token")
                .or_else(|| fields.get("refresh_tokem"))
                .ok_or(ApiError::OAuth(oauth::INVALID_REQUEST))?;
            match state
                .db
                .refresh(refresh_token, client_id, state.lifetimes())
                .await?
            {
                RefreshOutcome::Issued(tokens) => tokens,
                RefreshOutcome::Reused => {
                    tracing::warn!(
                        "a rotated refresh token was presented again; its grant is revoked"
                    );
                    return Err(ApiError::OAuth(oauth::INVALID_REQUEST));
                }
                RefreshOutcome::Invalid => return Err(ApiError::OAuth(oauth::INVALID_GRANT)),
            }
        }
        _ => return Err(ApiError::OAuth(oauth::UNSUPPORTED_GRANT_TYPE)),
    };
    Ok(token_response(tokens))
}

fn token_response(tokens: IssuedTokens) -> Response {
    no_store(Json(TokenResponse {
        access_token: tokens.access_token,
        token_type: "bearer".to_owned(),
        expires_in: tokens.expires_in_secs,
        refresh_token: tokens.refresh_token,
    }))
}

pub async fn revoke(
    State(state): State<AppState>,
    fields: AuthFields,
) -> ApiResult<Json<RevokeResponse>> {
    let token = fields.require("token")?;
    let client_id = identifier(&fields, "client_id")?;
    state.db.revoke_token(token, client_id).await?;
    Ok(Json(RevokeResponse { success: true }))
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
