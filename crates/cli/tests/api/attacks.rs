//! A stranger on the network (THREATS.md): path traversal through every name a device or
//! an operator gives, a token of one project used on another project's assets, request
//! smuggling, oversized headers and slowloris. Each must end with the documented answer and
//! no effect. (Guessing codes, refresh-token replay, URL tampering and expiry, XSS and CSRF
//! have their tests next to the features: see THREATS.md.)

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Writes `request` and reads until the server closes the connection (or 20 s pass):
/// everything it answered.
async fn exchange(app: &TestServer, request: &[u8]) -> String {
    let mut conn = http11_connection(app).await;
    conn.write_all(request).await.unwrap();
    conn.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn assert_still_serving(app: &TestServer) {
    let res = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

fn asset_count(app: &TestServer) -> usize {
    app.cli_json(&["asset", "list"]).as_array().unwrap().len()
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn path_traversal_in_any_name_stays_inside_the_projects_folder() {
    if local_store_only("it looks for the files the names made in the media folder") {
        return;
    }
    let app = spawn_app().await;
    let tokens = app.pair("cam-traversal").await;
    let token = &tokens.access_token;

    // Asset names are file names: anything that is a path is refused, naming the field.
    for name in [
        "../../../../etc/passwd",
        "..",
        ".",
        "a/b.mov",
        "/etc/shadow",
        "..\\..\\boot.ini",
        "C:\\Windows\\x.mov",
        "clip\u{0}.mov",
    ] {
        let res = app
            .create_asset_raw(token, json!({"name": name, "filesize": 10}))
            .await;
        let (status, _, detail) = detailed_error(res).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}");
        assert!(detail.starts_with("name:"), "{name:?}: {detail}");
    }
    // A real-time upload's extension is checked the same way.
    let res = app
        .create_asset_raw(
            token,
            json!({"is_realtime_upload": true, "filetype": "video/mp4", "extension": "/../../x"}),
        )
        .await;
    let (status, _, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.starts_with("extension:"), "{detail}");
    assert_eq!(asset_count(&app), 0, "nothing was created");

    // Names that only look like paths once decoded are names, stored as they are.
    let data = test_bytes(1000, 11);
    let asset = app
        .create_asset(token, "%2e%2e%2fpasswd..mov", data.len())
        .await;
    app.upload(&asset, &data).await;
    app.wait_complete(token, &asset.id).await;

    // The device names its own folder: separators in it are replaced, dots cannot climb.
    let form = reqwest::multipart::Form::new()
        .text("client_id", "cam-traversal-named")
        .text("client_secret", "test-model-secret")
        .text("scope", "asset_create offline")
        .text("device_name", "../../../../../tmp/evil");
    let code: Value = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.approve(code["user_code"].as_str().unwrap());
    let named: Value = app
        .poll("cam-traversal-named", code["device_code"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let named_token = named["access_token"].as_str().unwrap();
    let asset = app.create_asset(named_token, "A001.mov", data.len()).await;
    app.upload(&asset, &data).await;
    app.wait_complete(named_token, &asset.id).await;

    // An operator's project name becomes a folder name the same way.
    app.cli(&["project", "create", "../../escape"]);
    let escaping = app
        .pair_into(
            "cam-traversal-project",
            "asset_create offline",
            "../../escape",
        )
        .await;
    let asset = app
        .create_asset(&escaping.access_token, "A002.mov", data.len())
        .await;
    app.upload(&asset, &data).await;
    app.wait_complete(&escaping.access_token, &asset.id).await;

    // The three clips are in the media folder, each under `<project>/Cloud Devices`, and
    // nothing landed beside the data directory.
    assert_eq!(asset_count(&app), 3);
    let media = app.data.join("media").canonicalize().unwrap();
    let clips: Vec<_> = files_under(&media)
        .into_iter()
        .filter(|f| !f.starts_with(media.join(".rushes-tmp")))
        .collect();
    assert_eq!(clips.len(), 3, "{clips:?}");
    for file in &clips {
        let inside = file.strip_prefix(&media).unwrap();
        let mut parts = inside.components();
        let project = parts
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        assert!(!project.starts_with('.'), "{}", file.display());
        assert_eq!(
            parts.next().map(|c| c.as_os_str().to_owned()),
            Some("Cloud Devices".into()),
            "{}",
            file.display()
        );
        assert_eq!(std::fs::read(file).unwrap(), data);
    }
    let beside: Vec<_> = files_under(app.data.parent().unwrap())
        .into_iter()
        .filter(|f| !f.starts_with(&app.data))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

#[tokio::test]
async fn a_token_of_one_project_reaches_nothing_of_another_project() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    app.cli(&["project", "create", "Other"]);
    let ours = app.pair("cam-project-a").await;
    let theirs = app
        .pair_into("cam-project-b", "asset_create offline", "Other")
        .await;
    let data = test_bytes(11 * MIB, 12);
    let asset = app
        .create_asset(&theirs.access_token, "B001.mov", data.len())
        .await;

    // Their asset does not exist for us: status, resume and real-time registration.
    let res = app.upload_status(&ours.access_token, &asset.id).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for path in [
        format!("/v2/devices/assets/{}/realtime_upload/parts", asset.id),
        format!("/v2/assets/{}/realtime_upload/parts", asset.id),
    ] {
        let res = post_json(
            &app,
            &ours.access_token,
            &path,
            &json!({"parts": [{"part_number": 1, "part_size": 5242880}]}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Their device's account is not ours to read.
    let their_device = app.cli_json(&["device", "list"]);
    let their_id = their_device
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "cam-project-b" || d["client_id"] == "cam-project-b")
        .and_then(|d| d["id"].as_str())
        .unwrap()
        .to_owned();
    let res = app
        .client
        .get(app.at(&format!("/v2/accounts/{their_id}")))
        .bearer_auth(&ours.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Nothing we did changed their upload: it completes with their bytes.
    app.upload(&asset, &data).await;
    app.wait_complete(&theirs.access_token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}

#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_are_refused_without_effect() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-smuggler").await;
    let token = &tokens.access_token;
    let smuggled = "POST /v2/devices/assets HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 57\r\n\r\n\
         {\"name\": \"smuggled.mov\", \"filesize\": 10, \"x\": \"xxxx\"}";
    let body = format!("0\r\n\r\n{smuggled}");
    for framing in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        format!("Content-Length: {}\r\nContent-Length: 5\r\n", body.len()),
        "Transfer-Encoding: gzip, chunked\r\nTransfer-Encoding: identity\r\n".to_owned(),
    ] {
        let request = format!(
            "POST /v2/devices/assets HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             {framing}\r\n{body}"
        );
        let answer = exchange(&app, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{framing:?} answered: {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then the connection closed: {answer:?}"
        );
    }
    assert_eq!(asset_count(&app), 0, "neither request created anything");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_server_goes_on() {
    let app = spawn_app().await;
    let huge = "a".repeat(1024 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Junk: {huge}\r\n\r\n");
    let answer = exchange(&app, request.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 1 MiB header was answered: {:?}",
        &answer[..answer.len().min(200)]
    );
    let many: String = (0..500).map(|i| format!("X-Junk-{i}: {i}\r\n")).collect();
    let request = format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    let answer = exchange(&app, request.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "500 headers were answered: {:?}",
        &answer[..answer.len().min(200)]
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn slowloris_connections_are_closed_and_starve_no_one() {
    let app = spawn_app().await;
    // 100 connections that start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut conn = http11_connection(&app).await;
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-A: ")
            .await
            .unwrap();
        conn.flush().await.unwrap();
        slow.push(conn);
    }
    // Everyone else is still served.
    for _ in 0..5 {
        let res = app.client.get(app.at("/health")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Headers must arrive within 30 s: the server closes each slow connection (hyper
    // answers 408 or just closes) rather than holding it for ever.
    for mut conn in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), conn.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a slow connection was still open after 60 s");
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text:?}"
        );
    }
}
