//! What a paired device sees of itself (`/v2/devices/me`, `/v2/me`, its account, the
//! heartbeat and its firmware version), and creating assets: the pause rule, the `/v2/assets`
//! alias, urlencoded bodies, where assets land (date, type and device folders, clash
//! suffixes), field validation, and that a device can never see another device's asset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Response, StatusCode};
use rushes_proto::asset::Asset;
use serde_json::{Value, json};

use crate::helpers::*;

const KIB: usize = 1024;
const PAUSED_DETAIL: &str = "The channel you're uploading from is currently paused.";

// ---------------------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------------------

/// Seconds since the Unix epoch, with milliseconds.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The `YYYY_MM_DD` folder (UTC) of a moment given in Unix seconds.
fn date_folder(unix_secs: f64) -> String {
    let (y, m, d) = civil_from_days((unix_secs.floor() as i64).div_euclid(86_400));
    format!("{y:04}_{m:02}_{d:02}")
}

#[test]
fn the_local_date_helper_is_right() {
    assert_eq!(date_folder(0.0), "1970_01_01");
    assert_eq!(date_folder(1_764_392_690.0), "2025_11_29");
    assert_eq!(date_folder(951_782_400.0), "2000_02_29");
    assert_eq!(date_folder(951_868_799.0), "2000_02_29");
    assert_eq!(date_folder(951_868_800.0), "2000_03_01");
}

