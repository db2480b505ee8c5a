//! The device client through a bad network and an absent server: `rushes device upload`
//! must finish every file, byte for byte, whatever happens to its connections.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fault_proxy::{Fault, FaultProxy, Stats};
use crate::helpers::*;

const PART_SIZE: &str = "5242880";

/// A `rushes device` child whose `--json` events are read as they are printed.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    events: Vec<Value>,
    stdout: Vec<String>,
    eof: bool,
}

impl Running {
    fn spawn(state: &Path, args: &[&str]) -> Running {
        let mut child = device_command(state, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rushes device");
        let stdout = child.stdout.take().expect("stdout");
        // Drained as it comes, so that a chatty client never blocks on a full pipe.
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
            text
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
            events: Vec::new(),
            stdout: Vec::new(),
            eof: false,
        }
    }

    fn take(&mut self, line: String) {
        if let Ok(event) = serde_json::from_str::<Value>(&line) {
            self.events.push(event);
        }
        self.stdout.push(line);
    }

    fn count(&self, event: &str) -> usize {
        self.events.iter().filter(|e| e["event"] == event).count()
    }

    /// Reads events until `count` of kind `event` have been printed (panics at `deadline`
    /// or if the process ends first).
    fn wait_for(&mut self, event: &str, count: usize, deadline: Instant) {
        while self.count(event) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {count} {event:?} events in time; stdout: {:#?}",
                        self.stdout
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "rushes device ended before {count} {event:?} events; stdout: {:#?}",
                    self.stdout
                ),
            }
        }
    }

    /// Reads everything up to the end and waits for the exit, both before `deadline`.
    fn finish(&mut self, deadline: Instant) -> ExitStatus {
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.eof = true,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "rushes device did not finish in time; stdout so far: {:#?}",
                    self.stdout
                ),
            }
        }
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "rushes device did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the client printed on stderr (call after [`Running::finish`]).
    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave the upload running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `sizes.len()` files of test bytes; returns their paths and contents.
fn write_clips(dir: &Path, sizes: &[usize], seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = dir.join(format!("A{:03}C{:03}.mov", seed % 1000, i + 1));
            let data = test_bytes(size, seed * 1000 + i as u64);
            std::fs::write(&path, &data).expect("write clip");
            (path, data)
        })
        .collect()
}

/// `files_at_once`: the fault schedules count connections and the bytes each carries, so
/// they are laid out for a given number of files at once (with more, each connection
/// carries too little to reach its faults).
fn upload_args(clips: &[(PathBuf, Vec<u8>)], files_at_once: u16) -> Vec<String> {
    let mut args = vec![
        "upload".to_owned(),
        "--json".to_owned(),
        "--parallel-files".to_owned(),
        files_at_once.to_string(),
    ];
    args.extend(
        clips
            .iter()
            .map(|(p, _)| p.to_str().expect("UTF-8 path").to_owned()),
    );
    args
}

