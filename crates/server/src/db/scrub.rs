//! What scrubbing needs of the metadata store: the complete clips to re-read, a lease so
//! that of several servers exactly one re-reads a clip that is due, and each re-read's
//! result (when, and the damage found, if any).
//!
//! Duplicates and superseded assets are never listed: they have no bytes of their own.

use super::{Db, DbResult};
use crate::clock::Millis;
use crate::media::RemoteUpload;

/// A complete clip as recorded: where its bytes are and what they must be.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScrubClip {
    pub id: String,
    /// The project's name, to name the clip to people.
    pub project: String,
    /// The project's folder in the media store.
    pub project_dir: String,
    pub path: String,
    pub filesize: i64,
    pub sha256: String,
    object_key: Option<String>,
    upload_id: Option<String>,
    /// When it was last re-read, or completed if never.
    pub verified_or_completed_at: i64,
}

impl ScrubClip {
    /// The store's own upload the clip was joined from (S3), which names its key.
    pub fn remote_upload(&self) -> Option<RemoteUpload> {
        Some(RemoteUpload {
            key: self.object_key.clone()?,
            upload_id: self.upload_id.clone()?,
        })
    }
}

const CLIP_COLUMNS: &str = "a.id, p.name AS project, p.dir AS project_dir, a.path,
     a.filesize, a.sha256, a.object_key, a.upload_id,
     COALESCE(a.verified_at, a.completed_at, a.created_at) AS verified_or_completed_at";

impl Db {
    /// Every complete clip, by project and path; only `project_id`'s, and only those
    /// completed at or after `since`, when given.
    pub async fn clips_to_scrub(
        &self,
        project_id: Option<&str>,
        since: Option<Millis>,
    ) -> DbResult<Vec<ScrubClip>> {
        let project = if project_id.is_some() {
            "AND a.project_id = $2"
        } else {
            ""
        };
        let query = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CLIP_COLUMNS} FROM assets a JOIN projects p ON p.id = a.project_id
             WHERE a.state = 'complete' AND a.sha256 IS NOT NULL AND a.filesize IS NOT NULL
               AND COALESCE(a.completed_at, a.created_at) >= $1 {project}
             ORDER BY p.name, a.path"
        )))
        .bind(since.unwrap_or(i64::MIN));
        match project_id {
            Some(id) => query.bind(id).fetch_all(self.pool()).await,
            None => query.fetch_all(self.pool()).await,
        }
    }

    /// Takes the clip whose last re-read (or completion) is oldest and before
    /// `due_before`, leasing it to this server until `lease_until`; `None` when no clip is
    /// due or free. Of servers racing for one clip, exactly one gets it.
    pub async fn claim_scrub(
        &self,
        now: Millis,
        due_before: Millis,
        lease_until: Millis,
    ) -> DbResult<Option<ScrubClip>> {
        for _ in 0..3 {
            let due: Option<(ScrubClip, Option<i64>)> =
                sqlx::query_as::<_, ScrubClipLease>(sqlx::AssertSqlSafe(format!(
                    "SELECT {CLIP_COLUMNS}, a.scrub_lease_until FROM assets a
                     JOIN projects p ON p.id = a.project_id
                     WHERE a.state = 'complete' AND a.sha256 IS NOT NULL AND a.filesize IS NOT NULL
                       AND COALESCE(a.verified_at, a.completed_at, a.created_at) < $1
                       AND COALESCE(a.scrub_lease_until, 0) < $2
                     ORDER BY COALESCE(a.verified_at, a.completed_at, a.created_at), a.id
                     LIMIT 1"
                )))
                .bind(due_before)
                .bind(now)
                .fetch_optional(self.pool())
                .await?
                .map(|row| (row.clip, row.scrub_lease_until));
            let Some((clip, seen)) = due else {
                return Ok(None);
            };
            let taken = self
                .write(
                    sqlx::query(
                        "UPDATE assets SET scrub_lease_until = $1
                         WHERE id = $2 AND state = 'complete'
                           AND COALESCE(scrub_lease_until, 0) = $3",
                    )
                    .bind(lease_until)
                    .bind(&clip.id)
                    .bind(seen.unwrap_or(0)),
                )
                .await?;
            if taken.rows_affected() == 1 {
                return Ok(Some(clip));
            }
        }
        Ok(None)
    }

    /// Records a re-read of the clip at `now`: `damage` says what was wrong, `None` that
    /// its bytes match the record. The first time damage was seen is kept; a clip found
    /// intact again (an operator restored it) loses its damage. The lease ends.
    pub async fn record_verification(
        &self,
        asset_id: &str,
        now: Millis,
        damage: Option<&str>,
    ) -> DbResult<()> {
        let sql = if damage.is_some() {
            "UPDATE assets SET verified_at = $1, damaged_at = COALESCE(damaged_at, $1),
                               damage = $2, scrub_lease_until = NULL
             WHERE id = $3"
        } else {
            "UPDATE assets SET verified_at = $1, damaged_at = NULL, damage = $2,
                               scrub_lease_until = NULL
             WHERE id = $3"
        };
        self.write(
            sqlx::query(sql)
                .bind(now)
                .bind(damage.map(str::to_owned))
                .bind(asset_id),
        )
        .await?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct ScrubClipLease {
    #[sqlx(flatten)]
    clip: ScrubClip,
    scrub_lease_until: Option<i64>,
}
