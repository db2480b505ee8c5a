//! Devices after pairing: presence, pausing, listing and unpairing, and the status feed's
//! view of them (what the status socket pushes: see `crate::status_feed`).

use super::{Db, DbResult, Tx, new_id};
use crate::clock::{Millis, now_ms};

/// A device counts as online while its last authenticated call is younger than this.
pub const ONLINE_WINDOW_MS: Millis = 5 * 60 * 1000;
/// `last_seen_at` is written at most this often per device, to keep reads read-only.
const TOUCH_GRANULARITY_MS: Millis = 10 * 1000;

/// A device as `GET /v2/devices/me` describes it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRecord {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub project_id: String,
    pub project_name: String,
    pub project_dir: String,
    pub client_version: String,
    pub last_seen_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub grant_created_at: i64,
    pub grant_expires_at: Option<i64>,
}

/// A device as the admin commands list it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeviceListing {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub model: String,
    pub client_version: String,
    pub project_id: Option<String>,
    pub project: Option<String>,
    pub last_seen_at: Option<i64>,
    pub paused: i64,
    #[sqlx(skip)]
    pub status: String,
}

impl DeviceListing {
    fn with_status(mut self, now: Millis) -> Self {
        self.status = status(
            self.project_id.is_some(),
            self.paused != 0,
            self.last_seen_at,
            now,
        )
        .to_owned();
        self
    }
}

/// `online`, `offline`, `paused` (or `unpaired` for the admin listing).
pub fn status(
    paired: bool,
    paused: bool,
    last_seen_at: Option<Millis>,
    now: Millis,
) -> &'static str {
    if !paired {
        "unpaired"
    } else if paused {
        "paused"
    } else if last_seen_at.is_some_and(|t| now - t < ONLINE_WINDOW_MS) {
        "online"
    } else {
        "offline"
    }
}

const LISTING: &str = "SELECT d.id, d.name, d.client_id, m.name AS model, d.client_version, d.project_id,
        p.name AS project, d.last_seen_at,
        (SELECT COUNT(*) FROM pause_windows w WHERE w.device_id = d.id AND w.channel IS NULL AND w.ended_at IS NULL) AS paused
     FROM devices d JOIN device_models m ON m.id = d.model_id LEFT JOIN projects p ON p.id = d.project_id";

/// What a device's status socket needs to know: paused or not, and which grant stands.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceStatus {
    pub device_id: String,
    /// The change number this state was stamped with (see [`bump_status`]).
    pub status_seq: i64,
    /// Open whole-device pause windows (0 or 1).
    paused: i64,
    /// The device's grant that has not been revoked, if any.
    pub grant_id: Option<String>,
}

impl DeviceStatus {
    pub fn paused(&self) -> bool {
        self.paused != 0
    }
}

const STATUS: &str = "SELECT d.id AS device_id, d.status_seq,
        (SELECT COUNT(*) FROM pause_windows w WHERE w.device_id = d.id AND w.channel IS NULL AND w.ended_at IS NULL) AS paused,
        (SELECT MAX(g.id) FROM grants g WHERE g.device_id = d.id AND g.revoked_at IS NULL) AS grant_id
     FROM devices d";

/// Most changes one poll of the status feed takes; the next poll takes the rest.
const STATUS_BATCH: i64 = 500;

