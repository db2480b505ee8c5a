//! Assets and their parts: creation with a reserved path, part bookkeeping, the hand-over
//! to finalisation, and listings.

use std::fmt::Write;
use std::sync::LazyLock;

use rushes_proto::parts::PartPlan;

use super::{Db, DbResult, Tx, new_id};
use crate::clock::{Millis, now_ms};
use crate::domain::AssetName;
use crate::media::RemoteUpload;

/// What to create; everything already validated.
#[derive(Debug, Clone)]
pub struct NewAsset {
    pub project_id: String,
    pub device_id: String,
    pub name: AssetName,
    /// `Cloud Devices/YYYY_MM_DD/TYPE/<device>`: where the name is reserved.
    pub folder: String,
    pub filetype: String,
    pub filesize: Option<u64>,
    pub channel: i64,
    pub offset_secs: i64,
    pub recorded_at: Millis,
    pub auto_version_id: Option<String>,
    /// `None` for a real-time upload, whose parts the device registers as it records.
    pub plan: Option<PartPlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetState {
    Uploading,
    /// Every part is in; the bytes are being joined (or will be, after a restart).
    Assembling,
    Complete,
    /// No part arrived for longer than the store keeps uploads open; the store's upload was
    /// aborted and its parts freed (S3 only).
    Abandoned,
    /// The device created the same file again before this one finished; the newer asset
    /// took its place and its received parts were dropped. Never listed.
    Superseded,
    /// Completed with the same name, size and SHA-256 as a complete clip of the same device
    /// in the same folder (a card sent again): its bytes were dropped. Never listed.
    Duplicate,
}

impl AssetState {
    fn parse(s: &str) -> AssetState {
        match s {
            "complete" => AssetState::Complete,
            "assembling" => AssetState::Assembling,
            "abandoned" => AssetState::Abandoned,
            "superseded" => AssetState::Superseded,
            "duplicate" => AssetState::Duplicate,
            _ => AssetState::Uploading,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Asset {
    pub id: String,
    pub project_id: String,
    pub device_id: String,
    pub name: String,
    pub path: String,
    pub filetype: String,
    pub filesize: Option<i64>,
    pub channel: i64,
    pub offset_secs: i64,
    pub recorded_at: i64,
    pub realtime: i64,
    pub part_size: Option<i64>,
    pub part_count: Option<i64>,
    state: String,
    pub sha256: Option<String>,
    pub created_at: i64,
    object_key: Option<String>,
    upload_id: Option<String>,
}

impl Asset {
    pub fn state(&self) -> AssetState {
        AssetState::parse(&self.state)
    }

    /// The media store's own upload (S3's multipart upload), if it holds one.
    pub fn remote_upload(&self) -> Option<RemoteUpload> {
        Some(RemoteUpload {
            key: self.object_key.clone()?,
            upload_id: self.upload_id.clone()?,
        })
    }

    pub fn is_realtime(&self) -> bool {
        self.realtime != 0
    }

    /// The part plan of a planned (non-real-time) upload.
    pub fn plan(&self) -> Option<PartPlan> {
        let filesize = u64::try_from(self.filesize?).ok()?;
        let count = u32::try_from(self.part_count?).ok()?;
        let part_size = u64::try_from(self.part_size?).ok()?;
        Some(PartPlan {
            filesize,
            count,
            part_size,
        })
    }
}

/// A known part: planned parts are known once received, real-time ones once registered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Part {
    pub number: i64,
    pub size: i64,
    pub is_final: i64,
    pub stored_as: Option<String>,
}

/// What recording a received part did.
#[derive(Debug)]
pub enum PartRecord {
    /// Recorded. `superseded` names bytes of an earlier copy of the part to delete;
    /// `ready` says this part completed the asset and the caller must finalise it.
    Recorded {
        superseded: Option<String>,
        ready: bool,
    },
    /// The asset was already complete (or being completed): the bytes are not needed.
    AlreadyComplete,
    /// The asset was superseded by a newer create: the bytes are not needed, and whatever
    /// of them reached the store since its parts were dropped must go too.
    Superseded,
    /// The part is not (or no longer) expected with this size.
    WrongSize {
        expected: u64,
    },
    Unknown,
}

/// What [`Db::create_superseding`] did.
#[derive(Debug)]
pub enum Superseding {
    /// Made the asset, in the place of the assets named (none if they finished first).
    Created(Asset, Vec<String>),
    /// Made nothing: the create repeats this one, which nothing was sent to yet.
    Retried(Asset),
}

/// One line of `rushes asset list`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AssetListing {
    pub id: String,
    pub project: String,
    pub path: String,
    pub size: Option<i64>,
    pub state: String,
    pub sha256: Option<String>,
    pub device: String,
    pub device_id: String,
    pub recorded_at: i64,
    pub created_at: i64,
    /// When scrubbing last re-read it (see `db::scrub`).
    pub verified_at: Option<i64>,
    /// What that re-read found wrong; `None` while it matches its record.
    pub damage: Option<String>,
}

/// How long after a create an identical one counts as its retry.
const RETRY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// How far apart the recording times of a create and its retry may be.
const RETRY_CLOCK_SLACK_MS: i64 = 2_000;

/// The asset an identical create made (see [`Db::retried_create`]). Of several (creates
/// that raced), the one under the lowest name: the one the others yield to (see
/// [`Db::yield_to_racing_twin`]).
const RETRIED_CREATE: &str = "device_id = $1 AND name = $2 AND filesize = $3 AND realtime = 0
       AND state = 'uploading' AND created_at > $6
       AND $4 >= recorded_at - $5 AND $4 <= recorded_at + ($7 - created_at) + $5
       AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.asset_id = a.id AND p.received_at IS NOT NULL)
     ORDER BY LENGTH(a.path), a.path LIMIT 1";

/// The device's unfinished planned assets of a name and size on the same channel in the
/// same folder (which encodes the day, TYPE and device), newest first: what a create of
/// the same file supersedes. Two equal files on other channels or days are other clips.
const UNFINISHED_TWINS: &str = "SELECT id, path FROM assets
     WHERE device_id = $1 AND name = $2 AND filesize = $3 AND project_id = $4
       AND channel = $5 AND substr(path, 1, CAST($6 AS INTEGER)) = $7
       AND realtime = 0 AND state = 'uploading'
     ORDER BY created_at DESC";

static RETRIED_CREATE_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT a.id FROM assets a WHERE {RETRIED_CREATE}"));

const ASSET_COLUMNS: &str =
    "id, project_id, device_id, name, path, filetype, filesize, channel, offset_secs,
     recorded_at, realtime, part_size, part_count, state, sha256, created_at, object_key, upload_id";

impl Db {
    /// Creates the asset under the first free name in its folder (`clip.mov`,
    /// `clip (2).mov`, ...): names never overwrite each other.
    /// On SQLite, creates queue to be inserted many at once (see [`super::create_queue`]).
    pub async fn create_asset(&self, new: &NewAsset) -> DbResult<Asset> {
        if let Some(queue) = &self.creates {
            return queue.create(new.clone()).await;
        }
        let now = now_ms();
        let mut row = AssetRow::new(new.clone());
        // Each INSERT either makes the asset or, on a taken name, nothing.
        let mut tx = self.begin_standalone_writes().await?;
        let asset = loop {
            let made = insert_statement(&[&row], now, InsertSql::Portable)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(asset) = made {
                break asset;
            }
            row.next_name();
        };
        tx.commit().await?;
        Ok(asset)
    }

