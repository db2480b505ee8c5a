//! A device whose clock is wrong (libfaketime around the real `rushes device` commands;
//! Debian's faketime, installed by scripts/install-test-tools). Clips are dated by the
//! server's clock: the device sends only how long ago the clip was recorded, by its own
//! clock, so days of skew change nothing; a clock so far off that the server's certificate
//! is not yet valid fails with a message that says to fix the clock.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::helpers::*;

/// `rushes --state STATE device ARGS` with the clock moved by `skew` (faketime's syntax:
/// `+3d`, `-20h`). File times are left as they are on disk (`NO_FAKE_STAT`).
fn skewed_device(skew: &str, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("faketime");
    cmd.args(["-f", skew])
        .arg(env!("CARGO_BIN_EXE_rushes"))
        .arg("--state")
        .arg(state)
        .arg("device")
        .args(args)
        .env("NO_FAKE_STAT", "1");
    cmd
}

/// Pairs under a skewed clock: whether it succeeded, and what it printed.
fn pair_skewed(app: &TestServer, skew: &str, state: &Path, name: &str) -> (bool, String) {
    let ca = app.data.join("tls/ca.crt");
    let args = [
        "pair",
        "--server",
        &app.url,
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        name,
    ];
    app.run_pairing(skewed_device(skew, state, &args))
}

/// Today's UTC date folder by this machine's (right) clock, and a minute ago's.
fn date_folders() -> [String; 2] {
    ["now", "-1 min"].map(|when| {
        let out = Command::new("date")
            .args(["-u", "-d", when, "+%Y_%m_%d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

#[tokio::test]
async fn a_device_days_ahead_or_hours_behind_uploads_clips_dated_by_the_server() {
    let app = spawn_app_with(&["--part-size", "5242880"]).await;
    for (i, skew) in ["+3d", "-20h"].into_iter().enumerate() {
        let state = tempfile::tempdir().unwrap();
        let name = format!("Skewed{i}");
        let (ok, output) = pair_skewed(&app, skew, state.path(), &name);
        assert!(ok, "pairing with the clock at {skew}: {output}");

        // The camera stamps the clip with its own clock: recorded 10 s ago, by it.
        let files = tempfile::tempdir().unwrap();
        let clip = files.path().join(format!("C{i:03}.MOV"));
        let data = test_bytes(11 * MIB + i, 90 + i as u64);
        std::fs::write(&clip, &data).unwrap();
        let shift = Duration::from_secs(if skew == "+3d" { 3 * 86_400 } else { 20 * 3600 });
        let device_now = if skew.starts_with('+') {
            SystemTime::now() + shift
        } else {
            SystemTime::now() - shift
        };
        std::fs::File::options()
            .write(true)
            .open(&clip)
            .unwrap()
            .set_modified(device_now - Duration::from_secs(10))
            .unwrap();

        let out = skewed_device(
            skew,
            state.path(),
            &["upload", "--json", clip.to_str().unwrap()],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "upload with the clock at {skew}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = json_events(&out.stdout);
        let asset_id = completed_asset_id(&events);
        app.wait_listed_complete(&asset_id).await;
        let entry = assert_complete_with(&app, &asset_id, &data);
        // Dated by the server: today's folder, whatever the device's clock said.
        let path = entry["path"].as_str().unwrap();
        assert!(
            date_folders()
                .iter()
                .any(|d| path.starts_with(&format!("Cloud Devices/{d}/"))),
            "clock at {skew}: {path}"
        );
    }
}

#[tokio::test]
async fn a_device_clock_before_the_certificate_says_to_fix_the_clock() {
    let app = spawn_app().await;
    let state = tempfile::tempdir().unwrap();
    let (ok, output) = pair_skewed(&app, "-30d", state.path(), "Stale");
    assert!(!ok, "{output}");
    assert!(
        output.contains("not valid at this computer's time")
            && output.contains("date and clock are right"),
        "{output}"
    );
    assert!(!output.contains("--ca"), "not a trust problem: {output}");
}
