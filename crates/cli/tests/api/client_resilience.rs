//! The device client when things go wrong: killed mid-upload, paused on the server, files
//! that vanish, an untrusted certificate, tokens that expire or whose refresh answer was
//! lost, unpairing. Everything through the real `rushes device` commands.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::helpers::*;

/// How long one device command may take before the test calls it hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);
/// How long a command that should give up at once (pair again, not paired) may take.
const PROMPT_LIMIT: Duration = Duration::from_secs(20);

/// Runs a command to its end, killing it (and failing the test) after `limit`.
async fn run_within(cmd: std::process::Command, limit: Duration) -> Output {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(out) => out.expect("run rushes"),
        Err(_) => panic!(
            "the command did not finish within {limit:?} (started {:?} ago)",
            started.elapsed()
        ),
    }
}

/// `rushes --state STATE device ARGS`, bounded by [`COMMAND_LIMIT`].
async fn device(state: &Path, args: &[&str]) -> Output {
    run_within(device_command(state, args), COMMAND_LIMIT).await
}

async fn upload_json(state: &Path, files: &[&Path]) -> Output {
    let mut args = vec!["upload", "--json"];
    args.extend(files.iter().map(|f| f.to_str().expect("utf-8 path")));
    device(state, &args).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything a command printed, for failure messages.
fn dump(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn events_named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn summary(events: &[Value]) -> Value {
    let all = events_named(events, "summary");
    assert_eq!(all.len(), 1, "one summary line: {events:?}");
    all[0].clone()
}

fn file_of(event: &Value) -> String {
    event["file"].as_str().expect("file").to_owned()
}

fn device_json(state: &Path) -> Value {
    let bytes = std::fs::read(state.join("device.json")).expect("device.json");
    serde_json::from_slice(&bytes).expect("device.json is JSON")
}

fn refresh_token(state: &Path) -> String {
    device_json(state)["pairing"]["refresh_token"]
        .as_str()
        .expect("a refresh token in device.json")
        .to_owned()
}

fn write_clip(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the clip");
    path
}

/// `rushes device list --json` entries with this client_id.
fn server_devices(app: &TestServer, client_id: &str) -> Vec<Value> {
    app.cli_json(&["device", "list"])
        .as_array()
        .expect("device list is an array")
        .iter()
        .filter(|d| d["client_id"] == client_id)
        .cloned()
        .collect()
}

/// Waits (30 s at most) until the admin listing shows the asset complete; returns its entry.
async fn wait_listed_complete(app: &TestServer, asset_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = app.asset_entry(asset_id);
        if entry["state"] == "complete" {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "asset {asset_id} never completed: {entry}; log: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn part_numbers(events: &[Value]) -> Vec<u64> {
    events_named(events, "part_done")
        .iter()
        .map(|e| e["number"].as_u64().expect("part number"))
        .collect()
}

/// Runs `rushes device ARGS` (with `--json`), reads its events as they come, and SIGKILLs
/// it right after its `parts`-th `part_done` event. Returns the events it printed.
fn kill_after_parts(state: &Path, args: &[&str], parts: usize) -> Vec<Value> {
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = device_command(state, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("reopen stderr file"))
        .spawn()
        .expect("start rushes device upload");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + COMMAND_LIMIT;
    let mut events: Vec<Value> = Vec::new();
    while part_numbers(&events).len() < parts {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => events.extend(serde_json::from_str::<Value>(&line).ok()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no part_done #{parts} ({e}); events {events:?}; stderr {}",
                    std::fs::read_to_string(stderr.path()).unwrap_or_default()
                );
            }
        }
    }
    child.kill().expect("SIGKILL the client");
    let status = child.wait().expect("reap the client");
    reader.join().expect("reader thread");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    events
}

#[tokio::test]
async fn a_client_killed_mid_upload_resumes_without_a_new_asset_or_resending_parts() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Killed", None);
    let files = tempfile::tempdir().unwrap();
    // 8 parts of 5 MiB, the last 3 bytes short.
    let data = test_bytes(40 * MIB - 3, 7);
    let clip = write_clip(files.path(), "A002C003.mov", &data);
    let clip_arg = clip.to_str().unwrap();
    let args = ["upload", clip_arg, "--json", "--parallel", "1"];

    // First run: SIGKILLed right after the server acknowledged its 3rd part.
    let first = kill_after_parts(state.path(), &args, 3);
    let first_parts = part_numbers(&first);
    assert_eq!(first_parts, [1, 2, 3], "--parallel 1 sends parts in order");
    let first_started = events_named(&first, "started");
    assert_eq!(first_started.len(), 1, "{first:?}");
    assert_eq!(first_started[0]["resumed_bytes"], 0, "{first:?}");
    let asset_id = first_started[0]["asset_id"]
        .as_str()
        .expect("asset_id")
        .to_owned();

    // Second run: the same command finishes what the first started.
    let out = device(state.path(), &args).await;
    assert!(out.status.success(), "{}", dump(&out));
    let rerun = json_events(&out.stdout);
    let started = events_named(&rerun, "started");
    assert_eq!(started.len(), 1, "{rerun:?}");
    assert_eq!(
        started[0]["asset_id"], asset_id,
        "the rerun continues the same asset: {rerun:?}"
    );
    let resumed = started[0]["resumed_bytes"].as_u64().expect("resumed_bytes");
    assert!(
        resumed >= 3 * 5 * MIB as u64,
        "the 3 acknowledged parts count as resumed, got {resumed}: {rerun:?}"
    );
    let rerun_parts = part_numbers(&rerun);
    let unique: BTreeSet<u64> = rerun_parts.iter().copied().collect();
    assert_eq!(unique.len(), rerun_parts.len(), "no part twice: {rerun:?}");
    for n in &rerun_parts {
        assert!(
            (4..=8).contains(n),
            "part {n} was acknowledged before the kill (or does not exist) but was sent again: {rerun:?}"
        );
    }
    let rerun_bytes: u64 = events_named(&rerun, "part_done")
        .iter()
        .map(|e| e["size"].as_u64().expect("part size"))
        .sum();
    assert_eq!(
        resumed + rerun_bytes,
        data.len() as u64,
        "resumed bytes plus the parts sent now make the whole file: {rerun:?}"
    );
    let completed = events_named(&rerun, "completed");
    assert_eq!(completed.len(), 1, "{rerun:?}");
    assert_eq!(completed[0]["asset_id"], asset_id);
    assert_eq!(
        summary(&rerun),
        serde_json::json!({"event": "summary", "completed": 1, "failed": 0, "paused_rejected": 0})
    );

    let assets = app.cli_json(&["asset", "list"]);
    assert_eq!(
        assets.as_array().unwrap().len(),
        1,
        "exactly one asset on the server: {assets}"
    );
    let entry = wait_listed_complete(&app, &asset_id).await;
    assert_eq!(entry["size"], data.len() as u64);
    assert_eq!(entry["sha256"], sha256_hex(&data));
    let on_disk = std::fs::read(app.asset_file(&entry)).expect("the finished file");
    assert_eq!(sha256_hex(&on_disk), sha256_hex(&data));
}

