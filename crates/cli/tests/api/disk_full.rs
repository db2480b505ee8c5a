//! A data directory that fills up (a 48 MiB tmpfs of the test's own, so the test needs
//! root, as CI has): uploads are answered 507 with a clear message, what is stored stays
//! readable and intact, and uploads go through once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;

use crate::helpers::*;

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size_mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { mount, _dir: dir }
    }

    /// Writes a file until the disk refuses more; its path.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                return path;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn path_of(disk: &Path) -> PathBuf {
    disk.join("data")
}

/// Asserts the disk-full answer: 507 in the detailed shape, saying so.
async fn assert_disk_full(res: reqwest::Response, what: &str) {
    let (status, title, detail) = detailed_error(res).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {detail}");
    assert_eq!(title, "Insufficient Storage", "{what}");
    assert!(detail.contains("full"), "{what}: {detail}");
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_serving_reads_and_recovers_with_no_torn_file() {
    if local_store_only("the media must be on the small disk") {
        return;
    }
    let disk = SmallDisk::new(48);
    let app = spawn_app_in(&path_of(&disk.mount), &["--part-size", "5242880"]).await;
    let tokens = app.pair("cam-disk").await;
    let token = &tokens.access_token;
    let password = app.web_user("alice", true);
    let web = app.web_client("alice", &password).await;
    let first = test_bytes(2 * MIB, 31);
    let stored = app.create_asset(token, "A001.mov", first.len()).await;
    app.upload(&stored, &first).await;
    app.wait_complete(token, &stored.id).await;

    let filler = disk.fill();
    let second = test_bytes(11 * MIB, 32);
    // The first write that needs room is refused with 507, whether that is the asset's
    // record (SQLite found no room for it) or its first part.
    let res = app
        .create_asset_raw(
            token,
            serde_json::json!({"name": "A002.mov", "filesize": second.len(), "filetype": "video/quicktime"}),
        )
        .await;
    let created = if res.status() == StatusCode::OK {
        let asset: rushes_proto::asset::Asset = res.json().await.unwrap();
        let part = second.len().div_ceil(asset.upload_urls.len());
        let res = app
            .put_part(&asset.upload_urls[0], second[..part].to_vec())
            .await;
        assert_disk_full(res, "a part PUT on a full disk").await;
        Some(asset)
    } else {
        assert!(res.headers().contains_key("retry-after"));
        assert_disk_full(res, "an asset create on a full disk").await;
        None
    };

    // What is stored is still served: to the device, to the web, to the operator.
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = web
        .get(app.at(&format!("/assets/{}/file", stored.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), first.as_slice());
    assert_eq!(app.asset_entry(&stored.id)["sha256"], sha256_hex(&first));

    // Space returns: the same upload goes through, with nothing torn on either side.
    std::fs::remove_file(filler).unwrap();
    let asset = match created {
        Some(asset) => asset,
        None => app.create_asset(token, "A002.mov", second.len()).await,
    };
    app.upload(&asset, &second).await;
    app.wait_complete(token, &asset.id).await;
    assert_complete_with(&app, &asset.id, &second);
    assert_complete_with(&app, &stored.id, &first);
}

/// PostgreSQL out of disk: SQLSTATE 53100 (`disk_full`), raised here by a trigger as
/// PostgreSQL raises it when it cannot extend a file. Asset creation is 507 saying the disk
/// is full, with `Retry-After`, nothing half-made; once space is back it goes through.
#[tokio::test]
async fn postgresql_out_of_disk_answers_507_and_recovers() {
    let app = spawn_app().await;
    if app.database_url.is_none() {
        eprintln!("skipped with SQLite: its full disk is the tmpfs test above");
        return;
    }
    let tokens = app.pair("pg-full-cam").await;
    app.sql(
        "CREATE FUNCTION rushes_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           RAISE EXCEPTION 'could not extend file: No space left on device'
             USING ERRCODE = '53100';
         END $$",
    );
    app.sql(
        "CREATE TRIGGER disk_full BEFORE INSERT ON assets
         FOR EACH ROW EXECUTE FUNCTION rushes_test_disk_full()",
    );
    let body = serde_json::json!({
        "name": "A001_C001.MOV", "filesize": 1000, "filetype": "video/quicktime"
    });
    let res = app
        .create_asset_raw(&tokens.access_token, body.clone())
        .await;
    assert!(res.headers().contains_key("retry-after"));
    assert_disk_full(res, "an asset create with PostgreSQL out of disk").await;
    assert!(
        app.cli_json(&["asset", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    app.sql("DROP TRIGGER disk_full ON assets");
    let res = app.create_asset_raw(&tokens.access_token, body).await;
    assert_eq!(res.status(), StatusCode::OK);
}
