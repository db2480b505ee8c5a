//! Several server processes sharing one database and one media store: no request depends
//! on which server received the previous one.

use reqwest::StatusCode;
use rushes_proto::asset::UploadStatus;

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
    let chunk = |i: usize| data[i * part..((i + 1) * part).min(data.len())].to_vec();
    if first.s3.is_none() {
        for (i, url) in asset.upload_urls.iter().enumerate() {
            // The URLs name the server the device used; the other one honours them as well.
            let via = if i % 2 == 0 { &first } else { &second };
            let path = &url[url.find("/upload/").unwrap()..];
            let res = via.put_part(&via.at(path), chunk(i)).await;
            assert_eq!(
                res.status(),
                StatusCode::OK,
                "part {} via {}",
                i + 1,
                via.url
            );
        }
    } else {
        // In S3 the parts go to the bucket, never via a server: half of them with the URLs
        // the creating server signed, the rest with URLs the other server signs on resume.
        for i in [0, 2] {
            let res = second.put_part(&asset.upload_urls[i], chunk(i)).await;
            assert_eq!(res.status(), StatusCode::OK, "part {}", i + 1);
        }
        let status: UploadStatus = first
            .upload_status(&tokens.access_token, &asset.id)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(status.received_parts, [1, 3], "{status:?}");
        let missing: Vec<u32> = status.missing.iter().map(|m| m.number).collect();
        assert_eq!(missing, [2, 4], "{status:?}");
        for m in &status.missing {
            let res = first.put_part(&m.url, chunk(m.number as usize - 1)).await;
            assert_eq!(res.status(), StatusCode::OK, "part {}", m.number);
        }
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
