//! Scrubbing: are the clips still the bytes they were?
//!
//! A complete clip's size and SHA-256 are recorded once, when it is joined. Disks rot,
//! operators delete, buckets get rules: the only way to know the promise still holds is to
//! read every clip again and compare. [`verify`] re-reads one clip through the media store
//! (whatever store it is) at a bounded pace ([`Pace`]) and says what it found; the
//! `rushes check --media` command runs it over every clip, and [`spawn`] has each server
//! do it by itself, a clip at a time, so every clip is re-read at least once a period.
//!
//! Each result is recorded with the clip (`Db::record_verification`). Nothing is ever
//! repaired: a damaged clip is reported (log, listing, web UI) and left as found, for the
//! operator to restore from a copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::clock::{Millis, now_ms};
use crate::db::{Db, ScrubClip};
use crate::media::{ClipLocation, MediaStore};
use crate::secrets::hex;

/// What re-reading a clip found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Its size and SHA-256 match the record.
    Intact,
    /// The store holds nothing where it should be.
    Missing,
    /// Fewer bytes than recorded.
    Truncated { found: u64, recorded: u64 },
    /// More bytes than recorded.
    Grown { found: u64, recorded: u64 },
    /// The recorded size, other bytes.
    Altered { sha256: String },
}

impl Finding {
    /// A word for the kind of damage (`ok` when intact), for listings and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Intact => "ok",
            Finding::Missing => "missing",
            Finding::Truncated { .. } => "truncated",
            Finding::Grown { .. } => "grown",
            Finding::Altered { .. } => "damaged",
        }
    }

    /// What is wrong, for people; `None` when intact.
    pub fn damage(&self) -> Option<String> {
        match self {
            Finding::Intact => None,
            Finding::Missing => Some("missing: the media store holds no file for it".into()),
            Finding::Truncated { found, recorded } => Some(format!(
                "truncated: {found} bytes where {recorded} were recorded"
            )),
            Finding::Grown { found, recorded } => Some(format!(
                "grown: {found} bytes where {recorded} were recorded"
            )),
            Finding::Altered { sha256 } => Some(format!(
                "damaged: its SHA-256 is now {sha256}, not the one recorded"
            )),
        }
    }
}

/// Bounds how fast clips are read: after `n` bytes in all, at least `n / rate` seconds
/// have passed. Shared by every clip one run reads, so the bound is the run's.
pub struct Pace {
    bytes_per_second: Option<u64>,
    started: Instant,
    read: u64,
}

impl Pace {
    /// `None`: as fast as the store gives.
    pub fn new(bytes_per_second: Option<u64>) -> Pace {
        Pace {
            bytes_per_second: bytes_per_second.filter(|&r| r > 0),
            started: Instant::now(),
            read: 0,
        }
    }

