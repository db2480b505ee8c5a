//! Device traffic capture (issue 19, item 3): failed device-API requests are kept in the
//! database (the newest 1,000), `serve --capture` writes every request to
//! `<data>/captures/*.jsonl`, `rushes device traffic` and the Setup page show them, and no
//! secret a device sends ever reaches the data directory, the database or the log.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use rushes_proto::auth::GRANT_DEVICE_CODE;
use serde_json::{Value, json};

use crate::helpers::*;

/// `rushes device traffic --json ARGS`, polled until `done` holds: records are written off
/// the request's path, so they land shortly after the answer.
async fn traffic_until(
    app: &TestServer,
    args: &[&str],
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut full = vec!["device", "traffic"];
    full.extend_from_slice(args);
    let what = format!("device traffic {args:?} showing what was expected");
    eventually(&what, Duration::from_secs(20), || {
        let rows = app.cli_json(&full);
        let rows = rows.as_array().expect("a JSON array").clone();
        if done(&rows) {
            Ok(rows)
        } else {
            Err(format!("{rows:#?}"))
        }
    })
    .await
}

/// The name the server gave the device with `client_id`.
fn device_name(app: &TestServer, client_id: &str) -> String {
    let devices = app.cli_json(&["device", "list"]);
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["client_id"] == client_id)
        .and_then(|d| d["name"].as_str())
        .expect("the device is listed")
        .to_owned()
}

fn find<'a>(rows: &'a [Value], method: &str, path: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["method"] == method && r["path"].as_str() == Some(path))
}

/// Every record in the capture files, polled until `done` holds.
async fn capture_lines_until(app: &TestServer, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let what = "the capture files showing what was expected";
    eventually(what, Duration::from_secs(20), || {
        let mut lines = Vec::new();
        if let Ok(entries) = std::fs::read_dir(app.data.join("captures")) {
            for entry in entries {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    name.len() == "YYYY-MM-DD.jsonl".len() && name.ends_with(".jsonl"),
                    "unexpected capture file {name}"
                );
                let text = std::fs::read_to_string(&path).unwrap();
                for line in text.lines() {
                    lines.push(serde_json::from_str::<Value>(line).expect("each line is JSON"));
                }
            }
        }
        if done(&lines) {
            Ok(lines)
        } else {
            Err(format!("{lines:#?}"))
        }
    })
    .await
}

