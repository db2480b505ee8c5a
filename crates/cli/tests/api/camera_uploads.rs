//! Uploads as real cameras make them (c2c-api.md §4, issue 19): a device that chooses its
//! own part count (`parts`), a device that creates a file again after a reconnect instead
//! of resuming (the new asset supersedes the unfinished one), and a card sent again from the
//! start (an identical clip is a duplicate, listed once). Each test runs on whichever store
//! the suite uses (local, or S3 with `RUSHES_TEST_MEDIA=s3`).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use rushes_proto::asset::Asset;
use serde_json::{Value, json};

use crate::helpers::*;

const MIB: usize = 1024 * 1024;
/// The camera seen in the field: a 24.6 MB JPEG, sent as `"parts": 2`.
const JPEG_SIZE: usize = 24_638_557;
const NOTICE: Duration = Duration::from_secs(30);

async fn create(app: &TestServer, token: &str, route: &str, body: Value) -> Asset {
    let res = app
        .client
        .post(app.at(route))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("create");
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).expect("asset body")
}

async fn status_json(app: &TestServer, token: &str, id: &str) -> Value {
    let res = app.upload_status(token, id).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("status JSON")
}

/// Every part of `data` cut into `count` parts the contract's way, PUT in order.
async fn put_parts(app: &TestServer, urls: &[String], data: &[u8], numbers: &[usize]) {
    let part = data.len().div_ceil(urls.len());
    for &n in numbers {
        let bytes = data[(n - 1) * part..(n * part).min(data.len())].to_vec();
        let res = app.put_part(&urls[n - 1], bytes).await;
        let status = res.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "part {n}: {}",
            res.text().await.unwrap_or_default()
        );
    }
}

/// Entries of `rushes asset list --json` whose file name starts with `stem`.
fn listed_named(app: &TestServer, stem: &str) -> Vec<Value> {
    let list = app.cli_json(&["asset", "list"]);
    list.as_array()
        .expect("a list")
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .and_then(|p| p.rsplit('/').next())
                .is_some_and(|name| name.starts_with(stem))
        })
        .cloned()
        .collect()
}

