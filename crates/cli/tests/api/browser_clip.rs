//! The clip page in a real headless Chromium (see `browser.rs` for how it is driven): a
//! person signed in sees what the camera said about a clip, its comment and its marker,
//! in the order they arrived, with their timecodes.

use reqwest::StatusCode;
use serde_json::json;

use crate::browser::{Browser, DESKTOP, bounded};
use crate::helpers::{post_json, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn the_clip_page_shows_a_device_comment_and_a_marker_in_a_real_browser() {
    bounded(the_clip_page_shows_a_device_comment_and_a_marker()).await;
}

async fn the_clip_page_shows_a_device_comment_and_a_marker() {
    let app = spawn_app().await;
    let password = app.web_user("cleo", true);
    let tokens = app.pair("BROWSER-CLIP-CAM").await;
    let token = &tokens.access_token;
    let me: serde_json::Value = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("devices/me")
        .json()
        .await
        .expect("me");
    let device_id = me["id"].as_str().expect("id").to_owned();

    // The camera is recording a clip; it logs a moment and comments on a frame.
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": ".mp4"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let clip: serde_json::Value = res.json().await.expect("asset");
    let clip_id = clip["id"].as_str().expect("id").to_owned();
    let res = post_json(
        &app,
        token,
        &format!("/v2/devices/channels/{device_id}/inputs/2/trigger"),
        &json!({"smpte_timecode": "00:00:03:00", "rate": 25}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = post_json(
        &app,
        token,
        &format!("/v2/devices/assets/{clip_id}/comments"),
        &json!({"text": "Great <b>take</b>", "timestamp": 50}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.sign_in(&app.url, "cleo", &password).await;

    browser.goto(&app.at(&format!("/assets/{clip_id}"))).await;
    let comment = browser
        .wait_for("#notes li.comment")
        .await
        .text()
        .await
        .expect("comment text");
    // Frame 50 at the marker's 25 fps is two seconds in; the text is shown, not markup.
    assert!(comment.contains("Great <b>take</b>"), "{comment}");
    assert!(comment.contains("00:00:02:00"), "{comment}");
    let marker = browser
        .wait_for("#notes li.marker")
        .await
        .text()
        .await
        .expect("marker text");
    assert!(marker.contains("00:00:03:00"), "{marker}");
    assert!(marker.contains("input 2"), "{marker}");
    // In the order they arrived (a marker's SMPTE timecode and a comment's frame share no
    // time line): the marker, sent first, before the comment.
    let all = browser
        .wait_for("#notes ol")
        .await
        .text()
        .await
        .expect("notes");
    let (c, m) = (all.find("Great"), all.find("00:00:03:00"));
    assert!(m.is_some() && m < c, "not in arrival order: {all}");
}
