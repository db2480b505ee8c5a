//! `rushes device watch` end to end: the real watcher process on a temporary folder,
//! uploading to the real server. Files are written the way cameras and card readers
//! write them: growing in chunks while recording, or appearing whole.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// How long any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// A running `rushes device watch DIR --json --settle 1`, killed when dropped (also when
/// the test panics). Its stdout is read line by line on a thread, each line stamped with
/// the moment it arrived.
struct Watcher {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(state: &Path, dir: &Path) -> Watcher {
        let mut child = device_command(
            state,
            &[
                "watch",
                dir.to_str().expect("utf-8 path"),
                "--json",
                "--settle",
                "1",
            ],
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rushes device watch");
        let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push((Instant::now(), line));
            }
        });
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watcher {
            child: Some(child),
            lines,
            stderr,
        }
    }

    /// Every JSON event printed so far, with its arrival time.
    fn timed_events(&self) -> Vec<(Instant, Value)> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(t, l)| serde_json::from_str(l).ok().map(|v| (*t, v)))
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        self.timed_events().into_iter().map(|(_, v)| v).collect()
    }

    /// The events about one file.
    fn events_for(&self, file: &Path) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| is_about(e, file))
            .collect()
    }

    /// Everything the watcher printed, for failure messages.
    fn output(&self) -> String {
        let out: Vec<String> = self
            .lines
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        format!(
            "stdout:\n{}\nstderr:\n{}",
            out.join("\n"),
            self.stderr.lock().expect("lock")
        )
    }

    /// Waits (at most `timeout`) for the first event `event` about `file`; returns it with
    /// its arrival time. Fails at once on a `failed` event for that file or if the watcher
    /// exits.
    async fn wait_event(
        &mut self,
        event: &str,
        file: &Path,
        timeout: Duration,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.timed_events();
            if let Some(found) = events
                .iter()
                .find(|(_, e)| e["event"] == event && is_about(e, file))
            {
                return found.clone();
            }
            if event != "failed"
                && let Some((_, failed)) = events
                    .iter()
                    .find(|(_, e)| e["event"] == "failed" && is_about(e, file))
            {
                panic!(
                    "{} failed while waiting for {event}: {failed}\n{}",
                    file.display(),
                    self.output()
                );
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no {event:?} event for {} within {timeout:?}\n{}",
                file.display(),
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_completed(&mut self, file: &Path) -> (Instant, String) {
        let (at, e) = self.wait_event("completed", file, STEP).await;
        (at, e["asset_id"].as_str().expect("asset_id").to_owned())
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("watcher running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            // Let the reader threads catch the last lines.
            std::thread::sleep(Duration::from_millis(100));
            panic!("the watcher exited ({status})\n{}", self.output());
        }
    }

    /// SIGKILL, as a power cut or `kill -9` would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_about(event: &Value, file: &Path) -> bool {
    event["file"].as_str().map(Path::new) == Some(file)
}

/// A paired device (named `A-cam`) and an empty folder to watch.
struct Setup {
    app: TestServer,
    state: tempfile::TempDir,
    folder: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let app = spawn_app().await;
        let state = tempfile::tempdir().expect("state dir");
        app.pair_device_cli(state.path(), "A-cam", None);
        let folder = tempfile::tempdir().expect("folder");
        Setup { app, state, folder }
    }

    fn watch(&self) -> Watcher {
        Watcher::start(self.state.path(), self.folder.path())
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.folder.path().join(relative)
    }

    /// The server's asset list.
    fn assets(&self) -> Vec<Value> {
        self.app
            .cli_json(&["asset", "list"])
            .as_array()
            .expect("asset list is an array")
            .clone()
    }

    /// Waits (at most `STEP`) until the server lists the asset as complete; returns its
    /// entry and when that was first seen.
    async fn server_complete(&self, asset_id: &str) -> (Instant, Value) {
        let deadline = Instant::now() + STEP;
        loop {
            let entry = self.app.asset_entry(asset_id);
            if entry["state"] == "complete" {
                return (Instant::now(), entry);
            }
            assert!(
                Instant::now() < deadline,
                "asset {asset_id} never completed on the server: {entry}\nlog: {}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks the server's copy of `asset_id` is exactly `data`: hash and bytes on disk.
    async fn assert_server_copy(&self, asset_id: &str, data: &[u8]) -> Value {
        let (_, entry) = self.server_complete(asset_id).await;
        assert_eq!(entry["sha256"], sha256_hex(data), "{entry}");
        assert_eq!(entry["size"], data.len() as u64, "{entry}");
        assert_eq!(entry["device"], "A-cam", "{entry}");
        let stored = std::fs::read(self.app.asset_file(&entry)).expect("stored file");
        assert!(
            stored == data,
            "the server's file differs from the local one ({} vs {} bytes)",
            stored.len(),
            data.len()
        );
        entry
    }
}

/// Writes `data` to `path` in `chunk`-byte appends, `every` apart, like a camera recording.
/// Returns the moment the last append was flushed.
async fn record(path: &Path, data: &[u8], chunk: usize, every: Duration) -> Instant {
    let mut file = std::fs::File::create(path).expect("create clip");
    let mut chunks = data.chunks(chunk).peekable();
    while let Some(c) = chunks.next() {
        file.write_all(c).expect("append");
        file.flush().expect("flush");
        if chunks.peek().is_some() {
            tokio::time::sleep(every).await;
        }
    }
    Instant::now()
}

/// Puts a finished file into place in one step, as a copy that is renamed when done (so
/// the watcher can never see it half-copied).
fn place(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let staging = tempfile::NamedTempFile::new_in(std::env::temp_dir()).expect("staging file");
    std::fs::write(staging.path(), data).expect("write staging");
    staging.persist(path).expect("rename into place");
}

#[tokio::test]
async fn a_file_being_recorded_is_complete_on_the_server_seconds_after_the_last_write() {
    let s = Setup::new().await;
    let mut watcher = s.watch();
    let clip = s.path("A001C001.MOV");
    let data = test_bytes(22 * MIB + 12_345, 7);

    let last_write = record(&clip, &data, 2 * MIB, Duration::from_millis(250)).await;
    let parts_while_recording = watcher
        .events_for(&clip)
        .iter()
        .filter(|e| e["event"] == "part_done")
        .count();

    let (client_done, asset_id) = watcher.wait_completed(&clip).await;
    let (server_done, _) = s.server_complete(&asset_id).await;
    println!(
        "last write -> client `completed`: {:?}; last write -> server lists it complete: {:?}",
        client_done.duration_since(last_write),
        server_done.duration_since(last_write)
    );

    let events = watcher.events_for(&clip);
    assert!(
        events.iter().any(|e| e["event"] == "recording"),
        "a growing file is uploaded as a recording: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "queued"),
        "a growing file must not also be queued as a planned upload: {events:?}"
    );
    let mut parts: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "part_done")
        .map(|e| e["number"].as_u64().expect("part number"))
        .collect();
    parts.sort_unstable();
    let count = parts.len();
    parts.dedup();
    assert_eq!(parts.len(), count, "a part was sent twice: {events:?}");
    assert!(
        parts.len() >= 4,
        "22 MiB in 5 MiB real-time parts is at least 4 parts, got {parts:?}"
    );
    assert!(
        parts_while_recording >= 1,
        "parts are sent while the file grows, not only after it stops: {events:?}"
    );
    s.assert_server_copy(&asset_id, &data).await;
    assert_eq!(s.assets().len(), 1, "{:?}", s.assets());
}

#[tokio::test]
async fn a_finished_file_is_a_planned_upload_and_subfolders_are_watched() {
    let s = Setup::new().await;
    let mut watcher = s.watch();
    let big = s.path("DCIM/100CANON/MVI_0001.MOV");
    let big_data = test_bytes(12 * MIB + 3, 11);
    let small = s.path("IMG_0001.JPG");
    let small_data = test_bytes(300 * 1024, 12);
    let nested = s.path("PRIVATE/M4ROOT/CLIP/C0001.MP4");
    let nested_data = test_bytes(MIB + 1, 13);

    let placed = Instant::now();
    place(&big, &big_data);
    std::fs::write(&small, &small_data).unwrap();
    place(&nested, &nested_data);

    for (file, data) in [
        (&big, &big_data),
        (&small, &small_data),
        (&nested, &nested_data),
    ] {
        let (queued_at, queued) = watcher.wait_event("queued", file, STEP).await;
        let picked_up = queued_at.duration_since(placed);
        println!("{} queued {picked_up:?} after it appeared", file.display());
        // Settle (1 s) plus a scan or two; generous for a loaded machine.
        assert!(
            picked_up < Duration::from_secs(5),
            "{} was picked up only after {picked_up:?}",
            file.display()
        );
        assert_eq!(queued["size"], data.len() as u64, "{queued}");
        let (_, asset_id) = watcher.wait_completed(file).await;
        let events = watcher.events_for(file);
        assert!(
            !events.iter().any(|e| e["event"] == "recording"),
            "a finished file is not a recording: {events:?}"
        );
        let started = events
            .iter()
            .find(|e| e["event"] == "started")
            .unwrap_or_else(|| panic!("no started event: {events:?}"));
        assert_eq!(
            started["size"],
            data.len() as u64,
            "a planned upload knows its size: {started}"
        );
        let entry = s.assert_server_copy(&asset_id, data).await;
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(entry["path"].as_str().unwrap().ends_with(name), "{entry}");
    }
    assert_eq!(s.assets().len(), 3, "{:?}", s.assets());
}

#[tokio::test]
async fn hidden_and_temporary_files_are_never_uploaded() {
    let s = Setup::new().await;
    let mut watcher = s.watch();
    let ignored = [
        ".hidden.mov",
        "._A001.MOV",
        "clip.mov.tmp",
        "x.part",
        "Thumbs.db",
        "DCIM/100CANON/._MVI_0002.MOV",
        ".Trashes/501/A002.MOV",
    ];
    for (i, name) in ignored.iter().enumerate() {
        let path = s.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, test_bytes(64 * 1024, 100 + i as u64)).unwrap();
    }
    // Written after the clutter: once it has settled, so has everything else.
    let clip = s.path("A001C003.MOV");
    let data = test_bytes(MIB / 2, 99);
    std::fs::write(&clip, &data).unwrap();

    let (_, asset_id) = watcher.wait_completed(&clip).await;
    s.assert_server_copy(&asset_id, &data).await;

    let others: Vec<Value> = watcher
        .events()
        .into_iter()
        .filter(|e| !is_about(e, &clip))
        .collect();
    assert!(
        others.is_empty(),
        "ignored files produced events: {others:?}"
    );
    let assets = s.assets();
    assert_eq!(assets.len(), 1, "only the clip is uploaded: {assets:?}");
    assert_eq!(assets[0]["id"], asset_id.as_str());
}

#[tokio::test]
async fn files_already_uploaded_are_not_sent_again_after_a_restart() {
    let s = Setup::new().await;
    let mut first = s.watch();
    let planned = s.path("A001C001.MOV");
    let planned_data = test_bytes(3 * MIB + 17, 21);
    place(&planned, &planned_data);
    let recorded = s.path("DCIM/100CANON/A001C002.MOV");
    std::fs::create_dir_all(recorded.parent().unwrap()).unwrap();
    let recorded_data = test_bytes(12 * MIB + 5, 22);
    record(
        &recorded,
        &recorded_data,
        2 * MIB,
        Duration::from_millis(250),
    )
    .await;

    let (_, planned_id) = first.wait_completed(&planned).await;
    let (_, recorded_id) = first.wait_completed(&recorded).await;
    assert!(
        first
            .events_for(&recorded)
            .iter()
            .any(|e| e["event"] == "recording"),
        "{:?}",
        first.events_for(&recorded)
    );
    s.assert_server_copy(&planned_id, &planned_data).await;
    s.assert_server_copy(&recorded_id, &recorded_data).await;
    first.kill();

    let mut second = s.watch();
    // A new file settling proves the second watcher scanned (and settled) the old ones.
    let new = s.path("A001C003.MOV");
    let new_data = test_bytes(MIB + 9, 23);
    std::fs::write(&new, &new_data).unwrap();
    let (_, new_id) = second.wait_completed(&new).await;
    s.assert_server_copy(&new_id, &new_data).await;

    for old in [&planned, &recorded] {
        let sent: Vec<Value> = second
            .events_for(old)
            .into_iter()
            .filter(|e| e["event"] != "already_uploaded")
            .collect();
        assert!(
            sent.is_empty(),
            "{} was uploaded again after the restart: {sent:?}",
            old.display()
        );
    }
    let assets = s.assets();
    let mut ids: Vec<&str> = assets.iter().map(|a| a["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![planned_id.as_str(), recorded_id.as_str(), new_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "no duplicates on the server: {assets:?}");
}

#[tokio::test]
async fn files_that_vanish_before_they_settle_do_not_break_the_watcher() {
    let s = Setup::new().await;
    let mut watcher = s.watch();

    // Gone at once.
    let blink = s.path("A001C001.MOV");
    std::fs::write(&blink, test_bytes(200 * 1024, 31)).unwrap();
    std::fs::remove_file(&blink).unwrap();
    // Seen by a scan or two, then deleted before it settles (1 s).
    let brief = s.path("A001C002.MOV");
    std::fs::write(&brief, test_bytes(200 * 1024, 32)).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    std::fs::remove_file(&brief).unwrap();
    // Recording, then deleted mid-take: that upload fails, the watcher goes on.
    let take = s.path("A001C003.MOV");
    let mut file = std::fs::File::create(&take).unwrap();
    let chunk = test_bytes(2 * MIB, 33);
    let deadline = Instant::now() + STEP;
    while !watcher
        .events_for(&take)
        .iter()
        .any(|e| e["event"] == "recording")
    {
        assert!(
            Instant::now() < deadline,
            "the growing file never became a recording\n{}",
            watcher.output()
        );
        file.write_all(&chunk).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(file);
    std::fs::remove_file(&take).unwrap();

    let keep = s.path("A001C004.MOV");
    let data = test_bytes(MIB + 77, 34);
    std::fs::write(&keep, &data).unwrap();
    let (_, asset_id) = watcher.wait_completed(&keep).await;
    s.assert_server_copy(&asset_id, &data).await;

    watcher.wait_event("failed", &take, STEP).await;
    for gone in [&blink, &brief] {
        let events = watcher.events_for(gone);
        assert!(
            !events
                .iter()
                .any(|e| ["started", "completed"].contains(&e["event"].as_str().unwrap_or(""))),
            "{}: {events:?}",
            gone.display()
        );
    }
    watcher.assert_running();
    let complete: Vec<Value> = s
        .assets()
        .into_iter()
        .filter(|a| a["state"] == "complete")
        .collect();
    assert_eq!(complete.len(), 1, "{complete:?}");
    assert_eq!(complete[0]["id"], asset_id.as_str());
}

#[tokio::test]
async fn a_recording_survives_a_watcher_restart_mid_take() {
    let s = Setup::new().await;
    let mut watcher = s.watch();
    let clip = s.path("A001C005.MOV");
    let data = test_bytes(24 * MIB + 321, 41);
    let mut file = std::fs::File::create(&clip).unwrap();
    let mut chunks = data.chunks(2 * MIB);
    let deadline = Instant::now() + STEP;
    // Record until the first part has reached the server, then kill the watcher.
    loop {
        let Some(c) = chunks.next() else {
            panic!(
                "no part was sent while 24 MiB were recorded\n{}",
                watcher.output()
            );
        };
        file.write_all(c).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let parts = watcher
            .events_for(&clip)
            .iter()
            .filter(|e| e["event"] == "part_done")
            .count();
        if parts >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", watcher.output());
    }
    let (_, started) = watcher.wait_event("started", &clip, STEP).await;
    let asset_id = started["asset_id"].as_str().unwrap().to_owned();
    watcher.kill();

    // The camera keeps recording while the watcher is down and after it is back.
    let mut rest = chunks.peekable();
    for _ in 0..2 {
        if let Some(c) = rest.next() {
            file.write_all(c).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let mut second = s.watch();
    while let Some(c) = rest.next() {
        file.write_all(c).unwrap();
        file.flush().unwrap();
        if rest.peek().is_some() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    drop(file);
    let last_write = Instant::now();

    let (done, completed_id) = second.wait_completed(&clip).await;
    println!(
        "after a restart mid-take: last write -> client `completed`: {:?}",
        done.duration_since(last_write)
    );
    assert_eq!(
        completed_id, asset_id,
        "the restarted watcher finishes the same asset"
    );
    s.assert_server_copy(&asset_id, &data).await;
    let assets = s.assets();
    assert_eq!(assets.len(), 1, "no second asset for the clip: {assets:?}");
}