/// Pairs a device that proposes its own name (`device_name` extension of `device/code`).
async fn pair_named(app: &TestServer, client_id: &str, name: &str) -> String {
    let form = reqwest::multipart::Form::new()
        .text("client_id", client_id.to_owned())
        .text("client_secret", "test-model-secret")
        .text("scope", "asset_create offline")
        .text("device_name", name.to_owned());
    let res = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .multipart(form)
        .send()
        .await
        .expect("device/code");
    assert_eq!(res.status(), StatusCode::OK);
    let code: Value = res.json().await.expect("code body");
    let user_code = code["user_code"].as_str().expect("user_code");
    let device_code = code["device_code"].as_str().expect("device_code");
    app.approve(user_code);
    let res = app.poll(client_id, device_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.expect("token body");
    tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn get(app: &TestServer, token: &str, path: &str) -> Response {
    app.client
        .get(app.at(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

async fn get_json(app: &TestServer, token: &str, path: &str) -> Value {
    let res = get(app, token, path).await;
    assert_eq!(res.status(), StatusCode::OK, "GET {path}");
    res.json().await.expect("JSON body")
}

/// `POST` an asset creation as JSON to `route`.
async fn post_json(app: &TestServer, route: &str, token: &str, body: &Value) -> Response {
    app.client
        .post(app.at(route))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("create asset")
}

/// Creates an asset that must be accepted, returning the raw response body.
async fn create_ok(app: &TestServer, token: &str, body: Value) -> Value {
    let res = app.create_asset_raw(token, body.clone()).await;
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{body} -> {text}");
    serde_json::from_str(&text).expect("asset body is JSON")
}

/// Asserts a 409 Channel Paused answer.
async fn assert_paused(res: Response) {
    let (status, title, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(title, "Channel Paused");
    assert_eq!(detail, PAUSED_DETAIL);
}

/// The `rushes device list --json` entry of the device with `client_id`.
fn listed_device(app: &TestServer, client_id: &str) -> Value {
    let list = app.cli_json(&["device", "list"]);
    list.as_array()
        .and_then(|a| a.iter().find(|d| d["client_id"] == client_id).cloned())
        .unwrap_or_else(|| panic!("device {client_id} not listed: {list}"))
}

/// A timestamp the API returns: RFC 3339 in UTC.
fn assert_timestamp(value: &Value, what: &str) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        s.len() >= 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z'),
        "{what} is not an RFC 3339 UTC timestamp: {s}"
    );
}

fn assert_asset_list_empty(app: &TestServer) {
    let list = app.cli_json(&["asset", "list"]);
    assert_eq!(list, json!([]), "an invalid request created an asset");
}

// ---------------------------------------------------------------------------------------
// 1-3: the device about itself.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn devices_me_describes_the_paired_device_and_shows_a_pause() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-me-0a1b2c").await;
    let me = get_json(&app, &tokens.access_token, "/v2/devices/me").await;

    let listed = listed_device(&app, "cam-me-0a1b2c");
    let project = app.project_id("Default");
    assert_eq!(me["_type"], "project_device", "{me}");
    assert_eq!(me["id"], listed["id"], "{me}");
    assert_eq!(me["name"], "C2C device 0a1b2c", "{me}");
    assert_eq!(me["project_id"], project.as_str(), "{me}");
    assert_eq!(
        me["project"],
        json!({"id": project, "name": "Default"}),
        "{me}"
    );
    assert_eq!(me["status"], "online", "{me}");
    assert!(
        ["video", "audio", "data"].contains(&me["asset_type"].as_str().unwrap_or_default()),
        "{me}"
    );
    assert_eq!(me["authorization"]["scopes"]["asset_create"], true, "{me}");
    assert_eq!(me["authorization"]["scopes"]["offline"], true, "{me}");
    assert_timestamp(
        &me["authorization"]["expires_at"],
        "authorization.expires_at",
    );
    assert_timestamp(
        &me["authorization"]["inserted_at"],
        "authorization.inserted_at",
    );
    assert!(me["channels"].is_array(), "{me}");
    assert_timestamp(&me["inserted_at"], "inserted_at");
    assert_timestamp(&me["updated_at"], "updated_at");
    assert_timestamp(&me["last_seen_at"], "last_seen_at");

    app.cli(&["device", "pause", "cam-me-0a1b2c"]);
    let me = get_json(&app, &tokens.access_token, "/v2/devices/me").await;
    assert_eq!(me["status"], "paused", "{me}");

    app.cli(&["device", "resume", "cam-me-0a1b2c"]);
    let me = get_json(&app, &tokens.access_token, "/v2/devices/me").await;
    assert_eq!(me["status"], "online", "{me}");
}

#[tokio::test]
async fn v2_me_and_the_devices_own_account_answer_and_other_accounts_are_404() {
    let app = spawn_app().await;
    app.cli(&["project", "create", "Other"]);
    let tokens = app.pair("cam-me-acct01").await;
    let other = app
        .pair_into("cam-me-acct02", "asset_create offline", "Other")
        .await;

    let me = get_json(&app, &tokens.access_token, "/v2/me").await;
    for field in ["id", "name", "account_id"] {
        assert!(
            me[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} missing in {me}"
        );
    }
    let account_id = me["account_id"].as_str().expect("account_id").to_owned();

    let account = get_json(
        &app,
        &tokens.access_token,
        &format!("/v2/accounts/{account_id}"),
    )
    .await;
    assert_eq!(account["id"], account_id.as_str(), "{account}");
    assert!(
        account["name"].as_str().is_some_and(|s| !s.is_empty()),
        "{account}"
    );

    // A device in another project has another account, which this device cannot read.
    let other_me = get_json(&app, &other.access_token, "/v2/me").await;
    let other_account = other_me["account_id"].as_str().expect("account_id");
    assert_ne!(other_account, account_id);
    for id in [
        other_account,
        "no-such-account",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let res = get(&app, &tokens.access_token, &format!("/v2/accounts/{id}")).await;
        let (status, title, _) = detailed_error(res).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(title, "Not Found", "{id}");
    }
}

#[tokio::test]
async fn the_heartbeat_is_204_and_the_device_is_listed_online_with_its_client_version() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-heartbeat1").await;
    let res = app
        .client
        .post(app.at("/v2/devices/heartbeat"))
        .bearer_auth(&tokens.access_token)
        .header("x-client-version", "9.8.7")
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.expect("body").is_empty());

    let listed = listed_device(&app, "cam-heartbeat1");
    assert_eq!(listed["status"], "online", "{listed}");
    assert_eq!(listed["client_version"], "9.8.7", "{listed}");
    assert!(listed["last_seen_at"].is_string(), "{listed}");

    // Any call carries the version, and the last one seen is stored.
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&tokens.access_token)
        .header("x-client-version", "9.8.8")
        .send()
        .await
        .expect("devices/me");
    assert_eq!(res.status(), StatusCode::OK);
    let listed = listed_device(&app, "cam-heartbeat1");
    assert_eq!(listed["client_version"], "9.8.8", "{listed}");
    assert_eq!(listed["status"], "online", "{listed}");
}