#[tokio::test]
async fn failures_and_unknown_routes_are_recorded_with_device_status_and_detail() {
    let app = spawn_app().await;
    let cam = app.pair("traffic-cam-1").await;
    let other = app.pair("traffic-cam-2").await;

    let ok = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let unknown = app
        .client
        .post(app.at("/v2/devices/frobnicate?mode=fast"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let invalid = app
        .create_asset_raw(
            &cam.access_token,
            json!({"name": "A001<b>.mov", "filesize": 0, "filetype": "video/quicktime"}),
        )
        .await;
    let (status, _, detail) = detailed_error(invalid).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let elsewhere = app
        .client
        .get(app.at("/v2/nowhere"))
        .bearer_auth(&other.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);

    let rows = traffic_until(&app, &[], |rows| rows.len() >= 3).await;
    let unknown = find(&rows, "POST", "/v2/devices/frobnicate").expect("the unknown route");
    assert_eq!(unknown["status"], 404);
    assert_eq!(unknown["known_route"], false);
    let cam_name = device_name(&app, "traffic-cam-1");
    assert_eq!(unknown["device"], cam_name.as_str(), "{unknown}");
    assert_eq!(unknown["query"], "mode=fast");
    assert_eq!(
        unknown["detail"],
        "No route for POST /v2/devices/frobnicate."
    );
    assert!(
        unknown["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let headers = unknown["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["x-client-version", FIRMWARE])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&json!(["authorization", "[redacted]"])),
        "{headers:?}"
    );

    let invalid = find(&rows, "POST", "/v2/devices/assets").expect("the 422");
    assert_eq!(invalid["status"], 422);
    assert_eq!(invalid["detail"], detail.as_str());
    assert_eq!(invalid["device"], cam_name.as_str());
    assert!(
        invalid["body"].as_str().unwrap().contains("A001<b>.mov"),
        "{invalid}"
    );
    assert!(invalid["body_length"].as_u64().unwrap() > 0);

    // Successes are not kept (no --capture): not /me, not the pairing calls.
    assert!(find(&rows, "GET", "/v2/devices/me").is_none(), "{rows:#?}");
    assert!(
        rows.iter().all(|r| r["status"].as_u64().unwrap() >= 400),
        "{rows:#?}"
    );

    // --device names one device, by name or client_id; --errors keeps all of these.
    let mine = app.cli_json(&["device", "traffic", "--device", "traffic-cam-1"]);
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert!(mine.iter().all(|r| r["device"] == cam_name.as_str()));
    let theirs = app.cli_json(&["device", "traffic", "--device", "traffic-cam-2", "--errors"]);
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs:#}");
    assert_eq!(theirs[0]["path"], "/v2/nowhere");
    // An answer that is not one of ours (axum's own rejection of a query) gives its text.
    let res = app
        .client
        .put(app.at("/upload/some-asset/1?size=many&expires=1&sig=abcdef0123456789"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let rows = traffic_until(&app, &[], |rows| {
        rows.iter().any(|r| r["path"] == "/upload/some-asset/1")
    })
    .await;
    let rejected = rows
        .iter()
        .find(|r| r["path"] == "/upload/some-asset/1")
        .unwrap();
    assert!(
        rejected["detail"].as_str().unwrap().contains("size"),
        "{rejected}"
    );
    assert_eq!(rejected["query"], "size=many&expires=1&sig=[redacted]");
    assert!(
        rejected["body"].is_null(),
        "part bodies are never kept: {rejected}"
    );
    // The table for people.
    let table = app.cli(&["device", "traffic"]);
    assert!(
        table.contains("/v2/devices/frobnicate") && table.contains("404"),
        "{table}"
    );
}

#[tokio::test]
async fn the_database_keeps_only_the_newest_failures() {
    let app = spawn_app_with(&["--traffic-rows", "5"]).await;
    // A device's failures: anonymous ones are bounded per address (see below).
    let cam = app.pair("pruned-cam").await;
    for i in 0..12 {
        let res = app
            .client
            .get(app.at(&format!("/v2/missing-{i:02}")))
            .bearer_auth(&cam.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let rows = traffic_until(&app, &[], |rows| {
        find(rows, "GET", "/v2/missing-11").is_some()
    })
    .await;
    let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/v2/missing-07",
            "/v2/missing-08",
            "/v2/missing-09",
            "/v2/missing-10",
            "/v2/missing-11"
        ]
    );
}

/// Unattributed records a remote address may cause a minute (`UNATTRIBUTED_PER_MINUTE` in
/// `crates/server/src/capture/mod.rs`).
const UNATTRIBUTED_PER_MINUTE: usize = 10;

#[tokio::test]
async fn an_anonymous_flood_is_recorded_a_bounded_number_of_times_and_pushes_out_nothing() {
    let app = spawn_app_with(&["--traffic-rows", "30"]).await;
    let cam = app.pair("flooded-cam").await;
    let res = app
        .client
        .get(app.at("/v2/devices/before-the-flood"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for i in 0..200 {
        let res = app
            .client
            .get(app.at(&format!("/v2/scan-{i:03}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    for path in ["/favicon.ico", "/wp-login.php"] {
        let res = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // One writer, in order: once this is in, everything before it has been decided.
    let res = app
        .client
        .get(app.at("/v2/devices/after-the-flood"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let rows = traffic_until(&app, &[], |rows| {
        find(rows, "GET", "/v2/devices/after-the-flood").is_some()
    })
    .await;
    let scans = rows
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/v2/scan-"))
        .count();
    assert!(
        (1..=UNATTRIBUTED_PER_MINUTE).contains(&scans),
        "{scans} of 200 anonymous requests recorded"
    );
    assert!(
        find(&rows, "GET", "/v2/devices/before-the-flood").is_some(),
        "the device's record was pushed out: {rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["path"] != "/favicon.ico" && r["path"] != "/wp-login.php"),
        "{rows:#?}"
    );
}

#[tokio::test]
async fn capture_records_every_request_with_part_lengths_and_hashes() {
    let app = spawn_app_with(&["--capture"]).await;
    let cam = app.pair("capture-cam").await;
    let data = test_bytes(300_000, 7);
    let asset = app
        .create_asset(&cam.access_token, "A002.mov", data.len())
        .await;
    app.upload(&asset, &data).await;
    app.wait_complete(&cam.access_token, &asset.id).await;
    let missing = app
        .client
        .get(app.at("/v2/devices/what"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let lines = capture_lines_until(&app, |lines| {
        lines.iter().any(|l| l["path"] == "/v2/devices/what")
    })
    .await;
    let code = find(&lines, "POST", "/v2/auth/device/code").expect("the code request");
    assert_eq!(code["status"], 200);
    let poll = find(&lines, "POST", "/v2/auth/token").expect("the poll");
    assert_eq!(poll["status"], 200);
    let create = find(&lines, "POST", "/v2/devices/assets").expect("the create");
    assert_eq!(create["status"], 200);
    assert!(create["body"].as_str().unwrap().contains("A002.mov"));
    assert!(create["device_id"].is_string(), "{create}");
    if !suite_uses_s3() {
        // The part went through this server: its length and hash, never its bytes.
        let part = lines
            .iter()
            .find(|l| l["method"] == "PUT" && l["path"].as_str().unwrap().starts_with("/upload/"))
            .expect("the part PUT");
        assert_eq!(part["status"], 200);
        assert_eq!(part["body_length"], data.len());
        assert_eq!(part["body_sha256"], sha256_hex(&data));
        assert!(part["body"].is_null(), "{part}");
        assert!(
            part["query"].as_str().unwrap().contains("sig=[redacted]"),
            "{part}"
        );
    }

    // `device traffic` reads the capture files too: everything, or with --errors the
    // failures only (the database's and the files' copy of one request shown once).
    let all = traffic_until(&app, &[], |rows| {
        find(rows, "POST", "/v2/devices/assets").is_some()
    })
    .await;
    assert!(find(&all, "POST", "/v2/auth/device/code").is_some());
    let errors = traffic_until(&app, &["--errors"], |rows| !rows.is_empty()).await;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0]["path"], "/v2/devices/what");
    assert_eq!(
        errors[0]["device"],
        device_name(&app, "capture-cam").as_str()
    );
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_secret_reaches_the_data_directory_the_database_or_the_log() {
    let app = spawn_app_with(&["--capture"]).await;
    let client_secret = format!("model-secret-{}", uuid::Uuid::new_v4().simple());
    let client_id = "secretive-cam";
    let form = reqwest::multipart::Form::new()
        .text("client_id", client_id)
        .text("client_secret", client_secret.clone())
        .text("scope", "asset_create offline");
    let res = app
        .client
        .post(app.at("/v2/auth/device/code"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let code: rushes_proto::auth::DeviceCodeResponse = res.json().await.unwrap();
    // A poll before approval (400, recorded with its body), then the exchange.
    let pending = app.poll(client_id, &code.device_code).await;
    assert_eq!(oauth_error(pending).await, "authorization_pending");
    app.approve(&code.user_code);
    let res = app
        .client
        .get(app.at("/v2/auth/token"))
        .query(&[
            ("grant_type", GRANT_DEVICE_CODE),
            ("client_id", client_id),
            ("client_secret", client_secret.as_str()),
            ("device_code", code.device_code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let first: rushes_proto::auth::TokenResponse = res.json().await.unwrap();
    let first_refresh = first.refresh_token.clone().unwrap();
    // A used device code again: 400 with the code in the recorded body.
    let again = app.poll(client_id, &code.device_code).await;
    assert_eq!(oauth_error(again).await, "invalid_grant");

    // Refresh (as JSON-less multipart, with the misspelt field), then the tokens in use.
    let form = reqwest::multipart::Form::new()
        .text("grant_type", "refresh_token")
        .text("client_id", client_id)
        .text("client_secret", client_secret.clone())
        .text("refresh_tokem", first_refresh.clone());
    let res = app
        .client
        .post(app.at("/v2/auth/token"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let second: rushes_proto::auth::TokenResponse = res.json().await.unwrap();
    let second_refresh = second.refresh_token.clone().unwrap();

    let asset = app
        .create_asset(&second.access_token, "A003.mov", 1000)
        .await;
    let part_url = asset.upload_urls[0].clone();
    app.upload(&asset, &test_bytes(1000, 3)).await;
    // A tampered signature (403, recorded) on the local store.
    let signature = part_url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("sig="))
        .map(str::to_owned);
    if let Some(sig) = &signature {
        let tampered = part_url.replace(sig.as_str(), &format!("{sig}00"));
        let res = app.put_part(&tampered, vec![0; 1000]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    // A JSON body carrying a token, refused (422, body recorded).
    let res = app
        .create_asset_raw(
            &second.access_token,
            json!({"name": "x.mov", "filesize": -1, "access_token": second.access_token}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The status socket's spellings, token in the query (whatever this server answers).
    for query in [
        format!("Authorization=Bearer%20{}", second.access_token),
        format!("Authorization=Bearer+{}&vsn=2.0.0", second.access_token),
        format!("token={}", second.access_token),
    ] {
        for path in ["/devices/websocket", "/v2/devices/websocket"] {
            let res = app
                .client
                .get(app.at(&format!("{path}?{query}")))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_client_error(), "{path}: {}", res.status());
        }
    }
    // A made-up token, then the first refresh token presented again (revokes the grant),
    // then a revoke of the newest refresh token.
    let bogus = format!("bogus-{}", uuid::Uuid::new_v4().simple());
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&bogus)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let reused = app.refresh(client_id, &first_refresh).await;
    assert_eq!(oauth_error(reused).await, "invalid_request");
    let res = app
        .client
        .post(app.at("/v2/auth/revoke"))
        .form(&[
            ("client_id", client_id),
            ("client_secret", client_secret.as_str()),
            ("token", second_refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Bodies the redaction cannot walk, carrying the real secrets: a multipart body whose
    // boundary is not the one declared, one with no content type or labelled a form, a
    // newline-separated form, JSON with a BOM, camelCase JSON.
    let fields = [
        ("client_id", client_id),
        ("client_secret", client_secret.as_str()),
        ("device_code", code.device_code.as_str()),
        ("refresh_token", second_refresh.as_str()),
        ("access_token", second.access_token.as_str()),
    ];
    let mut multipart = String::new();
    for (name, value) in fields {
        multipart.push_str(&format!(
            "--RealBoundary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    multipart.push_str("--RealBoundary--\r\n");
    let newline_form = fields
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let camel = json!({
        "clientId": client_id,
        "clientSecret": client_secret,
        "deviceCode": code.device_code,
        "refreshToken": second_refresh,
        "accessToken": second.access_token,
    });
    let bom_json = format!(
        "\u{feff}{}",
        json!({
            "client_id": client_id,
            "client_secret": client_secret,
            "device_code": code.device_code,
            "refresh_token": second_refresh,
        })
    );
    let malformed: [(Option<&str>, String); 6] = [
        (
            Some("multipart/form-data; boundary=OtherBoundary"),
            multipart.clone(),
        ),
        (None, multipart.clone()),
        (Some("application/x-www-form-urlencoded"), multipart),
        (Some("application/x-www-form-urlencoded"), newline_form),
        (Some("application/json"), bom_json),
        (Some("application/json"), camel.to_string()),
    ];
    for (content_type, body) in malformed {
        for path in ["/v2/auth/token", "/v2/auth/device/code"] {
            let mut req = app.client.post(app.at(path)).body(body.clone());
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let res = req.send().await.unwrap();
            assert!(
                res.status().is_client_error(),
                "{path} {content_type:?}: {}",
                res.status()
            );
        }
    }
    let res = app
        .client
        .get(app.at("/v2/the-end"))
        .bearer_auth(&second.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Everything recorded: the last request is in the file and in the database.
    let lines = capture_lines_until(&app, |lines| {
        lines.iter().any(|l| l["path"] == "/v2/the-end")
    })
    .await;
    let rows = traffic_until(&app, &["--errors"], |rows| {
        find(rows, "GET", "/v2/the-end").is_some()
    })
    .await;
    // The records are there, redacted rather than missing.
    let token_poll = lines
        .iter()
        .find(|l| l["path"] == "/v2/auth/token" && l["method"] == "GET")
        .expect("the GET exchange");
    assert!(
        token_poll["query"]
            .as_str()
            .unwrap()
            .contains("device_code=[redacted]"),
        "{token_poll}"
    );
    assert!(
        token_poll["query"]
            .as_str()
            .unwrap()
            .contains("client_id=secretive-cam"),
        "{token_poll}"
    );
    let used = rows
        .iter()
        .find(|r| r["path"] == "/v2/auth/token" && r["detail"] == "invalid_grant")
        .expect("the used code's poll");
    assert!(
        used["body"]
            .as_str()
            .unwrap()
            .contains("device_code=[redacted]"),
        "{used}"
    );
    assert!(
        lines.iter().any(|l| l["path"] == "/devices/websocket"
            && l["query"].as_str().unwrap().contains("[redacted]")),
        "{lines:#?}"
    );

    let mut secrets = vec![
        ("first access token", first.access_token.clone()),
        ("first refresh token", first_refresh),
        ("second access token", second.access_token.clone()),
        ("second refresh token", second_refresh),
        ("device code", code.device_code.clone()),
        ("made-up token", bogus),
    ];
    if let Some(sig) = signature {
        secrets.push(("URL signature", sig));
    }
    let log = app.log();
    let traffic_output = app.cli(&["device", "traffic", "--json"]);
    let database = app.database_dump();
    let files = files_under(&app.data);
    assert!(
        files.iter().any(|(name, _)| name.ends_with(".jsonl")),
        "no capture file"
    );
    for (what, secret) in &secrets {
        for (name, bytes) in &files {
            assert!(!contains(bytes, secret), "the {what} is in {name}");
        }
        assert!(!log.contains(secret.as_str()), "the {what} is in the log");
        assert!(
            !database.contains(secret.as_str()),
            "the {what} is in the database"
        );
        assert!(
            !traffic_output.contains(secret.as_str()),
            "the {what} is in `device traffic`"
        );
    }
    // The model's client_secret identifies the model and is kept in `device_models` by
    // design (c2c-api.md §2: it ships in firmware); it must not be anywhere else.
    for (name, bytes) in &files {
        if !name.contains("rushes.db") {
            assert!(
                !contains(bytes, &client_secret),
                "the client secret is in {name}"
            );
        }
    }
    assert!(
        !log.contains(&client_secret),
        "the client secret is in the log"
    );
    assert!(
        !traffic_output.contains(&client_secret),
        "the client secret is in `device traffic`"
    );
}

#[tokio::test]
async fn the_setup_page_shows_recent_device_errors_to_administrators_only() {
    let app = spawn_app().await;
    let cam = app.pair("setup-cam").await;
    let res = app
        .client
        .get(app.at("/v2/devices/unheard-of"))
        .bearer_auth(&cam.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    traffic_until(&app, &[], |rows| !rows.is_empty()).await;
    // A record whose text is markup (a device chooses what it sends): shown, not run.
    app.sql(
        "INSERT INTO device_traffic (id, at, device_id, remote_addr, method, path, query, \
         headers, body, body_length, status, detail, known_route) VALUES ('0', 0, NULL, \
         '10.0.0.1:1', 'GET', '/v2/<b>x</b>', NULL, '[]', NULL, 0, 400, \
         '<script>alert(1)</script>', 1)",
    );

    let password = app.web_user("boss", true);
    let admin = app.web_client("boss", &password).await;
    let page = admin
        .get(app.at("/setup"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Recent device errors"), "{page}");
    assert!(page.contains(&device_name(&app, "setup-cam")), "{page}");
    assert!(page.contains("/v2/devices/unheard-of"), "{page}");
    assert!(
        page.contains("No route for GET /v2/devices/unheard-of."),
        "{page}"
    );
    assert!(page.contains("<td>404</td>"), "{page}");
    assert!(!page.contains("<script>alert(1)</script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)") || page.contains("&#60;script&#62;alert(1)"),
        "{page}"
    );
    assert!(!page.contains("<b>x</b>"), "{page}");

    let password = app.web_user("editor", false);
    let user = app.web_client("editor", &password).await;
    let page = user
        .get(app.at("/setup"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("root certificate"), "{page}");
    assert!(!page.contains("Recent device errors"), "{page}");
    assert!(!page.contains("unheard-of"), "{page}");
}
