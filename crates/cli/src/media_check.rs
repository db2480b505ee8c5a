//! `rushes check --media`: re-reads every complete clip and compares it with its recorded
//! size and SHA-256 (the server's `scrub` module does the reading), showing progress on a
//! terminal or one JSON line per clip, and failing when any clip is damaged, truncated or
//! missing. Kept apart from the other admin commands because it alone needs the media
//! store, and so the S3 flags `serve` takes (`s3_args`).

use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rushes_server::scrub::{Pace, parse_since};
use serde_json::json;

#[derive(Args)]
pub struct CheckArgs {
    /// Also re-read every complete clip from the media store and compare its size and
    /// SHA-256 with the record (instead of checking the database).
    #[arg(long)]
    media: bool,
    /// With --media: one JSON object per clip, then a summary, instead of a progress bar.
    #[arg(long, requires = "media")]
    json: bool,
    /// With --media: read at most this many megabytes (10^6 bytes) a second, so the check
    /// can run beside uploads.
    #[arg(long, requires = "media", value_name = "MB/s")]
    max_rate: Option<f64>,
    /// With --media: only this project's clips.
    #[arg(long, requires = "media")]
    project: Option<String>,
    /// With --media: only clips completed on or after this date (YYYY-MM-DD, UTC, or RFC
    /// 3339).
    #[arg(long, requires = "media", value_name = "DATE")]
    since: Option<String>,
    #[command(flatten)]
    s3: crate::s3_args::S3Args,
}

impl CheckArgs {
    pub fn media(&self) -> bool {
        self.media
    }
}

pub async fn run(data: &crate::admin::Target, args: CheckArgs) -> anyhow::Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let rate = match args.max_rate {
        Some(mb) if !(mb.is_finite() && mb > 0.0) => {
            anyhow::bail!("--max-rate is a positive number of MB/s")
        }
        Some(mb) => Some((mb * 1e6) as u64),
        None => None,
    };
    let admin = data.open().await?;
    let store = rushes_server::media::open_for_reading(&data.data_dir, args.s3.config()?.as_ref())?;
    let clips = admin.clips_to_scrub(args.project.as_deref(), since).await?;
    let total: u64 = clips
        .iter()
        .map(|c| u64::try_from(c.filesize).unwrap_or(0))
        .sum();
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    };
    let started = Instant::now();
    let mut pace = Pace::new(rate);
    let mut failed: Vec<String> = Vec::new();
    let mut read = 0u64;
    for clip in &clips {
        let name = format!("{}/{}", clip.project, clip.path);
        bar.set_message(clip.path.rsplit('/').next().unwrap_or_default().to_owned());
        let result = admin
            .verify_clip(store.as_ref(), clip, &mut pace, |n| {
                read += n;
                bar.inc(n);
            })
            .await;
        let (status, detail) = match &result {
            Ok(finding) => (finding.kind(), finding.damage()),
            Err(e) => ("unreadable", Some(format!("unreadable: {e:#}"))),
        };
        if let Some(detail) = &detail {
            failed.push(format!("{name}: {detail}"));
        }
        if args.json {
            println!(
                "{}",
                json!({
                    "id": clip.id, "project": clip.project, "path": clip.path, "clip": name,
                    "status": status, "damage": detail,
                    "size": clip.filesize, "sha256": clip.sha256,
                })
            );
        } else if let Some(detail) = &detail {
            bar.suspend(|| println!("{}  {name}: {detail}", status.to_uppercase()));
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "summary": true, "clips": clips.len(), "failed": failed.len(),
                "bytes": read, "seconds": seconds,
            })
        );
    } else {
        println!(
            "media: {} clips, {} read in {seconds:.1} s ({:.0} MB/s)",
            clips.len(),
            indicatif::HumanBytes(read),
            read as f64 / 1e6 / seconds.max(1e-9),
        );
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} clips do not match their record:\n  - {}",
            failed.len(),
            clips.len(),
            failed.join("\n  - ")
        );
    }
    if !args.json {
        println!("media: ok");
    }
    Ok(())
}
