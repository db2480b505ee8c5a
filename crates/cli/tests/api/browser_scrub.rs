//! Damage found by scrubbing, as a person sees it in a real headless Chromium (see
//! `browser.rs` for how it is driven): a server that scrubs every second finds a flipped
//! byte, the project page marks that clip (and only it) with a "damaged" badge, and the
//! clip's page says what is wrong.

use std::time::Duration;

use fantoccini::Locator;

use crate::browser::{Browser, DESKTOP, bounded};
use crate::helpers::spawn_app_with;
use crate::scrub::{flip_a_byte, upload_clips, wait_entry};

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_clip_is_badged_and_explained_in_a_real_browser() {
    bounded(a_damaged_clip_is_badged_and_explained()).await;
}

async fn a_damaged_clip_is_badged_and_explained() {
    let app = spawn_app_with(&["--scrub-every-secs", "1"]).await;
    let password = app.web_user("dana", true);
    let project = app.project_id("Default");
    let clips = upload_clips(&app, 2).await;
    let (damaged, intact) = (
        clips[0]["id"].as_str().unwrap(),
        clips[1]["id"].as_str().unwrap(),
    );
    flip_a_byte(&app, &clips[0]);
    wait_entry(
        &app,
        damaged,
        Duration::from_secs(30),
        "damage found",
        |e| e["damaged"] == true,
    )
    .await;

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&app.at("/login")).await;
    let form = browser.wait_for("form[action='/login']").await;
    form.find(Locator::Css("input[name=username]"))
        .await
        .expect("username field")
        .send_keys("dana")
        .await
        .expect("type the user name");
    form.find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys(&password)
        .await
        .expect("type the password");
    browser
        .click("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for("form[action='/logout']").await;

    browser.goto(&app.at(&format!("/projects/{project}"))).await;
    let badge = browser
        .wait_for(&format!("li[data-asset='{damaged}'] .status.damaged"))
        .await;
    assert_eq!(badge.text().await.expect("badge text"), "damaged");
    // The intact clip is listed, without a badge.
    let intact_entry = browser
        .wait_for(&format!("li[data-asset='{intact}']"))
        .await;
    assert!(
        intact_entry
            .find_all(Locator::Css(".status.damaged"))
            .await
            .expect("search the entry")
            .is_empty(),
        "the intact clip is marked damaged"
    );

    browser
        .click(&format!("li[data-asset='{damaged}'] a"))
        .await;
    let notice = browser.wait_for("#damage").await;
    let text = notice.text().await.expect("notice text");
    assert!(
        text.contains("Damaged") && text.contains("SHA-256"),
        "{text}"
    );
    browser.close().await;
}
