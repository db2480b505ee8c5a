//! A finished clip is exactly the bytes the camera sent, for good (issue 20): the upload
//! paths that could change a clip's bytes after its SHA-256 is recorded, or record a hash
//! the file does not hold, tried from outside.

use std::time::Duration;

use reqwest::StatusCode;
use rushes_proto::asset::Asset;
use serde_json::json;

use crate::helpers::*;

const PART: usize = MIB;

/// Creates an asset of `parts` parts of [`PART`] bytes, planned by the device.
async fn create_planned(app: &TestServer, token: &str, name: &str, parts: usize) -> Asset {
    let res = app
        .create_asset_raw(
            token,
            json!({"name": name, "filesize": parts * PART, "filetype": "video/mp4", "parts": parts}),
        )
        .await;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{text}");
    let asset: Asset = serde_json::from_str(&text).expect("asset body");
    assert_eq!(asset.upload_urls.len(), parts, "{asset:?}");
    asset
}

async fn put_ok(app: &TestServer, url: &str, bytes: &[u8]) {
    let res = app.put_part(url, bytes.to_vec()).await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// Polls `done` until it holds, for 30 s at most.
async fn wait_until(what: &str, app: &TestServer, mut done: impl FnMut() -> bool) {
    eventually(what, Duration::from_secs(30), || {
        if done() {
            Ok(())
        } else {
            Err(format!("log: {}", app.log()))
        }
    })
    .await
}

/// The measured case: a part PUT stalls mid-body, the camera's retry of the part and the
/// other parts complete the clip through other connections, then the stalled body resumes
/// with different bytes. They must not reach the finished clip: the asset is sealed when
/// it starts assembling, and the late bytes are read and dropped (answered 200, as any late
/// part of a finished asset is, c2c-api.md §4).
#[tokio::test]
async fn a_stalled_part_that_resumes_after_the_clip_is_complete_changes_nothing() {
    if local_store_only("the local store's own part route holds the body") {
        return;
    }
    let app = spawn_app().await;
    let token = app.pair("cam-stalled-part").await.access_token;
    let data = test_bytes(3 * PART, 2001);
    let asset = create_planned(&app, &token, "A001_STALL.MOV", 3).await;

    // Part 1 on a connection of its own, its body held open after a quarter.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let held_client = client_for(&app.data);
    let held = tokio::spawn(
        held_client
            .put(&asset.upload_urls[0])
            .header("content-type", "video/mp4")
            .header("content-length", PART.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let quarter = PART / 4;
    tx.send(data[..quarter].to_vec())
        .await
        .expect("first quarter");
    // The held upload is inside the store's write once the asset's file exists.
    let file = app.data.join("media/.rushes-tmp").join(&asset.id);
    wait_until("the held part never reached the store", &app, || {
        file.exists()
    })
    .await;

    // The camera gives up on it and sends part 1 again, then the rest: the clip completes.
    put_ok(&app, &asset.upload_urls[0], &data[..PART]).await;
    put_ok(&app, &asset.upload_urls[1], &data[PART..2 * PART]).await;
    put_ok(&app, &asset.upload_urls[2], &data[2 * PART..]).await;
    app.wait_listed_complete(&asset.id).await;
    let recorded = assert_complete_with(&app, &asset.id, &data);

    // The stalled body resumes, with other bytes.
    let other = test_bytes(PART - quarter, 2002);
    tx.send(other).await.expect("the rest");
    drop(tx);
    let answer = held
        .await
        .expect("held PUT task")
        .expect("the held PUT is answered");
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "a late part is taken and dropped"
    );

    // The clip, its record and its hash are as they were.
    let after = assert_complete_with(&app, &asset.id, &data);
    assert_eq!(after["sha256"], recorded["sha256"]);
    let stored = std::fs::read(app.asset_file(&after)).expect("the clip");
    assert_eq!(sha256_hex(&stored), recorded["sha256"]);
}

/// Bug 1: assembly trusted the hash of the parts as they arrived without looking at the
/// file. An asset's file removed, or cut short, after its first part (an operator's
/// clean-up, a sweep) was re-created by the later parts with a hole where the first had
/// been, and put in place under the SHA-256 of the bytes it had lost. Now assembly checks
/// the file, fails loudly and keeps failing: the asset is never listed complete.
#[tokio::test]
async fn an_asset_file_removed_or_cut_short_while_its_parts_arrive_is_never_completed() {
    if local_store_only("the local store's temporary asset files") {
        return;
    }
    let app = spawn_app().await;
    let token = app.pair("cam-lost-file").await.access_token;
    let data = test_bytes(3 * PART, 2003);
    let removed = create_planned(&app, &token, "A001_GONE.MOV", 3).await;
    let cut = create_planned(&app, &token, "A001_CUT.MOV", 3).await;
    for (asset, damage) in [(&removed, "remove"), (&cut, "truncate")] {
        put_ok(&app, &asset.upload_urls[0], &data[..PART]).await;
        let file = app.data.join("media/.rushes-tmp").join(&asset.id);
        match damage {
            "remove" => std::fs::remove_file(&file).expect("remove the asset's file"),
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_len(PART as u64 / 2))
                .expect("truncate the asset's file"),
        }
        put_ok(&app, &asset.upload_urls[1], &data[PART..2 * PART]).await;
        put_ok(&app, &asset.upload_urls[2], &data[2 * PART..]).await;
    }
    for asset in [&removed, &cut] {
        // Its second attempt (a second after the first) must not take the file as it is.
        let failures = |log: &str| {
            log.lines()
                .filter(|l| l.contains(&asset.id) && l.contains("finalising failed"))
                .count()
        };
        wait_until("assembly neither failed twice nor completed", &app, || {
            failures(&app.log()) >= 2 || app.asset_entry(&asset.id)["state"] == "complete"
        })
        .await;
        let entry = app.asset_entry(&asset.id);
        assert_ne!(
            entry["state"], "complete",
            "a clip missing bytes was completed: {entry}"
        );
    }
}

/// Whether the asset's temporary file holds `bytes` at `at`.
fn file_holds(file: &std::path::Path, at: usize, bytes: &[u8]) -> bool {
    std::fs::read(file).is_ok_and(|held| held.get(at..at + bytes.len()) == Some(bytes))
}

/// One writer per part region: a first upload of part 1 lands some bytes, stalls, the
/// camera's retry of the part is answered 200, then the first lands more bytes and breaks
/// off. Its bytes must not end up in the clip in place of the retry's, which is what the
/// server recorded: the retry, finding the region held, is kept in a file of its own.
#[tokio::test]
async fn a_broken_upload_of_a_part_cannot_write_over_its_acknowledged_retry() {
    if local_store_only("the local store writes parts in place") {
        return;
    }
    let app = spawn_app().await;
    let token = app.pair("cam-broken-part").await.access_token;
    const BIG: usize = 3 * PART;
    let data = test_bytes(2 * BIG, 2004);
    let res = app
        .create_asset_raw(
            &token,
            json!({"name": "A001_MIX.MOV", "filesize": data.len(), "filetype": "video/mp4", "parts": 2}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let asset: Asset = res.json().await.expect("asset");
    let file = app.data.join("media/.rushes-tmp").join(&asset.id);

    // A buggy first upload of part 1, with other bytes, on a connection of its own.
    let other = test_bytes(BIG, 2005);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let held_client = client_for(&app.data);
    let held = tokio::spawn(
        held_client
            .put(&asset.upload_urls[0])
            .header("content-type", "video/mp4")
            .header("content-length", BIG.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tx.send(Ok(other[..PART].to_vec())).await.expect("send");
    wait_until("the first MiB never landed", &app, || {
        file_holds(&file, 0, &other[..PART])
    })
    .await;

    // The retry, whole and right.
    put_ok(&app, &asset.upload_urls[0], &data[..BIG]).await;

    // The first upload lands another MiB, then breaks off.
    tx.send(Ok(other[PART..2 * PART].to_vec()))
        .await
        .expect("send");
    wait_until("the second MiB never landed", &app, || {
        file_holds(&file, PART, &other[PART..2 * PART])
    })
    .await;
    tx.send(Err(std::io::Error::other("the camera's upload breaks off")))
        .await
        .expect("send");
    drop(tx);
    let broken = held.await.expect("held PUT task");
    assert!(
        broken
            .as_ref()
            .map_or(true, |r| r.status() != StatusCode::OK),
        "a broken upload was acknowledged: {broken:?}"
    );

    put_ok(&app, &asset.upload_urls[1], &data[BIG..]).await;
    app.wait_listed_complete(&asset.id).await;
    assert_complete_with(&app, &asset.id, &data);
}
