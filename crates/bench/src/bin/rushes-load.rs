//! `rushes-load`: the load and crash suite (docs/reliability.md).
//!
//! Many devices pair with a real `rushes serve`, then each uploads a mix of stills and
//! multi-part clips through the device API, pausing between files as a camera does between
//! takes, while the server is `SIGKILL`ed and restarted at random moments. Devices treat a
//! refused connection, a cut answer, 5xx and 429 as a reason to wait and send the same
//! request again, as real devices do; they never send a part again once it was
//! acknowledged. At the end every file a device finished must be a complete asset whose
//! SHA-256, recorded by the server and read back from its file on disk, equals the
//! source's, and the database must pass its integrity check. Prints a table, writes JSON,
//! and exits non-zero when anything was lost or corrupted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use reqwest::StatusCode;
use rushes_bench::control::{self, Device};
use rushes_bench::procs::Server;
use rushes_proto::asset::Asset;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(about = "Rushes under load, with the server killed and restarted along the way")]
struct Args {
    /// Devices uploading at once.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// How long devices start new files.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Times the server is killed (`SIGKILL`) and restarted during the run.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Longest pause of a device between two files, in seconds.
    #[arg(long, default_value_t = 4.0)]
    think: f64,
    /// Check finished files every 15 s during the run and delete each one once it checks
    /// out, so a long soak needs no more disk than the files in flight (30 min at the rate
    /// here would otherwise be about 100 GB).
    #[arg(long)]
    prune: bool,
    /// With `--prune`: devices wait before starting a file while the finished files not
    /// checked yet add up to more than this, so the disk never holds much more than this
    /// whatever the checker's speed (it reads and hashes every byte again).
    #[arg(long, default_value_t = 4096)]
    backlog_mib: u64,
    /// Keep the metadata in this PostgreSQL database (empty; with the `amcheck` extension
    /// the final check also verifies its indexes and tables) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Seed of the file sizes, pauses and kill moments (printed; random by default).
    #[arg(long)]
    seed: Option<u64>,
    /// Working folder (emptied first; removed after a clean run).
    #[arg(long, default_value = "target/load-work")]
    dir: PathBuf,
    #[arg(long, default_value = "target/load-results.json")]
    json: PathBuf,
}

const MIB: u64 = 1024 * 1024;
/// Parts of at least 5 MiB (the contract's smallest), so clips have several.
const PART_SIZE: &str = "5242880";

/// A file a device finished sending: every part acknowledged.
#[derive(Clone)]
struct Sent {
    asset_id: String,
    sha256: String,
    size: u64,
}

/// The files devices finished, and how many of their bytes the checker has yet to check.
struct Finished {
    files: Mutex<Vec<Sent>>,
    unchecked_bytes: AtomicU64,
    /// Devices start no new file while `unchecked_bytes` is above this.
    backlog_limit: u64,
}