#[tokio::test]
async fn the_heartbeat_needs_a_valid_token() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.at("/v2/devices/heartbeat"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("heartbeat");
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(title, "Not Authorized");
}

// ---------------------------------------------------------------------------------------
// 4: the pause rule.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_paused_device_is_refused_clips_recorded_in_the_pause_window_only() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-pause-77").await;
    let token = &tokens.access_token;
    let clip = |name: &str, offset: i64| json!({"name": name, "filesize": KIB, "filetype": "video/mp4", "offset": offset});

    app.cli(&["device", "pause", "cam-pause-77"]);
    // The window opened at or before this moment.
    let mark = now_secs();
    assert_paused(app.create_asset_raw(token, clip("live.mp4", 0)).await).await;
    // Recorded an hour ago, before the pause began: accepted even while paused.
    create_ok(&app, token, clip("old-while-paused.mp4", 3600)).await;

    // Let real time pass so the window is a few seconds wide.
    let window = 4.0;
    let left = mark + window - now_secs();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
    app.cli(&["device", "resume", "cam-pause-77"]);
    // The window is now closed, at or after mark + 4 s.

    create_ok(&app, token, clip("after-resume.mp4", 0)).await;

    // Recorded 1 s after `mark`: inside the closed window. Rounding moves it by at most
    // 0.5 s, which leaves 2.5 s for the request to reach the server.
    let inside = mark + 1.0;
    let offset = (now_secs() - inside).round() as i64;
    assert!(offset >= 1, "offset {offset}");
    assert_paused(
        app.create_asset_raw(token, clip("in-window.mp4", offset))
            .await,
    )
    .await;

    create_ok(&app, token, clip("old-after-resume.mp4", 3600)).await;

    let list = app.cli_json(&["asset", "list"]);
    let mut names: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|a| {
            a["path"]
                .as_str()
                .and_then(|p| p.rsplit('/').next())
                .expect("path")
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "after-resume.mp4",
            "old-after-resume.mp4",
            "old-while-paused.mp4"
        ],
        "{list}"
    );
}

