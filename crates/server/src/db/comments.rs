//! What devices say about their clips (c2c-api.md §5): comments (text, optionally at a
//! frame) and markers (real-time logging triggers with a timecode), and a clip's notes,
//! the two together for people to read.
//!
//! A marker is bound to the clip its channel is recording when it arrives. When the channel
//! records nothing at that moment, the marker waits, unbound, for the next clip the channel
//! creates within [`MARKER_WAIT_MS`]; that match is made when notes are read, so the asset
//! create (the hottest write) does no extra work for markers.

use super::{Db, DbResult, Tx, new_id};
use crate::clock::{Millis, now_ms};
use crate::domain::timecode::Rate;

/// How long an unbound marker waits for its channel's next clip.
pub const MARKER_WAIT_MS: Millis = 10 * 60 * 1000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommentRow {
    pub id: String,
    pub asset_id: String,
    pub device_id: String,
    pub body: String,
    pub frame: Option<i64>,
    pub created_at: i64,
}

/// One entry of a clip's notes, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
struct NoteRow {
    /// `comment` or `marker`.
    kind: String,
    id: String,
    body: String,
    frame: Option<i64>,
    timecode: Option<String>,
    rate_millis: Option<i64>,
    input_index: Option<i64>,
    author: String,
    created_at: i64,
}

/// One entry of a clip's notes as people read them (web clip page, `rushes asset comments`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClipNote {
    /// `comment` or `marker`.
    pub kind: &'static str,
    pub id: String,
    /// A comment's text; empty for a marker.
    pub text: String,
    /// A comment's frame number (from 0); `None` for a comment on the whole clip.
    pub frame: Option<i64>,
    /// A marker's timecode as the device sent it, or a comment's frame as a timecode at the
    /// clip's rate; `None` when there is no rate to convert with.
    pub timecode: Option<String>,
    /// Frames per second the timecode counts (`25`, `29.97`).
    pub rate: Option<String>,
    /// The input that triggered a marker.
    pub input: Option<i64>,
    /// The device that wrote it.
    pub author: String,
    pub created_at: i64,
}

