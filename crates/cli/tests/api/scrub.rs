//! Scrubbing (issue 20, item 2): `rushes check --media` re-reads every complete clip from
//! the media store, local or S3, and names each one whose bytes no longer match the
//! recorded size and SHA-256 (flipped, truncated, deleted), without blaming intact ones;
//! and a server started with a short `--scrub-every` finds an injected flip by itself.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// `rushes check --media ARGS` against the server's data, database and media store.
pub fn check_media(app: &TestServer, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rushes"));
    if let Some(url) = &app.database_url {
        command.env("RUSHES_DATABASE_URL", url);
    }
    command
        .arg("--data")
        .arg(&app.data)
        .args(["check", "--media"]);
    if let Some(s3) = &app.s3 {
        command
            .args(s3.serve_args())
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY);
    }
    command.args(args).output().expect("run rushes check")
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Uploads `count` clips of a few hundred KiB through one device; their listing entries.
pub async fn upload_clips(app: &TestServer, count: usize) -> Vec<Value> {
    let tokens = app.pair("cam-scrub").await;
    let mut entries = Vec::new();
    for i in 0..count {
        let data = test_bytes(300 * 1024 + i * 7, 40 + i as u64);
        let asset = app
            .create_asset(
                &tokens.access_token,
                &format!("S{i:03}C001.mov"),
                data.len(),
            )
            .await;
        app.upload(&asset, &data).await;
        app.wait_complete(&tokens.access_token, &asset.id).await;
        entries.push(app.asset_entry(&asset.id));
    }
    entries
}

pub fn flip_a_byte(app: &TestServer, entry: &Value) {
    let file = app.asset_file(entry);
    let mut bytes = std::fs::read(&file).expect("clip file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, bytes).expect("rewrite clip");
}

fn truncate(app: &TestServer, entry: &Value) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(app.asset_file(entry))
        .expect("clip file");
    file.set_len(1000).expect("truncate");
}

fn delete(app: &TestServer, entry: &Value) {
    std::fs::remove_file(app.asset_file(entry)).expect("delete clip");
}

/// The name `check --media` gives a clip: its project and its path in the project.
fn clip_name(entry: &Value) -> String {
    format!(
        "{}/{}",
        entry["project"].as_str().unwrap(),
        entry["path"].as_str().unwrap()
    )
}

/// The whole scenario on whatever store `app` keeps its media in.
async fn damage_is_found_and_named(app: TestServer) {
    let clips = upload_clips(&app, 4).await;

    let clean = check_media(&app, &[]);
    assert!(clean.status.success(), "clean data: {}", text_of(&clean));
    assert!(text_of(&clean).contains("media: ok"), "{}", text_of(&clean));

    flip_a_byte(&app, &clips[0]);
    truncate(&app, &clips[1]);
    delete(&app, &clips[2]);

    let damaged = check_media(&app, &[]);
    let text = text_of(&damaged);
    assert!(!damaged.status.success(), "damage must fail: {text}");
    for (entry, kind) in [
        (&clips[0], "damaged"),
        (&clips[1], "truncated"),
        (&clips[2], "missing"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&clip_name(entry)))
            .unwrap_or_else(|| panic!("{} is not named: {text}", clip_name(entry)));
        assert!(line.to_lowercase().contains(kind), "{kind}: {line}");
    }
    assert!(
        !text.contains(&clip_name(&clips[3])),
        "the intact clip is blamed: {text}"
    );

    let json = check_media(&app, &["--json"]);
    assert!(!json.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let status_of = |entry: &Value| {
        lines
            .iter()
            .find(|l| l["id"] == entry["id"])
            .unwrap_or_else(|| panic!("no line for {}: {lines:?}", entry["id"]))["status"]
            .clone()
    };
    assert_eq!(status_of(&clips[0]), "damaged");
    assert_eq!(status_of(&clips[1]), "truncated");
    assert_eq!(status_of(&clips[2]), "missing");
    assert_eq!(status_of(&clips[3]), "ok");
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["clips"], 4);
    assert_eq!(summary["failed"], 3);

    // The listing shows what the check found.
    assert_eq!(
        app.asset_entry(clips[0]["id"].as_str().unwrap())["damaged"],
        true
    );
    assert_eq!(
        app.asset_entry(clips[3]["id"].as_str().unwrap())["damaged"],
        false
    );
}

#[tokio::test]
async fn check_media_names_flipped_truncated_and_missing_clips() {
    damage_is_found_and_named(spawn_app().await).await;
}

#[tokio::test]
async fn check_media_names_damage_in_an_s3_bucket() {
    damage_is_found_and_named(spawn_app_on_s3(&[]).await).await;
}