/// Checks the upload's events (every clip completed, nothing failed) and then the server's
/// copy of every clip: complete, with the source's SHA-256.
async fn assert_all_on_server(app: &TestServer, clips: &[(PathBuf, Vec<u8>)], events: &[Value]) {
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "failed").collect();
    assert!(failed.is_empty(), "files failed: {failed:#?}");
    let mut ids: HashMap<PathBuf, String> = HashMap::new();
    for event in events.iter().filter(|e| e["event"] == "completed") {
        let file = PathBuf::from(event["file"].as_str().expect("file"));
        let id = event["asset_id"].as_str().expect("asset_id").to_owned();
        assert!(
            ids.insert(file.clone(), id).is_none(),
            "{} completed twice",
            file.display()
        );
    }
    let summary = events
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("summary line");
    assert_eq!(summary["completed"], clips.len(), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = app.cli_json(&["asset", "list"]);
        let listed: HashMap<&str, &Value> = list
            .as_array()
            .expect("asset list")
            .iter()
            .map(|e| (e["id"].as_str().unwrap_or_default(), e))
            .collect();
        let mut waiting = Vec::new();
        for (path, data) in clips {
            let id = ids
                .get(path)
                .unwrap_or_else(|| panic!("no completed event for {}", path.display()));
            let entry = listed
                .get(id.as_str())
                .unwrap_or_else(|| panic!("asset {id} not listed: {list}"));
            if entry["state"] != "complete" {
                let file = path.display().to_string();
                let seen: Vec<&Value> = events
                    .iter()
                    .filter(|e| e["file"] == file.as_str())
                    .collect();
                waiting.push(format!("{entry}; the client said: {seen:?}"));
                continue;
            }
            assert_eq!(
                entry["sha256"],
                sha256_hex(data),
                "{} ({} bytes) differs on the server: {entry}",
                path.display(),
                data.len()
            );
        }
        if waiting.is_empty() {
            // A retried step never left a second asset behind.
            assert_eq!(listed.len(), clips.len(), "{list}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "assets never completed: {waiting:?}; log: {}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each faulted connection cuts or stalls the traffic after some megabytes; the numbers
/// vary so that faults land in parts, between parts and in small files.
fn rough_network(k: u64) -> Vec<Fault> {
    const K: u64 = 1024;
    const M: u64 = 1024 * 1024;
    let short = Duration::from_millis(1500);
    match k {
        0 => vec![Fault::drop_at(3 * M + 17 * K)],
        1 => vec![Fault::stall_at(M, short), Fault::reset_at(4 * M + 3 * K)],
        2 => vec![
            Fault::stall_at(2 * M + 500 * K, short),
            Fault::drop_at(2 * M + 500 * K),
        ],
        3 => vec![Fault::reset_at(5 * M + 333)],
        4 => vec![
            Fault::stall_at(700 * K, short),
            Fault::stall_at(6 * M, short),
            Fault::drop_at(7 * M),
        ],
        5 => vec![Fault::drop_at(8 * M + 123 * K)],
        6 => vec![Fault::reset_at(2 * M + 77)],
        7 => vec![Fault::stall_at(3 * M, short), Fault::drop_at(9 * M + 5 * K)],
        8 => vec![Fault::reset_at(6 * M + 999 * K)],
        9 => vec![Fault::stall_at(M + 1, short), Fault::drop_at(4 * M)],
        _ => vec![],
    }
}

#[tokio::test]
async fn twenty_files_upload_intact_through_drops_stalls_and_resets() {
    if local_store_only(
        "the faults hit part bytes through the proxy in front of Rushes; under S3 they \
         go straight to S3",
    ) {
        return;
    }
    let app = spawn_app_with(&["--part-size", PART_SIZE]).await;
    let proxy = FaultProxy::start(&app.url, |_| vec![]);
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Rough", Some(&proxy.url));

    let files = tempfile::tempdir().unwrap();
    let sizes = [
        1,
        17,
        1000,
        4096,
        65_537,
        300 * 1024,
        MIB,
        MIB * 5 / 2,
        3 * MIB + 1,
        5 * MIB - 1,
        5 * MIB,
        5 * MIB + 1,
        6 * MIB + 12_345,
        7 * MIB,
        8 * MIB + 3,
        9 * MIB,
        10 * MIB + MIB / 2,
        11 * MIB,
        12 * MIB - 7,
        2 * MIB + 99,
    ];
    assert_eq!(sizes.len(), 20);
    assert!(sizes.iter().sum::<usize>() < 100 * MIB);
    let clips = write_clips(files.path(), &sizes, 7);

    proxy.set_schedule(rough_network);
    let started = Instant::now();
    let args = upload_args(&clips, 4);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upload = Running::spawn(state.path(), &args);
    let status = upload.finish(Instant::now() + Duration::from_secs(120));
    let stats = proxy.stats();
    eprintln!("through the proxy in {:?}: {stats:?}", started.elapsed());
    assert!(
        status.success(),
        "upload failed: {}\n{:#?}",
        upload.stderr(),
        upload.stdout
    );
    assert!(stats.drops > 0, "no connection was dropped: {stats:?}");
    assert!(stats.resets > 0, "no connection was reset: {stats:?}");
    assert!(stats.stalls > 0, "no connection stalled: {stats:?}");
    assert!(stats.drops + stats.resets >= 5, "too few faults: {stats:?}");
    assert!(
        upload.count("retrying") > 0,
        "faults but no retrying event: {:#?}",
        upload.stdout
    );
    assert_all_on_server(&app, &clips, &upload.events).await;
}

#[tokio::test]
async fn the_queue_waits_for_a_server_that_is_away_and_drains_when_it_returns() {
    let mut app = spawn_app_with(&["--part-size", PART_SIZE]).await;
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Patient", None);
    let files = tempfile::tempdir().unwrap();
    let clips = write_clips(files.path(), &[3 * MIB, 11 * MIB + 5, 1234], 8);

    app.kill();
    let args = upload_args(&clips, 4);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upload = Running::spawn(state.path(), &args);
    // Several attempts while the server is away: the client keeps waiting, not failing.
    upload.wait_for("retrying", 3, Instant::now() + Duration::from_secs(30));
    assert_eq!(upload.count("failed"), 0, "{:#?}", upload.stdout);
    assert_eq!(upload.count("completed"), 0, "{:#?}", upload.stdout);

    app.restart();
    let status = upload.finish(Instant::now() + Duration::from_secs(90));
    assert!(
        status.success(),
        "upload failed: {}\n{:#?}",
        upload.stderr(),
        upload.stdout
    );
    assert_all_on_server(&app, &clips, &upload.events).await;
}

#[tokio::test]
async fn an_upload_cut_off_by_the_network_mid_part_resumes_when_it_returns() {
    if local_store_only(
        "the network is cut by the proxy in front of Rushes while part bytes cross it; \
         under S3 they go straight to S3",
    ) {
        return;
    }
    let app = spawn_app_with(&["--part-size", PART_SIZE]).await;
    let proxy = FaultProxy::start(&app.url, |_| vec![]);
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Offline", Some(&proxy.url));
    let files = tempfile::tempdir().unwrap();
    let clips = write_clips(files.path(), &[12 * MIB + 1, 9 * MIB, 4321], 9);

    // The first connection crawls, so the network goes while parts are in flight.
    proxy.set_schedule(crawl_first_connection);
    // One file at a time, so no clip can finish before the fault.
    let args = upload_args(&clips, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upload = Running::spawn(state.path(), &args);
    wait_for_proxy(&proxy, &mut upload, "3 MiB sent", |s| {
        s.bytes_up >= 3 * MIB as u64
    });
    assert_eq!(upload.count("completed"), 0, "{:#?}", upload.stdout);
    proxy.set_down(true);
    // Parts in flight are cut, and the client keeps trying while the network is down.
    wait_for_proxy(&proxy, &mut upload, "3 attempts while down", |s| {
        s.refused >= 3
    });
    let stats = proxy.stats();
    assert!(
        stats.killed > 0,
        "no open connection was cut when the network went: {stats:?}"
    );
    assert!(
        upload.count("retrying") >= 3,
        "no retrying events: {:#?}",
        upload.stdout
    );
    assert_eq!(upload.count("failed"), 0, "{:#?}", upload.stdout);

    proxy.set_down(false);
    let status = upload.finish(Instant::now() + Duration::from_secs(90));
    assert!(
        status.success(),
        "upload failed: {}\n{:#?}",
        upload.stderr(),
        upload.stdout
    );
    assert_all_on_server(&app, &clips, &upload.events).await;
}

/// The first connection crawls (a short stall every 256 KiB), so that the network or the
/// server can be taken away while parts are in flight.
fn crawl_first_connection(k: u64) -> Vec<Fault> {
    if k == 0 {
        (1..80)
            .map(|i| Fault::stall_at(i * 256 * 1024, Duration::from_millis(100)))
            .collect()
    } else {
        vec![]
    }
}

/// Reads the upload's events until `done` holds for the proxy's counters (30 s at most).
fn wait_for_proxy(
    proxy: &FaultProxy,
    upload: &mut Running,
    what: &str,
    done: impl Fn(&Stats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&proxy.stats()) {
        assert!(
            Instant::now() < deadline,
            "never {what}: {:?}; stdout: {:#?}",
            proxy.stats(),
            upload.stdout
        );
        match upload.lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => upload.take(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the upload ended before {what}: {:#?}", upload.stdout)
            }
        }
    }
}

#[tokio::test]
async fn an_upload_survives_the_server_being_killed_mid_part() {
    if local_store_only(
        "the server is killed while part bytes reach it through the proxy; under S3 they \
         go straight to S3",
    ) {
        return;
    }
    let mut app = spawn_app_with(&["--part-size", PART_SIZE]).await;
    let proxy = FaultProxy::start(&app.url, |_| vec![]);
    let state = tempfile::tempdir().unwrap();
    app.pair_device_cli(state.path(), "Survivor", Some(&proxy.url));
    let files = tempfile::tempdir().unwrap();
    let clips = write_clips(files.path(), &[12 * MIB + 3, 6 * MIB, 99], 10);

    proxy.set_schedule(crawl_first_connection);
    // One file at a time, so no clip can finish before the fault.
    let args = upload_args(&clips, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut upload = Running::spawn(state.path(), &args);
    wait_for_proxy(&proxy, &mut upload, "4 MiB sent", |s| {
        s.bytes_up >= 4 * MIB as u64
    });
    assert_eq!(upload.count("completed"), 0, "{:#?}", upload.stdout);

    app.kill();
    // The client keeps trying while the server is away.
    wait_for_proxy(&proxy, &mut upload, "3 attempts while away", |s| {
        s.unreachable >= 3
    });
    assert!(
        upload.count("retrying") >= 3,
        "no retrying events: {:#?}",
        upload.stdout
    );
    assert_eq!(upload.count("failed"), 0, "{:#?}", upload.stdout);

    app.restart();
    let status = upload.finish(Instant::now() + Duration::from_secs(90));
    assert!(
        status.success(),
        "upload failed: {}\n{:#?}",
        upload.stderr(),
        upload.stdout
    );
    assert_all_on_server(&app, &clips, &upload.events).await;
}
