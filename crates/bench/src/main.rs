//! `scripts/bench`: how fast Rushes moves footage, each figure next to a baseline measured
//! in the same run on the same machine (machines are noisy; ratios travel, absolute numbers
//! do not). Prints a table and writes it as JSON.
//!
//! 1. ingest of one big file with the Rushes client over TLS on loopback into the local
//!    store, until the asset is complete and fsynced, against `dd conv=fdatasync` of the
//!    same bytes to the same disk (run before and after, the two averaged);
//! 2. ingest of many 1 MiB files (a stills card), against the same baseline;
//! 3. control plane: asset creations and token refreshes per second with 64 devices on
//!    kept-alive TLS connections, against a no-op route on the same server and stack
//!    (called before and after, the two averaged);
//! 4. memory: the server's peak RSS during 1, and its RSS with 500 idle connections;
//! 5. a peer: the same big file through `aws s3 cp` into s3s-fs, against the Rushes client
//!    uploading it through a Rushes server whose media store is that s3s-fs;
//! 6. status sockets: 1,000 cameras holding `/devices/websocket` open with a heartbeat
//!    every 15 s: the server's RSS, the heartbeat replies' p99 while the big file is
//!    ingested, and that ingest against the same ingest without sockets (run before and
//!    after, the two averaged);
//! 7. scrub: `rushes check --media`, unthrottled, re-reading what 1 and 2 stored, against
//!    one `dd` stream of the same files to /dev/null, the page cache dropped before each
//!    (needs root; skipped otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use rushes_bench::procs::{S3, S3_KEY, S3_SECRET, Server, timed};
use rushes_bench::{control, sockets};

#[derive(Parser)]
#[command(about = "Rushes benchmarks, as ratios to baselines measured in the same run")]
struct Args {
    /// Working folder, on the disk being measured (emptied first).
    #[arg(long, default_value = "target/bench-work")]
    dir: PathBuf,
    /// Size of the big file, MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Number of 1 MiB files.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Devices in the control-plane benchmark.
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// Seconds each control-plane phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Idle connections held open for the memory figure.
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// Files the client sends at once in benchmark 2 (`rushes device upload
    /// --parallel-files`; the client's default unless given).
    #[arg(long)]
    parallel_files: Option<u16>,
    /// Status sockets held open in benchmark 6 (0 skips it).
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Seconds between two heartbeats of one socket.
    #[arg(long, default_value_t = 15)]
    heartbeat_secs: u64,
    /// Skip the peer comparison (needs s3s-fs and the AWS CLI).
    #[arg(long)]
    no_peer: bool,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench-results.json")]
    json: PathBuf,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    benchmark: String,
    result: String,
    baseline: String,
    /// Result over baseline, higher is better (for memory: the limit over the result).
    ratio: Option<f64>,
    target: String,
}