/// File names in the folder of a listed asset (on disk, or in the S3 server's folder).
fn files_beside(app: &TestServer, entry: &Value) -> Vec<String> {
    let file = app.asset_file(entry);
    let folder = file.parent().expect("a folder");
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .expect("the clip's folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // s3s-fs keeps its own bookkeeping beside the objects.
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn local_leftovers(app: &TestServer, asset_id: &str) -> Vec<PathBuf> {
    [
        app.data.join("media").join(".rushes-tmp").join(asset_id),
        app.data.join("uploads").join(asset_id),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

fn assert_check_passes(app: &TestServer) {
    let check = app.cli(&["check"]);
    assert!(check.contains("ok"), "{check}");
}

// ---------------------------------------------------------------------------------------
// 1. The device's own part count
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn parts_two_gives_two_urls_and_two_exact_puts_make_the_clip() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-parts-two").await;
    let token = &tokens.access_token;
    let data = test_bytes(JPEG_SIZE, 1901);
    let asset = create(
        &app,
        token,
        "/v2/devices/assets",
        json!({"name": "DSCF9787.JPG", "filesize": data.len(), "filetype": "image/jpeg", "parts": 2}),
    )
    .await;
    assert_eq!(asset.upload_urls.len(), 2, "{asset:?}");
    let first = JPEG_SIZE.div_ceil(2);
    for (i, url) in asset.upload_urls.iter().enumerate() {
        if let (_, Some(size)) = part_url_number_and_size(url) {
            assert_eq!(size, [first, JPEG_SIZE - first][i], "{url}");
        }
    }
    // Resume, the part route and assembly agree on the device's plan.
    let status = status_json(&app, token, &asset.id).await;
    assert_eq!(status["part_count"], 2, "{status}");
    assert_eq!(status["part_size"], first, "{status}");
    let half = [data[..first].to_vec(), data[first..].to_vec()];
    for (url, bytes) in asset.upload_urls.iter().zip(half) {
        let res = app.put_part(url, bytes).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }
    app.wait_complete(token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);

    // The older alias, with the count as a string (numbers may arrive as strings).
    let data = test_bytes(11 * MIB + 3, 1902);
    let asset = create(
        &app,
        token,
        "/v2/assets",
        json!({"name": "A002.MOV", "filesize": data.len().to_string(), "filetype": "video/quicktime", "parts": "2"}),
    )
    .await;
    assert_eq!(asset.upload_urls.len(), 2, "{asset:?}");
    put_parts(&app, &asset.upload_urls, &data, &[2, 1]).await;
    app.wait_complete(token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
    assert_check_passes(&app);
}

#[tokio::test]
async fn a_part_count_the_store_cannot_honour_gets_the_servers_plan() {
    let app = spawn_app_with(&["--part-size", "5242880", "--max-parts", "3"]).await;
    let tokens = app.pair("cam-parts-bad").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB + 1, 1903);
    let body = |name: &str, parts: Value| json!({"name": name, "filesize": data.len(), "filetype": "video/mp4", "parts": parts});
    // The server's own plan for this file: two parts of 6 MiB and a byte.
    let plain = app.create_asset(token, "plain.mp4", data.len()).await;
    let server_plan = plain.upload_urls.len();
    assert_eq!(server_plan, 2);
    for (i, parts) in [
        json!(0),
        json!(-2),
        json!(4),
        json!(10_001),
        json!("lots"),
        json!(2.5),
    ]
    .into_iter()
    .enumerate()
    {
        let asset = create(
            &app,
            token,
            "/v2/devices/assets",
            body(&format!("bad-{i}.mp4"), parts.clone()),
        )
        .await;
        assert_eq!(asset.upload_urls.len(), server_plan, "parts {parts}");
    }
    // Three parts of 4 MiB: under S3's 5 MiB minimum, so the server's plan there; the
    // local store has no minimum and honours it.
    let asset = create(
        &app,
        token,
        "/v2/devices/assets",
        body("three.mp4", json!(3)),
    )
    .await;
    let expected = if suite_uses_s3() { server_plan } else { 3 };
    assert_eq!(asset.upload_urls.len(), expected, "{asset:?}");
    // The answer is what the device follows: its URLs make the clip.
    let numbers: Vec<usize> = (1..=asset.upload_urls.len()).collect();
    put_parts(&app, &asset.upload_urls, &data, &numbers).await;
    app.wait_complete(token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

// ---------------------------------------------------------------------------------------
// 2. A file created again before it finished
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_re_created_asset_takes_the_unfinished_ones_place() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-recreate").await;
    let token = &tokens.access_token;
    // Same name and size, different bytes: the clip must hold the second attempt's.
    let first_try = test_bytes(16 * MIB, 1904);
    let second_try = test_bytes(16 * MIB, 1905);
    let old = app
        .create_asset(token, "DSCF9787.JPG", first_try.len())
        .await;
    assert_eq!(old.upload_urls.len(), 3);
    put_parts(&app, &old.upload_urls, &first_try, &[1]).await;
    // The camera reconnects and creates the same file again instead of resuming.
    let new = app
        .create_asset(token, "DSCF9787.JPG", second_try.len())
        .await;
    assert_ne!(new.id, old.id);
    assert_eq!(
        new.path, old.path,
        "no (2): the new asset takes the old one's place"
    );
    let status = status_json(&app, token, &old.id).await;
    assert_eq!(status["state"], "superseded", "{status}");
    assert_eq!(status["missing"], json!([]), "{status}");
    if !suite_uses_s3() {
        assert_eq!(local_leftovers(&app, &old.id), Vec::<PathBuf>::new());
    }
    // A late PUT to the earlier asset (a retry in flight): 200, and discarded.
    put_parts(&app, &old.upload_urls, &first_try, &[2]).await;
    put_parts(&app, &new.upload_urls, &second_try, &[1, 2, 3]).await;
    app.wait_complete(token, &new.id).await;
    let entry = assert_complete_with(&app, &new.id, &second_try);
    // Even after the clip is complete, the earlier URLs answer 200 and change nothing.
    put_parts(&app, &old.upload_urls, &first_try, &[3, 1]).await;
    let entry_after = assert_complete_with(&app, &new.id, &second_try);
    assert_eq!(entry_after["sha256"], entry["sha256"]);

    let listed = listed_named(&app, "DSCF9787");
    assert_eq!(listed.len(), 1, "listed once: {listed:?}");
    assert_eq!(listed[0]["id"], new.id.as_str());
    assert_eq!(files_beside(&app, &entry), ["DSCF9787.JPG"]);
    if !suite_uses_s3() {
        assert_eq!(local_leftovers(&app, &old.id), Vec::<PathBuf>::new());
    }
    assert_check_passes(&app);
}

#[tokio::test]
async fn a_repeated_create_whose_answer_was_lost_is_still_the_same_asset() {
    // The retry rule comes first: nothing was received, so the same asset is answered,
    // not a superseding one.
    let app = spawn_app().await;
    let tokens = app.pair("cam-recreate-retry").await;
    let token = &tokens.access_token;
    let data = test_bytes(MIB, 1906);
    let first = app.create_asset(token, "A001.MOV", data.len()).await;
    let again = app.create_asset(token, "A001.MOV", data.len()).await;
    assert_eq!(again.id, first.id);
    app.upload(&again, &data).await;
    app.wait_complete(token, &first.id).await;
    assert_complete_with(&app, &first.id, &data);
}

#[tokio::test]
async fn creates_racing_each_other_leave_one_clip_in_the_place() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-recreate-race").await;
    let token = &tokens.access_token;
    let data = test_bytes(11 * MIB, 1907);
    let old = app.create_asset(token, "RACE.MOV", data.len()).await;
    put_parts(&app, &old.upload_urls, &data, &[1]).await;
    // Four creates of the same file at once: each supersedes whatever is unfinished.
    let (a, b, c, d) = tokio::join!(
        app.create_asset(token, "RACE.MOV", data.len()),
        app.create_asset(token, "RACE.MOV", data.len()),
        app.create_asset(token, "RACE.MOV", data.len()),
        app.create_asset(token, "RACE.MOV", data.len()),
    );
    // The device goes on with the answer it got last; whichever that is, one clip results.
    let mut finished = None;
    for asset in [a, b, c, d] {
        let status = status_json(&app, token, &asset.id).await;
        if status["state"] == "uploading" {
            finished = Some(asset);
        }
    }
    let last = finished.expect("one of the creates is the live asset");
    assert_eq!(last.path, old.path);
    app.upload(&last, &data).await;
    app.wait_complete(token, &last.id).await;
    let listed = listed_named(&app, "RACE");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_complete_with(&app, &last.id, &data);
    assert_check_passes(&app);
}

#[tokio::test]
async fn s3_a_superseded_upload_is_aborted_once_its_urls_expire() {
    let app = spawn_app_on_s3(&["--part-size", "5242880", "--upload-url-lifetime", "4"]).await;
    let tokens = app.pair("cam-recreate-s3").await;
    let token = &tokens.access_token;
    let data = test_bytes(11 * MIB, 1908);
    let old = app.create_asset(token, "ABORT.MOV", data.len()).await;
    put_parts(&app, &old.upload_urls, &data, &[1]).await;
    let new = app.create_asset(token, "ABORT.MOV", data.len()).await;
    assert_eq!(new.path, old.path);
    // Still within the URL's lifetime: the bucket takes the late part (and it is dropped
    // with the upload).
    put_parts(&app, &old.upload_urls, &data, &[2]).await;
    app.upload(&new, &data).await;
    app.wait_complete(token, &new.id).await;
    eventually("the superseded upload aborted", NOTICE, || {
        let log = app.log();
        let aborted = log
            .lines()
            .any(|l| l.contains("aborted the upload of a superseded asset") && l.contains(&old.id));
        if aborted {
            Ok(())
        } else {
            Err(format!("log: {log}"))
        }
    })
    .await;
    // Aborting the old upload of the same key leaves the clip alone.
    assert_complete_with(&app, &new.id, &data);
    assert_check_passes(&app);
}

// ---------------------------------------------------------------------------------------
// 3. A card sent again from the start
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_identical_clip_sent_again_is_listed_once_and_stored_once() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-duplicate").await;
    let token = &tokens.access_token;
    let data = test_bytes(2 * MIB + 17, 1909);
    let first = app.create_asset(token, "C0001.MP4", data.len()).await;
    app.upload(&first, &data).await;
    app.wait_complete(token, &first.id).await;
    let original = assert_complete_with(&app, &first.id, &data);

    let again = app.create_asset(token, "C0001.MP4", data.len()).await;
    assert_ne!(again.id, first.id);
    app.upload(&again, &data).await;
    // The device hears its clip is complete: it is, as the one sent before.
    app.wait_complete(token, &again.id).await;
    let listed = listed_named(&app, "C0001");
    assert_eq!(listed.len(), 1, "listed once: {listed:?}");
    assert_eq!(listed[0]["id"], first.id.as_str());
    // No second file (on S3 the duplicate's object is deleted just after it is recorded).
    eventually("one file in the folder", NOTICE, || {
        let files = files_beside(&app, &original);
        if files == ["C0001.MP4"] {
            Ok(())
        } else {
            Err(format!("{files:?}"))
        }
    })
    .await;
    if !suite_uses_s3() {
        assert_eq!(local_leftovers(&app, &again.id), Vec::<PathBuf>::new());
    }
    assert_complete_with(&app, &first.id, &data);

    // Same name and size but other bytes is another clip: it gets its own name.
    let other = test_bytes(data.len(), 1910);
    let third = app.create_asset(token, "C0001.MP4", other.len()).await;
    app.upload(&third, &other).await;
    app.wait_complete(token, &third.id).await;
    let entry = assert_complete_with(&app, &third.id, &other);
    assert!(
        entry["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/C0001 (2).MP4")),
        "{entry}"
    );
    assert_eq!(listed_named(&app, "C0001").len(), 2);
    assert_eq!(
        files_beside(&app, &original),
        ["C0001 (2).MP4", "C0001.MP4"]
    );
    assert_check_passes(&app);

    // The web project page's media tree lists each clip once too.
    let password = app.web_user("dupviewer", true);
    let web = app.web_client("dupviewer", &password).await;
    let project = app.project_id("Default");
    let media = web
        .get(app.at(&format!("/projects/{project}/media")))
        .send()
        .await
        .expect("media tree")
        .text()
        .await
        .expect("html");
    assert!(media.contains(&first.id), "{media}");
    assert!(
        !media.contains(&again.id),
        "the duplicate is listed: {media}"
    );
    assert_eq!(media.matches("C0001.MP4").count(), 1, "{media}");
    assert_eq!(media.matches("C0001 (2).MP4").count(), 1, "{media}");
}

// ---------------------------------------------------------------------------------------
// 4. What a re-create matches, racing first creates, and a store out of reach
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_file_name_and_size_on_another_channel_or_day_is_not_a_re_create() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-recreate-scope").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB, 1960);
    let body = |extra: Value| {
        let mut b = json!({"name": "A001.WAV", "filesize": data.len(), "filetype": "audio/wav"});
        for (k, v) in extra.as_object().expect("an object") {
            b[k] = v.clone();
        }
        b
    };
    let first = create(&app, token, "/v2/devices/assets", body(json!({}))).await;
    put_parts(&app, &first.upload_urls, &data, &[1]).await;
    // Another channel (a second recorder) and another day (an offset of two days) name
    // their own clips the same way: neither replaces the first.
    let other_channel = create(
        &app,
        token,
        "/v2/devices/assets",
        body(json!({"channel": 1})),
    )
    .await;
    let other_day = create(
        &app,
        token,
        "/v2/devices/assets",
        body(json!({"offset": 2 * 86_400})),
    )
    .await;
    // The other channel's clip shares the folder, so it takes the next name.
    assert_ne!(other_channel.id, first.id);
    assert!(
        other_channel.path.ends_with("/A001 (2).WAV"),
        "{}",
        other_channel.path
    );
    assert_ne!(other_day.id, first.id);
    assert_ne!(other_day.path, first.path);
    assert!(other_day.path.ends_with("/A001.WAV"), "{}", other_day.path);
    let status = status_json(&app, token, &first.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([1]), "{status}");
    // The same channel and day still is.
    let again = create(&app, token, "/v2/devices/assets", body(json!({}))).await;
    assert_eq!(again.path, first.path);
    let status = status_json(&app, token, &first.id).await;
    assert_eq!(status["state"], "superseded", "{status}");
}

