//! Projects: the list, a project's page (devices with their controls, the media browser,
//! uploads in flight), its live event stream, and the device actions.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::session::{Nav, SignedIn};
use super::{error_page, human_size, internal, not_found, render, short_time};
use crate::clock::{date_folder, now_ms};
use crate::db::{AssetListing, Project};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    nav: Nav,
    projects: Vec<Project>,
}

pub async fn list(State(state): State<AppState>, user: SignedIn) -> Response {
    match state.db.visible_projects(&user.user).await {
        Ok(projects) => render(&ProjectsPage {
            nav: user.nav(),
            projects,
        }),
        Err(e) => internal(user.nav(), e),
    }
}

pub struct DeviceRow {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub status: String,
    pub last_seen: String,
    pub client_version: String,
    pub clips_today: usize,
    pub channels: Vec<ChannelView>,
}

/// One channel of a device on the project page, with what its pause button does.
pub struct ChannelView {
    pub index: i64,
    pub name: String,
    /// `online`, `paused` (the channel or its whole device) or `offline` (disconnected).
    pub status: String,
    /// Paused on its own (its Resume button ends that); a device-wide pause is ended by
    /// the device's Resume.
    pub paused_itself: bool,
    pub connected: bool,
}

/// Channel 0 and the registered channels of a device, by index.
fn channel_views(
    device: &crate::db::DeviceListing,
    rows: &[crate::db::ChannelRow],
    pauses: &[(String, Option<i64>)],
) -> Vec<ChannelView> {
    let paused = |index: i64| pauses.contains(&(device.id.clone(), Some(index)));
    let device_paused = pauses.contains(&(device.id.clone(), None));
    let view = |index: i64, name: String, connected: bool| ChannelView {
        index,
        name,
        status: if !connected {
            "offline"
        } else if device_paused || paused(index) {
            "paused"
        } else {
            "online"
        }
        .to_owned(),
        paused_itself: paused(index),
        connected,
    };
    std::iter::once(view(0, "Channel 0".to_owned(), true))
        .chain(rows.iter().filter(|c| c.device_id == device.id).map(|c| {
            view(
                c.external_index,
                c.name.clone(),
                c.disconnected_at.is_none(),
            )
        }))
        .collect()
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    nav: Nav,
    project: Project,
    devices_html: String,
    media: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesFragment {
    csrf: String,
    devices: Vec<DeviceRow>,
}

pub struct ClipView {
    pub id: String,
    pub name: String,
    pub size: String,
    pub recorded_at: String,
    pub device: String,
    pub state: String,
    pub sha256: Option<String>,
    /// What scrubbing found wrong with its bytes (`None`: nothing, or not re-read yet).
    pub damage: Option<String>,
}

impl ClipView {
    pub fn of(a: &AssetListing) -> ClipView {
        ClipView {
            id: a.id.clone(),
            name: a.path.rsplit('/').next().unwrap_or(&a.path).to_owned(),
            size: human_size(a.size),
            recorded_at: short_time(a.recorded_at),
            device: a.device.clone(),
            state: match a.state.as_str() {
                "complete" | "abandoned" => a.state.clone(),
                _ => "uploading".to_owned(),
            },
            sha256: a.sha256.clone(),
            damage: a.damage.clone(),
        }
    }
}

pub struct DeviceNode {
    pub name: String,
    pub clips: Vec<ClipView>,
}
pub struct KindNode {
    pub name: String,
    pub children: Vec<DeviceNode>,
}
pub struct DateNode {
    pub name: String,
    pub children: Vec<KindNode>,
}

#[derive(Template)]
#[template(path = "media.html")]
struct MediaFragment {
    tree: Vec<DateNode>,
}

/// `Cloud Devices / date / type / device / clip`, newest date first.
fn media_tree(assets: &[AssetListing]) -> Vec<DateNode> {
    let mut tree: Vec<DateNode> = Vec::new();
    for asset in assets {
        let parts: Vec<&str> = asset.path.split('/').collect();
        let [_, date, kind, device, _name] = parts.as_slice() else {
            continue;
        };
        let date_node = child(
            &mut tree,
            date,
            |d| &d.name,
            |name| DateNode {
                name,
                children: Vec::new(),
            },
        );
        let kind_node = child(
            &mut date_node.children,
            kind,
            |k| &k.name,
            |name| KindNode {
                name,
                children: Vec::new(),
            },
        );
        let device_node = child(
            &mut kind_node.children,
            device,
            |d| &d.name,
            |name| DeviceNode {
                name,
                clips: Vec::new(),
            },
        );
        device_node.clips.push(ClipView::of(asset));
    }
    tree.sort_by(|a, b| b.name.cmp(&a.name));
    tree
}

/// The entry of `list` named `name`, added with `make` if missing.
fn child<'a, T>(
    list: &'a mut Vec<T>,
    name: &str,
    name_of: impl Fn(&T) -> &String,
    make: impl FnOnce(String) -> T,
) -> &'a mut T {
    let index = match list.iter().position(|t| name_of(t) == name) {
        Some(i) => i,
        None => {
            list.push(make(name.to_owned()));
            list.len() - 1
        }
    };
    &mut list[index]
}