#[tokio::test]
async fn a_paused_device_has_its_clips_refused_and_counted_and_uploads_after_resume() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "PausedCam", None);
    let out = app.cli(&["device", "pause", "PausedCam"]);
    assert!(out.contains("paused"), "{out}");

    // Clips recorded while paused (mtime set after the pause began).
    let files = tempfile::tempdir().unwrap();
    let a = write_clip(files.path(), "P001.mov", &test_bytes(100_000, 1));
    let b = write_clip(files.path(), "P002.mov", &test_bytes(200_000, 2));
    for f in [&a, &b] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
    }

    let out = upload_json(state.path(), &[&a, &b]).await;
    // Refused clips are not failures: the command succeeds and says what happened.
    assert!(out.status.success(), "{}", dump(&out));
    let events = json_events(&out.stdout);
    let refused: BTreeSet<String> = events_named(&events, "paused_rejected")
        .iter()
        .map(|e| file_of(e))
        .collect();
    let expected: BTreeSet<String> = [&a, &b]
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(refused, expected, "{events:?}");
    assert!(events_named(&events, "completed").is_empty(), "{events:?}");
    assert!(events_named(&events, "failed").is_empty(), "{events:?}");
    assert_eq!(
        summary(&events),
        serde_json::json!({"event": "summary", "completed": 0, "failed": 0, "paused_rejected": 2})
    );
    assert!(
        app.cli_json(&["asset", "list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );

    // Without --json the summary says plainly that the device is paused.
    let out = device(
        state.path(),
        &["upload", a.to_str().unwrap(), b.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", dump(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("0 uploaded, 0 failed, 2 refused (device paused)"),
        "{}",
        dump(&out)
    );

    let status = device(state.path(), &["status", "--json"]).await;
    assert!(status.status.success(), "{}", dump(&status));
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["queue"]["paused_rejected"], 2, "{status}");
    assert_eq!(status["queue"]["complete"], 0, "{status}");

    // Resumed: a clip recorded from now on uploads.
    app.cli(&["device", "resume", "PausedCam"]);
    let c_data = test_bytes(300_000, 3);
    let c = write_clip(files.path(), "P003.mov", &c_data);
    std::fs::File::options()
        .write(true)
        .open(&c)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(1))
        .unwrap();
    let out = upload_json(state.path(), &[&c]).await;
    assert!(out.status.success(), "{}", dump(&out));
    let events = json_events(&out.stdout);
    let completed = events_named(&events, "completed");
    assert_eq!(completed.len(), 1, "{events:?}");
    let entry = wait_listed_complete(&app, completed[0]["asset_id"].as_str().unwrap()).await;
    assert_eq!(entry["sha256"], sha256_hex(&c_data));
}

#[tokio::test]
async fn a_vanished_file_is_marked_failed_and_does_not_block_the_others() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Vanish", None);
    let files = tempfile::tempdir().unwrap();
    let one = test_bytes(150_000, 11);
    let three = test_bytes(250_000, 13);
    let first = write_clip(files.path(), "V001.mov", &one);
    let gone = write_clip(files.path(), "V002.mov", &test_bytes(10, 12));
    let third = write_clip(files.path(), "V003.mov", &three);
    std::fs::remove_file(&gone).unwrap();

    let out = upload_json(state.path(), &[&first, &gone, &third]).await;
    assert!(
        !out.status.success(),
        "a failed file makes the command fail: {}",
        dump(&out)
    );
    let events = json_events(&out.stdout);
    let failed = events_named(&events, "failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(file_of(failed[0]), gone.to_str().unwrap(), "{events:?}");
    let completed: BTreeSet<String> = events_named(&events, "completed")
        .iter()
        .map(|e| file_of(e))
        .collect();
    let expected: BTreeSet<String> = [&first, &third]
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(completed, expected, "{events:?}");
    assert_eq!(
        summary(&events),
        serde_json::json!({"event": "summary", "completed": 2, "failed": 1, "paused_rejected": 0}),
        "the summary counts the vanished file"
    );
    assert!(
        text(&out.stderr).contains("1 file(s) failed"),
        "{}",
        dump(&out)
    );
    for event in events_named(&events, "completed") {
        let want = if file_of(event) == first.to_str().unwrap() {
            &one
        } else {
            &three
        };
        let entry = wait_listed_complete(&app, event["asset_id"].as_str().unwrap()).await;
        assert_eq!(entry["sha256"], sha256_hex(want));
    }
}

#[tokio::test]
async fn a_file_that_vanishes_while_queued_fails_and_the_queue_drains() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Drain", None);
    let files = tempfile::tempdir().unwrap();
    let big_data = test_bytes(20 * MIB, 21);
    let big = write_clip(files.path(), "D001.mov", &big_data);
    let small = write_clip(files.path(), "D002.mov", &test_bytes(1000, 22));

    // Queue both, and kill the client while the first is uploading.
    let seen = kill_after_parts(
        state.path(),
        &[
            "upload",
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            "--json",
            "--parallel",
            "1",
            "--parallel-files",
            "1",
        ],
        1,
    );
    assert_eq!(events_named(&seen, "queued").len(), 2, "{seen:?}");

    // The queued second file disappears before the queue is drained.
    std::fs::remove_file(&small).unwrap();
    let out = upload_json(state.path(), &[&big]).await;
    assert!(!out.status.success(), "{}", dump(&out));
    let events = json_events(&out.stdout);
    let failed = events_named(&events, "failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(file_of(failed[0]), small.to_str().unwrap());
    let completed = events_named(&events, "completed");
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(file_of(completed[0]), big.to_str().unwrap());
    assert_eq!(
        summary(&events),
        serde_json::json!({"event": "summary", "completed": 1, "failed": 1, "paused_rejected": 0})
    );
    let entry = wait_listed_complete(&app, completed[0]["asset_id"].as_str().unwrap()).await;
    assert_eq!(entry["sha256"], sha256_hex(&big_data));

    // The journal remembers it as failed, not as still to do.
    let status = device(state.path(), &["status", "--json"]).await;
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["queue"]["failed"], 1, "{status}");
    assert_eq!(status["queue"]["queued"], 0, "{status}");
    assert_eq!(status["queue"]["uploading"], 0, "{status}");
    assert_eq!(status["queue"]["complete"], 1, "{status}");
}

