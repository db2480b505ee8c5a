//! Many devices at once: 50 paired devices upload concurrently and every file arrives with
//! the right SHA-256.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_devices_upload_concurrently_and_every_sha256_matches() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let mut devices = Vec::new();
    for i in 0..50 {
        devices.push(app.pair(&format!("crowd-{i:02}")).await);
    }
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for (i, tokens) in devices.into_iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // Sizes from a few bytes to two parts, so single- and multi-part assets mix.
            let len = [1, 4096, 700_000, 5 * MIB + 17][i % 4] + i;
            let data = test_bytes(len, 1000 + i as u64);
            let asset = app
                .create_asset(&tokens.access_token, &format!("crowd-{i}.mp4"), len)
                .await;
            // Parts of one file go in parallel too.
            let part_len = len.div_ceil(asset.upload_urls.len());
            let puts = asset.upload_urls.iter().enumerate().map(|(p, url)| {
                let chunk = data[p * part_len..((p + 1) * part_len).min(len)].to_vec();
                let app = app.clone();
                async move { app.put_part(url, chunk).await.status() }
            });
            for status in futures_util::future::join_all(puts).await {
                assert_eq!(status, StatusCode::OK);
            }
            app.wait_complete(&tokens.access_token, &asset.id).await;
            (asset.id, sha256_hex(&data))
        }));
    }
    let mut expected = Vec::new();
    for task in tasks {
        expected.push(task.await.unwrap());
    }
    let listing = app.cli_json(&["asset", "list"]);
    let listing = listing.as_array().unwrap();
    assert_eq!(listing.len(), 50);
    for (id, sha) in expected {
        let entry = listing.iter().find(|e| e["id"] == id).expect("listed");
        assert_eq!(entry["state"], "complete");
        assert_eq!(entry["sha256"], sha);
    }
}
