//! A device's channels (c2c-api.md §5): the data sources beyond channel 0 that a device
//! registers, disconnects, and that uploads, pauses and markers name by index.
//!
//! Channel 0 has no row: every paired device has it, so it is described from the device
//! (its id is the device's id). Other channels get the next free index at creation.

use super::{Db, DbResult, is_unique_violation, new_id};
use crate::clock::now_ms;
use crate::domain::MediaType;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    pub id: String,
    pub device_id: String,
    pub client_id: String,
    pub external_index: i64,
    pub name: String,
    pub asset_type: Option<String>,
    pub real_time_logging_capable: i64,
    pub disconnected_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a device asks for in `POST /v2/devices/channels`.
#[derive(Debug, Clone)]
pub struct NewChannel {
    pub client_id: String,
    pub device_model_id: String,
    pub name: Option<String>,
    pub asset_type: Option<MediaType>,
    pub real_time_logging_capable: bool,
}

#[derive(Debug)]
pub enum ChannelCreated {
    Created(ChannelRow),
    /// A disconnected channel with that `client_id` came back: same id and index.
    Reconnected(ChannelRow),
    /// Connected already (409 "Device channel already exists").
    Exists,
    /// The device has used every channel index.
    Full,
}

const COLUMNS: &str = "id, device_id, client_id, external_index, name, asset_type,
     real_time_logging_capable, disconnected_at, created_at, updated_at";

/// The highest channel index: what a device may register, and name in an asset create, a
/// pause or a marker.
pub const MAX_CHANNEL: i64 = 1024;

impl Db {
    pub async fn create_channel(
        &self,
        device_id: &str,
        new: &NewChannel,
    ) -> DbResult<ChannelCreated> {
        // Two racing creates may pick the same index; the unique index refuses one, which
        // then tries again with the next.
        for _ in 0..5 {
            match self.try_create_channel(device_id, new).await {
                Err(e) if is_unique_violation(&e) => continue,
                other => return other,
            }
        }
        Err(sqlx::Error::Protocol("no free channel index".into()))
    }