#[tokio::test]
async fn check_media_can_be_limited_and_bounded() {
    let app = spawn_app().await;
    let clips = upload_clips(&app, 2).await;
    flip_a_byte(&app, &clips[0]);

    // A project with no clips, and a date after every clip: nothing to read, all well.
    app.cli(&["project", "create", "Empty"]);
    let other = check_media(&app, &["--project", "Empty"]);
    assert!(other.status.success(), "{}", text_of(&other));
    let later = check_media(&app, &["--since", "2999-01-01"]);
    assert!(later.status.success(), "{}", text_of(&later));
    let unknown = check_media(&app, &["--project", "Nope"]);
    assert!(!unknown.status.success());
    let earlier = check_media(&app, &["--since", "2000-01-01", "--json"]);
    assert!(
        !earlier.status.success(),
        "clips since 2000 include the flip"
    );
    assert!(String::from_utf8_lossy(&earlier.stdout).contains("\"clips\":2"));

    // 0.6 MB at 1 MB/s takes over half a second; the damage is still found.
    let started = Instant::now();
    let slow = check_media(&app, &["--max-rate", "1", "--project", "Default"]);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(!slow.status.success());
    assert!(text_of(&slow).contains(&clip_name(&clips[0])));

    // Without --media, `check` is the database check it was, and passes.
    let db = app.cli_raw(&["check"]);
    assert!(db.status.success(), "{}", text_of(&db));
    assert!(text_of(&db).contains("database: ok"));
}

/// Polls the listing until `pred` holds for the asset's entry; panics after `within`.
pub async fn wait_entry(
    app: &TestServer,
    asset_id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, within, || {
        let entry = app.asset_entry(asset_id);
        if pred(&entry) {
            Ok(entry)
        } else {
            Err(format!("{entry}; log: {}", app.log()))
        }
    })
    .await
}

#[tokio::test]
async fn the_server_scrubs_by_itself_and_finds_a_flip_within_a_cycle() {
    let app = spawn_app_with(&["--scrub-every-secs", "2"]).await;
    let clips = upload_clips(&app, 2).await;
    let (flipped, intact) = (
        clips[0]["id"].as_str().unwrap(),
        clips[1]["id"].as_str().unwrap(),
    );
    // Clean clips are re-read and found intact: the scrub runs.
    let first = wait_entry(&app, flipped, Duration::from_secs(30), "verified", |e| {
        !e["verified_at"].is_null()
    })
    .await;
    assert_eq!(first["damaged"], false);
    assert!(!app.log().contains("no longer matches"), "{}", app.log());

    flip_a_byte(&app, &clips[0]);
    let flipped_at = Instant::now();
    let found = wait_entry(
        &app,
        flipped,
        Duration::from_secs(30),
        "damage found",
        |e| e["damaged"] == true,
    )
    .await;
    // One cycle is the 2 s period plus the re-read; allow for a loaded machine.
    assert!(
        flipped_at.elapsed() < Duration::from_secs(12),
        "found only after {:?}",
        flipped_at.elapsed()
    );
    assert!(
        found["damage"].as_str().unwrap().contains("SHA-256"),
        "{found}"
    );
    let log = app.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("no longer matches") && l.contains(flipped)),
        "a warning names the clip: {log}"
    );
    // Another cycle later the intact clip is still intact and the damaged one is still
    // reported, its bytes left as found (never repaired).
    let verified_before = app.asset_entry(intact)["verified_at"].clone();
    let again = wait_entry(&app, intact, Duration::from_secs(30), "re-verified", |e| {
        e["verified_at"] != verified_before
    })
    .await;
    assert_eq!(again["damaged"], false);
    assert_eq!(app.asset_entry(flipped)["damaged"], true);
    let on_disk = std::fs::read(app.asset_file(&clips[0])).unwrap();
    assert_ne!(sha256_hex(&on_disk), clips[0]["sha256"].as_str().unwrap());
}

#[tokio::test]
async fn a_store_that_cannot_be_read_fails_the_check_without_blaming_the_clips() {
    let app = spawn_app_on_s3(&[]).await;
    let clips = upload_clips(&app, 1).await;
    app.s3.as_ref().unwrap().stop();
    let out = check_media(&app, &["--json"]);
    assert!(!out.status.success(), "{}", text_of(&out));
    let first: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a line for the clip"),
    )
    .unwrap();
    assert_eq!(first["status"], "unreadable", "{first}");
    // An outage says nothing about the clip: nothing is recorded against it.
    let entry = app.asset_entry(clips[0]["id"].as_str().unwrap());
    assert_eq!(entry["damaged"], false, "{entry}");
    assert!(entry["verified_at"].is_null(), "{entry}");
}