/// The devices table: status, last seen, firmware, clips today, and their controls.
async fn render_devices(
    state: &AppState,
    project_id: &str,
    assets: &[AssetListing],
    csrf: &str,
) -> anyhow::Result<String> {
    let today = date_folder(now_ms());
    let channels = state.db.project_channels(project_id).await?;
    let pauses = state.db.project_pauses(project_id).await?;
    let devices = state
        .db
        .devices(Some(project_id))
        .await?
        .into_iter()
        .map(|d| DeviceRow {
            channels: channel_views(&d, &channels, &pauses),
            clips_today: assets
                .iter()
                .filter(|a| a.device_id == d.id && date_folder(a.created_at) == today)
                .count(),
            last_seen: d
                .last_seen_at
                .map_or_else(|| "never".to_owned(), short_time),
            id: d.id,
            name: d.name,
            client_id: d.client_id,
            status: d.status,
            client_version: d.client_version,
        })
        .collect();
    Ok(DevicesFragment {
        csrf: csrf.to_owned(),
        devices,
    }
    .render()?)
}

/// The devices table alone, for the page to swap in when a device changes.
pub async fn devices(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    if let Err(res) = visible(&state, &user, &id).await {
        return res;
    }
    let html = match state.db.asset_listing(Some(&id)).await {
        Ok(assets) => render_devices(&state, &id, &assets, &user.csrf).await,
        Err(e) => Err(e.into()),
    };
    match html {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(user.nav(), e),
    }
}

async fn render_media(
    state: &AppState,
    project_id: &str,
) -> anyhow::Result<(String, Vec<AssetListing>)> {
    let assets = state.db.asset_listing(Some(project_id)).await?;
    let html = MediaFragment {
        tree: media_tree(&assets),
    }
    .render()?;
    Ok((html, assets))
}

async fn visible(state: &AppState, user: &SignedIn, project_id: &str) -> Result<Project, Response> {
    user.check_project(state, project_id).await?;
    match state.db.project(project_id).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(not_found(user.nav())),
        Err(e) => Err(internal(user.nav(), e)),
    }
}

pub async fn page(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let project = match visible(&state, &user, &id).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let (media, assets) = match render_media(&state, &id).await {
        Ok(m) => m,
        Err(e) => return internal(user.nav(), e),
    };
    let devices_html = match render_devices(&state, &id, &assets, &user.csrf).await {
        Ok(html) => html,
        Err(e) => return internal(user.nav(), e),
    };
    render(&ProjectPage {
        nav: user.nav(),
        project,
        devices_html,
        media,
    })
}

/// The media browser alone, for the page to swap in when clips arrive.
pub async fn media(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    if let Err(res) = visible(&state, &user, &id).await {
        return res;
    }
    match render_media(&state, &id).await {
        Ok((html, _)) => Html(html).into_response(),
        Err(e) => internal(user.nav(), e),
    }
}

