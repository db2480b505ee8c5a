//! The device side of `rushes device`: pair this computer with a server, upload files,
//! watch a folder, show status, unpair. Progress goes to the terminal (indicatif) or, with
//! `--json`, one JSON event per line on stdout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rushes_client::{Device, Event, PairOptions, ServerOptions, UploadOptions, WatchOptions};

#[derive(Args)]
pub struct PairArgs {
    /// The server's base URL, e.g. https://rushes.local:8443.
    #[arg(long)]
    server: String,
    /// The server's root certificate (its tls/ca.crt), trusted on top of the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name this device shows on the server (and its folder there).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct UploadArgs {
    /// Files to upload.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Parts of one file sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Files sent at once (more hides each small file's round trips: 1,000 stills of
    /// 1 MiB went at 87 files/s with 4, 117 with 8; docs/benchmarks.md).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel_files: u16,
    /// Print one JSON event per line instead of progress bars.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    /// Folder to watch (recursively).
    dir: PathBuf,
    /// Seconds a file must stay unchanged to count as finished.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Parts of one file sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Files sent at once (more hides each small file's round trips: 1,000 stills of
    /// 1 MiB went at 87 files/s with 4, 117 with 8; docs/benchmarks.md).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel_files: u16,
    /// Print one JSON event per line instead of progress bars.
    #[arg(long)]
    json: bool,
}

/// `--state` default: `$XDG_CONFIG_HOME/rushes/device` or `~/.config/rushes/device`.
pub fn default_state_dir() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("rushes").join("device")
}

async fn cancellable<T>(
    work: impl std::future::Future<Output = Result<T, rushes_client::Error>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => Ok(result?),
        _ = tokio::signal::ctrl_c() => anyhow::bail!("cancelled"),
    }
}

pub async fn pair(state: &Path, args: PairArgs) -> anyhow::Result<()> {
    let options = PairOptions {
        server: ServerOptions {
            server: args.server,
            ca: args.ca,
        },
        state_dir: state.to_owned(),
        name: args.name,
    };
    let device = cancellable(rushes_client::pair(options, |code| {
        println!("Pairing code: {}", code.user_code);
        println!("Approve it at {}", code.verification_uri_complete);
        println!(
            "(or on the server: rushes pairing approve {} --project NAME)",
            code.user_code
        );
        if let Ok(qr) = qrcode::QrCode::new(code.verification_uri_complete.as_bytes()) {
            println!(
                "{}",
                qr.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build()
            );
        }
        println!(
            "Waiting for approval (the code expires in {} min; Ctrl-C cancels)...",
            code.expires_in.as_secs() / 60
        );
    }))
    .await?;
    let status = device.status().await?;
    println!(
        "Paired as {:?} with project {:?} on {}",
        status.device_name, status.project, status.server
    );
    Ok(())
}

pub async fn status(state: &Path, json: bool) -> anyhow::Result<()> {
    let device = Device::open(state).await?;
    let status = device.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let expires = rushes_server::clock::rfc3339(status.access_token_expires_at);
    println!("server:        {}", status.server);
    println!("project:       {}", status.project);
    println!(
        "device:        {} ({})",
        status.device_name, status.client_id
    );
    println!("token expires: {expires} (refreshed automatically)");
    let q = status.queue;
    println!(
        "queue:         {} queued, {} uploading, {} complete, {} failed, {} paused-rejected",
        q.queued, q.uploading, q.complete, q.failed, q.paused_rejected
    );
    Ok(())
}

pub async fn upload(state: &Path, args: UploadArgs) -> anyhow::Result<()> {
    let device = Device::open(state).await?.with_options(UploadOptions {
        parallel_parts: usize::from(args.parallel),
        parallel_files: usize::from(args.parallel_files),
        ..UploadOptions::default()
    });
    let reporter = tokio::spawn(report(device.events(), args.json));
    // Open beside the uploads, so a pause on the server is reported at once; best effort.
    let socket = device.status_socket().await.ok();
    let queued = device.enqueue(&args.files).await?;
    let summary = cancellable(device.upload_queue()).await;
    drop(socket);
    // Dropping the device closes its event stream: the reporter prints what is left and ends.
    drop(device);
    let _ = reporter.await;
    let mut summary = summary?;
    summary.failed += queued.failed;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "summary", "completed": summary.completed, "failed": summary.failed, "paused_rejected": summary.paused_rejected})
        );
    } else {
        println!(
            "{} uploaded, {} failed, {} refused (device paused)",
            summary.completed, summary.failed, summary.paused_rejected
        );
    }
    if summary.failed > 0 {
        anyhow::bail!("{} file(s) failed; see above", summary.failed);
    }
    Ok(())
}

