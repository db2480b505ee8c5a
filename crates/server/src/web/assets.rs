//! A clip's page (details, in-browser playback, the device's comments and markers) and its bytes (with HTTP range
//! requests, so large files resume and video seeks).

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;

use super::projects::ClipView;
use super::session::{Nav, SignedIn};
use super::{internal, not_found, render};
use crate::db::{Asset, AssetState, ClipNote};
use crate::media::s3::{S3Error, S3Store};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "asset.html")]
struct AssetPage {
    nav: Nav,
    clip: ClipView,
    project_id: String,
    project_name: String,
    path: String,
    filetype: String,
    preview: &'static str,
    complete: bool,
    /// Comments and markers from the device, in the order they arrived (see `Db::clip_notes`).
    notes: Vec<ClipNote>,
}

/// What a browser can show of a MIME type: `video`, `audio`, `image`, or nothing.
fn preview_kind(mime: &str) -> &'static str {
    match mime {
        "video/mp4" | "video/quicktime" | "video/webm" | "video/ogg" => "video",
        "audio/mpeg" | "audio/mp3" | "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/aac"
        | "audio/mp4" | "audio/ogg" | "audio/webm" | "audio/flac" => "audio",
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" | "image/heic" | "image/avif" => {
            "image"
        }
        _ => "",
    }
}

/// The asset if the user may see its project; `Err` is the page to answer instead.
async fn visible_asset(state: &AppState, user: &SignedIn, id: &str) -> Result<Asset, Response> {
    let asset = match state.db.asset(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(not_found(user.nav())),
        Err(e) => return Err(internal(user.nav(), e)),
    };
    user.check_project(state, &asset.project_id).await?;
    Ok(asset)
}

pub async fn page(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let asset = match visible_asset(&state, &user, &id).await {
        Ok(a) => a,
        Err(res) => return res,
    };
    let listing = match state.db.asset_listing(Some(&asset.project_id)).await {
        Ok(l) => l,
        Err(e) => return internal(user.nav(), e),
    };
    let Some(entry) = listing.iter().find(|a| a.id == asset.id) else {
        return not_found(user.nav());
    };
    let project_name = entry.project.clone();
    let notes = match state.db.clip_notes(&asset.id).await {
        Ok(notes) => notes.unwrap_or_default(),
        Err(e) => return internal(user.nav(), e),
    };
    render(&AssetPage {
        notes,
        nav: user.nav(),
        clip: ClipView::of(entry),
        project_id: asset.project_id.clone(),
        project_name,
        path: asset.path.clone(),
        preview: preview_kind(&asset.filetype),
        filetype: asset.filetype.clone(),
        complete: asset.state() == AssetState::Complete,
    })
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    download: Option<String>,
}

pub async fn file(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
    req: Request,
) -> Response {
    let asset = match visible_asset(&state, &user, &id).await {
        Ok(a) if a.state() == AssetState::Complete => a,
        Ok(_) => return not_found(user.nav()),
        Err(res) => return res,
    };
    let project = match state.db.project(&asset.project_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(user.nav()),
        Err(e) => return internal(user.nav(), e),
    };
    let mut res = if let Some(s3) = &state.s3 {
        let key = asset
            .remote_upload()
            .map_or_else(|| format!("{}/{}", project.dir, asset.path), |u| u.key);
        let wanted = Wanted::of(&req);
        match from_s3(s3, &key, &asset.filetype, wanted).await {
            Ok(res) => res,
            Err(e) => {
                tracing::error!(asset = %asset.id, error = %e, "reading from the S3 store failed");
                return super::unavailable(user.nav());
            }
        }
    } else if let Some(local) = &state.local {
        let path = local.asset_path(&project.dir, &asset.path);
        let mime = asset
            .filetype
            .parse()
            .unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
        // ServeFile answers Range, If-Range and HEAD; we only set the type and disposition.
        match tower_http::services::ServeFile::new_with_mime(&path, &mime)
            .oneshot(req)
            .await
        {
            Ok(res) => res.into_response(),
            Err(e) => return internal(user.nav(), e),
        }
    } else {
        return not_found(user.nav());
    };
    if q.download.is_some() {
        let name: String = asset
            .name
            .chars()
            .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    res
}

/// What a browser asked of a file.
struct Wanted {
    head: bool,
    range: Option<String>,
    if_range: Option<String>,
}

impl Wanted {
    fn of(req: &Request) -> Wanted {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Wanted {
            head: req.method() == Method::HEAD,
            range: header(header::RANGE),
            if_range: header(header::IF_RANGE),
        }
    }
}

/// Streams an object from the S3 store through this server (the bucket need not be
/// reachable from browsers), passing ranges through so video seeks and downloads resume.
async fn from_s3(
    s3: &S3Store,
    key: &str,
    filetype: &str,
    wanted: Wanted,
) -> Result<Response, S3Error> {
    let upstream = s3
        .get(
            key,
            wanted.head,
            wanted.range.as_deref(),
            wanted.if_range.as_deref(),
        )
        .await?;
    let status = StatusCode::from_u16(upstream.status().as_u16())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !(status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE) {
        return Err(S3Error::Refused {
            status: upstream.status(),
            code: String::new(),
            message: "reading the object".into(),
        });
    }
    let mut res = Response::builder().status(status);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
    ] {
        if let Some(v) = upstream.headers().get(name.as_str())
            && let Ok(v) = HeaderValue::from_bytes(v.as_bytes())
        {
            res = res.header(name, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(filetype) {
        res = res.header(header::CONTENT_TYPE, v);
    }
    res.body(Body::from_stream(upstream.bytes_stream()))
        .map_err(|e| S3Error::Garbled(e.to_string()))
}
