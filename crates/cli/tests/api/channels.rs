//! Channels, comments and markers (c2c-api.md §5) and `last_known_firmware_version` (§3):
//! a device registers and disconnects channels and sees them in `/v2/devices/me`; pauses
//! work per channel; a channel's `asset_type` picks the TYPE folder; a device comments on
//! its own clips only; a trigger puts a marker on the clip its channel is recording (or on
//! the next one within 10 minutes); people read them all through `rushes asset comments`
//! and the project page.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn me(app: &TestServer, token: &str) -> Value {
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("devices/me");
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("me body")
}

async fn new_channel(app: &TestServer, token: &str, body: Value) -> Response {
    post_json(app, token, "/v2/devices/channels", &body).await
}

async fn channel_ok(app: &TestServer, token: &str, body: Value) -> Value {
    let res = new_channel(app, token, body).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("channel body")
}

/// The `/me` channel with index `index`.
fn listed(me: &Value, index: i64) -> Value {
    me["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["external_index"] == index).cloned())
        .unwrap_or_else(|| panic!("no channel {index} in {me}"))
}

/// Asserts a 422 whose detail names `field`.
async fn assert_invalid(res: Response, field: &str) {
    let (status, title, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{detail}");
    assert_eq!(title, "Invalid Argument");
    assert!(detail.starts_with(&format!("{field}:")), "{detail}");
}

async fn trigger(app: &TestServer, token: &str, channel_id: &str, body: Value) -> Response {
    let path = format!("/v2/devices/channels/{channel_id}/inputs/1/trigger");
    post_json(app, token, &path, &body).await
}

async fn comment(app: &TestServer, token: &str, asset_id: &str, body: Value) -> Response {
    let path = format!("/v2/devices/assets/{asset_id}/comments");
    post_json(app, token, &path, &body).await
}

/// Creates an asset on `channel` and returns its answer's JSON.
async fn clip_on(app: &TestServer, token: &str, name: &str, channel: i64) -> Value {
    let res = app
        .create_asset_raw(
            token,
            json!({"name": name, "filesize": 1000, "filetype": "video/mp4", "channel": channel}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    res.json().await.expect("asset body")
}

/// A real-time asset on `channel`: unfinished until its final part, like a clip being shot.
async fn recording_on(app: &TestServer, token: &str, channel: i64) -> String {
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4",
                   "channel": channel}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("asset body");
    body["id"].as_str().expect("id").to_owned()
}

/// Channel 1 is paused and the device is not: `/v2/devices/me` says so, a clip on channel
/// 1 is refused with `409 Channel Paused`, and a clip on channel 0 (bytes from `seed`)
/// uploads whole meanwhile.
async fn assert_only_channel_1_paused(app: &TestServer, token: &str, seed: u64) {
    let listing = me(app, token).await;
    assert_eq!(listing["status"], "online", "{listing}");
    assert_eq!(listed(&listing, 1)["status"], "paused", "{listing}");
    assert_eq!(listed(&listing, 0)["status"], "online", "{listing}");
    let res = app
        .create_asset_raw(
            token,
            json!({"name": "b.mp4", "filesize": 10, "filetype": "video/mp4", "channel": 1}),
        )
        .await;
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(title, "Channel Paused");
    let asset = app.create_asset(token, "a.mp4", 4096).await;
    app.upload(&asset, &test_bytes(4096, seed)).await;
    app.wait_complete(token, &asset.id).await;
}

fn notes(app: &TestServer, asset_id: &str) -> Vec<Value> {
    app.cli_json(&["asset", "comments", asset_id])
        .as_array()
        .cloned()
        .expect("a JSON array")
}

#[tokio::test]
async fn channels_are_created_listed_refused_twice_and_disconnected() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-ch-1").await;
    let token = &tokens.access_token;
    let other = app.pair("cam-ch-2").await;

    // Every paired device has channel 0, and nothing else yet.
    let before = me(&app, token).await;
    let device_id = before["id"].as_str().expect("id").to_owned();
    assert_eq!(
        before["channels"].as_array().map(Vec::len),
        Some(1),
        "{before}"
    );
    let zero = listed(&before, 0);
    assert_eq!(zero["status"], "online", "{zero}");
    assert_eq!(zero["project_device_id"], device_id.as_str());

    let mic = channel_ok(
        &app,
        token,
        json!({"client_id": "mic-A", "device_model_id": "zoom-f3", "name": "Boom"}),
    )
    .await;
    for field in [
        "id",
        "name",
        "external_index",
        "asset_type",
        "project_device_id",
        "real_time_logging_capable",
        "status",
        "inserted_at",
        "updated_at",
    ] {
        assert!(mic.get(field).is_some(), "{field} missing: {mic}");
    }
    assert_eq!(mic["external_index"], 1, "{mic}");
    assert_eq!(mic["name"], "Boom");
    assert_eq!(mic["status"], "online");
    assert_eq!(mic["project_device_id"], device_id.as_str());
    let mic_id = mic["id"].as_str().expect("id").to_owned();

    // The same client_id again: 409 in the detailed shape.
    let again = new_channel(
        &app,
        token,
        json!({"client_id": "mic-A", "device_model_id": "zoom-f3"}),
    )
    .await;
    let (status, title, _) = detailed_error(again).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(title, "Device channel already exists");
    // Another device may use the same client_id for its own channel.
    let theirs = channel_ok(
        &app,
        &other.access_token,
        json!({"client_id": "mic-A", "device_model_id": 7}),
    )
    .await;
    assert_eq!(theirs["external_index"], 1);

    let second = channel_ok(
        &app,
        token,
        json!({"client_id": "mic-B", "device_model_id": "zoom-f3"}),
    )
    .await;
    assert_eq!(second["external_index"], 2);
    let listing = me(&app, token).await;
    assert_eq!(listing["channels"].as_array().map(Vec::len), Some(3));
    assert_eq!(listed(&listing, 1)["id"], mic_id.as_str());
    assert_eq!(listed(&listing, 2)["status"], "online");

    // One channel disconnected; another device's channel id is 404 (and stays connected).
    let path = format!("/v2/devices/channels/{mic_id}/disconnect");
    let res = post_json(&app, &other.access_token, &path, &json!({})).await;
    assert_eq!(detailed_error(res).await.0, StatusCode::NOT_FOUND);
    assert_eq!(listed(&me(&app, token).await, 1)["status"], "online");
    let res = post_json(&app, token, &path, &json!({})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let listing = me(&app, token).await;
    assert_eq!(listed(&listing, 1)["status"], "offline", "{listing}");
    assert_eq!(listed(&listing, 2)["status"], "online", "{listing}");
    let res = post_json(
        &app,
        token,
        "/v2/devices/channels/no-such-channel/disconnect",
        &json!({}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // All but channel 0.
    let res = post_json(&app, token, "/v2/devices/channels/disconnect", &json!({})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let listing = me(&app, token).await;
    assert_eq!(listed(&listing, 0)["status"], "online", "{listing}");
    assert_eq!(listed(&listing, 2)["status"], "offline", "{listing}");
    // The other device's channel is untouched.
    assert_eq!(
        listed(&me(&app, &other.access_token).await, 1)["status"],
        "online"
    );

    // A disconnected channel that comes back is the same channel, connected again.
    let back = channel_ok(
        &app,
        token,
        json!({"client_id": "mic-A", "device_model_id": "zoom-f3"}),
    )
    .await;
    assert_eq!(back["id"], mic_id.as_str());
    assert_eq!(back["external_index"], 1);
    assert_eq!(back["status"], "online");
}

#[tokio::test]
async fn channel_comment_and_trigger_fields_are_checked_with_422s_naming_the_field() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-ch-422").await;
    let token = &tokens.access_token;
    let device_id = me(&app, token).await["id"].as_str().expect("id").to_owned();

    assert_invalid(
        new_channel(&app, token, json!({"device_model_id": "m"})).await,
        "client_id",
    )
    .await;
    assert_invalid(
        new_channel(&app, token, json!({"client_id": "x"})).await,
        "device_model_id",
    )
    .await;
    assert_invalid(
        new_channel(
            &app,
            token,
            json!({"client_id": "x", "device_model_id": "m", "asset_type": "smell"}),
        )
        .await,
        "asset_type",
    )
    .await;

    let asset = clip_on(&app, token, "checked.mp4", 0).await;
    let asset_id = asset["id"].as_str().expect("id");
    assert_invalid(comment(&app, token, asset_id, json!({})).await, "text").await;
    assert_invalid(
        comment(&app, token, asset_id, json!({"text": ""})).await,
        "text",
    )
    .await;
    let too_long = "é".repeat(4097);
    assert_invalid(
        comment(&app, token, asset_id, json!({"text": too_long})).await,
        "text",
    )
    .await;
    assert_invalid(
        comment(&app, token, asset_id, json!({"text": "x", "timestamp": -1})).await,
        "timestamp",
    )
    .await;
    // 4096 characters (of two bytes each) is the limit, not too long.
    let longest = comment(&app, token, asset_id, json!({"text": "é".repeat(4096)})).await;
    assert_eq!(longest.status(), StatusCode::OK);

    for (body, field) in [
        (json!({"rate": 25}), "smpte_timecode"),
        (json!({"smpte_timecode": "01:02:03:04"}), "rate"),
        (json!({"smpte_timecode": "01:02:03:04", "rate": 0}), "rate"),
        (
            json!({"smpte_timecode": "01:02:03:04", "rate": "fast"}),
            "rate",
        ),
        (
            json!({"smpte_timecode": "01:02:03:25", "rate": 25}),
            "smpte_timecode",
        ),
        (
            json!({"smpte_timecode": "1:2:3:4", "rate": 25}),
            "smpte_timecode",
        ),
        (
            json!({"smpte_timecode": "25:00:00:00", "rate": 25}),
            "smpte_timecode",
        ),
    ] {
        assert_invalid(trigger(&app, token, &device_id, body).await, field).await;
    }
    let res = post_json(
        &app,
        token,
        &format!("/v2/devices/channels/{device_id}/inputs/x/trigger"),
        &json!({"smpte_timecode": "01:02:03:04", "rate": 25}),
    )
    .await;
    assert_invalid(res, "index").await;
    // An unknown channel is 404, a well-formed trigger on channel 0 is 204.
    let res = trigger(
        &app,
        token,
        "no-such-channel",
        json!({"smpte_timecode": "01:02:03:04", "rate": 25}),
    )
    .await;
    assert_eq!(detailed_error(res).await.0, StatusCode::NOT_FOUND);
    let res = trigger(
        &app,
        token,
        &device_id,
        json!({"smpte_timecode": "00:00:01:00", "rate": "29.97"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_paused_channel_is_refused_while_another_channel_uploads() {
    let app = spawn_app().await;
    let password = app.web_user("ana", true);
    let tokens = app.pair("cam-ch-pause").await;
    let token = &tokens.access_token;
    let device_id = me(&app, token).await["id"].as_str().expect("id").to_owned();
    channel_ok(
        &app,
        token,
        json!({"client_id": "second-body", "device_model_id": "m"}),
    )
    .await;

    // A person pauses channel 1 on the project page.
    let web = app.web_client("ana", &password).await;
    let project = app.project_id("Default");
    let page = web
        .get(app.at(&format!("/projects/{project}")))
        .send()
        .await
        .expect("project page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-channel=\"1\""), "{page}");
    let csrf = csrf_of(&page);
    let res = web
        .post(app.at(&format!("/devices/{device_id}/pause")))
        .form(&[("csrf", csrf.as_str()), ("channel", "1")])
        .send()
        .await
        .expect("pause channel");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("html");
    assert!(
        page.contains("aria-label=\"Resume channel 1\""),
        "the page offers no resume for channel 1: {page}"
    );

    assert_only_channel_1_paused(&app, token, 1).await;

    // A missing CSRF token changes nothing.
    let res = web
        .post(app.at(&format!("/devices/{device_id}/resume")))
        .form(&[("channel", "1")])
        .send()
        .await
        .expect("resume without csrf");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(listed(&me(&app, token).await, 1)["status"], "paused");

    // Resumed: channel 1 takes clips recorded from now on.
    let res = web
        .post(app.at(&format!("/devices/{device_id}/resume")))
        .form(&[("csrf", csrf.as_str()), ("channel", "1")])
        .send()
        .await
        .expect("resume channel");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(listed(&me(&app, token).await, 1)["status"], "online");
    clip_on(&app, token, "b.mp4", 1).await;
}

#[tokio::test]
async fn a_channels_asset_type_decides_the_type_folder() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-ch-type").await;
    let token = &tokens.access_token;
    let mic = channel_ok(
        &app,
        token,
        json!({"client_id": "lav", "device_model_id": "m", "asset_type": "audio"}),
    )
    .await;
    assert_eq!(mic["asset_type"], "audio");
    let index = mic["external_index"].as_i64().expect("index");

    let on_mic = clip_on(&app, token, "take.mp4", index).await;
    let on_body = clip_on(&app, token, "body.mp4", 0).await;
    let path_of = |v: &Value| v["path"].as_str().expect("path").to_owned();
    assert!(
        path_of(&on_mic).contains("/AUDIO/"),
        "a video file on an audio channel: {}",
        path_of(&on_mic)
    );
    assert!(
        path_of(&on_body).contains("/VIDEO/"),
        "{}",
        path_of(&on_body)
    );
}

#[tokio::test]
async fn a_device_comments_on_its_own_clips_only() {
    let app = spawn_app().await;
    let mine = app.pair("cam-ch-own").await;
    let theirs = app.pair("cam-ch-other").await;
    let my_id = me(&app, &mine.access_token).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let asset = clip_on(&app, &mine.access_token, "mine.mp4", 0).await;
    let asset_id = asset["id"].as_str().expect("id");

    let res = comment(
        &app,
        &mine.access_token,
        asset_id,
        json!({"text": "focus buzz", "timestamp": 48}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("comment");
    assert_eq!(body["text"], "focus buzz");
    assert_eq!(body["timestamp"], 48);
    assert_eq!(body["asset_id"], asset_id);
    assert_eq!(body["owner_id"], my_id.as_str());
    assert!(
        body["id"].is_string() && body["inserted_at"].is_string(),
        "{body}"
    );

    // Another device's asset, and an asset that does not exist: the same 404.
    let res = comment(
        &app,
        &theirs.access_token,
        asset_id,
        json!({"text": "mine now"}),
    )
    .await;
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = comment(
        &app,
        &theirs.access_token,
        "0190a6c4-0000-7000-8000-000000000000",
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(
        detailed_error(res).await,
        (StatusCode::NOT_FOUND, "Not Found".into(), detail)
    );
    // Only the owner's comment was kept.
    let kept = notes(&app, asset_id);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["text"], "focus buzz");
}

#[tokio::test]
async fn a_marker_lands_on_the_clip_being_recorded_or_the_next_one_within_10_minutes() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-ch-marker").await;
    let token = &tokens.access_token;
    let device_id = me(&app, token).await["id"].as_str().expect("id").to_owned();

    // Channel 0 is recording: the marker lands on that clip, with the comments, in the
    // order they arrived (a marker's SMPTE timecode and a comment's frame from 0 share no
    // time line; frames are shown as timecodes at the marker's rate).
    let recording = recording_on(&app, token, 0).await;
    let res = trigger(
        &app,
        token,
        &device_id,
        json!({"smpte_timecode": "00:00:02:00", "rate": 25}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for body in [
        json!({"text": "later", "timestamp": 100}),
        json!({"text": "whole take"}),
        json!({"text": "earlier", "timestamp": 25}),
    ] {
        assert_eq!(
            comment(&app, token, &recording, body).await.status(),
            StatusCode::OK
        );
    }
    let listed = notes(&app, &recording);
    let order: Vec<(&str, &str)> = listed
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap_or_default(),
                n["timecode"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("marker", "00:00:02:00"),
            ("comment", "00:00:04:00"),
            ("comment", "-"),
            ("comment", "00:00:01:00"),
        ],
        "{listed:?}"
    );
    assert_eq!(listed[2]["text"], "whole take");
    assert_eq!(listed[0]["rate"], "25");
    assert_eq!(listed[0]["input"], 1);
    assert_eq!(listed[1]["text"], "later");
    assert_eq!(listed[1]["frame"], 100);

    // Channel 1 records nothing yet: its marker waits for the next clip it creates, and
    // only that one; a clip of channel 0 meanwhile does not take it.
    let second = channel_ok(
        &app,
        token,
        json!({"client_id": "cam-b", "device_model_id": "m"}),
    )
    .await;
    let second_id = second["id"].as_str().expect("id");
    let res = trigger(
        &app,
        token,
        second_id,
        json!({"smpte_timecode": "10:00:00:12", "rate": 24}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let elsewhere = clip_on(&app, token, "other.mp4", 0).await;
    let next = clip_on(&app, token, "next.mp4", 1).await;
    let after = clip_on(&app, token, "after.mp4", 1).await;
    let next_notes = notes(&app, next["id"].as_str().expect("id"));
    assert_eq!(next_notes.len(), 1, "{next_notes:?}");
    assert_eq!(next_notes[0]["kind"], "marker");
    assert_eq!(next_notes[0]["timecode"], "10:00:00:12");
    assert!(notes(&app, after["id"].as_str().expect("id")).is_empty());
    assert!(notes(&app, elsewhere["id"].as_str().expect("id")).is_empty());

    // A marker older than 10 minutes when the channel's next clip comes is not its.
    let third = channel_ok(
        &app,
        token,
        json!({"client_id": "cam-c", "device_model_id": "m"}),
    )
    .await;
    let res = trigger(
        &app,
        token,
        third["id"].as_str().expect("id"),
        json!({"smpte_timecode": "11:00:00:00", "rate": 24}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.sql("UPDATE markers SET created_at = created_at - 660000 WHERE channel = 2");
    let late = clip_on(&app, token, "late.mp4", 2).await;
    assert!(notes(&app, late["id"].as_str().expect("id")).is_empty());

    // The table form prints the same entries.
    let table = app.cli(&["asset", "comments", &recording]);
    assert!(
        table.contains("whole take") && table.contains("00:00:02:00"),
        "{table}"
    );
    let unknown = app.cli_raw(&["asset", "comments", "no-such-asset"]);
    assert!(!unknown.status.success());
}

#[tokio::test]
async fn devices_me_carries_the_last_firmware_version_seen_and_the_web_shows_it() {
    let app = spawn_app().await;
    let password = app.web_user("fw", true);
    let tokens = app.pair("cam-ch-fw").await;
    let token = &tokens.access_token;
    assert_eq!(
        me(&app, token).await["last_known_firmware_version"],
        FIRMWARE
    );

    let res = app
        .client
        .post(app.at("/v2/devices/heartbeat"))
        .bearer_auth(token)
        .header(rushes_proto::CLIENT_VERSION_HEADER, "7.0.1")
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The camera's next call reports the same version; /me shows the last one seen.
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .header(rushes_proto::CLIENT_VERSION_HEADER, "7.0.1")
        .send()
        .await
        .expect("me");
    let body: Value = res.json().await.expect("me");
    assert_eq!(body["last_known_firmware_version"], "7.0.1", "{body}");

    let web = app.web_client("fw", &password).await;
    let page = web
        .get(app.at(&format!("/projects/{}", app.project_id("Default"))))
        .send()
        .await
        .expect("project page")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("7.0.1"),
        "the project page does not show the firmware: {page}"
    );
}

/// Reads a server-sent event stream until an event named `name`; `None` at the deadline.
async fn next_event_named(res: &mut Response, buf: &mut String, name: &str) -> Option<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.lines().any(|l| l.trim() == format!("event: {name}")) {
                return Some(());
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, res.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                buf.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n"))
            }
            _ => return None,
        }
    }
}

#[tokio::test]
async fn an_open_project_page_hears_of_a_new_channel_and_a_channel_pause() {
    let app = spawn_app().await;
    let password = app.web_user("eve", true);
    let tokens = app.pair("cam-ch-live").await;
    let token = &tokens.access_token;
    let device_id = me(&app, token).await["id"].as_str().expect("id").to_owned();
    let web = app.web_client("eve", &password).await;
    let project = app.project_id("Default");
    let mut stream = web
        .get(app.at(&format!("/projects/{project}/events")))
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut buf = String::new();
    // The first progress event shows the stream has taken its first look.
    next_event_named(&mut stream, &mut buf, "progress")
        .await
        .expect("a first snapshot");

    channel_ok(
        &app,
        token,
        json!({"client_id": "deck", "device_model_id": "m"}),
    )
    .await;
    next_event_named(&mut stream, &mut buf, "devices")
        .await
        .expect("a devices event for the new channel");

    let page = web
        .get(app.at(&format!("/projects/{project}/devices")))
        .send()
        .await
        .expect("devices fragment")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-channel=\"1\""), "{page}");
    let res = web
        .post(app.at(&format!("/devices/{device_id}/pause")))
        .form(&[("csrf", csrf_of(&page).as_str()), ("channel", "1")])
        .send()
        .await
        .expect("pause channel");
    assert_eq!(res.status(), StatusCode::OK);
    next_event_named(&mut stream, &mut buf, "devices")
        .await
        .expect("a devices event for the channel pause");
}

#[tokio::test]
async fn the_cli_pauses_and_resumes_one_channel() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-cli-ch").await;
    let token = &tokens.access_token;
    channel_ok(
        &app,
        token,
        json!({"client_id": "second-body", "device_model_id": "m"}),
    )
    .await;

    let out = app.cli(&["device", "pause", "cam-cli-ch", "--channel", "1"]);
    assert!(out.contains("channel 1"), "{out}");
    assert_only_channel_1_paused(&app, token, 2).await;

    // Out of range: refused by the command line, nothing changes.
    let refused = app.cli_raw(&["device", "pause", "cam-cli-ch", "--channel", "-1"]);
    assert!(!refused.status.success());

    app.cli(&["device", "resume", "cam-cli-ch", "--channel", "1"]);
    assert_eq!(listed(&me(&app, token).await, 1)["status"], "online");
    clip_on(&app, token, "b.mp4", 1).await;
}

#[tokio::test]
async fn comments_and_markers_follow_a_re_created_clip() {
    // A camera that reconnects creates the clip again (c2c-api.md §4): what it said about
    // the take belongs to the clip, so it moves to the asset that replaces the first.
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-notes-recreate").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB, 31);
    let first = app.create_asset(token, "C0001.MP4", data.len()).await;
    assert!(first.upload_urls.len() > 1);
    let part = data.len().div_ceil(first.upload_urls.len());
    let res = app
        .put_part(&first.upload_urls[0], data[..part].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = comment(&app, token, &first.id, json!({"text": "good take"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let channel_zero = me(&app, token).await["id"].as_str().expect("id").to_owned();
    let res = trigger(
        &app,
        token,
        &channel_zero,
        json!({"smpte_timecode": "01:00:00:00", "rate": 25}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let second = app.create_asset(token, "C0001.MP4", data.len()).await;
    assert_ne!(second.id, first.id, "the first had bytes: it is superseded");
    let moved = notes(&app, &second.id);
    let kinds: Vec<&str> = moved.iter().filter_map(|n| n["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 2, "{moved:?}");
    assert!(
        kinds.contains(&"comment") && kinds.contains(&"marker"),
        "{moved:?}"
    );
    assert!(moved.iter().any(|n| n["text"] == "good take"), "{moved:?}");
}

#[tokio::test]
async fn a_waiting_marker_follows_its_clip_when_the_clip_is_created_again() {
    // A camera that is not real-time logs a moment before it creates the clip; it then
    // reconnects and creates the clip again: the marker belongs to the clip that stays.
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-marker-recreate").await;
    let token = &tokens.access_token;
    let channel_zero = me(&app, token).await["id"].as_str().expect("id").to_owned();
    let res = trigger(
        &app,
        token,
        &channel_zero,
        json!({"smpte_timecode": "14:03:00:10", "rate": 25}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let data = test_bytes(12 * MIB, 41);
    let first = app.create_asset(token, "C0002.MP4", data.len()).await;
    let part = data.len().div_ceil(first.upload_urls.len());
    let res = app
        .put_part(&first.upload_urls[0], data[..part].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(notes(&app, &first.id).len(), 1, "waiting for the first");

    let second = app.create_asset(token, "C0002.MP4", data.len()).await;
    assert_ne!(second.id, first.id, "the first had bytes: it is superseded");
    let kept = notes(&app, &second.id);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["timecode"], "14:03:00:10");
    app.upload(&second, &data).await;
    let kept = notes(&app, &second.id);
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[tokio::test]
async fn a_comment_on_a_superseded_asset_or_a_duplicate_reaches_the_listed_clip() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-comment-follow").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB, 42);
    let first = app.create_asset(token, "C0003.MP4", data.len()).await;
    let part = data.len().div_ceil(first.upload_urls.len());
    let res = app
        .put_part(&first.upload_urls[0], data[..part].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let second = app.create_asset(token, "C0003.MP4", data.len()).await;
    assert_ne!(second.id, first.id);
    // The camera still knows the first id.
    let res = comment(&app, token, &first.id, json!({"text": "to the old id"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("comment");
    assert_eq!(body["asset_id"], second.id.as_str());
    app.upload(&second, &data).await;
    app.wait_complete(token, &second.id).await;

    // The same card sent again: the copy is a duplicate of the listed clip.
    let again = app.create_asset(token, "C0003.MP4", data.len()).await;
    assert_ne!(again.id, second.id);
    let res = comment(&app, token, &again.id, json!({"text": "on the copy"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.upload(&again, &data).await;
    app.wait_complete(token, &again.id).await;
    let res = comment(
        &app,
        token,
        &again.id,
        json!({"text": "after it was a copy"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    let texts: Vec<String> = notes(&app, &second.id)
        .iter()
        .filter_map(|n| n["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        texts,
        ["to the old id", "on the copy", "after it was a copy"],
        "every comment reaches the clip people see"
    );
    // Still only the device's own assets.
    let other = app.pair("cam-comment-other").await;
    let res = comment(
        &app,
        &other.access_token,
        &again.id,
        json!({"text": "not mine"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_fresh_client_id_takes_the_lowest_index_a_disconnected_channel_freed() {
    // A device that registers a new client_id at each start would otherwise run out of
    // indexes after 1024 starts.
    let app = spawn_app().await;
    let tokens = app.pair("cam-ch-reuse").await;
    let token = &tokens.access_token;
    let one = channel_ok(
        &app,
        token,
        json!({"client_id": "boot-1", "device_model_id": "m"}),
    )
    .await;
    let two = channel_ok(
        &app,
        token,
        json!({"client_id": "boot-1b", "device_model_id": "m"}),
    )
    .await;
    assert_eq!(one["external_index"], 1);
    assert_eq!(two["external_index"], 2);
    let path = format!(
        "/v2/devices/channels/{}/disconnect",
        one["id"].as_str().expect("id")
    );
    assert_eq!(
        post_json(&app, token, &path, &json!({})).await.status(),
        StatusCode::NO_CONTENT
    );
    let three = channel_ok(
        &app,
        token,
        json!({"client_id": "boot-2", "device_model_id": "m"}),
    )
    .await;
    assert_eq!(three["external_index"], 1, "{three}");
    // Connected channels keep theirs; the next new one takes the next free index.
    let four = channel_ok(
        &app,
        token,
        json!({"client_id": "boot-2b", "device_model_id": "m"}),
    )
    .await;
    assert_eq!(four["external_index"], 3, "{four}");
    let listed_now = me(&app, token).await;
    assert_eq!(listed(&listed_now, 1)["id"], three["id"]);
    assert_eq!(listed(&listed_now, 2)["id"], two["id"]);
}