#[tokio::test]
async fn racing_first_creates_of_a_file_leave_one_clip_without_a_2() {
    // A camera that retries before the first answer comes: four creates of the same file
    // at once, none before. Each answer is an asset to send to; a later re-create replaces
    // whatever is unfinished.
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-racing-first").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB, 1970);
    let body = json!({"name": "B002.MOV", "filesize": data.len(), "filetype": "video/quicktime"});
    let answers = futures_util::future::join_all(
        (0..4).map(|_| create(&app, token, "/v2/devices/assets", body.clone())),
    )
    .await;
    for answer in &answers {
        assert!(answer.path.ends_with("/B002.MOV"), "{}", answer.path);
    }
    // One part to each asset answered, then the camera creates the file again.
    for answer in &answers {
        put_parts(&app, &answer.upload_urls, &data, &[1]).await;
    }
    let again = create(&app, token, "/v2/devices/assets", body.clone()).await;
    assert!(again.path.ends_with("/B002.MOV"), "{}", again.path);
    app.upload(&again, &data).await;
    app.wait_complete(token, &again.id).await;
    let listed = listed_named(&app, "B002");
    assert_eq!(listed.len(), 1, "one clip: {listed:?}");
    assert_eq!(listed[0]["id"], again.id.as_str());
    assert_eq!(listed[0]["state"], "complete");
    assert_check_passes(&app);
}