/// Server-sent events: `progress` (uploads in flight, JSON) whenever it changes, and
/// `media` whenever a clip completes. The stream polls the database, so it works the same
/// whichever server process received the bytes.
pub async fn events(
    State(state): State<AppState>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    if let Err(res) = visible(&state, &user, &id).await {
        return res;
    }
    Sse::new(project_events(state, id))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn project_events(
    state: AppState,
    project_id: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Seen {
        progress: Option<String>,
        marker: Option<String>,
        devices: Option<String>,
        channels: Option<String>,
    }
    let seen = Seen {
        progress: None,
        marker: None,
        devices: None,
        channels: None,
    };
    let stream = futures_util::stream::unfold(
        (state, project_id, seen, true),
        |(state, id, mut seen, first)| async move {
            if !first {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut out = Vec::new();
            if let Ok(inflight) = state.db.in_flight(&id).await {
                let json = serde_json::to_string(&inflight).unwrap_or_else(|_| "[]".into());
                if seen.progress.as_deref() != Some(&json) {
                    out.push(Ok(Event::default().event("progress").data(&json)));
                    seen.progress = Some(json);
                }
            }
            if let Ok(marker) = state.db.completed_marker(&id).await {
                if seen.marker.as_ref().is_some_and(|m| *m != marker) {
                    out.push(Ok(Event::default().event("media").data(&marker)));
                }
                seen.marker = Some(marker);
            }
            if let Ok(devices) = state.db.devices(Some(&id)).await {
                // What the table shows; "last seen" to the minute, and the minute itself, so
                // a device that goes quiet turns offline on screen too.
                let minute = now_ms() / 60_000;
                let marker: String = devices
                    .iter()
                    .map(|d| {
                        let seen_at = d.last_seen_at.unwrap_or(0) / 60_000;
                        format!(
                            "{}|{}|{}|{}|{seen_at};",
                            d.id, d.name, d.status, d.client_version
                        )
                    })
                    .chain(std::iter::once(minute.to_string()))
                    .collect();
                if seen.devices.as_ref().is_some_and(|m| *m != marker) {
                    out.push(Ok(Event::default().event("devices").data("changed")));
                }
                seen.devices = Some(marker);
            }
            // Channels come and go and pause on their own: what the table shows of them.
            if let (Ok(channels), Ok(mut pauses)) = (
                state.db.project_channels(&id).await,
                state.db.project_pauses(&id).await,
            ) {
                pauses.sort_unstable();
                let marker = format!(
                    "{:?}{pauses:?}",
                    channels
                        .iter()
                        .map(|c| (&c.id, &c.name, c.disconnected_at.is_some()))
                        .collect::<Vec<_>>()
                );
                if seen.channels.as_ref().is_some_and(|m| *m != marker) {
                    out.push(Ok(Event::default().event("devices").data("changed")));
                }
                seen.channels = Some(marker);
            }
            Some((futures_util::stream::iter(out), (state, id, seen, false)))
        },
    );
    futures_util::StreamExt::flatten(stream)
}

#[derive(Deserialize)]
pub struct ActionForm {
    /// Missing counts as wrong: refused by the handler (403), not by the form parser.
    #[serde(default)]
    csrf: String,
    name: Option<String>,
    /// With `pause`/`resume`: that channel only (its index); absent: the whole device.
    channel: Option<String>,
}

pub async fn device_action(
    State(state): State<AppState>,
    user: SignedIn,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Err(res) = user.check_csrf(&state, &form.csrf) {
        return res;
    }
    let project_id = match state.db.device_project(&id).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(user.nav()),
        Err(e) => return internal(user.nav(), e),
    };
    if let Err(res) = user.check_project(&state, &project_id).await {
        return res;
    }
    let channel = match form.channel.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(index) if (0..=crate::db::MAX_CHANNEL).contains(&index) => Some(index),
            _ => {
                return error_page(
                    user.nav(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!(
                        "A channel is a number from 0 to {}.",
                        crate::db::MAX_CHANNEL
                    ),
                );
            }
        },
    };
    let done = match action.as_str() {
        "pause" => state.db.pause_device(&id, channel).await,
        "resume" => state.db.resume_device(&id, channel).await,
        "unpair" => state.db.unpair_device(&id).await,
        "rename" => {
            let name = form.name.unwrap_or_default();
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return error_page(
                    user.nav(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "A device name is 1 to 100 printable characters.",
                );
            }
            state.db.rename_device(&id, name).await
        }
        _ => return not_found(user.nav()),
    };
    if let Err(e) = done {
        return internal(user.nav(), e);
    }
    tracing::info!(user = %user.user.username, device = %id, action = %action, ?channel, "device action");
    Redirect::to(&format!("/projects/{project_id}")).into_response()
}