/// Stamps a change of the device's pause or grant state with the next change number, in
/// the caller's transaction. The counter row stays locked until that transaction commits,
/// so stamps become visible in their order and a poll for "after N" never skips one.
pub(super) async fn bump_status(tx: &mut Tx, device_id: &str) -> DbResult<()> {
    let seq: i64 =
        sqlx::query_scalar("UPDATE device_status_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut **tx)
            .await?;
    sqlx::query("UPDATE devices SET status_seq = $1 WHERE id = $2")
        .bind(seq)
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Db {
    /// The highest change number stamped so far: where a new status feed starts.
    pub async fn status_seq(&self) -> DbResult<i64> {
        sqlx::query_scalar("SELECT seq FROM device_status_seq WHERE id = 1")
            .fetch_one(self.pool())
            .await
    }

    /// Devices whose pause or grant state changed after change number `after`, oldest
    /// change first, at most a batch.
    pub async fn status_changes(&self, after: i64) -> DbResult<Vec<DeviceStatus>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{STATUS} WHERE d.status_seq > $1 ORDER BY d.status_seq LIMIT {STATUS_BATCH}"
        )))
        .bind(after)
        .fetch_all(self.pool())
        .await
    }

    /// One device's current pause and grant state.
    pub async fn device_status(&self, device_id: &str) -> DbResult<Option<DeviceStatus>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{STATUS} WHERE d.id = $1")))
            .bind(device_id)
            .fetch_optional(self.pool())
            .await
    }

    /// Records that the device called the API (and with which firmware). Cheap when called
    /// on every request: it writes only when something changed or time moved on.
    pub async fn touch_device(
        &self,
        device_id: &str,
        client_version: &str,
        known: (&str, Option<Millis>),
    ) -> DbResult<()> {
        let now = now_ms();
        let (old_version, last_seen) = known;
        if old_version == client_version
            && last_seen.is_some_and(|t| now - t < TOUCH_GRANULARITY_MS)
        {
            return Ok(());
        }
        self.write(
            sqlx::query("UPDATE devices SET last_seen_at = $1, client_version = $2 WHERE id = $3")
                .bind(now)
                .bind(client_version)
                .bind(device_id),
        )
        .await?;
        Ok(())
    }

    pub async fn device_record(
        &self,
        device_id: &str,
        grant_id: &str,
    ) -> DbResult<Option<DeviceRecord>> {
        sqlx::query_as(
            "SELECT d.id, d.name, d.client_id, g.project_id, p.name AS project_name, p.dir AS project_dir, d.client_version,
                    d.last_seen_at, d.created_at, d.updated_at, g.created_at AS grant_created_at,
                    (SELECT MAX(COALESCE(t.refresh_expires_at, t.access_expires_at)) FROM token_pairs t
                     WHERE t.grant_id = g.id AND t.retired_at IS NULL) AS grant_expires_at
             FROM devices d JOIN grants g ON g.device_id = d.id JOIN projects p ON p.id = g.project_id
             WHERE d.id = $1 AND g.id = $2",
        )
        .bind(device_id)
        .bind(grant_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Channels with an open pause window (`None`: the whole device).
    pub async fn paused_channels(&self, device_id: &str) -> DbResult<Vec<Option<i64>>> {
        sqlx::query_scalar(
            "SELECT channel FROM pause_windows WHERE device_id = $1 AND ended_at IS NULL",
        )
        .bind(device_id)
        .fetch_all(self.pool())
        .await
    }

    /// Whether something recorded at `at` on `channel` falls inside a pause window.
    pub async fn was_paused_at(&self, device_id: &str, channel: i64, at: Millis) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pause_windows
             WHERE device_id = $1 AND (channel IS NULL OR channel = $2)
               AND started_at <= $3 AND (ended_at IS NULL OR ended_at > $3)",
        )
        .bind(device_id)
        .bind(channel)
        .bind(at)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    pub async fn devices(&self, project_id: Option<&str>) -> DbResult<Vec<DeviceListing>> {
        let now = now_ms();
        let rows: Vec<DeviceListing> = match project_id {
            Some(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "{LISTING} WHERE d.project_id = $1 ORDER BY d.name"
                )))
                .bind(p)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("{LISTING} ORDER BY d.name")))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        Ok(rows.into_iter().map(|d| d.with_status(now)).collect())
    }

    /// Devices whose id, client_id or name is `selector`.
    pub async fn find_devices(&self, selector: &str) -> DbResult<Vec<DeviceListing>> {
        let now = now_ms();
        let rows: Vec<DeviceListing> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{LISTING} WHERE d.id = $1 OR d.client_id = $1 OR d.name = $1 ORDER BY d.name"
        )))
        .bind(selector)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|d| d.with_status(now)).collect())
    }

    /// Opens a pause window (`channel` `None`: the whole device). Idempotent.
    pub async fn pause_device(&self, device_id: &str, channel: Option<i64>) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pause_windows WHERE device_id = $1 AND channel IS NOT DISTINCT FROM $2 AND ended_at IS NULL",
        )
        .bind(device_id)
        .bind(channel)
        .fetch_one(&mut *tx)
        .await?;
        if open == 0 {
            sqlx::query("INSERT INTO pause_windows (id, device_id, channel, started_at) VALUES ($1, $2, $3, $4)")
                .bind(new_id())
                .bind(device_id)
                .bind(channel)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            bump_status(&mut tx, device_id).await?;
        }
        tx.commit().await
    }

    /// Closes the open pause window, if any.
    pub async fn resume_device(&self, device_id: &str, channel: Option<i64>) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        let ended = sqlx::query(
            "UPDATE pause_windows SET ended_at = $1
             WHERE device_id = $2 AND channel IS NOT DISTINCT FROM $3 AND ended_at IS NULL",
        )
        .bind(now_ms())
        .bind(device_id)
        .bind(channel)
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() > 0 {
            bump_status(&mut tx, device_id).await?;
        }
        tx.commit().await
    }

    /// Revokes every grant of the device: its tokens stop working at once.
    pub async fn unpair_device(&self, device_id: &str) -> DbResult<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let grants: Vec<String> =
            sqlx::query_scalar("SELECT id FROM grants WHERE device_id = $1 AND revoked_at IS NULL")
                .bind(device_id)
                .fetch_all(&mut *tx)
                .await?;
        for grant in grants {
            super::tokens::revoke_grant(&mut tx, &grant, now).await?;
        }
        tx.commit().await
    }
}