#[tokio::test]
async fn s3_a_re_create_while_the_store_is_out_of_reach_is_503_and_undone() {
    let app = spawn_app_on_s3(&["--part-size", "5242880"]).await;
    let s3 = app.s3.clone().expect("an S3 server");
    let tokens = app.pair("cam-recreate-s3-down").await;
    let token = &tokens.access_token;
    let data = test_bytes(12 * MIB, 1980);
    let body = json!({"name": "C003.MOV", "filesize": data.len(), "filetype": "video/quicktime"});
    let first = create(&app, token, "/v2/devices/assets", body.clone()).await;
    put_parts(&app, &first.upload_urls, &data, &[1]).await;
    let res = app
        .client
        .post(app.at(&format!("/v2/devices/assets/{}/comments", first.id)))
        .bearer_auth(token)
        .json(&json!({"text": "slate 3"}))
        .send()
        .await
        .expect("comment");
    assert_eq!(res.status(), StatusCode::OK);
    // The server learns of the part (it went to the bucket) before the store goes away,
    // so the create below is a re-create, not a retry.
    let status = status_json(&app, token, &first.id).await;
    assert_eq!(status["received_parts"], json!([1]), "{status}");

    s3.stop();
    let res = app
        .client
        .post(app.at("/v2/devices/assets"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    s3.restart();

    // Nothing happened: the first is unfinished under its name, with its comment and the
    // part it received.
    let listed = listed_named(&app, "C003");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], first.id.as_str());
    assert_eq!(listed[0]["path"], first.path.as_str());
    let status = status_json(&app, token, &first.id).await;
    assert_eq!(status["state"], "uploading", "{status}");
    assert_eq!(status["received_parts"], json!([1]), "{status}");
    let notes = app.cli_json(&["asset", "comments", &first.id]);
    assert_eq!(notes[0]["text"], "slate 3", "{notes}");

    // The device retries: the re-create goes through and takes the place and the comment.
    let again = create(&app, token, "/v2/devices/assets", body).await;
    assert_eq!(again.path, first.path);
    app.upload(&again, &data).await;
    app.wait_complete(token, &again.id).await;
    let listed = listed_named(&app, "C003");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], again.id.as_str());
    let notes = app.cli_json(&["asset", "comments", &again.id]);
    assert_eq!(notes[0]["text"], "slate 3", "{notes}");
    assert_check_passes(&app);
}