    pub async fn asset(&self, id: &str) -> DbResult<Option<Asset>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await
    }

    /// The asset an identical create made moments ago, if nothing was sent to it yet: the
    /// device is retrying a create whose answer it lost. The recording time (`now -
    /// offset`) may have moved by the time between the two requests, when the device
    /// resends the same offset, plus a second or two of clock ticks.
    pub async fn retried_create(
        &self,
        device_id: &str,
        name: &str,
        filesize: u64,
        recorded_at: Millis,
    ) -> DbResult<Option<Asset>> {
        let now = now_ms();
        // Nearly every create is not a retry: the inline lookup says so without the
        // columns; a candidate is then read in full.
        if let Some(inline) = &self.inline {
            let candidate = inline.query_row(
                &RETRIED_CREATE_ID,
                rusqlite::named_params! {
                    "$1": device_id, "$2": name, "$3": to_i64(filesize), "$4": recorded_at,
                    "$5": RETRY_CLOCK_SLACK_MS, "$6": now - RETRY_WINDOW_MS, "$7": now,
                },
                |row| row.get::<_, String>(0),
            )?;
            if candidate.is_none() {
                return Ok(None);
            }
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ASSET_COLUMNS} FROM assets a WHERE {RETRIED_CREATE}"
        )))
        .bind(device_id)
        .bind(name)
        .bind(to_i64(filesize))
        .bind(recorded_at)
        .bind(RETRY_CLOCK_SLACK_MS)
        .bind(now - RETRY_WINDOW_MS)
        .bind(now)
        .fetch_optional(self.pool())
        .await
    }

    /// Whether part `number` of the asset was received.
    pub async fn part_received(&self, asset_id: &str, number: u32) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM parts WHERE asset_id = $1 AND number = $2 AND received_at IS NOT NULL",
        )
        .bind(asset_id)
        .bind(i64::from(number))
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Parts known for the asset, by number.
    pub async fn parts(&self, asset_id: &str) -> DbResult<Vec<Part>> {
        sqlx::query_as("SELECT number, size, is_final, stored_as FROM parts WHERE asset_id = $1 ORDER BY number")
            .bind(asset_id)
            .fetch_all(self.pool())
            .await
    }

    /// Registers real-time parts (`(number, size, is_final)`, validated by the caller) and,
    /// once known, the total size and the real name. Returns the registered parts.
    pub async fn register_parts(
        &self,
        asset_id: &str,
        parts: &[(u32, u64, bool)],
        asset_filesize: Option<u64>,
        rename: Option<&AssetName>,
    ) -> DbResult<Result<(), String>> {
        let mut tx = self.begin_write().await?;
        lock_asset(&mut tx, asset_id).await?;
        let Some(asset) = fetch_asset(&mut tx, asset_id).await? else {
            return Ok(Err("unknown asset".into()));
        };
        if asset.state() != AssetState::Uploading {
            return Ok(Err("the asset is already complete".into()));
        }
        for &(number, size, is_final) in parts {
            let existing: Option<(i64, Option<i64>)> = sqlx::query_as(
                "SELECT size, received_at FROM parts WHERE asset_id = $1 AND number = $2",
            )
            .bind(asset_id)
            .bind(i64::from(number))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((old_size, Some(_))) = existing
                && old_size != to_i64(size)
            {
                return Ok(Err(format!(
                    "part {number} was already uploaded with {old_size} bytes"
                )));
            }
            sqlx::query(
                "INSERT INTO parts (asset_id, number, size, is_final) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (asset_id, number) DO UPDATE SET size = excluded.size, is_final = excluded.is_final",
            )
            .bind(asset_id)
            .bind(i64::from(number))
            .bind(to_i64(size))
            .bind(i64::from(is_final))
            .execute(&mut *tx)
            .await?;
        }
        let finals: Vec<i64> =
            sqlx::query_scalar("SELECT number FROM parts WHERE asset_id = $1 AND is_final = 1")
                .bind(asset_id)
                .fetch_all(&mut *tx)
                .await?;
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(number) FROM parts WHERE asset_id = $1")
                .bind(asset_id)
                .fetch_one(&mut *tx)
                .await?;
        match finals.as_slice() {
            [] => {}
            [f] if Some(*f) == highest => {}
            [_] => return Ok(Err("no part may follow the final part".into())),
            _ => return Ok(Err("only one part can be final".into())),
        }
        if let Some(size) = asset_filesize {
            sqlx::query("UPDATE assets SET filesize = $1 WHERE id = $2")
                .bind(to_i64(size))
                .bind(asset_id)
                .execute(&mut *tx)
                .await?;
        } else if !finals.is_empty() && asset.filesize.is_none() {
            return Ok(Err("asset_filesize is required once a part is final".into()));
        }
        if let Some(name) = rename
            && name.as_str() != asset.name
        {
            let folder = asset.path.rsplit_once('/').map_or("", |(f, _)| f);
            rename_asset(&mut tx, &asset, folder, name).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records that part `number` of `expected_size` bytes is stored as `stored_as`, and
    /// claims the asset for finalisation when this was the last missing part.
    pub async fn record_part(
        &self,
        asset_id: &str,
        number: u32,
        size: u64,
        stored_as: &str,
    ) -> DbResult<PartRecord> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        lock_asset(&mut tx, asset_id).await?;
        let Some(asset) = fetch_asset(&mut tx, asset_id).await? else {
            return Ok(PartRecord::Unknown);
        };
        match asset.state() {
            AssetState::Uploading => {}
            AssetState::Superseded => return Ok(PartRecord::Superseded),
            _ => return Ok(PartRecord::AlreadyComplete),
        }
        let expected = match asset.plan() {
            Some(plan) => plan.len(number),
            None => sqlx::query_scalar::<_, i64>(
                "SELECT size FROM parts WHERE asset_id = $1 AND number = $2",
            )
            .bind(asset_id)
            .bind(i64::from(number))
            .fetch_optional(&mut *tx)
            .await?
            .map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        };
        if expected == 0 {
            return Ok(PartRecord::Unknown);
        }
        if expected != size {
            return Ok(PartRecord::WrongSize { expected });
        }
        let superseded: Option<String> = sqlx::query_scalar(
            "SELECT stored_as FROM parts WHERE asset_id = $1 AND number = $2 AND stored_as IS NOT NULL",
        )
        .bind(asset_id)
        .bind(i64::from(number))
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO parts (asset_id, number, size, is_final, stored_as, received_at) VALUES ($1, $2, $3, 0, $4, $5)
             ON CONFLICT (asset_id, number) DO UPDATE SET stored_as = excluded.stored_as, received_at = excluded.received_at",
        )
        .bind(asset_id)
        .bind(i64::from(number))
        .bind(to_i64(size))
        .bind(stored_as)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let ready = is_ready(&mut tx, &asset).await?;
        if ready {
            sqlx::query(
                "UPDATE assets SET state = 'assembling' WHERE id = $1 AND state = 'uploading'",
            )
            .bind(asset_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PartRecord::Recorded { superseded, ready })
    }

    /// Real-time uploads can become ready when their sizes arrive after the bytes.
    pub async fn claim_if_ready(&self, asset_id: &str) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        lock_asset(&mut tx, asset_id).await?;
        let Some(asset) = fetch_asset(&mut tx, asset_id).await? else {
            return Ok(false);
        };
        if asset.state() != AssetState::Uploading || !is_ready(&mut tx, &asset).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE assets SET state = 'assembling' WHERE id = $1 AND state = 'uploading'")
            .bind(asset_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Assets whose parts are all in but whose bytes were not joined yet (after a crash).
    pub async fn assets_to_assemble(&self) -> DbResult<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM assets WHERE state = 'assembling' ORDER BY created_at")
            .fetch_all(self.pool())
            .await
    }

    /// Marks an assembled asset complete, moving it to `path` if its reserved one turned out
    /// to be taken on disk.
    pub async fn complete_asset(
        &self,
        asset_id: &str,
        path: &str,
        sha256: &str,
        filesize: u64,
    ) -> DbResult<()> {
        self.write(sqlx::query(
            "UPDATE assets SET state = 'complete', path = $1, sha256 = $2, filesize = $3, completed_at = $4
             WHERE id = $5 AND state = 'assembling'",
        )
        .bind(path)
        .bind(sha256)
        .bind(to_i64(filesize))
        .bind(now_ms())
        .bind(asset_id)
        )
        .await?;
        Ok(())
    }

    /// Reserves the next free name for an asset whose path is taken on disk by a file the
    /// database does not know (the operator's, say). Returns the new path.
    pub async fn reserve_next_path(&self, asset: &Asset) -> DbResult<String> {
        let mut tx = self.begin_write().await?;
        let folder = asset.path.rsplit_once('/').map_or("", |(f, _)| f);
        let name = AssetName::parse(&asset.name).map_err(sqlx::Error::Protocol)?;
        let current = asset
            .path
            .rsplit_once('/')
            .map_or(asset.path.as_str(), |(_, n)| n);
        let start = (1..10_000)
            .find(|&n| name.with_suffix(n) == current)
            .unwrap_or(1)
            + 1;
        let path = rename_from(&mut tx, asset, folder, &name, start).await?;
        tx.commit().await?;
        Ok(path)
    }

    /// The path of the device's unfinished planned asset of this file (same name, size,
    /// channel and folder), which a create would supersede (see
    /// [`Db::create_superseding`]). On SQLite it runs on the request's thread, as the other
    /// lookups every create makes do.
    pub async fn unfinished_twin(&self, new: &NewAsset, filesize: u64) -> DbResult<Option<String>> {
        let prefix = format!("{}/", new.folder);
        let prefix_len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        if let Some(inline) = &self.inline {
            return inline.query_row(
                UNFINISHED_TWINS,
                rusqlite::named_params! {
                    "$1": new.device_id, "$2": new.name.as_str(), "$3": to_i64(filesize),
                    "$4": new.project_id, "$5": new.channel, "$6": prefix_len, "$7": prefix,
                },
                |row| row.get::<_, String>(1),
            );
        }
        let found: Option<(String, String)> = sqlx::query_as(UNFINISHED_TWINS)
            .bind(&new.device_id)
            .bind(new.name.as_str())
            .bind(to_i64(filesize))
            .bind(&new.project_id)
            .bind(new.channel)
            .bind(prefix_len)
            .bind(prefix)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.map(|(_, path)| path))
    }

    /// Creates the planned asset `new` in the place of every unfinished asset of the same
    /// file (see [`Db::unfinished_twin`]): in one transaction it marks each superseded by
    /// compare-and-set, gives up its path, forgets its parts and hands its comments and
    /// markers (bound, or waiting for it) to the new asset, which then takes the first free
    /// name (the earlier one's, no ` (2)`). The lookup runs inside the transaction, so
    /// racing creates each supersede whatever is left (one asset stays uploading); with
    /// none left to supersede (their last part came first), `new` is created as any asset
    /// is. Returns the new asset and the ids it superseded. `abort_upload_at`: when the
    /// store's upload of a superseded asset (if it has one) may be aborted.
    pub async fn create_superseding(
        &self,
        new: &NewAsset,
        filesize: u64,
        abort_upload_at: Millis,
    ) -> DbResult<Superseding> {
        let now = now_ms();
        let row = AssetRow::new(new.clone());
        let prefix = format!("{}/", new.folder);
        let prefix_len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        // The repeated-create rule comes first, here too: a create racing the one it
        // repeats (the device retrying before the first answer came) found no asset when
        // it looked, but the first may be in by now.
        let retried: Option<Asset> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ASSET_COLUMNS} FROM assets a WHERE {RETRIED_CREATE}"
        )))
        .bind(&new.device_id)
        .bind(new.name.as_str())
        .bind(to_i64(filesize))
        .bind(new.recorded_at)
        .bind(RETRY_CLOCK_SLACK_MS)
        .bind(now - RETRY_WINDOW_MS)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(first) = retried.filter(|a| {
            a.channel == new.channel
                && a.path.starts_with(&prefix)
                && a.project_id == new.project_id
        }) {
            return Ok(Superseding::Retried(first));
        }
        let mut superseded = Vec::new();
        // PostgreSQL: a compare-and-set that lost to a racing create looks again (a few
        // times; what is left then is superseded by the next create of the file).
        for _ in 0..8 {
            let twins: Vec<(String, String)> = sqlx::query_as(UNFINISHED_TWINS)
                .bind(&new.device_id)
                .bind(new.name.as_str())
                .bind(to_i64(filesize))
                .bind(&new.project_id)
                .bind(new.channel)
                .bind(prefix_len)
                .bind(&prefix)
                .fetch_all(&mut *tx)
                .await?;
            let mut lost = false;
            for (old_id, _) in twins {
                // Markers waiting for the earlier asset are its own: bind them before it
                // stops counting as its channel's clip.
                super::comments::bind_waiting_markers(&mut tx, &old_id, row.id()).await?;
                let retired = sqlx::query(
                    "UPDATE assets SET state = 'superseded', path = $1, superseded_by = $2,
                                       next_check_at = NULL,
                                       abort_upload_at = CASE WHEN upload_id IS NULL THEN NULL ELSE $3 END
                     WHERE id = $4 AND state = 'uploading'",
                )
                .bind(retired_path(&old_id))
                .bind(row.id().to_owned())
                .bind(abort_upload_at)
                .bind(&old_id)
                .execute(&mut *tx)
                .await?;
                if retired.rows_affected() != 1 {
                    lost = true;
                    continue;
                }
                sqlx::query("DELETE FROM parts WHERE asset_id = $1")
                    .bind(&old_id)
                    .execute(&mut *tx)
                    .await?;
                superseded.push(old_id);
            }
            if !lost {
                break;
            }
        }
        let asset = insert_first_free(&mut tx, row, now).await?;
        // What the device said about the clip (comments, markers of the take being
        // recorded) belongs to the clip, which is now the new asset (comments name an
        // existing asset, so they move once it is in).
        for old_id in &superseded {
            move_notes(&mut tx, old_id, &asset.id).await?;
        }
        tx.commit().await?;
        Ok(Superseding::Created(asset, superseded))
    }

    /// Undoes [`Db::create_superseding`] when the new asset's store upload could not be
    /// started (the device gets 503 and retries): in one transaction the new asset goes and
    /// the assets it superseded are unfinished again, with their names back and their
    /// comments and markers. Their parts are learnt again from the store (S3 kept their
    /// uploads open: `next_check_at` lists them at once).
    pub async fn undo_superseding(&self, new_id: &str) -> DbResult<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let Some(new) = fetch_asset(&mut tx, new_id).await? else {
            return Ok(());
        };
        let folder = new.path.rsplit_once('/').map_or("", |(f, _)| f).to_owned();
        let restored: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM assets WHERE superseded_by = $1 AND state = 'superseded' ORDER BY created_at DESC",
        )
        .bind(new_id)
        .fetch_all(&mut *tx)
        .await?;
        // The newest earlier asset gets the notes back (the one the device last knew).
        if let Some(heir) = restored.first() {
            move_notes(&mut tx, new_id, heir).await?;
        }
        sqlx::query("DELETE FROM parts WHERE asset_id = $1")
            .bind(new_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM assets WHERE id = $1")
            .bind(new_id)
            .execute(&mut *tx)
            .await?;
        for id in &restored {
            sqlx::query(
                "UPDATE assets SET state = 'uploading', superseded_by = NULL, abort_upload_at = NULL,
                                   next_check_at = CASE WHEN upload_id IS NULL THEN NULL ELSE $1 END
                 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if let Some(old) = fetch_asset(&mut tx, id).await? {
                let name = AssetName::parse(&old.name).map_err(sqlx::Error::Protocol)?;
                rename_asset(&mut tx, &old, &folder, &name).await?;
            }
        }
        tx.commit().await
    }

    /// For a planned asset that got a ` (N)` name because a racing create of the same file
    /// (same device, name, size, channel, folder and recording time, nothing received yet)
    /// took the name first: the device is retrying a create whose answer has not arrived.
    /// Then this asset goes (its markers to the other) and the other, the one holding the
    /// lowest name, is the answer, so every racer answers with the same asset. `None`: no
    /// such twin, keep this one.
    pub async fn yield_to_racing_twin(&self, asset: &Asset) -> DbResult<Option<Asset>> {
        let (Some(filesize), false) = (asset.filesize, asset.is_realtime()) else {
            return Ok(None);
        };
        let folder = asset.path.rsplit_once('/').map_or("", |(f, _)| f);
        let prefix = format!("{folder}/");
        let mut tx = self.begin_write().await?;
        let twin: Option<Asset> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ASSET_COLUMNS} FROM assets a
             WHERE device_id = $1 AND project_id = $2 AND name = $3 AND filesize = $4
               AND channel = $5 AND substr(path, 1, CAST($6 AS INTEGER)) = $7
               AND realtime = 0 AND state = 'uploading' AND id <> $8
               AND recorded_at >= $9 AND recorded_at <= $10 AND created_at > $11
               AND (LENGTH(path) < LENGTH($12) OR (LENGTH(path) = LENGTH($12) AND path < $12))
               AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.asset_id = a.id AND p.received_at IS NOT NULL)
             ORDER BY LENGTH(path), path LIMIT 1"
        )))
        .bind(&asset.device_id)
        .bind(&asset.project_id)
        .bind(&asset.name)
        .bind(filesize)
        .bind(asset.channel)
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(prefix.clone())
        .bind(&asset.id)
        .bind(asset.recorded_at - RETRY_CLOCK_SLACK_MS)
        .bind(asset.recorded_at + RETRY_CLOCK_SLACK_MS)
        .bind(now_ms() - RETRY_WINDOW_MS)
        .bind(&asset.path)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(twin) = twin else {
            return Ok(None);
        };
        move_notes(&mut tx, &asset.id, &twin.id).await?;
        sqlx::query("DELETE FROM parts WHERE asset_id = $1")
            .bind(&asset.id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM assets WHERE id = $1 AND state = 'uploading'")
            .bind(&asset.id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() != 1 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(twin))
    }

    /// The complete clip of the same device, name and size in the same folder as `asset`
    /// (with this SHA-256, when given): what a clip sent again duplicates.
    pub async fn complete_twin(
        &self,
        asset: &Asset,
        sha256: Option<&str>,
    ) -> DbResult<Option<String>> {
        let Some(filesize) = asset.filesize else {
            return Ok(None);
        };
        let folder = asset.path.rsplit_once('/').map_or("", |(f, _)| f);
        let prefix = format!("{folder}/");
        // A NULL parameter has no type PostgreSQL can infer: the SHA-256 clause is left out
        // rather than bound as NULL.
        let sha_clause = if sha256.is_some() {
            "AND sha256 = $8"
        } else {
            ""
        };
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM assets
             WHERE device_id = $1 AND project_id = $2 AND name = $3 AND filesize = $4
               AND state = 'complete' AND id <> $5 AND substr(path, 1, CAST($6 AS INTEGER)) = $7 {sha_clause}
             ORDER BY completed_at LIMIT 1"
        )))
        .bind(&asset.device_id)
        .bind(&asset.project_id)
        .bind(&asset.name)
        .bind(filesize)
        .bind(&asset.id)
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX))
        .bind(prefix.clone());
        match sha256 {
            Some(sha) => query.bind(sha.to_owned()),
            None => query,
        }
        .fetch_optional(self.pool())
        .await
    }

    /// Records an assembled asset as a duplicate of the complete clip `original` (compare-
    /// and-set from `assembling`), giving up its path and handing its comments and markers
    /// to `original`. True if this call did it.
    pub async fn mark_duplicate(
        &self,
        asset_id: &str,
        original: &str,
        sha256: &str,
        filesize: u64,
    ) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        // Markers waiting for the duplicate are the clip's: bind them while it still counts.
        super::comments::bind_waiting_markers(&mut tx, asset_id, original).await?;
        let done = sqlx::query(
            "UPDATE assets SET state = 'duplicate', duplicate_of = $1, path = $2,
                               sha256 = $3, filesize = $4, completed_at = $5
             WHERE id = $6 AND state = 'assembling'",
        )
        .bind(original)
        .bind(retired_path(asset_id))
        .bind(sha256)
        .bind(to_i64(filesize))
        .bind(now_ms())
        .bind(asset_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        // What the device said about the clip sent again belongs to the clip people see.
        move_notes(&mut tx, asset_id, original).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Assets for `rushes asset list` (and the web UI): superseded uploads and duplicates of
    /// listed clips are not shown.
    pub async fn asset_listing(&self, project_id: Option<&str>) -> DbResult<Vec<AssetListing>> {
        let sql = "SELECT a.id, p.name AS project, a.path, a.filesize AS size, a.state, a.sha256,
                          d.name AS device, a.device_id, a.recorded_at, a.created_at,
                          a.verified_at, a.damage
                   FROM assets a JOIN projects p ON p.id = a.project_id JOIN devices d ON d.id = a.device_id
                   WHERE a.state NOT IN ('superseded', 'duplicate')";
        match project_id {
            Some(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{sql} AND a.project_id = $1 ORDER BY a.path"
                )))
                .bind(p)
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{sql} ORDER BY p.name, a.path"
                )))
                .fetch_all(self.pool())
                .await
            }
        }
    }
}

