//! Durability: a server killed with SIGKILL in the middle of concurrent uploads keeps every
//! part it acknowledged, and each upload completes once its remaining parts arrive.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use rushes_proto::asset::UploadStatus;
use tokio::sync::mpsc;

use crate::helpers::*;

const DEVICES: usize = 10;
const PARTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ten_concurrent_uploads_loses_no_acknowledged_part() {
    if local_store_only(
        "the server is killed while it receives part bytes; under S3 they go to S3, \
         which the kill does not interrupt",
    ) {
        return;
    }
    let mut app = spawn_app_with(&["--part-size", "5242880"]).await;
    let mut uploads = Vec::new();
    for i in 0..DEVICES {
        let tokens = app.pair(&format!("crash-cam-{i}")).await;
        // Four parts of a little over 5 MiB each.
        let data = test_bytes(4 * 5 * MIB + 1000 + i, 100 + i as u64);
        let asset = app
            .create_asset(&tokens.access_token, &format!("crash-{i}.mp4"), data.len())
            .await;
        assert_eq!(asset.upload_urls.len(), PARTS);
        uploads.push((tokens.access_token, asset, data));
    }

    // Every device uploads its parts one after the other; the test kills the server as
    // soon as a third of all parts have been acknowledged, while the rest are in flight.
    let acked: Arc<Mutex<BTreeSet<(usize, usize)>>> = Arc::default();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (device, (_, asset, data)) in uploads.iter().enumerate() {
        let client = app.client.clone();
        let urls = asset.upload_urls.clone();
        let data = data.clone();
        let acked = acked.clone();
        let ack_tx = ack_tx.clone();
        tasks.push(tokio::spawn(async move {
            let part_len = data.len().div_ceil(urls.len());
            // Devices start on different parts so the kill finds parts in every state.
            for k in 0..urls.len() {
                let part = (k + device) % urls.len();
                let chunk = data[part * part_len..((part + 1) * part_len).min(data.len())].to_vec();
                let res = client
                    .put(&urls[part])
                    .header("content-type", "video/mp4")
                    .body(chunk)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.lock().unwrap().insert((device, part + 1));
                        let _ = ack_tx.send(());
                    }
                    _ => return, // the server is gone
                }
            }
        }));
    }
    drop(ack_tx);
    let threshold = DEVICES * PARTS / 3;
    let mut seen = 0;
    while seen < threshold && ack_rx.recv().await.is_some() {
        seen += 1;
    }
    app.kill();
    for task in tasks {
        task.await.unwrap();
    }
    let acked_before_kill = acked.lock().unwrap().clone();
    assert!(acked_before_kill.len() >= threshold);
    assert!(
        acked_before_kill.len() < DEVICES * PARTS,
        "every part landed before the kill; the test proved nothing"
    );

    app.restart();
    for (device, (token, asset, data)) in uploads.iter().enumerate() {
        let status: UploadStatus = app
            .upload_status(token, &asset.id)
            .await
            .json()
            .await
            .unwrap();
        for &(d, part) in acked_before_kill.iter().filter(|(d, _)| *d == device) {
            let part = part as u32;
            assert!(
                status.state == "complete" || status.received_parts.contains(&part),
                "device {d}: part {part} was acknowledged before the kill but is missing after restart: {status:?}"
            );
        }
        let part_len = data.len().div_ceil(asset.upload_urls.len());
        for missing in &status.missing {
            let i = missing.number as usize - 1;
            let chunk = data[i * part_len..((i + 1) * part_len).min(data.len())].to_vec();
            assert_eq!(chunk.len() as u64, missing.size);
            let res = app.put_part(&missing.url, chunk).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    for (token, asset, data) in &uploads {
        app.wait_complete(token, &asset.id).await;
        let entry = app.asset_entry(&asset.id);
        assert_eq!(entry["sha256"], sha256_hex(data), "{entry}");
        assert_eq!(std::fs::read(app.asset_file(&entry)).unwrap(), *data);
    }
    let check = app.cli(&["check"]);
    assert!(check.contains("ok"), "{check}");
}

/// `rushes check` (what the crash suite runs after its kills) runs the engine's own check and
/// the rules the server's transactions keep, and names the asset that breaks one.
#[tokio::test]
async fn check_passes_an_intact_database_and_names_what_breaks_a_rule() {
    let app = spawn_app().await;
    let tokens = app.pair("check-cam").await;
    let data = test_bytes(3 * MIB, 7);
    let asset = app
        .create_asset(&tokens.access_token, "A001_C001.MOV", data.len())
        .await;
    app.upload(&asset, &data).await;
    app.wait_complete(&tokens.access_token, &asset.id).await;
    let intact = app.cli(&["check"]);
    let engine_check = match app.database_url {
        Some(_) => "PostgreSQL amcheck",
        None => "SQLite integrity_check",
    };
    assert!(
        intact.contains(engine_check)
            && intact.contains("consistency rules")
            && intact.contains("database: ok"),
        "{intact}"
    );
    if app.database_url.is_some() {
        // Without amcheck (an operator who may not create extensions) the rules still run,
        // and the output says what was left out and how to add it.
        app.sql("DROP EXTENSION amcheck");
        let without = app.cli(&["check"]);
        assert!(
            without.contains("skipped: PostgreSQL index and table check")
                && without.contains("CREATE EXTENSION amcheck")
                && !without.contains("PostgreSQL amcheck of")
                && without.contains("consistency rules")
                && without.contains("database: ok"),
            "{without}"
        );
    }

    // What a transaction torn by a crash would leave: complete, without its parts or hash.
    app.sql(&format!(
        "UPDATE parts SET received_at = NULL WHERE asset_id = '{}'",
        asset.id
    ));
    app.sql(&format!(
        "UPDATE assets SET sha256 = NULL WHERE id = '{}'",
        asset.id
    ));
    let broken = app.cli_raw(&["check"]);
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success(), "{stderr}");
    assert!(
        stderr.contains("has received every part")
            && stderr.contains("has its SHA-256")
            && stderr.contains(&asset.id),
        "{stderr}"
    );
}