/// A clip's notes in the order the server received them.
///
/// Not by place in the clip: a marker's timecode is the camera's SMPTE time (time of day or
/// record run, 01:00:00:00 and on), a comment's frame counts from the clip's start, and
/// Rushes knows neither the clip's start timecode nor, in general, its frame rate, so the
/// two cannot be put on one line. Arrival is an order both share, and for real-time logging
/// it is the order things happened. Each note shows what it carries: a marker its timecode
/// as sent; a comment its frame, and that frame as a timecode only when a rate is known
/// (the clip's first marker's, the device's own word for it).
fn timeline(mut rows: Vec<NoteRow>) -> Vec<ClipNote> {
    rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let clip_rate = rows
        .iter()
        .find_map(|r| r.rate_millis.and_then(Rate::from_millis));
    rows.into_iter()
        .map(|r| {
            let marker_rate = r.rate_millis.and_then(Rate::from_millis);
            let (timecode, rate) = match (r.timecode, r.frame) {
                (Some(tc), _) => (Some(tc), marker_rate),
                (None, Some(frame)) => match clip_rate {
                    Some(rate) => (Some(rate.timecode_of(frame)), Some(rate)),
                    None => (None, None),
                },
                (None, None) => (None, None),
            };
            ClipNote {
                kind: if r.kind == "marker" {
                    "marker"
                } else {
                    "comment"
                },
                id: r.id,
                text: r.body,
                frame: r.frame,
                timecode,
                rate: rate.map(Rate::display),
                input: r.input_index,
                author: r.author,
                created_at: r.created_at,
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct NewMarker<'a> {
    pub device_id: &'a str,
    pub channel: i64,
    pub input_index: i64,
    pub timecode: &'a str,
    pub rate_millis: i64,
}

impl Db {
    pub async fn add_comment(
        &self,
        asset_id: &str,
        device_id: &str,
        body: &str,
        frame: Option<i64>,
    ) -> DbResult<CommentRow> {
        let comment = CommentRow {
            id: new_id(),
            asset_id: asset_id.to_owned(),
            device_id: device_id.to_owned(),
            body: body.to_owned(),
            frame,
            created_at: now_ms(),
        };
        self.write(
            sqlx::query(
                "INSERT INTO comments (id, asset_id, device_id, body, frame, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&comment.id)
            .bind(&comment.asset_id)
            .bind(&comment.device_id)
            .bind(&comment.body)
            .bind(comment.frame)
            .bind(comment.created_at),
        )
        .await?;
        Ok(comment)
    }

    /// The clip in the place of `asset_id`, if `asset_id` is an asset `device_id` made in
    /// `project_id` (the only assets a device may comment on or be answered with): the
    /// asset itself, or, when it was superseded or is a duplicate, the clip that took its
    /// place (its comments were moved there, and so go new ones).
    pub async fn live_clip(
        &self,
        asset_id: &str,
        device_id: &str,
        project_id: &str,
    ) -> DbResult<Option<String>> {
        let mut id = asset_id.to_owned();
        // Each hop is a newer asset (or the original a duplicate names); a chain is short.
        for _ in 0..64 {
            let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT superseded_by, duplicate_of FROM assets
                 WHERE id = $1 AND device_id = $2 AND project_id = $3",
            )
            .bind(&id)
            .bind(device_id)
            .bind(project_id)
            .fetch_optional(self.pool())
            .await?;
            match row {
                None => return Ok(None),
                Some((Some(next), _) | (None, Some(next))) => id = next,
                Some((None, None)) => return Ok(Some(id)),
            }
        }
        Ok(Some(id))
    }

    /// Records a marker on the clip the channel is recording (its newest unfinished asset
    /// in the project), or unbound when there is none (see the module comment).
    pub async fn add_marker(&self, project_id: &str, marker: &NewMarker<'_>) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        let recording: Option<String> = sqlx::query_scalar(
            "SELECT id FROM assets
             WHERE device_id = $1 AND channel = $2 AND project_id = $3 AND state = 'uploading'
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(marker.device_id)
        .bind(marker.channel)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO markers (id, device_id, channel, input_index, asset_id, timecode,
                                  rate_millis, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(marker.device_id)
        .bind(marker.channel)
        .bind(marker.input_index)
        .bind(recording)
        .bind(marker.timecode)
        .bind(marker.rate_millis)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// A clip's comments and markers in the order they arrived (`None`: no such clip).
    pub async fn clip_notes(&self, asset_id: &str) -> DbResult<Option<Vec<ClipNote>>> {
        let asset: Option<(String, i64, i64)> =
            sqlx::query_as("SELECT device_id, channel, created_at FROM assets WHERE id = $1")
                .bind(asset_id)
                .fetch_optional(self.pool())
                .await?;
        let Some((device_id, channel, created_at)) = asset else {
            return Ok(None);
        };
        let mut notes: Vec<NoteRow> = sqlx::query_as(
            "SELECT 'comment' AS kind, c.id, c.body, c.frame, CAST(NULL AS TEXT) AS timecode,
                    CAST(NULL AS BIGINT) AS rate_millis, CAST(NULL AS BIGINT) AS input_index, d.name AS author, c.created_at
             FROM comments c JOIN devices d ON d.id = c.device_id
             WHERE c.asset_id = $1",
        )
        .bind(asset_id)
        .fetch_all(self.pool())
        .await?;
        // Bound to this clip, or waiting for it: unbound, from its channel, at most
        // MARKER_WAIT_MS before it was created, with no clip of the channel created between
        // (a superseded asset or a duplicate is no clip: it handed its markers on).
        let markers: Vec<NoteRow> = sqlx::query_as(
            "SELECT 'marker' AS kind, m.id, '' AS body, CAST(NULL AS BIGINT) AS frame, m.timecode, m.rate_millis,
                    m.input_index, d.name AS author, m.created_at
             FROM markers m JOIN devices d ON d.id = m.device_id
             WHERE m.asset_id = $1
                OR (m.asset_id IS NULL AND m.device_id = $2 AND m.channel = $3
                    AND m.created_at <= $4 AND m.created_at >= $5
                    AND NOT EXISTS (
                        SELECT 1 FROM assets b
                        WHERE b.device_id = $2 AND b.channel = $3 AND b.created_at >= m.created_at
                          AND b.state NOT IN ('superseded', 'duplicate')
                          AND (b.created_at < $4 OR (b.created_at = $4 AND b.id < $1))))",
        )
        .bind(asset_id)
        .bind(&device_id)
        .bind(channel)
        .bind(created_at)
        .bind(created_at - MARKER_WAIT_MS)
        .fetch_all(self.pool())
        .await?;
        notes.extend(markers);
        Ok(Some(timeline(notes)))
    }
}

/// Binds to `target` the unbound markers that wait for asset `anchor` (the rule of
/// [`Db::clip_notes`]), before `anchor` stops being a clip of its own (superseded by
/// `target`, or a duplicate of it): otherwise they would wait for the wrong clip.
pub(super) async fn bind_waiting_markers(tx: &mut Tx, anchor: &str, target: &str) -> DbResult<()> {
    let asset: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT device_id, channel, created_at FROM assets WHERE id = $1")
            .bind(anchor)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((device_id, channel, created_at)) = asset else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE markers SET asset_id = $1
         WHERE asset_id IS NULL AND device_id = $2 AND channel = $3
           AND created_at <= $4 AND created_at >= $5
           AND NOT EXISTS (
               SELECT 1 FROM assets b
               WHERE b.device_id = $2 AND b.channel = $3 AND b.created_at >= markers.created_at
                 AND b.state NOT IN ('superseded', 'duplicate')
                 AND (b.created_at < $4 OR (b.created_at = $4 AND b.id < $6)))",
    )
    .bind(target)
    .bind(&device_id)
    .bind(channel)
    .bind(created_at)
    .bind(created_at - MARKER_WAIT_MS)
    .bind(anchor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(id: &str, frame: Option<i64>, at: i64) -> NoteRow {
        NoteRow {
            kind: "comment".into(),
            id: id.into(),
            body: id.into(),
            frame,
            timecode: None,
            rate_millis: None,
            input_index: None,
            author: "cam".into(),
            created_at: at,
        }
    }

    fn marker(id: &str, timecode: &str, rate_millis: i64, at: i64) -> NoteRow {
        NoteRow {
            kind: "marker".into(),
            id: id.into(),
            body: String::new(),
            frame: None,
            timecode: Some(timecode.into()),
            rate_millis: Some(rate_millis),
            input_index: Some(1),
            author: "cam".into(),
            created_at: at,
        }
    }

    #[test]
    fn notes_come_in_the_order_they_arrived_whatever_they_carry() {
        // A marker's record-run timecode (an hour in) and comments' frames from 0 are on
        // no common line: arrival orders them.
        let notes = timeline(vec![
            comment("late", Some(250), 4),
            marker("m", "01:00:05:00", 25_000, 2),
            comment("whole", None, 3),
            comment("early", Some(25), 1),
        ]);
        let order: Vec<&str> = notes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(order, ["early", "m", "whole", "late"]);
        // The marker's timecode as sent; comments' frames at the marker's rate.
        assert_eq!(notes[1].timecode.as_deref(), Some("01:00:05:00"));
        assert_eq!(notes[1].rate.as_deref(), Some("25"));
        assert_eq!(notes[0].timecode.as_deref(), Some("00:00:01:00"));
        assert_eq!(notes[3].timecode.as_deref(), Some("00:00:10:00"));
        assert_eq!(notes[2].timecode, None);
    }

    #[test]
    fn without_a_rate_comments_stay_frames() {
        let notes = timeline(vec![comment("b", Some(9), 1), comment("a", Some(3), 2)]);
        assert_eq!(notes[0].id, "b");
        assert_eq!(notes[1].timecode, None);
        assert_eq!(notes[1].frame, Some(3));
    }
}
