//! Several server processes sharing one database and one media store: no request depends
//! on which server received the previous one.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_device_pairs_refreshes_and_uploads_across_two_servers() {
    let first = spawn_app_with(&["--part-size", "5242880"]).await;
    let second = first.peer();

    // Pair through the first server, refresh through the second.
    let tokens = first.pair("roaming-cam").await;
    let res = second
        .refresh("roaming-cam", tokens.refresh_token.as_deref().unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: rushes_proto::auth::TokenResponse = res.json().await.unwrap();

    // Create the asset on one server, send half the parts through each.
    let data = test_bytes(4 * 5 * MIB + 321, 77);
    let asset = second
        .create_asset(&tokens.access_token, "roaming.mov", data.len())
        .await;
    assert_eq!(asset.upload_urls.len(), 4);
    let part = data.len().div_ceil(4);
    for (i, url) in asset.upload_urls.iter().enumerate() {
        let chunk = data[i * part..((i + 1) * part).min(data.len())].to_vec();
        // The URLs name the server the device used; the other one honours them as well.
        let via = if i % 2 == 0 { &first } else { &second };
        let path = &url[url.find("/upload/").unwrap()..];
        let res = via.put_part(&via.at(path), chunk).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "part {} via {}",
            i + 1,
            via.url
        );
    }
    first.wait_complete(&tokens.access_token, &asset.id).await;
    let entry = second.asset_entry(&asset.id);
    assert_eq!(entry["state"], "complete");
    assert_eq!(entry["sha256"], sha256_hex(&data));
    assert_eq!(std::fs::read(first.asset_file(&entry)).unwrap(), data);

    // Revocation through one server is seen by the other at once.
    let form = [
        ("client_id", "roaming-cam"),
        ("token", tokens.access_token.as_str()),
    ];
    let res = first
        .client
        .post(first.at("/v2/auth/revoke"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = second
        .client
        .get(second.at("/v2/devices/me"))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