/// Takes the asset's row lock for the rest of the transaction. Transactions that count an
/// asset's parts must not interleave: under PostgreSQL's READ COMMITTED two racing last
/// parts would each miss the other's row and neither would claim the asset. An UPDATE
/// locks the row on PostgreSQL and takes the write lock on SQLite (`FOR UPDATE` is not
/// portable).
async fn lock_asset(tx: &mut Tx, id: &str) -> DbResult<()> {
    sqlx::query("UPDATE assets SET state = state WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn fetch_asset(tx: &mut Tx, id: &str) -> DbResult<Option<Asset>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ASSET_COLUMNS} FROM assets WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

/// Hands the comments and markers of asset `from` to asset `to` (the clip that takes its
/// place: a re-created asset, the original of a duplicate).
async fn move_notes(tx: &mut Tx, from: &str, to: &str) -> DbResult<()> {
    for table in ["comments", "markers"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET asset_id = $1 WHERE asset_id = $2"
        )))
        .bind(to)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts `row` under the first free name in its folder.
async fn insert_first_free(tx: &mut Tx, mut row: AssetRow, now: Millis) -> DbResult<Asset> {
    loop {
        let made = insert_statement(&[&row], now, InsertSql::Portable)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(asset) = made {
            return Ok(asset);
        }
        row.next_name();
    }
}

/// Whether every byte of the asset has arrived.
async fn is_ready(tx: &mut Tx, asset: &Asset) -> DbResult<bool> {
    let (received, missing, total, finals): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(received_at), COUNT(*) - COUNT(received_at), CAST(COALESCE(SUM(size), 0) AS BIGINT),
                COUNT(CASE WHEN is_final = 1 THEN 1 END)
         FROM parts WHERE asset_id = $1",
    )
    .bind(&asset.id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(match (asset.plan(), asset.filesize) {
        (Some(plan), _) => received == i64::from(plan.count),
        (None, Some(filesize)) => finals == 1 && missing == 0 && total == filesize,
        (None, None) => false,
    })
}

async fn rename_asset(
    tx: &mut Tx,
    asset: &Asset,
    folder: &str,
    name: &AssetName,
) -> DbResult<String> {
    rename_from(tx, asset, folder, name, 1).await
}

async fn rename_from(
    tx: &mut Tx,
    asset: &Asset,
    folder: &str,
    name: &AssetName,
    start: u32,
) -> DbResult<String> {
    for n in start..start + 10_000 {
        let path = format!("{folder}/{}", name.with_suffix(n));
        // Look before writing: a failed statement would abort a PostgreSQL transaction.
        let taken: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM assets WHERE project_id = $1 AND path = $2 AND id <> $3",
        )
        .bind(&asset.project_id)
        .bind(&path)
        .bind(&asset.id)
        .fetch_one(&mut **tx)
        .await?;
        if taken > 0 {
            continue;
        }
        sqlx::query("UPDATE assets SET name = $1, path = $2 WHERE id = $3")
            .bind(name.as_str())
            .bind(&path)
            .bind(&asset.id)
            .execute(&mut **tx)
            .await?;
        return Ok(path);
    }
    Err(sqlx::Error::Protocol("no free name in the folder".into()))
}

