//! Start-up, health, the CA download, unknown routes, and the happy path end to end.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_answers_ok_over_https_with_the_generated_ca() {
    let app = spawn_app().await;
    let res = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test]
async fn the_ca_is_offered_under_every_name_cameras_use() {
    let app = spawn_app().await;
    let on_disk = std::fs::read_to_string(app.data.join("tls/ca.crt")).unwrap();
    for path in ["/ca.crt", "/ca.pem", "/ROOT.CRT"] {
        let res = app.client.get(app.at(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.text().await.unwrap(), on_disk, "{path}");
    }
}

#[tokio::test]
async fn a_device_pairs_uploads_and_the_asset_completes_with_its_sha256() {
    let app = spawn_app().await;
    let tokens = app.pair("cam-basic").await;
    let data = test_bytes(12 * MIB + 123, 1);
    let asset = app
        .create_asset(&tokens.access_token, "A001C001.mp4", data.len())
        .await;
    app.upload(&asset, &data).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let entry = app.asset_entry(&asset.id);
    assert_eq!(entry["state"], "complete");
    assert_eq!(entry["sha256"], sha256_hex(&data));
    assert_eq!(entry["size"], data.len());
    assert_eq!(std::fs::read(app.asset_file(&entry)).unwrap(), data);
}

#[tokio::test]
async fn unknown_v2_routes_are_404_in_the_detailed_shape_and_logged() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.at("/v2/no/such/thing"))
        .send()
        .await
        .unwrap();
    let (status, title, _) = detailed_error(res).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(title, "Not Found");
    assert!(
        app.log().contains("/v2/no/such/thing"),
        "the unknown route is not in the log"
    );
}

#[tokio::test]
async fn a_restart_reuses_certificates_users_and_projects() {
    let mut app = spawn_app().await;
    let ca_before = std::fs::read(app.data.join("tls/ca.crt")).unwrap();
    let leaf_before = std::fs::read(app.data.join("tls/server.crt")).unwrap();
    app.restart();
    assert_eq!(
        std::fs::read(app.data.join("tls/ca.crt")).unwrap(),
        ca_before
    );
    assert_eq!(
        std::fs::read(app.data.join("tls/server.crt")).unwrap(),
        leaf_before
    );
    let projects = app.cli_json(&["project", "list"]);
    assert_eq!(projects.as_array().unwrap().len(), 1, "{projects}");
    // The old client still trusts the server: same CA.
    let res = app.client.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
