//! The status socket end to end with a person in the loop: a pause pressed on the project
//! page in a real Chromium reaches the camera's open socket as `status_updated` (and the
//! resume after it). The browser machinery is `browser.rs`'s.

use std::time::Duration;

use crate::browser::{Browser, DESKTOP, bounded};
use crate::helpers::spawn_app;
use crate::socket::{join_v1, open_v1, pushed_status};

#[tokio::test(flavor = "multi_thread")]
async fn a_pause_pressed_on_the_project_page_reaches_the_socket_in_a_real_browser() {
    bounded(a_pause_pressed_on_the_project_page_reaches_the_socket()).await;
}

async fn a_pause_pressed_on_the_project_page_reaches_the_socket() {
    let app = spawn_app().await;
    let password = app.web_user("ana", true);
    let project = app.project_id("Default");
    let token = app.pair("BROWSER-SOCKET-CAM").await.access_token;
    let mut ws = open_v1(&app, &token).await;
    assert_eq!(
        join_v1(&mut ws, "devices:BROWSER-SOCKET-CAM").await,
        "online"
    );

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.sign_in(&app.url, "ana", &password).await;

    browser.goto(&app.at(&format!("/projects/{project}"))).await;
    // The device's own Pause (its row's actions), not a channel's.
    browser.click("div.row form[action$='/pause'] button").await;
    browser
        .wait_for("div.row form[action$='/resume'] button")
        .await;
    assert_eq!(
        pushed_status(&mut ws, Duration::from_secs(2)).await,
        "paused"
    );

    browser
        .click("div.row form[action$='/resume'] button")
        .await;
    browser
        .wait_for("div.row form[action$='/pause'] button")
        .await;
    assert_eq!(
        pushed_status(&mut ws, Duration::from_secs(2)).await,
        "online"
    );
    browser.close().await;
}
