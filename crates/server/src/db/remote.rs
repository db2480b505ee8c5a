//! Bookkeeping for uploads held by the media store itself (S3 multipart uploads): which
//! server lists whose parts when, and which uploads were abandoned.
//!
//! Every server process runs the same watcher; a compare-and-set on `next_check_at` hands
//! each due check to exactly one of them, so no in-process state is needed to share the
//! work, and a server that dies mid-check only delays that upload by the lease.

use super::{Db, DbResult};
use crate::clock::Millis;
use crate::media::RemoteUpload;

/// First pause between two listings of an upload; it doubles while nothing arrives.
pub const FIRST_CHECK_PAUSE_MS: i64 = 1_000;

impl Db {
    /// Records the store's upload for a new asset; its first check is due shortly.
    pub async fn set_remote_upload(
        &self,
        asset_id: &str,
        upload: &RemoteUpload,
        now: Millis,
    ) -> DbResult<()> {
        self.write(
            sqlx::query(
                "UPDATE assets SET object_key = $1, upload_id = $2, next_check_at = $3,
                               check_pause_ms = $4, active_at = $5
             WHERE id = $6",
            )
            .bind(&upload.key)
            .bind(&upload.upload_id)
            .bind(now + FIRST_CHECK_PAUSE_MS)
            .bind(FIRST_CHECK_PAUSE_MS)
            .bind(now)
            .bind(asset_id),
        )
        .await?;
        Ok(())
    }

    /// Whether another asset's upload already uses `key`: a real-time asset renamed after
    /// its upload started keeps its first key, which no other asset may take. A superseded
    /// asset's upload never completes, so its key is free for the asset that took its place
    /// (two multipart uploads of one key are independent until one completes).
    pub async fn object_key_taken(&self, key: &str, asset_id: &str) -> DbResult<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM assets WHERE object_key = $1 AND id <> $2 AND state <> 'superseded'")
                .bind(key)
                .bind(asset_id)
                .fetch_one(self.pool())
                .await?;
        Ok(n > 0)
    }

    /// Forgets an asset whose upload could not be started (nothing was sent to it yet).
    pub async fn discard_new_asset(&self, asset_id: &str) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM parts WHERE asset_id = $1")
            .bind(asset_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM assets WHERE id = $1 AND state = 'uploading'")
            .bind(asset_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Uploads whose next listing is due, most overdue first.
    pub async fn due_checks(&self, now: Millis, limit: i64) -> DbResult<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT id, next_check_at FROM assets
             WHERE next_check_at <= $1 AND state = 'uploading'
             ORDER BY next_check_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Takes a due check for this process: true for exactly one of the servers that try
    /// with the `seen` due time. The check is leased until `lease_until`; if this process
    /// dies, another takes it then.
    pub async fn claim_check(
        &self,
        asset_id: &str,
        seen: i64,
        lease_until: Millis,
    ) -> DbResult<bool> {
        let done = self
            .write(
                sqlx::query(
                    "UPDATE assets SET next_check_at = $1
             WHERE id = $2 AND next_check_at = $3 AND state = 'uploading'",
                )
                .bind(lease_until)
                .bind(asset_id)
                .bind(seen),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Schedules the next listing: soon after progress, later and later while nothing
    /// arrives (at most `max_pause_ms` apart).
    pub async fn schedule_check(
        &self,
        asset_id: &str,
        progressed: bool,
        now: Millis,
        max_pause_ms: i64,
    ) -> DbResult<()> {
        let pause: Option<i64> =
            sqlx::query_scalar("SELECT check_pause_ms FROM assets WHERE id = $1")
                .bind(asset_id)
                .fetch_optional(self.pool())
                .await?
                .flatten();
        let pause = if progressed {
            FIRST_CHECK_PAUSE_MS
        } else {
            pause
                .unwrap_or(FIRST_CHECK_PAUSE_MS)
                .saturating_mul(2)
                .clamp(FIRST_CHECK_PAUSE_MS, max_pause_ms.max(FIRST_CHECK_PAUSE_MS))
        };
        let sql = if progressed {
            "UPDATE assets SET next_check_at = $1, check_pause_ms = $2, active_at = $3 WHERE id = $4 AND state = 'uploading'"
        } else {
            "UPDATE assets SET next_check_at = $1, check_pause_ms = $2, active_at = COALESCE(active_at, $3) WHERE id = $4 AND state = 'uploading'"
        };
        self.write(
            sqlx::query(sql)
                .bind(now + pause)
                .bind(pause)
                .bind(now)
                .bind(asset_id),
        )
        .await?;
        Ok(())
    }

    /// Makes an upload's next check due at once (a device just asked about it).
    pub async fn check_soon(&self, asset_id: &str, now: Millis) -> DbResult<()> {
        self.write(sqlx::query(
            "UPDATE assets SET next_check_at = $1, check_pause_ms = $2
             WHERE id = $3 AND state = 'uploading' AND upload_id IS NOT NULL AND next_check_at > $1",
        )
        .bind(now)
        .bind(FIRST_CHECK_PAUSE_MS)
        .bind(asset_id)
        )
        .await?;
        Ok(())
    }

    /// Uploads in the store that saw no new part since `cutoff`.
    pub async fn idle_remote_uploads(&self, cutoff: Millis) -> DbResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM assets
             WHERE state = 'uploading' AND upload_id IS NOT NULL AND active_at < $1",
        )
        .bind(cutoff)
        .fetch_all(self.pool())
        .await
    }

    /// Marks an idle upload abandoned; true for the one caller that did it (who must then
    /// abort the store's upload).
    pub async fn mark_abandoned(&self, asset_id: &str, cutoff: Millis) -> DbResult<bool> {
        let done = self
            .write(
                sqlx::query(
                    "UPDATE assets SET state = 'abandoned', next_check_at = NULL
             WHERE id = $1 AND state = 'uploading' AND active_at < $2",
                )
                .bind(asset_id)
                .bind(cutoff),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Superseded assets whose store upload may now be aborted (every URL handed out for
    /// it has expired): id and upload.
    pub async fn superseded_uploads_due(
        &self,
        now: Millis,
    ) -> DbResult<Vec<(String, RemoteUpload)>> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT id, object_key, upload_id FROM assets
             WHERE abort_upload_at <= $1 AND state = 'superseded' ORDER BY abort_upload_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, key, upload_id)| {
                Some((
                    id,
                    RemoteUpload {
                        key: key?,
                        upload_id: upload_id?,
                    },
                ))
            })
            .collect())
    }

    /// The store's upload of a superseded asset was aborted: nothing is left to do for it.
    pub async fn superseded_upload_aborted(&self, asset_id: &str) -> DbResult<()> {
        self.write(
            sqlx::query(
                "UPDATE assets SET abort_upload_at = NULL WHERE id = $1 AND state = 'superseded'",
            )
            .bind(asset_id),
        )
        .await?;
        Ok(())
    }

    /// Duplicates whose object (completed under their own key before the duplicate was
    /// known) is still in the store, after a crash between recording and deleting it.
    pub async fn duplicate_objects(&self) -> DbResult<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT id, object_key FROM assets WHERE state = 'duplicate' AND object_key IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await
    }

    /// A duplicate's object was deleted: its key is free again.
    pub async fn forget_object(&self, asset_id: &str) -> DbResult<()> {
        self.write(
            sqlx::query(
                "UPDATE assets SET object_key = NULL, upload_id = NULL WHERE id = $1 AND state = 'duplicate'",
            )
            .bind(asset_id),
        )
        .await?;
        Ok(())
    }
}