const MIB: u64 = 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let started = Instant::now();
    let mut rows = Vec::new();

    eprintln!(
        "preparing {} MiB of test data in {}",
        args.size_mib,
        dir.display()
    );
    let big = dir.join("source/big.mov");
    write_source(&big, args.size_mib * MIB, 1)?;
    let stills = dir.join("source/stills");
    std::fs::create_dir_all(&stills)?;
    let still_paths: Vec<PathBuf> = (0..args.files)
        .map(|i| stills.join(format!("IMG_{i:04}.JPG")))
        .collect();
    for (i, path) in still_paths.iter().enumerate() {
        write_source(path, MIB, i as u64 + 2)?;
    }
    sync()?;

    // The disk's speed drifts within a run (a virtual disk here, by up to 17 %):
    // `dd` runs before, between and after the two ingest benchmarks, and each is compared
    // with the two runs around it.
    let big_bytes = args.size_mib * MIB;
    let dd_before = dd_rate(&big, &dir, big_bytes)?;

    // 1 and 4a: one big file into the local store, on a fresh server.
    eprintln!(
        "1. one {} MiB file, Rushes client → local store",
        args.size_mib
    );
    let server = Server::start(&dir.join("local"), &[], &[])?;
    let state = dir.join("device-local");
    server.pair_device(&state, "bench-camera")?;
    let start = Instant::now();
    server.device_upload(&state, &[], &[&big])?;
    server.wait_complete(1, Duration::from_secs(600))?;
    let ingest = start.elapsed();
    let ingest_memory = server.memory();
    let dd_between = dd_rate(&big, &dir, big_bytes)?;
    let ingest_rate = rate(big_bytes, ingest);
    rows.push(Row {
        benchmark: format!("1. ingest {} MiB file, TLS, local store", args.size_mib),
        result: show_rate(ingest_rate),
        baseline: dd_line(dd_before, dd_between),
        ratio: Some(ingest_rate / mean(dd_before, dd_between)),
        target: "≥ 0.90".into(),
    });

    // 2: many small files, same server and device.
    eprintln!("2. {} files of 1 MiB", args.files);
    let paths: Vec<&Path> = still_paths.iter().map(PathBuf::as_path).collect();
    let parallel: Vec<String> = args
        .parallel_files
        .iter()
        .flat_map(|n| ["--parallel-files".to_owned(), n.to_string()])
        .collect();
    let parallel: Vec<&str> = parallel.iter().map(String::as_str).collect();
    let start = Instant::now();
    server.device_upload(&state, &parallel, &paths)?;
    server.wait_complete(1 + args.files, Duration::from_secs(600))?;
    let stills_took = start.elapsed();
    let dd_after = dd_rate(&big, &dir, big_bytes)?;
    let stills_bytes = args.files as u64 * MIB;
    rows.push(Row {
        benchmark: format!("2. ingest {} files of 1 MiB", args.files),
        result: format!(
            "{:.0} files/s, {}",
            args.files as f64 / stills_took.as_secs_f64(),
            show_rate(rate(stills_bytes, stills_took))
        ),
        baseline: dd_line(dd_between, dd_after),
        ratio: Some(rate(stills_bytes, stills_took) / mean(dd_between, dd_after)),
        target: "≥ 0.50".into(),
    });

    // 3: the control plane, same server (SQLite, a few thousand rows already).
    eprintln!("3. control plane, {} devices", args.devices);
    let phase = Duration::from_secs(args.seconds);
    // The no-op route runs before and after the two measured calls, like `dd` above.
    let (noop_before, create, refresh, noop_after) = runtime.block_on(async {
        let mut devices = control::pair(&server, args.devices).await?;
        let noop = control::run(&server, &mut devices, control::Call::Noop, phase).await?;
        let create = control::run(&server, &mut devices, control::Call::CreateAsset, phase).await?;
        let refresh = control::run(&server, &mut devices, control::Call::Refresh, phase).await?;
        let again = control::run(&server, &mut devices, control::Call::Noop, phase).await?;
        anyhow::Ok((noop, create, refresh, again))
    })?;
    let noop_rate = mean(noop_before.per_second, noop_after.per_second);
    let noop_line = format!(
        "no-op route {noop_rate:.0}/s ({:.0} before, {:.0} after; p99 {:.1} ms)",
        noop_before.per_second,
        noop_after.per_second,
        noop_before.p99_ms.max(noop_after.p99_ms)
    );
    for (name, measured, target) in [
        ("asset create", create, "≥ 0.50"),
        ("token refresh", refresh, ""),
    ] {
        rows.push(Row {
            benchmark: format!("3. {name}, {} devices, SQLite", args.devices),
            result: format!(
                "{:.0}/s (p50 {:.1} ms, p99 {:.1} ms)",
                measured.per_second, measured.p50_ms, measured.p99_ms
            ),
            baseline: noop_line.clone(),
            ratio: Some(measured.per_second / noop_rate),
            target: target.into(),
        });
    }
    drop(server);

    rows.push(Row {
        benchmark: "4a. server peak RSS during 1".into(),
        result: show_mib(ingest_memory.peak),
        baseline: "limit 100 MiB".into(),
        ratio: Some(100.0 * MIB as f64 / ingest_memory.peak.max(1) as f64),
        target: "< 100 MiB".into(),
    });

    // 4b: idle connections on a fresh server.
    eprintln!("4. {} idle connections", args.idle);
    let server = Server::start(&dir.join("idle"), &[], &[])?;
    let before = server.memory();
    let held = runtime.block_on(control::idle_connections(&server, args.idle))?;
    let with_idle = server.memory();
    drop(held);
    drop(server);
    rows.push(Row {
        benchmark: format!("4b. server RSS with {} idle TLS connections", args.idle),
        result: format!(
            "{} (peak {})",
            show_mib(with_idle.rss),
            show_mib(with_idle.peak)
        ),
        baseline: format!("idle server {}; limit 150 MiB", show_mib(before.rss)),
        ratio: Some(150.0 * MIB as f64 / with_idle.rss.max(1) as f64),
        target: "< 150 MiB".into(),
    });

    // 6: status sockets beside an ingest, on a fresh server.
    if args.sockets > 0 {
        eprintln!(
            "6. {} status sockets, a heartbeat every {} s",
            args.sockets, args.heartbeat_secs
        );
        rows.extend(status_sockets(&args, &dir, &big, &runtime)?);
    }

    // 5: a peer tool into the same S3 server.
    if !args.no_peer {
        eprintln!("5. peer: aws s3 cp vs Rushes with an S3 store");
        let peer = peer(&dir, &big)?;
        let aws_line = format!("aws s3 cp {}", show_rate(rate(big_bytes, peer.aws)));
        rows.push(Row {
            benchmark: format!("5. {} MiB into S3 (s3s-fs): object complete", args.size_mib),
            result: format!(
                "Rushes client via Rushes {}",
                show_rate(rate(big_bytes, peer.in_bucket))
            ),
            baseline: aws_line.clone(),
            ratio: Some(peer.aws.as_secs_f64() / peer.in_bucket.as_secs_f64()),
            target: "> 1".into(),
        });
        rows.push(Row {
            benchmark: format!("5. {} MiB into S3, SHA-256 recorded", args.size_mib),
            result: format!(
                "{} (the read-back aws does not do)",
                show_rate(rate(big_bytes, peer.hashed))
            ),
            baseline: aws_line,
            ratio: Some(peer.aws.as_secs_f64() / peer.hashed.as_secs_f64()),
            target: String::new(),
        });
    }

    // 7: the scrub re-reads what 1 and 2 stored (the server of 1 and 2 has stopped).
    eprintln!("7. scrub: rushes check --media against dd of the same files");
    match scrub_against_dd(&dir.join("local")) {
        Ok(row) => rows.push(row),
        Err(e) => eprintln!("7. skipped: {e:#}"),
    }

    print_table(&rows, started.elapsed());
    let json = serde_json::json!({
        "machine": machine(),
        "dir": dir,
        "took_seconds": started.elapsed().as_secs_f64(),
        "rows": rows,
    });
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    eprintln!("written to {}", args.json.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Benchmark 6: the big file ingested without sockets, with `--sockets` sockets
/// heartbeating, and without again, all into one server.
fn status_sockets(
    args: &Args,
    dir: &Path,
    big: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(&dir.join("sockets"), &[], &[])?;
    // One device state per ingest: the client would skip a file it already uploaded.
    let states: Vec<PathBuf> = (0..3)
        .map(|i| dir.join(format!("device-sockets-{i}")))
        .collect();
    for (i, state) in states.iter().enumerate() {
        server.pair_device(state, &format!("bench-ingest-{i}"))?;
    }
    // Cameras share devices (20 sockets each): what a socket costs does not depend on
    // whose it is, and pairing a thousand devices would dominate the run.
    let cameras = runtime.block_on(control::pair(&server, args.sockets.div_ceil(20).max(1)))?;
    let ingest = |state: &Path, n: usize| -> anyhow::Result<(Instant, Instant)> {
        let start = Instant::now();
        server.device_upload(state, &[], &[big])?;
        server.wait_complete(n, Duration::from_secs(600))?;
        Ok((start, Instant::now()))
    };
    let bytes = args.size_mib * MIB;
    let took = |(a, b): (Instant, Instant)| rate(bytes, b - a);
    let before = took(ingest(&states[0], 1)?);
    let quiet = server.memory();
    let every = Duration::from_secs(args.heartbeat_secs.max(1));
    let held = runtime.block_on(sockets::open(&server, &cameras, args.sockets, every))?;
    // Every socket has sent a heartbeat before the ingest starts.
    std::thread::sleep(every);
    let loaded = server.memory();
    let during = ingest(&states[1], 2)?;
    let with_sockets = took(during);
    let replies = held.replies_between(during.0, during.1);
    let peak = server.memory();
    drop(held);
    let after = took(ingest(&states[2], 3)?);
    let without = mean(before, after);
    Ok(vec![
        Row {
            benchmark: format!("6a. server RSS with {} status sockets", args.sockets),
            result: format!(
                "{} (peak {} with the ingest)",
                show_mib(loaded.rss),
                show_mib(peak.peak)
            ),
            baseline: format!(
                "same server without sockets {}; limit 150 MiB",
                show_mib(quiet.rss)
            ),
            ratio: Some(150.0 * MIB as f64 / loaded.rss.max(1) as f64),
            target: "< 150 MiB".into(),
        },
        Row {
            benchmark: "6b. heartbeat reply during the ingest".into(),
            result: format!(
                "p99 {:.1} ms (p50 {:.1}, max {:.1}; {} heartbeats)",
                replies.p99_ms, replies.p50_ms, replies.max_ms, replies.count
            ),
            baseline: "limit 50 ms".into(),
            ratio: Some(50.0 / replies.p99_ms.max(0.001)),
            target: "p99 < 50 ms".into(),
        },
        Row {
            benchmark: format!("6c. ingest {} MiB beside the sockets", args.size_mib),
            result: show_rate(with_sockets),
            baseline: format!(
                "without sockets {} ({} before, {} after)",
                show_rate(without),
                show_rate(before).trim_end_matches(" MiB/s"),
                show_rate(after).trim_end_matches(" MiB/s"),
            ),
            ratio: Some(with_sockets / without),
            target: "≥ 0.95".into(),
        },
    ])
}

/// What the peer comparison measured, each from the start of the upload.
struct Peer {
    /// Rushes: until the multipart upload is completed in the bucket (what `aws s3 cp`
    /// waits for).
    in_bucket: Duration,
    /// Rushes: until the asset is complete, its SHA-256 read back and recorded.
    hashed: Duration,
    aws: Duration,
}

/// The big file through a Rushes server on s3s-fs, then through `aws s3 cp` into the same
/// s3s-fs.
fn peer(dir: &Path, big: &Path) -> anyhow::Result<Peer> {
    let s3 = S3::start(&dir.join("s3"))?;
    let env = [
        ("AWS_ACCESS_KEY_ID", S3_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
    ];
    let flags = [
        "--s3-endpoint".to_owned(),
        s3.endpoint.clone(),
        "--s3-bucket".to_owned(),
        s3.bucket.clone(),
    ];
    let server = Server::start(&dir.join("on-s3"), &flags, &env)?;
    let state = dir.join("device-s3");
    server.pair_device(&state, "bench-camera-s3")?;
    let name = big.file_name().context("source file name")?;
    let start = Instant::now();
    server.device_upload(&state, &[], &[big])?;
    // s3s-fs keeps each object as a file under the bucket's folder, renamed into place
    // when the multipart upload completes.
    let deadline = start + Duration::from_secs(600);
    while !contains_file(&dir.join("s3").join(&s3.bucket), name) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the object never reached the bucket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_bucket = start.elapsed();
    server.wait_complete(1, Duration::from_secs(600))?;
    let hashed = start.elapsed();
    drop(server);
    let aws = timed(
        Command::new("aws")
            .args([
                "s3",
                "cp",
                "--only-show-errors",
                "--endpoint-url",
                &s3.endpoint,
            ])
            .arg(big)
            .arg(format!("s3://{}/peer/big.mov", s3.bucket))
            .envs(env)
            .env("AWS_DEFAULT_REGION", "us-east-1"),
    )
    .context("aws s3 cp (pip install awscli)")?;
    Ok(Peer {
        in_bucket,
        hashed,
        aws,
    })
}

/// Whether a file called `name` is anywhere under `dir`.
fn contains_file(dir: &Path, name: &std::ffi::OsStr) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            contains_file(&path, name)
        } else {
            path.file_name() == Some(name)
        }
    })
}