    async fn try_create_channel(
        &self,
        device_id: &str,
        new: &NewChannel,
    ) -> DbResult<ChannelCreated> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let existing: Option<ChannelRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM channels WHERE device_id = $1 AND client_id = $2"
        )))
        .bind(device_id)
        .bind(&new.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(channel) = existing {
            if channel.disconnected_at.is_none() {
                return Ok(ChannelCreated::Exists);
            }
            let back: ChannelRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE channels SET disconnected_at = NULL, updated_at = $1 WHERE id = $2
                 RETURNING {COLUMNS}"
            )))
            .bind(now)
            .bind(&channel.id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(ChannelCreated::Reconnected(back));
        }
        // The lowest index no connected channel holds. A device may register a fresh
        // `client_id` each time it starts, so indexes of disconnected channels are taken
        // again (their rows go: the index is what assets, pauses and markers name, and a
        // `client_id` coming back later simply gets a free index of its own).
        let connected: Vec<i64> = sqlx::query_scalar(
            "SELECT external_index FROM channels WHERE device_id = $1 AND disconnected_at IS NULL
             ORDER BY external_index",
        )
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        let Some(index) = lowest_free(&connected) else {
            return Ok(ChannelCreated::Full);
        };
        sqlx::query(
            "DELETE FROM channels WHERE device_id = $1 AND external_index = $2
               AND disconnected_at IS NOT NULL",
        )
        .bind(device_id)
        .bind(index)
        .execute(&mut *tx)
        .await?;
        let channel = ChannelRow {
            id: new_id(),
            device_id: device_id.to_owned(),
            client_id: new.client_id.clone(),
            external_index: index,
            name: new
                .name
                .clone()
                .unwrap_or_else(|| format!("Channel {index}")),
            asset_type: new.asset_type.map(|t| t.api_name().to_owned()),
            real_time_logging_capable: i64::from(new.real_time_logging_capable),
            disconnected_at: None,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(
            "INSERT INTO channels (id, device_id, client_id, device_model_id, external_index, name,
                                   asset_type, real_time_logging_capable, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&channel.id)
        .bind(device_id)
        .bind(&channel.client_id)
        .bind(&new.device_model_id)
        .bind(channel.external_index)
        .bind(&channel.name)
        .bind(channel.asset_type.as_deref())
        .bind(channel.real_time_logging_capable)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChannelCreated::Created(channel))
    }

    /// The device's registered channels, connected or not, by index (channel 0 not included).
    pub async fn device_channels(&self, device_id: &str) -> DbResult<Vec<ChannelRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM channels WHERE device_id = $1 ORDER BY external_index"
        )))
        .bind(device_id)
        .fetch_all(self.pool())
        .await
    }

    /// The registered channels of every device paired with `project_id`.
    pub async fn project_channels(&self, project_id: &str) -> DbResult<Vec<ChannelRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM channels
             WHERE device_id IN (SELECT id FROM devices WHERE project_id = $1)
             ORDER BY device_id, external_index"
        )))
        .bind(project_id)
        .fetch_all(self.pool())
        .await
    }

    /// Open pause windows of the devices paired with `project_id`: (device, channel),
    /// channel `None` for the whole device.
    pub async fn project_pauses(&self, project_id: &str) -> DbResult<Vec<(String, Option<i64>)>> {
        sqlx::query_as(
            "SELECT device_id, channel FROM pause_windows
             WHERE ended_at IS NULL AND device_id IN (SELECT id FROM devices WHERE project_id = $1)",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await
    }

    /// The index of the device's connected channel `channel_id` (the device's own id is
    /// channel 0); `None` if it is not one of the device's, or is disconnected.
    pub async fn channel_index(&self, device_id: &str, channel_id: &str) -> DbResult<Option<i64>> {
        if channel_id == device_id {
            return Ok(Some(0));
        }
        sqlx::query_scalar(
            "SELECT external_index FROM channels
             WHERE id = $1 AND device_id = $2 AND disconnected_at IS NULL",
        )
        .bind(channel_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Disconnects one channel; `false` if it is not the device's. Channel 0 stays.
    pub async fn disconnect_channel(&self, device_id: &str, channel_id: &str) -> DbResult<bool> {
        if channel_id == device_id {
            return Ok(true);
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let found: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT disconnected_at FROM channels WHERE id = $1 AND device_id = $2",
        )
        .bind(channel_id)
        .bind(device_id)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE channels SET disconnected_at = $1, updated_at = $1
             WHERE id = $2 AND disconnected_at IS NULL",
        )
        .bind(now)
        .bind(channel_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Disconnects every channel of the device but channel 0.
    pub async fn disconnect_channels(&self, device_id: &str) -> DbResult<()> {
        self.write(
            sqlx::query(
                "UPDATE channels SET disconnected_at = $1, updated_at = $1
                 WHERE device_id = $2 AND disconnected_at IS NULL",
            )
            .bind(now_ms())
            .bind(device_id),
        )
        .await?;
        Ok(())
    }

    /// The media type channel `index` of the device sets for its assets, if it sets one.
    /// Channel 0 never does, and costs no query (the create route's common case).
    pub async fn channel_media_type(
        &self,
        device_id: &str,
        index: i64,
    ) -> DbResult<Option<MediaType>> {
        if index == 0 {
            return Ok(None);
        }
        let kind: Option<Option<String>> = sqlx::query_scalar(
            "SELECT asset_type FROM channels WHERE device_id = $1 AND external_index = $2",
        )
        .bind(device_id)
        .bind(index)
        .fetch_optional(self.pool())
        .await?;
        Ok(kind.flatten().as_deref().and_then(media_type))
    }
}

/// The lowest index from 1 to [`MAX_CHANNEL`] not in `taken` (sorted ascending).
fn lowest_free(taken: &[i64]) -> Option<i64> {
    let mut next = 1;
    for &index in taken {
        if index > next {
            break;
        }
        if index == next {
            next += 1;
        }
    }
    (next <= MAX_CHANNEL).then_some(next)
}

/// A channel's `asset_type` as the API names it (`video`, `audio`, `data`).
pub fn media_type(api_name: &str) -> Option<MediaType> {
    [MediaType::Video, MediaType::Audio, MediaType::Data]
        .into_iter()
        .find(|t| t.api_name().eq_ignore_ascii_case(api_name.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_index_no_connected_channel_holds_is_taken() {
        assert_eq!(lowest_free(&[]), Some(1));
        assert_eq!(lowest_free(&[1, 2, 4]), Some(3));
        assert_eq!(lowest_free(&[2, 3]), Some(1));
        let all: Vec<i64> = (1..=MAX_CHANNEL).collect();
        assert_eq!(lowest_free(&all), None);
        assert_eq!(lowest_free(&all[1..]), Some(1));
    }
}