    /// Counts `n` more bytes read, waiting first if that would go over the rate.
    pub async fn take(&mut self, n: u64) {
        self.read += n;
        if let Some(rate) = self.bytes_per_second {
            let due = Duration::from_secs_f64(self.read as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

/// Re-reads one clip and compares it with its record; `progress` is told each chunk's
/// length as it is read. `Err`: the store could not be read (unreachable, refused), which
/// says nothing about the clip.
pub async fn verify(
    store: &dyn MediaStore,
    clip: &ScrubClip,
    pace: &mut Pace,
    mut progress: impl FnMut(u64),
) -> std::io::Result<Finding> {
    let upload = clip.remote_upload();
    let location = ClipLocation {
        project_dir: &clip.project_dir,
        path: &clip.path,
        upload: upload.as_ref(),
    };
    let Some(mut bytes) = store.open_clip(location).await? else {
        return Ok(Finding::Missing);
    };
    let recorded = u64::try_from(clip.filesize).unwrap_or(0);
    let mut hasher = Sha256::new();
    let mut found = 0u64;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        let n = chunk.len() as u64;
        hasher.update(&chunk);
        found += n;
        progress(n);
        pace.take(n).await;
    }
    Ok(if found < recorded {
        Finding::Truncated { found, recorded }
    } else if found > recorded {
        Finding::Grown { found, recorded }
    } else {
        let sha256 = hex(&hasher.finalize());
        if sha256.eq_ignore_ascii_case(&clip.sha256) {
            Finding::Intact
        } else {
            Finding::Altered { sha256 }
        }
    })
}

/// [`verify`], then records the finding with the clip (an unreadable store records
/// nothing) and logs damage at warn level.
pub async fn verify_and_record(
    db: &Db,
    store: &dyn MediaStore,
    clip: &ScrubClip,
    pace: &mut Pace,
    progress: impl FnMut(u64),
) -> anyhow::Result<Finding> {
    let finding = verify(store, clip, pace, progress).await?;
    let damage = finding.damage();
    if let Some(damage) = &damage {
        tracing::warn!(
            asset = %clip.id,
            clip = %format!("{}/{}", clip.project, clip.path),
            damage = %damage,
            "a clip no longer matches its recorded size and SHA-256; it is left as found"
        );
    }
    db.record_verification(&clip.id, now_ms(), damage.as_deref())
        .await?;
    Ok(finding)
}

/// How the server scrubs by itself.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Every clip is re-read at least this often.
    pub every: Duration,
    /// Read at most this many bytes a second (`None`: no bound).
    pub bytes_per_second: Option<u64>,
}

/// How long a server holds a clip it is re-reading before another may take it: long
/// enough for a large clip at a slow pace; a server that dies only delays that clip.
const LEASE: Duration = Duration::from_secs(6 * 3600);

/// Starts the server's own scrubbing: it re-reads the clip whose last check (or
/// completion) is oldest once that is a period ago, one clip at a time, sharing the work
/// with every other server through a lease in the database.
pub fn spawn(db: Db, store: Arc<dyn MediaStore>, schedule: Schedule) {
    tokio::spawn(async move {
        let every_ms = Millis::try_from(schedule.every.as_millis()).unwrap_or(Millis::MAX);
        // When nothing is due: look again after a tenth of the period, within 0.2-60 s.
        let idle = (schedule.every / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let lease_ms = Millis::try_from(LEASE.as_millis()).unwrap_or(Millis::MAX);
        loop {
            let now = now_ms();
            let claimed = db
                .claim_scrub(
                    now,
                    now.saturating_sub(every_ms),
                    now.saturating_add(lease_ms),
                )
                .await;
            let clip = match claimed {
                Ok(Some(clip)) => clip,
                Ok(None) => {
                    tokio::time::sleep(idle).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scrub: finding the next clip to check failed");
                    tokio::time::sleep(idle).await;
                    continue;
                }
            };
            let mut pace = Pace::new(schedule.bytes_per_second);
            match verify_and_record(&db, store.as_ref(), &clip, &mut pace, |_| {}).await {
                Ok(Finding::Intact) => {
                    tracing::debug!(asset = %clip.id, "scrub: clip intact");
                }
                Ok(_) => {}
                Err(e) => {
                    // The store or database failed, not the clip: try again later.
                    tracing::warn!(asset = %clip.id, error = format!("{e:#}"), "scrub: re-reading a clip failed");
                    tokio::time::sleep(idle).await;
                }
            }
        }
    });
}

/// A `--since` date: `YYYY-MM-DD` (midnight UTC) or RFC 3339, as milliseconds.
pub fn parse_since(text: &str) -> anyhow::Result<Millis> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    let at = if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        at
    } else {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format)
            .map_err(|_| {
                anyhow::anyhow!("{text:?} is not a date (YYYY-MM-DD, or RFC 3339 with a time)")
            })?
            .midnight()
            .assume_utc()
    };
    Ok(Millis::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_timestamp() {
        assert_eq!(parse_since("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn findings_name_their_damage() {
        assert_eq!(Finding::Intact.damage(), None);
        let t = Finding::Truncated {
            found: 1,
            recorded: 2,
        };
        assert_eq!(t.kind(), "truncated");
        assert!(t.damage().unwrap().contains("1 bytes where 2"));
        assert_eq!(Finding::Missing.kind(), "missing");
    }

    #[tokio::test]
    async fn the_pace_holds_the_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(Some(10_000));
        pace.take(500).await;
        pace.take(1500).await;
        assert!(start.elapsed() >= Duration::from_millis(190));
        let mut free = Pace::new(None);
        free.take(u64::MAX / 2).await;
    }
}