/// Benchmark 7: `rushes check --media` (no rate bound) over a data directory's clips,
/// against `dd` reading the same files, in one stream, to /dev/null; the page cache is
/// dropped before each so both read the disk.
fn scrub_against_dd(data: &Path) -> anyhow::Result<Row> {
    let media = data.join("media");
    let mut files = Vec::new();
    let mut dirs = vec![media.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if entry.file_name() != ".rushes-tmp" {
                    dirs.push(entry.path());
                }
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let list = data.with_extension("files");
    let mut names = Vec::new();
    for f in &files {
        names.extend_from_slice(f.as_os_str().as_encoded_bytes());
        names.push(0);
    }
    std::fs::write(&list, names)?;
    drop_page_cache()?;
    let dd = timed(Command::new("sh").arg("-c").arg(format!(
        "xargs -0 cat < '{}' | dd of=/dev/null bs=8M status=none",
        list.display()
    )))?;
    drop_page_cache()?;
    let scrub = timed(
        Command::new(rushes_bench::procs::rushes_binary()?)
            .arg("--data")
            .arg(data)
            .args(["check", "--media"]),
    )?;
    Ok(Row {
        benchmark: format!(
            "7. scrub {} clips, {} (check --media, unthrottled)",
            files.len(),
            show_mib(bytes)
        ),
        result: show_rate(rate(bytes, scrub)),
        baseline: format!("dd to /dev/null {}", show_rate(rate(bytes, dd))),
        ratio: Some(dd.as_secs_f64() / scrub.as_secs_f64()),
        target: "≥ 0.80".into(),
    })
}

/// Writes dirty pages out, then empties the page cache (root only).
fn drop_page_cache() -> anyhow::Result<()> {
    sync()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache (/proc/sys/vm/drop_caches) needs root")
}

/// Writes `size` bytes of incompressible data.
fn write_source(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; (8 * MIB) as usize];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

fn sync() -> anyhow::Result<()> {
    timed(&mut Command::new("sync"))?;
    Ok(())
}

/// `dd` copying `source` (`bytes` long) to a file in `dir` and flushing it to disk: the
/// disk's write speed, in bytes/s.
fn dd_rate(source: &Path, dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    eprintln!("baseline: dd conv=fdatasync");
    let out = dir.join("dd.out");
    let took = timed(
        Command::new("dd")
            .arg(format!("if={}", source.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=8M", "conv=fdatasync", "status=none"]),
    )?;
    std::fs::remove_file(&out)?;
    Ok(rate(bytes, took))
}

fn mean(a: f64, b: f64) -> f64 {
    (a + b) / 2.0
}

/// The baseline column for a benchmark between two `dd` runs: their mean, then each.
fn dd_line(before: f64, after: f64) -> String {
    format!(
        "dd fdatasync {} ({} before, {} after)",
        show_rate(mean(before, after)),
        show_rate(before).trim_end_matches(" MiB/s"),
        show_rate(after).trim_end_matches(" MiB/s"),
    )
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9)
}

fn show_rate(bytes_per_second: f64) -> String {
    format!("{:.0} MiB/s", bytes_per_second / MIB as f64)
}

fn show_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "memory": std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")))
            .unwrap_or_default(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn print_table(rows: &[Row], took: Duration) {
    let widths = [
        rows.iter()
            .map(|r| r.benchmark.chars().count())
            .max()
            .unwrap_or(0),
        rows.iter()
            .map(|r| r.result.chars().count())
            .max()
            .unwrap_or(0),
        rows.iter()
            .map(|r| r.baseline.chars().count())
            .max()
            .unwrap_or(0),
    ];
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  {:>6}  target",
        "benchmark",
        "result",
        "baseline (same run)",
        "ratio",
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    for r in rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>6}  {}",
            r.benchmark,
            r.result,
            r.baseline,
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.target,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    println!("(all benchmarks took {:.0} s)", took.as_secs_f64());
}
