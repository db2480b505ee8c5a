//! The device API's per-device request limit (`--rate-limit`): over it a device is answered
//! 429 with `Retry-After`, other devices are not, refreshing the token does not reset it,
//! and the Rushes client waits as told and finishes its uploads.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use rushes_proto::auth::TokenResponse;

use crate::helpers::*;

async fn me(app: &TestServer, token: &str) -> reqwest::Response {
    app.client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("devices/me")
}

/// Sends requests with `token` until one is refused; how many passed, when the last
/// one passed, and the refusal.
async fn until_refused(app: &TestServer, token: &str) -> (u32, Instant, reqwest::Response) {
    let mut last_ok = Instant::now();
    for passed in 0..200 {
        let res = me(app, token).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            return (passed, last_ok, res);
        }
        assert_eq!(res.status(), StatusCode::OK);
        last_ok = Instant::now();
    }
    panic!("200 requests in a row were served under --rate-limit");
}

#[tokio::test]
async fn a_device_over_its_request_limit_gets_429_with_retry_after_and_no_other_device_does() {
    let app = spawn_app_with(&["--rate-limit", "5"]).await;
    let a = app.pair("cam-limited").await;
    let b = app.pair("cam-quiet").await;

    let start = Instant::now();
    let (passed, _, refused) = until_refused(&app, &a.access_token).await;
    // A second's worth passes at once; beyond it, no more than the rate refills.
    let refilled = (start.elapsed().as_secs_f64() * 5.0).ceil() as u32;
    assert!(
        (5..=5 + refilled).contains(&passed),
        "{passed} passed in {:?}",
        start.elapsed()
    );
    let retry_after: u64 = refused.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1, "a fifth of a second, rounded up");
    let (status, title, detail) = detailed_error(refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(title, "Too Many Requests");
    assert!(detail.contains("try again in 1 s"), "{detail}");

    assert_eq!(me(&app, &b.access_token).await.status(), StatusCode::OK);

    // After the wait it was told, the device is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(me(&app, &a.access_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn refreshing_the_token_does_not_reset_the_limit() {
    let app = spawn_app_with(&["--rate-limit", "1"]).await;
    let tokens = app.pair("cam-refresher").await;
    let (_, last_ok, _) = until_refused(&app, &tokens.access_token).await;

    let refreshed: TokenResponse = app
        .refresh("cam-refresher", tokens.refresh_token.as_deref().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let res = me(&app, &refreshed.access_token).await;
    // One request a second: the new token is refused unless a second went by meanwhile.
    assert!(
        res.status() == StatusCode::TOO_MANY_REQUESTS
            || last_ok.elapsed() >= Duration::from_millis(900),
        "{} {:?} after the last request served",
        res.status(),
        last_ok.elapsed()
    );
}

#[tokio::test]
async fn the_client_waits_out_429s_and_uploads_every_file() {
    let app = spawn_app_with(&["--rate-limit", "1"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Limited", None);
    let files = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    let mut sums = Vec::new();
    for i in 0..5 {
        let data = test_bytes(1000 + i, 700 + i as u64);
        let path = files.path().join(format!("IMG_{i:04}.JPG"));
        std::fs::write(&path, &data).unwrap();
        sums.push(sha256_hex(&data));
        paths.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["upload", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let out = device_command(state.path(), &args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_events(&out.stdout);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "retrying" && e["error"].to_string().contains("429")),
        "the limit was never hit: {events:?}"
    );
    let mut stored = Vec::new();
    for event in events.iter().filter(|e| e["event"] == "completed") {
        let id = event["asset_id"].as_str().unwrap();
        app.wait_listed_complete(id).await;
        stored.push(app.asset_entry(id)["sha256"].as_str().unwrap().to_owned());
    }
    stored.sort();
    sums.sort();
    assert_eq!(stored, sums);
}
