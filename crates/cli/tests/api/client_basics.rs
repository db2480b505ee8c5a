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
    let asset_id = completed_asset_id(&events);
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
    app.wait_listed_complete(&asset_id).await;
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

/// More files in flight than the client's journal has connections: the upload loop waited
/// for the journal without polling the files in flight, which held its connections, and
/// `--parallel-files 5` or more ended in "pool timed out" after 30 s.
#[tokio::test]
async fn many_files_in_flight_upload_a_stills_card() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Stills", None);
    let card = tempfile::tempdir().unwrap();
    let stills: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("DSCF{i:04}.JPG"),
                test_bytes(64 * 1024 + i, i as u64),
            )
        })
        .collect();
    let mut args = vec!["upload", "--json", "--parallel-files", "16"];
    let paths: Vec<String> = stills
        .iter()
        .map(|(name, data)| {
            let path = card.path().join(name);
            std::fs::write(&path, data).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    args.extend(paths.iter().map(String::as_str));

    let out = device_command(state.path(), &args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let completed: Vec<String> = json_events(&out.stdout)
        .iter()
        .filter(|e| e["event"] == "completed")
        .map(|e| e["asset_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(completed.len(), stills.len());
    for asset_id in &completed {
        app.wait_listed_complete(asset_id).await;
        let entry = app.asset_entry(asset_id);
        let path = entry["path"].as_str().unwrap().to_owned();
        let (_, data) = stills
            .iter()
            .find(|(name, _)| path.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{path} is not one of the stills"));
        assert_eq!(entry["sha256"], sha256_hex(data), "{entry}");
    }
    assert_eq!(
        app.cli_json(&["asset", "list"]).as_array().unwrap().len(),
        stills.len()
    );
}

/// Starts `rushes device pair` and returns it with the code it printed.
fn start_pairing(app: &TestServer, state: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let ca = app.data.join("tls/ca.crt");
    let mut child = device_command(
        state,
        &["pair", "--server", &app.url, "--ca", ca.to_str().unwrap()],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = lines
        .find_map(|l| l.ok()?.strip_prefix("Pairing code: ").map(str::to_owned))
        .expect("a pairing code");
    std::thread::spawn(move || for _ in lines {});
    (child, code)
}

#[tokio::test]
async fn a_denied_pairing_ends_with_a_clear_message_and_no_pairing() {
    let app = spawn_app_with(&["--poll-interval", "1"]).await;
    let state = tempfile::tempdir().unwrap();
    let (child, code) = start_pairing(&app, state.path());
    app.cli(&["pairing", "deny", &code]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{out:?}"
    );
    let status = device_command(state.path(), &["status"]).output().unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("not paired"));
}

#[tokio::test]
async fn an_expired_pairing_code_ends_with_a_clear_message() {
    let app = spawn_app_with(&["--poll-interval", "1", "--code-lifetime", "2"]).await;
    let state = tempfile::tempdir().unwrap();
    let (child, _code) = start_pairing(&app, state.path());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );
}

#[tokio::test]
async fn pairing_shows_the_code_the_link_and_the_project_it_joined() {
    let app = spawn_app().await;
    app.cli(&["project", "create", "Feature"]);
    let state = tempfile::tempdir().unwrap();
    let ca = app.data.join("tls/ca.crt");
    let mut child = device_command(
        state.path(),
        &[
            "pair",
            "--server",
            &app.url,
            "--ca",
            ca.to_str().unwrap(),
            "--name",
            "Cart",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let code = lines
        .find_map(|l| l.strip_prefix("Pairing code: ").map(str::to_owned))
        .unwrap();
    let link = lines.next().unwrap();
    assert_eq!(link, format!("Approve it at {}/pair?code={code}", app.url));
    app.cli(&["pairing", "approve", &code, "--project", "Feature"]);
    let rest: Vec<String> = lines.collect();
    assert!(child.wait().unwrap().success());
    assert!(
        rest.iter()
            .any(|l| l == &format!("Paired as \"Cart\" with project \"Feature\" on {}", app.url)),
        "{rest:?}"
    );
    // The QR code of the link was drawn with block characters.
    assert!(
        rest.iter().any(|l| l.contains('█') || l.contains('▀')),
        "{rest:?}"
    );
}