// ---------------------------------------------------------------------------------------
// 5: the alias route and urlencoded bodies.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_v2_assets_alias_creates_assets_like_v2_devices_assets() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-alias-01").await;
    let data = test_bytes(3 * KIB + 7, 51);
    let res = post_json(
        &app,
        "/v2/assets",
        &tokens.access_token,
        &json!({"name": "alias.mp4", "filesize": data.len(), "filetype": "video/mp4"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("asset body");
    assert_eq!(body["_type"], "file", "{body}");
    assert_eq!(body["name"], "alias.mp4", "{body}");
    assert_eq!(body["filetype"], "video/mp4", "{body}");
    assert_eq!(body["filesize"], data.len(), "{body}");
    assert_eq!(body["project_id"], app.project_id("Default"), "{body}");
    assert_eq!(
        body["upload_urls"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_timestamp(&body["inserted_at"], "inserted_at");

    let asset: Asset = serde_json::from_value(body).expect("asset shape");
    app.upload(&asset, &data).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let entry = app.asset_entry(&asset.id);
    assert_eq!(entry["state"], "complete");
    assert_eq!(entry["sha256"], sha256_hex(&data));
    assert_eq!(std::fs::read(app.asset_file(&entry)).expect("file"), data);
}

#[tokio::test]
async fn assets_can_be_created_with_a_urlencoded_form_with_numbers_as_strings() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-form-01").await;
    for (seed, route) in [(52, "/v2/devices/assets"), (53, "/v2/assets")] {
        // Other bytes per route: the same clip sent twice would be listed once.
        let data = test_bytes(KIB, seed);
        let res = app
            .client
            .post(app.at(route))
            .bearer_auth(&tokens.access_token)
            .form(&[
                ("name", "form.mov"),
                ("filesize", "1024"),
                ("filetype", "video/quicktime"),
                ("offset", "0"),
                ("channel", "0"),
                ("is_realtime_upload", "false"),
            ])
            .send()
            .await
            .expect("create asset");
        let status = res.status();
        let text = res.text().await.expect("body");
        assert_eq!(status, StatusCode::OK, "{route}: {text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["_type"], "file", "{body}");
        assert_eq!(body["filesize"], 1024, "{body}");
        assert_eq!(body["filetype"], "video/quicktime", "{body}");
        let asset: Asset = serde_json::from_value(body).expect("asset shape");
        app.upload(&asset, &data).await;
        app.wait_complete(&tokens.access_token, &asset.id).await;
        let entry = app.asset_entry(&asset.id);
        assert_eq!(entry["size"], 1024);
        assert_eq!(std::fs::read(app.asset_file(&entry)).expect("file"), data);
    }
}

// ---------------------------------------------------------------------------------------
// 6-7: where assets land.
// ---------------------------------------------------------------------------------------

/// Creates an asset and checks its path (in the answer and in `asset list`) against
/// `Cloud Devices/<date>/<kind>/<device>/<name>`, allowing the date of either side of a
/// midnight the request may straddle.
async fn assert_lands_in(
    app: &TestServer,
    token: &str,
    body: Value,
    kind: &str,
    device: &str,
    name: &str,
) -> Value {
    let offset = body["offset"].as_i64().unwrap_or(0) as f64;
    let before = date_folder(now_secs() - offset);
    let asset = create_ok(app, token, body).await;
    let after = date_folder(now_secs() - offset);
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|date| format!("Cloud Devices/{date}/{kind}/{device}/{name}"))
        .collect();
    let path = asset["path"].as_str().expect("path in the answer");
    assert!(
        expected.iter().any(|e| e == path),
        "{path} not in {expected:?}"
    );
    let id = asset["id"].as_str().expect("id");
    assert_eq!(app.asset_entry(id)["path"], path);
    asset
}

#[tokio::test]
async fn assets_land_in_date_type_and_device_folders() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-folder-abc123").await;
    let token = &tokens.access_token;
    let device = "C2C device abc123";
    let me = get_json(&app, token, "/v2/devices/me").await;
    assert_eq!(me["name"], device);

    assert_lands_in(
        &app,
        token,
        json!({"name": "v.mp4", "filesize": KIB, "filetype": "video/mp4"}),
        "VIDEO",
        device,
        "v.mp4",
    )
    .await;
    assert_lands_in(
        &app,
        token,
        json!({"name": "a.wav", "filesize": KIB, "filetype": "audio/wav"}),
        "AUDIO",
        device,
        "a.wav",
    )
    .await;
    assert_lands_in(
        &app,
        token,
        json!({"name": "d.pdf", "filesize": KIB, "filetype": "application/pdf"}),
        "DATA",
        device,
        "d.pdf",
    )
    .await;
    // No filetype: the extension decides.
    let mov = assert_lands_in(
        &app,
        token,
        json!({"name": "m.mov", "filesize": KIB}),
        "VIDEO",
        device,
        "m.mov",
    )
    .await;
    assert!(
        mov["filetype"]
            .as_str()
            .is_some_and(|t| t.starts_with("video/")),
        "{mov}"
    );
    // The recording time, not the upload time, picks the date folder.
    let old = assert_lands_in(
        &app,
        token,
        json!({"name": "old.mp4", "filesize": KIB, "filetype": "video/mp4", "offset": 2 * 86_400}),
        "VIDEO",
        device,
        "old.mp4",
    )
    .await;
    let today = date_folder(now_secs());
    assert!(
        !old["path"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("/{today}/")),
        "{old}"
    );
}

#[tokio::test]
async fn a_device_that_proposed_its_name_gets_a_folder_of_that_name() {
    let app = spawn_app().await;
    let token = pair_named(&app, "cam-named-999999", "A-cam").await;
    let me = get_json(&app, &token, "/v2/devices/me").await;
    assert_eq!(me["name"], "A-cam", "{me}");
    assert_lands_in(
        &app,
        &token,
        json!({"name": "A001.mov", "filesize": KIB, "filetype": "video/quicktime"}),
        "VIDEO",
        "A-cam",
        "A001.mov",
    )
    .await;
}

#[tokio::test]
async fn a_repeated_create_gets_the_same_asset_until_bytes_arrive() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-retry-01").await;
    let token = &tokens.access_token;
    let data = test_bytes(11 * MIB, 90);
    let half = data.len().div_ceil(2);
    // A device whose first answer was lost asks again: it gets the asset it made, with
    // URLs that work, not a second asset.
    let first = app.create_asset(token, "retry.mov", data.len()).await;
    let again = app.create_asset(token, "retry.mov", data.len()).await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.path, first.path);
    assert_eq!(again.upload_urls.len(), 2);
    let res = app
        .put_part(&again.upload_urls[0], data[..half].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    // Once bytes arrived it is an upload in progress: the same create is the device
    // creating the file again, which supersedes it (c2c-api.md §4; camera_uploads.rs).
    let third = app.create_asset(token, "retry.mov", data.len()).await;
    assert_ne!(third.id, first.id);
    assert_eq!(third.path, first.path);
    let res = app
        .put_part(&again.upload_urls[1], data[half..].to_vec())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.upload(&third, &data).await;
    app.wait_complete(token, &third.id).await;
    assert_eq!(app.asset_entry(&third.id)["sha256"], sha256_hex(&data));
    let list = app.cli_json(&["asset", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn name_clashes_get_numbered_suffixes_and_separate_files() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-clash-01").await;
    let token = &tokens.access_token;
    let mut uploaded = Vec::new();
    for (i, expected) in ["clip.mov", "clip (2).mov", "clip (3).mov"]
        .into_iter()
        .enumerate()
    {
        // Different clips (sizes differ): an identical create would be a retry.
        let data = test_bytes(KIB + i, 70 + i as u64);
        let asset = app.create_asset(token, "clip.mov", data.len()).await;
        let file = asset.path.rsplit('/').next().unwrap_or_default();
        assert_eq!(file, expected, "{}", asset.path);
        assert_eq!(asset.upload_urls.len(), 1);
        uploaded.push((asset, data));
    }
    let folders: Vec<&str> = uploaded
        .iter()
        .map(|(a, _)| a.path.rsplit_once('/').map_or("", |(f, _)| f))
        .collect();
    assert!(folders.iter().all(|f| *f == folders[0]), "{folders:?}");

    for (asset, data) in &uploaded {
        app.upload(asset, data).await;
    }
    let mut files = Vec::new();
    for (asset, data) in &uploaded {
        app.wait_complete(token, &asset.id).await;
        let entry = app.asset_entry(&asset.id);
        assert_eq!(entry["path"], asset.path.as_str());
        assert_eq!(entry["sha256"], sha256_hex(data));
        let file = app.asset_file(&entry);
        assert_eq!(&std::fs::read(&file).expect("file"), data, "{file:?}");
        files.push(file);
    }
    files.sort();
    files.dedup();
    assert_eq!(files.len(), 3, "{files:?}");
}

// ---------------------------------------------------------------------------------------
// 8: validation.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_asset_fields_are_422_naming_the_field_and_create_nothing() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-invalid-1").await;
    let token = &tokens.access_token;
    let base = json!({"name": "ok.mov", "filesize": 1024, "filetype": "video/quicktime"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().expect("object").remove(field);
        body
    };
    let five_tib: u64 = 5 * 1024 * 1024 * 1024 * 1024;
    let cases: Vec<(&str, Value)> = vec![
        ("name", without("name")),
        ("filesize", without("filesize")),
        ("filesize", with("filesize", json!(0))),
        ("filesize", with("filesize", json!(-1))),
        ("filesize", with("filesize", json!(five_tib + 1))),
        ("filesize", with("filesize", json!("abc"))),
        ("name", with("name", json!("../../etc/passwd"))),
        ("name", with("name", json!("a/b"))),
        ("name", with("name", json!("a\u{0}b"))),
        ("name", with("name", json!(".."))),
        ("name", with("name", json!("x".repeat(300)))),
        ("offset", with("offset", json!("x"))),
        ("channel", with("channel", json!(-1))),
        (
            "auto_version_id",
            with("auto_version_id", json!("not-a-uuid")),
        ),
    ];
    for (field, body) in cases {
        let res = app.create_asset_raw(token, body.clone()).await;
        let (status, title, detail) = detailed_error(res).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(!title.is_empty(), "{body}");
        assert!(
            detail.contains(field),
            "detail {detail:?} does not name {field} for {body}"
        );
    }

    // Real-time uploads must be created with JSON.
    let res = app
        .client
        .post(app.at("/v2/devices/assets"))
        .bearer_auth(token)
        .form(&[
            ("name", "rt.mov"),
            ("filetype", "video/quicktime"),
            ("is_realtime_upload", "true"),
        ])
        .send()
        .await
        .expect("create asset");
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("is_realtime_upload"), "{detail}");

    assert_asset_list_empty(&app);
}

#[tokio::test]
async fn unreadable_oversized_and_unsupported_bodies_are_refused_and_create_nothing() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-badbody-1").await;
    let token = &tokens.access_token;
    let send = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.at("/v2/devices/assets"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let res = send(
        "application/json",
        br#"{"name": "x.mov", "filesize": 1024"#.to_vec(),
    )
    .await
    .expect("malformed");
    let (status, _, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "malformed JSON");

    let res = send(
        "application/json",
        br#"[{"name": "x.mov", "filesize": 1024}]"#.to_vec(),
    )
    .await
    .expect("array");
    let (status, _, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "JSON array");

    // A valid request, padded beyond 2 MiB.
    let pad = "p".repeat(2 * MIB);
    let big = serde_json::to_vec(
        &json!({"name": "big.mov", "filesize": 1024, "filetype": "video/quicktime", "pad": pad}),
    )
    .expect("json");
    assert!(big.len() > 2 * MIB);
    let res = send("application/json", big).await.expect("oversized");
    let (status, _, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "over 2 MiB");

    // (A JSON body labelled text/plain is JSON: c2c-api.md §1, tolerance.rs.)
    let res = send(
        "application/xml",
        br#"<asset name="x.mov" filesize="1024"/>"#.to_vec(),
    )
    .await
    .expect("application/xml");
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_asset_list_empty(&app);
}

// ---------------------------------------------------------------------------------------
// 9: a device sees only its own assets.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_device_cannot_see_another_devices_asset_or_unknown_ids() {
    let app = spawn_app().await;
    let owner = app.pair("cam-owner-01").await;
    let stranger = app.pair("cam-stranger-01").await;
    let asset = app
        .create_asset(&owner.access_token, "secret-take-42.mov", KIB)
        .await;

    // The owner can (so a blanket 404 would fail this test).
    let res = app.upload_status(&owner.access_token, &asset.id).await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = app.upload_status(&stranger.access_token, &asset.id).await;
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(!text.contains("secret-take-42"), "leaks the name: {text}");
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(body["code"], 404, "{body}");
    assert_eq!(body["errors"][0]["status"], 404, "{body}");
    assert_eq!(body["errors"][0]["title"], "Not Found", "{body}");

    for id in [
        "00000000-0000-0000-0000-000000000000",
        "no-such-asset",
        &uuid::Uuid::new_v4().to_string(),
    ] {
        let res = app.upload_status(&owner.access_token, id).await;
        let (status, title, _) = detailed_error(res).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(title, "Not Found", "{id}");
    }
}