#[tokio::test]
async fn pairing_without_the_ca_says_to_pass_ca_and_pairs_nothing() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    let out = device(
        state.path(),
        &["pair", "--server", &app.url, "--name", "NoCa"],
    )
    .await;
    assert!(!out.status.success(), "{}", dump(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pass --ca"), "{}", dump(&out));
    assert!(
        stderr.contains("not trusted"),
        "says what is wrong: {}",
        dump(&out)
    );
    assert!(
        !text(&out.stdout).contains("Pairing code"),
        "no code was shown: {}",
        dump(&out)
    );
    // The server never saw a request.
    assert!(
        app.cli_json(&["pairing", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        app.cli_json(&["device", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let status = run_within(device_command(state.path(), &["status"]), PROMPT_LIMIT).await;
    assert!(!status.status.success(), "{}", dump(&status));
    let stderr = text(&status.stderr);
    assert!(stderr.contains("not paired"), "{}", dump(&status));
    assert!(stderr.contains("rushes device pair"), "{}", dump(&status));
}

#[tokio::test]
async fn credentials_are_private_and_status_shows_the_pairing() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Creds", None);

    let mode = std::fs::metadata(state.path().join("device.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "device.json mode {mode:o}");
    let file = device_json(state.path());
    let client_id = file["identity"]["client_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&client_id).is_ok(), "{file}");
    let access = file["pairing"]["access_token"].as_str().unwrap().to_owned();
    let refresh = refresh_token(state.path());
    assert!(!access.is_empty() && !refresh.is_empty());

    let files = tempfile::tempdir().unwrap();
    let clip = write_clip(files.path(), "C001.mov", &test_bytes(100_000, 5));
    let out = upload_json(state.path(), &[&clip]).await;
    assert!(out.status.success(), "{}", dump(&out));

    // The journal (queue.db and its WAL) never holds a token.
    assert!(state.path().join("queue.db").exists());
    for entry in std::fs::read_dir(state.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "device.json") || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for token in [&access, &refresh] {
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{} holds a token",
                path.display()
            );
        }
    }

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let out = device(state.path(), &["status", "--json"]).await;
    assert!(out.status.success(), "{}", dump(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["server"], app.url, "{status}");
    assert_eq!(status["project"], "Default", "{status}");
    assert_eq!(status["device_name"], "Creds", "{status}");
    assert_eq!(status["client_id"], client_id, "{status}");
    let expires = status["access_token_expires_at"]
        .as_i64()
        .expect("access_token_expires_at in Unix ms");
    assert!(expires > before, "{status}");
    assert_eq!(
        status["queue"],
        serde_json::json!({"queued": 0, "uploading": 0, "complete": 1, "failed": 0, "paused_rejected": 0})
    );

    // The text form names the same things.
    let out = device(state.path(), &["status"]).await;
    assert!(out.status.success(), "{}", dump(&out));
    let stdout = text(&out.stdout);
    for needle in [app.url.as_str(), "Default", "Creds", client_id.as_str()] {
        assert!(stdout.contains(needle), "{needle} in {stdout}");
    }
}

#[tokio::test]
async fn short_lived_access_tokens_are_refreshed_without_user_action() {
    let app = spawn_app_with(&["--access-token-lifetime", "1"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Refresh", None);
    let before = refresh_token(state.path());

    let files = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..3)
        .map(|i| test_bytes(300_000 + i, 30 + i as u64))
        .collect();
    let clips: Vec<PathBuf> = data
        .iter()
        .enumerate()
        .map(|(i, d)| write_clip(files.path(), &format!("R00{i}.mov"), d))
        .collect();
    let paths: Vec<&Path> = clips.iter().map(PathBuf::as_path).collect();
    let out = upload_json(state.path(), &paths).await;
    assert!(out.status.success(), "{}", dump(&out));
    let events = json_events(&out.stdout);
    assert_eq!(
        summary(&events),
        serde_json::json!({"event": "summary", "completed": 3, "failed": 0, "paused_rejected": 0})
    );
    let after = refresh_token(state.path());
    assert_ne!(before, after, "the refresh token rotated");
    let mode = std::fs::metadata(state.path().join("device.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "still private after a rewrite");
    for event in events_named(&events, "completed") {
        let i = clips
            .iter()
            .position(|c| c.to_str().unwrap() == file_of(event))
            .expect("a known file");
        let entry = wait_listed_complete(&app, event["asset_id"].as_str().unwrap()).await;
        assert_eq!(entry["sha256"], sha256_hex(&data[i]));
    }
    // The rotated token is the one the server honours.
    let res = app
        .refresh(
            device_json(state.path())["identity"]["client_id"]
                .as_str()
                .unwrap(),
            &after,
        )
        .await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_lost_refresh_answer_means_pair_again_not_a_crash_loop() {
    let app = spawn_app_with(&["--access-token-lifetime", "1"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Lost", None);
    let device_file = state.path().join("device.json");
    let old = std::fs::read(&device_file).unwrap();
    let client_id = device_json(state.path())["identity"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let files = tempfile::tempdir().unwrap();
    let first = write_clip(files.path(), "L001.mov", &test_bytes(100_000, 41));
    let out = upload_json(state.path(), &[&first]).await;
    assert!(out.status.success(), "{}", dump(&out));
    assert_ne!(
        std::fs::read(&device_file).unwrap(),
        old,
        "the upload rotated the tokens"
    );

    // As if the answer to that refresh had been lost: the device still holds the old pair.
    std::fs::write(&device_file, &old).unwrap();
    std::fs::set_permissions(&device_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let second = write_clip(files.path(), "L002.mov", &test_bytes(100_000, 42));
    for attempt in 1..=2 {
        let started = Instant::now();
        let out = run_within(
            device_command(
                state.path(),
                &["upload", second.to_str().unwrap(), "--json"],
            ),
            PROMPT_LIMIT,
        )
        .await;
        assert!(!out.status.success(), "attempt {attempt}: {}", dump(&out));
        assert!(
            text(&out.stderr).contains("pair again"),
            "attempt {attempt}: {}",
            dump(&out)
        );
        assert!(
            events_named(&json_events(&out.stdout), "retrying").is_empty(),
            "attempt {attempt} gives up at once: {}",
            dump(&out)
        );
        assert!(started.elapsed() < PROMPT_LIMIT);
    }
    // The server took the replay as a stolen token: the whole grant is gone.
    let listed = server_devices(&app, &client_id);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "unpaired", "{listed:?}");
    assert!(
        app.cli_json(&["asset", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["path"].as_str().is_some_and(|p| !p.ends_with("L002.mov"))),
        "nothing was uploaded with the refused credentials"
    );
}

#[tokio::test]
async fn unpairing_revokes_on_the_server_and_pairing_again_keeps_the_client_id() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Unpaired", None);
    let file = device_json(state.path());
    let client_id = file["identity"]["client_id"].as_str().unwrap().to_owned();
    let access = file["pairing"]["access_token"].as_str().unwrap().to_owned();
    let listed = server_devices(&app, &client_id);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0]["status"], "unpaired", "{listed:?}");

    let out = device(state.path(), &["unpair"]).await;
    assert!(out.status.success(), "{}", dump(&out));
    assert!(text(&out.stdout).contains("Unpaired"), "{}", dump(&out));
    let listed = server_devices(&app, &client_id);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "unpaired", "{listed:?}");
    // The old access token no longer works on the server.
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    // And the device forgot its tokens.
    let file = device_json(state.path());
    assert!(file["pairing"].is_null(), "{file}");
    let mode = std::fs::metadata(state.path().join("device.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let status = run_within(device_command(state.path(), &["status"]), PROMPT_LIMIT).await;
    assert!(!status.status.success(), "{}", dump(&status));
    assert!(
        text(&status.stderr).contains("not paired"),
        "{}",
        dump(&status)
    );

    // Pairing again: same identity, still one device on the server.
    app.pair_device_cli(state.path(), "Unpaired", None);
    assert_eq!(
        device_json(state.path())["identity"]["client_id"],
        client_id.as_str()
    );
    let all = app.cli_json(&["device", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["client_id"], client_id.as_str(), "{all}");
    assert_ne!(all[0]["status"], "unpaired", "{all}");
    let out = device(state.path(), &["status", "--json"]).await;
    assert!(out.status.success(), "{}", dump(&out));
}

#[tokio::test]
async fn every_call_reports_the_client_version() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Versioned", None);
    let file = device_json(state.path());
    let client_id = file["identity"]["client_id"].as_str().unwrap().to_owned();
    let access = file["pairing"]["access_token"].as_str().unwrap().to_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(version, "0.1.0");

    // Another firmware version calls with the same token...
    let res = app
        .client
        .get(app.at("/v2/devices/me"))
        .bearer_auth(&access)
        .header("x-client-version", "9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    assert_eq!(
        server_devices(&app, &client_id)[0]["client_version"],
        "9.9.9"
    );

    // ...then the client's own upload reports its version again.
    let files = tempfile::tempdir().unwrap();
    let clip = write_clip(files.path(), "X001.mov", &test_bytes(50_000, 9));
    let out = upload_json(state.path(), &[&clip]).await;
    assert!(out.status.success(), "{}", dump(&out));
    let listed = server_devices(&app, &client_id);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["client_version"], version, "{listed:?}");
}

#[tokio::test]
async fn without_json_a_failed_file_is_named_even_when_output_is_not_a_terminal() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Plain", None);
    let files = tempfile::tempdir().unwrap();
    let big = write_clip(files.path(), "N001.mov", &test_bytes(20 * MIB, 51));
    let small = write_clip(files.path(), "N002.mov", &test_bytes(1000, 52));
    kill_after_parts(
        state.path(),
        &[
            "upload",
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            "--json",
            "--parallel",
            "1",
            "--parallel-files",
            "1",
        ],
        1,
    );
    std::fs::remove_file(&small).unwrap();

    // Piped output (a log file, cron, CI): no progress bars, but the failure must be named.
    let out = device(state.path(), &["upload", big.to_str().unwrap()]).await;
    assert!(!out.status.success(), "{}", dump(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1 uploaded, 1 failed, 0 refused"),
        "{}",
        dump(&out)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("1 file(s) failed"), "{}", dump(&out));
    assert!(
        format!("{stdout}{stderr}").contains("N002.mov"),
        "the output says which file failed (it says \"see above\"): {}",
        dump(&out)
    );
}
