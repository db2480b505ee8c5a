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

#[tokio::test]
async fn tls_1_2_and_http_1_1_clients_are_served_as_well_as_tls_1_3_and_http_2() {
    // Camera TLS stacks vary: some stop at TLS 1.2 and HTTP/1.1.
    let app = spawn_app().await;
    let pem = std::fs::read(app.data.join("tls/ca.crt")).unwrap();
    let old = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .http1_only()
        .build()
        .unwrap();
    let res = old.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    let new = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .tls_version_min(reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    let res = new.get(app.at("/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
}

#[tokio::test]
async fn the_server_certificate_names_what_the_operator_asked_for() {
    let app = spawn_app_with(&["--tls-name", "api.frame.io"]).await;
    let pem = std::fs::read(app.data.join("tls/ca.crt")).unwrap();
    // Reach the test server under the camera's host name.
    let addr: std::net::SocketAddr = app.url.trim_start_matches("https://").parse().unwrap();
    let camera = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .resolve("api.frame.io", addr)
        .build()
        .unwrap();
    let res = camera
        .get(format!("https://api.frame.io:{}/health", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Upload URLs follow the host the device used.
    let code: serde_json::Value = camera
        .post(format!(
            "https://api.frame.io:{}/v2/auth/device/code",
            addr.port()
        ))
        .form(&[
            ("client_id", "named"),
            ("client_secret", "s"),
            ("scope", "asset_create"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        code["verification_uri"],
        format!("https://api.frame.io:{}/pair", addr.port())
    );
}

#[tokio::test]
async fn public_url_sets_the_base_of_pairing_and_upload_urls() {
    let app = spawn_app_with(&["--public-url", "https://rushes.example.net/"]).await;
    let code = app.code("public-url-cam", "asset_create").await;
    assert_eq!(code.verification_uri, "https://rushes.example.net/pair");
    app.approve(&code.user_code);
    let tokens: rushes_proto::auth::TokenResponse = app
        .poll("public-url-cam", &code.device_code)
        .await
        .json()
        .await
        .unwrap();
    let asset = app.create_asset(&tokens.access_token, "p.mp4", 10).await;
    // Part bytes go to the media store: Rushes itself, or the S3 endpoint when in S3.
    let base = match &app.s3 {
        Some(s3) => format!("{}/{}/", s3.endpoint, s3.bucket),
        None => "https://rushes.example.net/upload/".to_owned(),
    };
    assert!(
        asset.upload_urls[0].starts_with(&base),
        "{}",
        asset.upload_urls[0]
    );
}