pub async fn watch(state: &Path, args: WatchArgs) -> anyhow::Result<()> {
    let device = Arc::new(Device::open(state).await?.with_options(UploadOptions {
        parallel_parts: usize::from(args.parallel),
        parallel_files: usize::from(args.parallel_files),
        ..UploadOptions::default()
    }));
    let reporter = tokio::spawn(report(device.events(), args.json));
    let _socket = device.status_socket().await.ok();
    if !args.json {
        println!("Watching {} (Ctrl-C stops)", args.dir.display());
    }
    let options = WatchOptions {
        settle: Duration::from_secs_f64(args.settle.max(0.1)),
        ..WatchOptions::default()
    };
    let result = cancellable(device.watch(&args.dir, options)).await;
    reporter.abort();
    match result {
        Err(e) if e.to_string() == "cancelled" => Ok(()),
        other => other,
    }
}

pub async fn unpair(state: &Path) -> anyhow::Result<()> {
    let device = Device::open(state).await?;
    let status = device.status().await?;
    device.unpair().await?;
    println!(
        "Unpaired from {} (project {:?})",
        status.server, status.project
    );
    Ok(())
}

/// Renders events: JSON lines, or progress bars with counts, speed and ETA.
async fn report(events: impl futures_util::Stream<Item = Event> + Send + 'static, json: bool) {
    let mut events = Box::pin(events);
    if json {
        while let Some(event) = events.next().await {
            if !matches!(event, Event::Progress { .. })
                && let Ok(line) = serde_json::to_string(&event)
            {
                println!("{line}");
            }
        }
        return;
    }
    let bars = MultiProgress::new();
    let total = bars.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template("{msg}\n[{bar:40}] {bytes}/{total_bytes} sent, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let file_style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    // Progress bars only draw on a terminal; elsewhere, per-file lines go to stderr.
    let say = |line: String| {
        if bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = bars.println(line);
        }
    };
    let (mut queued, mut done, mut failed, mut paused) = (0u64, 0u64, 0u64, 0u64);
    // Files that can fail without ever being queued (missing paths) still count as files.
    let mut known = std::collections::HashSet::new();
    // One bar per file in flight (several files upload at once).
    let mut current: std::collections::HashMap<PathBuf, ProgressBar> =
        std::collections::HashMap::new();
    let counts = |q: u64, d: u64, f: u64, p: u64| {
        format!(
            "files: {d} done, {} remaining, {f} failed, {p} paused-rejected",
            q.saturating_sub(d + f + p)
        )
    };
    while let Some(event) = events.next().await {
        match event {
            Event::Queued { file, size } => {
                known.insert(file);
                queued += 1;
                total.inc_length(size);
            }
            Event::Started {
                file,
                size,
                resumed_bytes,
                ..
            } => {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(file_style.clone());
                bar.set_prefix(
                    file.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                bar.set_position(resumed_bytes);
                total.inc(resumed_bytes);
                if let Some(old) = current.insert(file, bar) {
                    old.finish_and_clear();
                }
            }
            Event::Progress { file, bytes } => {
                if let Some(bar) = current.get(&file) {
                    bar.inc(bytes);
                }
                total.inc(bytes);
            }
            Event::Completed { file, .. } => {
                done += 1;
                if let Some(bar) = current.remove(&file) {
                    bar.finish_and_clear();
                }
                say(format!("uploaded {}", file.display()));
            }
            Event::Failed { file, error } => {
                failed += 1;
                if let Some(bar) = current.remove(&file) {
                    bar.finish_and_clear();
                }
                if known.insert(file.clone()) {
                    queued += 1;
                }
                say(format!("FAILED {}: {error}", file.display()));
            }
            Event::PausedRejected { file } => {
                paused += 1;
                say(format!(
                    "refused {} (the device is paused on the server)",
                    file.display()
                ));
            }
            Event::AlreadyUploaded { file } => {
                say(format!("already uploaded {}", file.display()));
            }
            Event::Retrying { error, in_secs, .. } => {
                total.set_message(format!(
                    "{} (retrying in {in_secs:.0}s: {error})",
                    counts(queued, done, failed, paused)
                ));
                continue;
            }
            Event::Recording { file } => {
                queued += 1;
                say(format!(
                    "recording {} (uploading as it grows)",
                    file.display()
                ));
            }
            Event::PartDone { .. } => {}
            Event::Paused => say(
                "the device was paused on the server: clips recorded from now on are refused \
                 until it is resumed"
                    .to_owned(),
            ),
            Event::Resumed => say("the device was resumed on the server".to_owned()),
        }
        total.set_message(counts(queued, done, failed, paused));
    }
}