/// What every device adds to.
#[derive(Default)]
struct Tally {
    /// Milliseconds of each answered call, by call.
    latencies: HashMap<&'static str, Vec<f64>>,
    /// Attempts that will be made again, by cause.
    retried: HashMap<String, u64>,
    /// Files given up on (an answer that waiting cannot fix).
    failed: Vec<String>,
    bytes_sent: u64,
    /// Seconds devices waited for the checker to catch up (`--backlog-mib`).
    held_back_secs: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "rushes-load: {} devices, {} s, {} kills, seed {seed}, metadata in {}",
        args.devices,
        args.seconds,
        args.kills,
        engine(&args.database_url)
    );
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let database_env: Vec<(&str, &str)> = args
        .database_url
        .iter()
        .map(|url| ("RUSHES_DATABASE_URL", url.as_str()))
        .collect();
    let server = Server::start(
        &dir.join("server"),
        &[
            "--part-size".into(),
            PART_SIZE.into(),
            // The limit real servers run with: devices must live within it.
            "--rate-limit".into(),
            "50".into(),
        ],
        &database_env,
    )?;
    let started = Instant::now();
    let devices = runtime.block_on(control::pair(&server, args.devices))?;
    eprintln!(
        "paired {} devices in {:.1} s",
        devices.len(),
        started.elapsed().as_secs_f64()
    );

    let server = Arc::new(Mutex::new(server));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let url = lock(&server).url.clone();
    let run = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let deadline = start + run;

    // The killer: at random moments within the run, SIGKILL and restart.
    let mut rng = Rng(seed);
    let mut moments: Vec<Duration> = (0..args.kills)
        .map(|_| run.mul_f64(0.05 + 0.9 * rng.unit()))
        .collect();
    moments.sort();
    let killer = {
        let server = server.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let mut downtime = Vec::new();
            for moment in moments {
                if let Some(wait) = (start + moment).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let t = Instant::now();
                lock(&server).kill_and_restart()?;
                downtime.push(t.elapsed().as_secs_f64() * 1000.0);
                eprintln!(
                    "killed and restarted the server at {:.1} s ({:.0} ms down)",
                    moment.as_secs_f64(),
                    downtime.last().copied().unwrap_or_default()
                );
            }
            Ok(downtime)
        })
    };

    let finished = Arc::new(Finished {
        files: Mutex::default(),
        unchecked_bytes: AtomicU64::new(0),
        backlog_limit: if args.prune {
            args.backlog_mib * MIB
        } else {
            u64::MAX
        },
    });
    let data = lock(&server).data.clone();
    let checker = Arc::new(Mutex::new(Checker::new(
        &data,
        args.database_url.clone(),
        args.prune,
        finished.clone(),
    )?));
    let sending_done = Arc::new(AtomicBool::new(false));
    let pruner = args.prune.then(|| {
        let (checker, done) = (checker.clone(), sending_done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(5));
                if let Err(e) = lock(&checker).check() {
                    eprintln!("checking finished files failed (tried again later): {e:#}");
                }
            }
        })
    });
    runtime.block_on(async {
        let tasks: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, device)| {
                let (url, tally, finished) = (url.clone(), tally.clone(), finished.clone());
                let rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                tokio::spawn(device_loop(
                    device, url, deadline, args.think, rng, tally, finished,
                ))
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        anyhow::Ok(())
    })?;
    sending_done.store(true, Ordering::Relaxed);
    let sending = start.elapsed();
    let sent: Vec<Sent> = lock(&finished.files).clone();
    let downtime = killer
        .join()
        .map_err(|_| anyhow::anyhow!("the killer thread panicked"))??;
    eprintln!(
        "{} files sent in {:.1} s; waiting for the server to finish them",
        sent.len(),
        sending.as_secs_f64()
    );

    // Every file a device finished must become a complete asset with its SHA-256.
    let server = Arc::try_unwrap(server)
        .map_err(|_| anyhow::anyhow!("server still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("server lock poisoned"))?;
    if let Some(pruner) = pruner {
        let _ = pruner.join();
    }
    let mut checker = Arc::try_unwrap(checker)
        .map_err(|_| anyhow::anyhow!("checker still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("checker lock poisoned"))?;
    let listed = checker.settle(Duration::from_secs(180))?;
    let corrupted: Vec<String> = checker
        .corrupted
        .iter()
        .map(|(id, on_disk)| format!("{id} ({})", on_disk.display()))
        .collect();
    let lost: Vec<String> = sent
        .iter()
        .filter(|f| !checker.settled(&f.asset_id))
        .map(|f| {
            format!(
                "{} ({})",
                f.asset_id,
                listed
                    .get(&f.asset_id)
                    .map_or("not listed".to_owned(), |e| e["state"].to_string())
            )
        })
        .collect();
    drop(server);
    let check = checker.admin().arg("check").output()?;
    let integrity = String::from_utf8_lossy(&check.stdout).trim().to_owned()
        + String::from_utf8_lossy(&check.stderr).trim();

    let tally = lock(&tally);
    let bytes: u64 = sent.iter().map(|s| s.size).sum();
    println!(
        "rushes-load: {} devices, {:.0} s of new files, {} kills (seed {seed}), metadata in {}",
        args.devices,
        run.as_secs_f64(),
        downtime.len(),
        engine(&args.database_url)
    );
    println!(
        "files {}  bytes {:.1} MiB ({:.1} MiB/s)  lost {}  corrupted {}  failed {}  database {}",
        sent.len(),
        bytes as f64 / MIB as f64,
        bytes as f64 / MIB as f64 / sending.as_secs_f64(),
        lost.len(),
        corrupted.len(),
        tally.failed.len(),
        if check.status.success() {
            "ok"
        } else {
            "DAMAGED"
        }
    );
    for line in integrity.lines().filter(|l| l.starts_with("checked:")) {
        println!("{line}");
    }
    let mut calls = serde_json::Map::new();
    let mut names: Vec<_> = tally.latencies.keys().copied().collect();
    names.sort();
    for name in names {
        let mut all = tally.latencies[name].clone();
        all.sort_by(f64::total_cmp);
        let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
        println!(
            "{name:<12} {:>7} calls  p50 {:>7.1} ms  p99 {:>7.1} ms",
            all.len(),
            at(0.5),
            at(0.99)
        );
        calls.insert(
            name.to_owned(),
            json!({"calls": all.len(), "p50_ms": at(0.5), "p99_ms": at(0.99)}),
        );
    }
    let mut retried: Vec<_> = tally.retried.iter().collect();
    retried.sort();
    for (cause, n) in &retried {
        println!("retried      {n:>7} × {cause}");
    }
    if tally.held_back_secs > 0.0 {
        println!(
            "devices waited {:.0} device-seconds for the checker (--backlog-mib {})",
            tally.held_back_secs, args.backlog_mib
        );
    }
    for what in lost.iter().chain(&corrupted).chain(&tally.failed) {
        println!("  {what}");
    }
    let result = json!({
        "devices": args.devices,
        "metadata": engine(&args.database_url),
        "seconds": args.seconds,
        "seed": seed,
        "kills": downtime.len(),
        "restart_ms": downtime,
        "files": sent.len(),
        "bytes": bytes,
        "bytes_sent_including_retries": tally.bytes_sent,
        "lost": lost,
        "corrupted": corrupted,
        "failed": tally.failed,
        "integrity_check": integrity,
        "calls": calls,
        "retried": tally.retried,
        "held_back_device_seconds": tally.held_back_secs,
    });
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&result)?)?;
    if !lost.is_empty() || !corrupted.is_empty() || !tally.failed.is_empty() {
        bail!(
            "files were lost, corrupted or failed; the server's data is kept in {}",
            dir.display()
        );
    }
    if !check.status.success() {
        bail!("the database failed its integrity check: {integrity}");
    }
    if sent.is_empty() {
        bail!("no file was sent at all");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One device: pause, make a file, create its asset, send its parts; until the deadline.
async fn device_loop(
    mut device: Device,
    url: String,
    deadline: Instant,
    think: f64,
    mut rng: Rng,
    tally: Arc<Mutex<Tally>>,
    finished: Arc<Finished>,
) {
    let mut n = 0;
    loop {
        tokio::time::sleep(Duration::from_secs_f64(think * rng.unit())).await;
        while finished.unchecked_bytes.load(Ordering::Relaxed) > finished.backlog_limit
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            lock(&tally).held_back_secs += 0.5;
        }
        if Instant::now() >= deadline {
            return;
        }
        n += 1;
        // Four stills in five (50 KiB to 2 MiB), one clip (10 to 16 MiB: two or three parts
        // of at least 5 MiB).
        let size = if rng.unit() < 0.8 {
            50 * 1024 + (rng.unit() * (2 * MIB - 50 * 1024) as f64) as u64
        } else {
            10 * MIB + (rng.unit() * (6 * MIB) as f64) as u64
        };
        let data = rng.bytes(size as usize);
        let name = format!("{}_{n:05}.MOV", device.client_id);
        match send_file(&mut device, &url, &name, data.clone(), &tally).await {
            Ok(asset_id) => {
                finished.unchecked_bytes.fetch_add(size, Ordering::Relaxed);
                lock(&finished.files).push(Sent {
                    asset_id,
                    sha256: hex(&Sha256::digest(&data)),
                    size,
                });
            }
            Err(e) => lock(&tally).failed.push(format!("{name}: {e:#}")),
        }
    }
}

async fn send_file(
    device: &mut Device,
    url: &str,
    name: &str,
    data: Bytes,
    tally: &Mutex<Tally>,
) -> anyhow::Result<String> {
    let body = json!({"name": name, "filesize": data.len(), "filetype": "video/quicktime"});
    let res = persist(tally, "create", || {
        device
            .client
            .post(format!("{url}/v2/devices/assets"))
            .bearer_auth(&device.tokens.access_token)
            .json(&body)
            .send()
    })
    .await?;
    let asset: Asset = serde_json::from_slice(&res).context("create answer")?;
    let part = data.len().div_ceil(asset.upload_urls.len());
    for (i, part_url) in asset.upload_urls.iter().enumerate() {
        let bytes = data.slice(i * part..((i + 1) * part).min(data.len()));
        persist(tally, "part PUT", || {
            lock(tally).bytes_sent += bytes.len() as u64;
            device
                .client
                .put(part_url)
                .header("content-type", "video/quicktime")
                .header("x-amz-acl", "private")
                .body(bytes.clone())
                .send()
        })
        .await?;
    }
    Ok(asset.id)
}

/// Sends a request until it is answered 2xx (its body) or refused for good (an error).
/// Waits 0.2 s doubling to 3 s between attempts, or what `Retry-After` says.
async fn persist<F, Fut>(
    tally: &Mutex<Tally>,
    call: &'static str,
    mut send: F,
) -> anyhow::Result<Bytes>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = reqwest::Result<reqwest::Response>>,
{
    let mut pause = Duration::from_millis(200);
    for _ in 0..200 {
        let t = Instant::now();
        let (cause, wait) = match send().await {
            Ok(res) if res.status().is_success() => match res.bytes().await {
                Ok(body) => {
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    lock(tally).latencies.entry(call).or_default().push(ms);
                    return Ok(body);
                }
                Err(_) => ("answer cut".to_owned(), None),
            },
            Ok(res)
                if res.status().is_server_error()
                    || res.status() == StatusCode::TOO_MANY_REQUESTS
                    || res.status() == StatusCode::REQUEST_TIMEOUT =>
            {
                let wait = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs);
                (format!("{call} {}", res.status().as_u16()), wait)
            }
            Ok(res) => {
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                bail!("{call} answered {status}: {body}");
            }
            Err(e) if e.is_connect() => ("connection refused".to_owned(), None),
            Err(_) => ("connection cut".to_owned(), None),
        };
        *lock(tally).retried.entry(cause).or_default() += 1;
        tokio::time::sleep(wait.unwrap_or(pause)).await;
        pause = (pause * 2).min(Duration::from_secs(3));
    }
    bail!("{call}: still failing after 200 attempts")
}

/// Checks finished files against the server: complete, with the source's size and SHA-256
/// as recorded and as read back from the file on disk.
struct Checker {
    data: PathBuf,
    database_url: Option<String>,
    binary: PathBuf,
    /// Delete each file once it checks out.
    prune: bool,
    finished: Arc<Finished>,
    /// Asset ids that checked out.
    checked: HashSet<String>,
    /// Asset ids that did not, with their file on disk.
    corrupted: BTreeMap<String, PathBuf>,
}

impl Checker {
    fn new(
        data: &Path,
        database_url: Option<String>,
        prune: bool,
        finished: Arc<Finished>,
    ) -> anyhow::Result<Checker> {
        Ok(Checker {
            data: data.to_owned(),
            database_url,
            binary: rushes_bench::procs::rushes_binary()?,
            prune,
            finished,
            checked: HashSet::new(),
            corrupted: BTreeMap::new(),
        })
    }

    /// Checked out or found corrupt: either way done with, and out of the backlog.
    fn settled(&self, asset_id: &str) -> bool {
        self.checked.contains(asset_id) || self.corrupted.contains_key(asset_id)
    }

    /// An admin command on the server's data and database.
    fn admin(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.binary);
        command.arg("--data").arg(&self.data);
        if let Some(url) = &self.database_url {
            command.env("RUSHES_DATABASE_URL", url);
        }
        command
    }

    /// Checks every complete file not checked yet; the listing by asset id.
    fn check(&mut self) -> anyhow::Result<HashMap<String, Value>> {
        let sent: Vec<Sent> = lock(&self.finished.files).clone();
        let out = self.admin().args(["asset", "list", "--json"]).output()?;
        anyhow::ensure!(
            out.status.success(),
            "rushes asset list: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let list: Value = serde_json::from_slice(&out.stdout)?;
        let by_id: HashMap<String, Value> = list
            .as_array()
            .context("asset list")?
            .iter()
            .filter_map(|e| Some((e["id"].as_str()?.to_owned(), e.clone())))
            .collect();
        for file in &sent {
            // Each file is settled once, so it leaves the backlog once.
            if self.settled(&file.asset_id) {
                continue;
            }
            let Some(entry) = by_id.get(&file.asset_id) else {
                continue;
            };
            if entry["state"] != "complete" {
                continue;
            }
            let on_disk = self
                .data
                .join("media")
                .join(entry["project"].as_str().unwrap_or_default())
                .join(entry["path"].as_str().unwrap_or_default());
            let disk_sha = std::fs::read(&on_disk)
                .map(|bytes| hex(&Sha256::digest(&bytes)))
                .unwrap_or_default();
            if entry["sha256"] == file.sha256.as_str()
                && disk_sha == file.sha256
                && entry["size"] == file.size
            {
                self.checked.insert(file.asset_id.clone());
                if self.prune {
                    let _ = std::fs::remove_file(&on_disk);
                }
            } else {
                self.corrupted.insert(file.asset_id.clone(), on_disk);
            }
            self.finished
                .unchecked_bytes
                .fetch_sub(file.size, Ordering::Relaxed);
        }
        Ok(by_id)
    }

    /// Checks until every sent file is checked or corrupt, or `limit` passes.
    fn settle(&mut self, limit: Duration) -> anyhow::Result<HashMap<String, Value>> {
        let deadline = Instant::now() + limit;
        let sent: Vec<Sent> = lock(&self.finished.files).clone();
        loop {
            let listed = self.check()?;
            let open = sent.iter().filter(|f| !self.settled(&f.asset_id)).count();
            if open == 0 || Instant::now() > deadline {
                return Ok(listed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn engine(database_url: &Option<String>) -> &'static str {
    match database_url {
        Some(_) => "PostgreSQL",
        None => "SQLite",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SplitMix64: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn bytes(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out.into()
    }
}
