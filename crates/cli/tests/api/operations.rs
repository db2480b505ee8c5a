//! What operators see: the request log, the admin commands, slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn every_request_logs_one_structured_line_without_secrets() {
    let app = spawn_app().await;
    let tokens = app.pair("log-cam").await;
    let asset = app.create_asset(&tokens.access_token, "log.mp4", 10).await;
    app.upload(&asset, &test_bytes(10, 5)).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let log = app.log();
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    let create = requests
        .iter()
        .find(|r| r["route"] == "/v2/devices/assets" && r["method"] == "POST")
        .expect("asset creation logged");
    assert_eq!(create["status"], 200);
    assert!(create["latency_ms"].as_f64().is_some());
    assert!(
        create["device"].as_str().is_some_and(|d| d.len() > 10),
        "device id logged: {create}"
    );
    let sig = if app.s3.is_some() {
        // The part went straight to S3: no request of Rushes carried its bytes.
        let puts: Vec<&Value> = requests.iter().filter(|r| r["method"] == "PUT").collect();
        assert!(puts.is_empty(), "a part PUT reached Rushes: {puts:?}");
        let url = reqwest::Url::parse(&asset.upload_urls[0]).unwrap();
        let sig = url.query_pairs().find(|(k, _)| k == "X-Amz-Signature");
        sig.expect("a presigned URL").1.into_owned()
    } else {
        let put = requests
            .iter()
            .find(|r| r["method"] == "PUT")
            .expect("part PUT logged");
        assert_eq!(put["route"], "/upload/{asset_id}/{number}");
        asset.upload_urls[0]
            .split("sig=")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // No secret of any kind reaches the log.
    for secret in [
        tokens.access_token.as_str(),
        tokens.refresh_token.as_deref().unwrap(),
        sig.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
}

#[tokio::test]
async fn tokens_and_device_codes_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let code = app.code("hash-cam", "asset_create offline").await;
    app.cli(&["pairing", "approve", &code.user_code]);
    let tokens: rushes_proto::auth::TokenResponse = app
        .poll("hash-cam", &code.device_code)
        .await
        .json()
        .await
        .unwrap();
    let haystack = app.database_dump();
    assert!(haystack.contains("hash-cam"), "the database was read");
    for secret in [
        code.device_code.as_str(),
        &tokens.access_token,
        tokens.refresh_token.as_deref().unwrap(),
    ] {
        assert!(!haystack.contains(secret), "a secret is stored in clear");
    }
}

#[tokio::test]
async fn admin_commands_manage_projects_pairings_and_devices() {
    let app = spawn_app().await;
    assert!(
        app.cli(&["project", "create", "Feature Film"])
            .contains("Feature Film")
    );
    let dup = app.cli_raw(&["project", "create", "Feature Film"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists"));
    let names: Vec<String> = app
        .cli_json(&["project", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Default", "Feature Film"]);

    let code = app.code("cli-cam", "asset_create offline").await;
    let pending = app.cli_json(&["pairing", "list"]);
    let entry = &pending[0];
    assert_eq!(entry["user_code"], code.user_code);
    assert_eq!(entry["client_id"], "cli-cam");
    assert_eq!(entry["client_version"], "1.2.3");
    assert_eq!(entry["device_name"], code.name);
    assert!(entry["model"].is_string());

    let unknown = app.cli_raw(&["pairing", "approve", "000000", "--project", "Feature Film"]);
    assert!(!unknown.status.success());
    let no_project = app.cli_raw(&["pairing", "approve", &code.user_code, "--project", "Nope"]);
    assert!(!no_project.status.success());
    app.cli(&[
        "pairing",
        "approve",
        &code.user_code,
        "--project",
        "Feature Film",
    ]);
    assert_eq!(app.cli_json(&["pairing", "list"]), serde_json::json!([]));
    let res = app.poll("cli-cam", &code.device_code).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: rushes_proto::auth::TokenResponse = res.json().await.unwrap();

    let devices = app.cli_json(&["device", "list", "--project", "Feature Film"]);
    assert_eq!(devices[0]["client_id"], "cli-cam");
    assert_eq!(devices[0]["project"], "Feature Film");
    assert_eq!(
        app.cli_json(&["device", "list", "--project", "Default"]),
        serde_json::json!([])
    );

    app.cli(&["device", "unpair", "cli-cam"]);
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let devices = app.cli_json(&["device", "list"]);
    assert_eq!(devices[0]["status"], "unpaired");
    let missing = app.cli_raw(&["device", "pause", "no-such-device"]);
    assert!(!missing.status.success());
}

#[tokio::test]
async fn admin_commands_refuse_a_directory_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rushes"))
        .args([
            "--data",
            dir.path().join("nothing").to_str().unwrap(),
            "project",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rushes serve"));
}

#[tokio::test]
async fn a_stalled_part_upload_is_dropped_after_the_idle_timeout() {
    if local_store_only(
        "the idle timeout guards Rushes' own /upload route; under S3 part bytes go to S3",
    ) {
        return;
    }
    let app = spawn_app_with(&["--idle-timeout", "1"]).await;
    let tokens = app.pair("slow-cam").await;
    let asset = app
        .create_asset(&tokens.access_token, "slow.mp4", 1000)
        .await;
    // Send half the body, then stop: the server must answer 408 instead of waiting forever.
    let url = asset.upload_urls[0].clone();
    let res = app
        .client
        .put(&url)
        .body(reqwest::Body::wrap_stream(
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(vec![0u8; 500])])
                .chain(futures_util::stream::pending()),
        ))
        .send()
        .await
        .unwrap();
    let (status, _, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    // Nothing was stored: the full part still uploads.
    app.upload(&asset, &test_bytes(1000, 9)).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
}

#[test]
fn a_client_that_never_finishes_its_tls_handshake_is_disconnected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app());
    let addr = app.url.trim_start_matches("https://").to_owned();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&[0x16, 0x03, 0x01]).unwrap(); // the start of a ClientHello, then silence
    let mut buf = [0u8; 64];
    // The server closes the connection (read returns 0 or an error) well before 30 s.
    let started = std::time::Instant::now();
    let closed = matches!(stream.read(&mut buf), Ok(0) | Err(_));
    assert!(closed && started.elapsed() < Duration::from_secs(25));
}