/// The path of an asset that gave its path up (superseded, duplicate): under a folder no
/// listed asset can have (every listed path starts with `Cloud Devices/`), unique by id.
fn retired_path(asset_id: &str) -> String {
    format!(".rushes-retired/{asset_id}")
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An asset on its way into the table: its id is fixed, its name's suffix moves on while
/// the name is taken.
pub(crate) struct AssetRow {
    new: NewAsset,
    id: String,
    /// 1 for `clip.mov`, 2 for `clip (2).mov`, ...
    suffix: u32,
}

impl AssetRow {
    pub(crate) fn new(new: NewAsset) -> AssetRow {
        AssetRow {
            new,
            id: new_id(),
            suffix: 1,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Moves on to the next name: `clip (2).mov` after `clip.mov`, and so on.
    pub(crate) fn next_name(&mut self) {
        self.suffix += 1;
    }
}

/// Most rows one `INSERT` carries: 15 parameters each, far below either engine's limit.
pub(crate) const MAX_ROWS_PER_INSERT: usize = 256;

/// How [`insert_statement`] writes its SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InsertSql {
    /// `$N` parameters, for either engine.
    Portable,
    /// For SQLite's writer ([`super::writer::Writer::fetch_and_commit`]): between the
    /// given opening and closing SQL, with `?` parameters. SQLite takes `$N` for a name:
    /// parsing looks each one up among those before it, and binding (sqlx asks each
    /// parameter's name) looks it up again, both quadratic in a many-row `INSERT`; `?`
    /// parameters are numbered and bound in order.
    Wrapped(&'static str, &'static str),
}

/// One `INSERT` of all `rows` that returns the assets it made: a row whose name is taken
/// makes none (try it again after [`AssetRow::next_name`]).
pub(crate) fn insert_statement(
    rows: &[&AssetRow],
    now: Millis,
    sql: InsertSql,
) -> sqlx::query::QueryAs<'static, sqlx::Any, Asset, sqlx::any::AnyArguments> {
    const COLUMNS: usize = 15;
    let (opening, closing) = match sql {
        InsertSql::Portable => ("", ""),
        InsertSql::Wrapped(opening, closing) => (opening, closing),
    };
    let mut text = format!(
        "{opening}INSERT INTO assets (id, project_id, device_id, name, path, filetype, filesize,
                                     channel, offset_secs, recorded_at, realtime, auto_version_id,
                                     part_size, part_count, created_at, state)
         VALUES "
    );
    for i in 0..rows.len() {
        text.push_str(if i == 0 { "(" } else { ", (" });
        for n in 1..=COLUMNS {
            match sql {
                // Writing to a String cannot fail.
                InsertSql::Portable => {
                    let _ = write!(text, "${}, ", i * COLUMNS + n);
                }
                InsertSql::Wrapped(..) => text.push_str("?, "),
            }
        }
        text.push_str("'uploading')");
    }
    let _ = write!(
        text,
        " ON CONFLICT (project_id, path) DO NOTHING RETURNING {ASSET_COLUMNS}{closing}"
    );
    // Statements of other sizes would push the ones the connection reuses out of its cache.
    let mut insert =
        sqlx::query_as::<_, Asset>(sqlx::AssertSqlSafe(text)).persistent(rows.len() == 1);
    for row in rows {
        let new = &row.new;
        let (part_size, part_count) = match new.plan {
            Some(p) => (Some(to_i64(p.part_size)), Some(i64::from(p.count))),
            None => (None, None),
        };
        insert = insert
            .bind(row.id.clone())
            .bind(new.project_id.clone())
            .bind(new.device_id.clone())
            .bind(new.name.as_str().to_owned())
            .bind(format!(
                "{}/{}",
                new.folder,
                new.name.with_suffix(row.suffix)
            ))
            .bind(new.filetype.clone())
            .bind(new.filesize.map(to_i64))
            .bind(new.channel)
            .bind(new.offset_secs)
            .bind(new.recorded_at)
            .bind(i64::from(new.plan.is_none()))
            .bind(new.auto_version_id.clone())
            .bind(part_size)
            .bind(part_count)
            .bind(now);
    }
    insert
}
