//! The local store's part endpoint: `PUT /upload/{asset}/{part}?size=&expires=&sig=`, what
//! a presigned S3 `UploadPart` URL is for a bucket. The signature is the only credential.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::clock::now_ms;
use crate::db::{AssetState, PartRecord};
use crate::error::{ApiError, ApiResult};
use crate::finalise;
use crate::media::MediaStore;
use crate::media::local::PartError;
use crate::signing::{PartGrant, SignatureError};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Signature {
    size: Option<u64>,
    expires: Option<i64>,
    sig: Option<String>,
}

pub async fn put_part(
    State(state): State<AppState>,
    Path((asset_id, number)): Path<(String, String)>,
    Query(query): Query<Signature>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Some(local) = state.local.clone() else {
        return Err(ApiError::not_found(
            "This server does not receive uploads itself.",
        ));
    };
    let forbidden = |why: &str| {
        ApiError::forbidden(format!(
            "The upload URL {why}; ask the server for a new one."
        ))
    };
    let (Some(size), Some(expires), Some(sig), Ok(number)) =
        (query.size, query.expires, query.sig, number.parse::<u32>())
    else {
        return Err(forbidden("is incomplete"));
    };
    let grant = PartGrant {
        asset_id: asset_id.clone(),
        number,
        size,
        expires,
    };
    match local.signer().verify(&grant, &sig, now_ms()) {
        Ok(()) => {}
        Err(SignatureError::Invalid) => return Err(forbidden("is not valid")),
        Err(SignatureError::Expired) => return Err(forbidden("has expired")),
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len != size) {
        return Err(wrong_length(size, declared.unwrap_or(0)));
    }
    let asset = state
        .db
        .asset(&asset_id)
        .await?
        .ok_or_else(|| ApiError::not_found("No asset with this id."))?;
    let idle = state.config.idle_timeout;
    if asset.state() != AssetState::Uploading {
        // A retry after a lost response: the asset is whole, so take the bytes and say yes,
        // or the device would retry forever. A late part of an asset the device created
        // again (superseded) is answered the same way: the bytes are not wanted, and the
        // device is sending the file to its new asset.
        drain(body, size, idle).await;
        return Ok(ok());
    }
    // A planned part goes straight to its place in the asset's file, unless another upload
    // of it is writing there (one writer per region) or it arrived before: a copy sent
    // again must not overwrite acknowledged bytes in place (a crash mid-write would tear
    // them), so it is kept apart until assembly. Claimed first, then checked, so a copy
    // recorded by the region's previous holder is always seen; the claim is held until
    // this copy is recorded.
    let claim = asset.plan().and_then(|plan| {
        local.claim_region(
            &asset_id,
            u64::from(number.saturating_sub(1)) * plan.part_size,
            size,
        )
    });
    let claim = match claim {
        Some(claim) if !state.db.part_received(&asset_id, number).await? => Some(claim),
        _ => None,
    };
    let stored_as = match local
        .write_part(
            &asset_id,
            number,
            size,
            body.into_data_stream(),
            idle,
            claim.clone(),
        )
        .await
    {
        Ok(name) => name,
        // The asset began assembling while this part came in: like any late part, its
        // bytes are dropped (read to the end) and the device told yes (c2c-api.md §4).
        Err(PartError::Sealed) => return Ok(ok()),
        Err(PartError::WrongLength { expected, received }) => {
            return Err(wrong_length(expected, received));
        }
        Err(PartError::Idle(_)) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request Timeout",
                "The part upload stalled.",
            ));
        }
        Err(PartError::Body(e)) => {
            return Err(ApiError::bad_request(format!(
                "The part upload broke off: {e}"
            )));
        }
        Err(PartError::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
            tracing::error!(error = %e, "media store is full");
            return Err(ApiError::disk_full(
                "The server's media store is full; the part was not stored.",
            ));
        }
        Err(PartError::Io(e)) => return Err(e.into()),
    };
    // The region is let go once the part is recorded (or not), even if the device hangs up
    // meanwhile: the next upload of the part then sees this one received.
    let record = finalise::record_part(&state, &asset_id, number, size, &stored_as, claim).await;
    match record {
        Ok(PartRecord::Recorded { superseded, .. }) => {
            if let Some(old) = superseded {
                local.discard_part(&asset_id, &old).await;
            }
            Ok(ok())
        }
        Ok(PartRecord::AlreadyComplete) => {
            local.discard_part(&asset_id, &stored_as).await;
            Ok(ok())
        }
        Ok(PartRecord::Superseded) => {
            // Superseded while this part was being written: its bytes may have recreated
            // the files the supersede removed. Every writer removes them after its own
            // write, so the last one leaves nothing behind.
            local.discard_parts(&asset_id).await;
            Ok(ok())
        }
        Ok(PartRecord::WrongSize { expected }) => {
            local.discard_part(&asset_id, &stored_as).await;
            Err(wrong_length(expected, size))
        }
        Ok(PartRecord::Unknown) => {
            local.discard_part(&asset_id, &stored_as).await;
            Err(ApiError::not_found(
                "This part is not expected (register it first).",
            ))
        }
        Err(e) => {
            local.discard_part(&asset_id, &stored_as).await;
            Err(e.into())
        }
    }
}

fn ok() -> Response {
    let mut res = StatusCode::OK.into_response();
    res.headers_mut()
        .insert(header::ETAG, HeaderValue::from_static("\"rushes\""));
    res
}

fn wrong_length(expected: u64, received: u64) -> ApiError {
    ApiError::bad_request(format!(
        "The part must be exactly {expected} bytes; {received} were sent."
    ))
}

/// Reads and drops up to `limit` bytes so the connection stays usable.
async fn drain(body: Body, limit: u64, idle: Duration) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while seen <= limit {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => seen += chunk.len() as u64,
            _ => break,
        }
    }
}
