//! The device client end to end through the real `rushes device` commands.

use crate::helpers::*;

#[tokio::test]
async fn a_paired_computer_uploads_files_with_their_sha256_intact() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Laptop", None);
    let files = tempfile::tempdir().unwrap();
    let data = test_bytes(11 * MIB + 5, 42);
    let clip = files.path().join("A001C001.mov");
    std::fs::write(&clip, &data).unwrap();

    let out = device_command(state.path(), &["upload", clip.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_events(&out.stdout);
    let completed = events
        .iter()
        .find(|e| e["event"] == "completed")
        .expect("completed event");
    let asset_id = completed["asset_id"].as_str().unwrap().to_owned();
    let entry = app.asset_entry(&asset_id);
    assert_eq!(entry["device"], "Laptop");
    assert!(
        entry["path"]
            .as_str()
            .unwrap()
            .ends_with("/VIDEO/Laptop/A001C001.mov"),
        "{entry}"
    );
    // The server finalises asynchronously; wait through the admin listing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.asset_entry(&asset_id)["state"] != "complete" {
        assert!(std::time::Instant::now() < deadline, "never completed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.asset_entry(&asset_id)["sha256"], sha256_hex(&data));

    // Uploading the same file again sends nothing.
    let again = device_command(state.path(), &["upload", clip.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        json_events(&again.stdout)
            .iter()
            .any(|e| e["event"] == "already_uploaded")
    );
    assert_eq!(
        app.cli_json(&["asset", "list"]).as_array().unwrap().len(),
        1
    );
}
