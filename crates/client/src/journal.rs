//! The durable upload queue (`queue.db` in the state directory, SQLite).
//!
//! A file's row records its asset as soon as the server created it and each part as soon
//! as the server acknowledged it, each in its own committed transaction, so a client that
//! is killed (or loses power) resumes from the last acknowledged part, never re-creating
//! the asset and never re-sending what the server has.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::Error;
use crate::events::FileState;

#[derive(Clone)]
pub(crate) struct Journal {
    pool: SqlitePool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct FileRow {
    pub id: i64,
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub asset_id: Option<String>,
    pub part_count: Option<i64>,
}

impl FileRow {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.path)
    }
}

/// Counts of files by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    pub queued: u64,
    pub uploading: u64,
    pub complete: u64,
    pub failed: u64,
    pub paused_rejected: u64,
}

/// A file to queue: where it is and what it looked like when queued.
pub struct NewFile<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What [`Journal::enqueue`] did.
pub(crate) enum Queueing {
    New,
    /// The same path, size and mtime finished uploading before.
    AlreadyUploaded,
    /// Already queued or uploading.
    Pending,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const FILE_COLUMNS: &str = "id, path, size, mtime_ns, asset_id, part_count";

impl Journal {
    pub async fn open(state_dir: &Path) -> Result<Journal, Error> {
        std::fs::create_dir_all(state_dir)?;
        let options = SqliteConnectOptions::from_str("sqlite://queue.db")?
            .filename(state_dir.join("queue.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged part must survive power loss.
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| Error::Journal(e.into()))?;
        Ok(Journal { pool })
    }

    /// Queues files unless the same path, size and mtime is queued or uploaded already; a
    /// file that failed or was refused before is queued again. One transaction (one
    /// `fsync`) for the whole list: a card of a thousand stills used to spend seconds
    /// queueing before its first byte was sent.
    pub async fn enqueue(&self, files: &[NewFile<'_>]) -> Result<Vec<Queueing>, Error> {
        // IMMEDIATE: takes the write lock before reading, so a concurrent upload's write
        // cannot invalidate this transaction's snapshot halfway.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut outcomes = Vec::with_capacity(files.len());
        for file in files {
            let path = file.path.to_string_lossy();
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT state FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
            )
            .bind(path.as_ref())
            .bind(file.size as i64)
            .bind(file.mtime_ns)
            .fetch_optional(&mut *tx)
            .await?;
            let outcome = match existing.as_deref().map(FileState::parse) {
                Some(FileState::Complete) => Queueing::AlreadyUploaded,
                Some(FileState::Queued | FileState::Uploading) => Queueing::Pending,
                Some(FileState::Failed | FileState::PausedRejected) => {
                    sqlx::query(
                        "UPDATE files SET state = 'queued', error = NULL, asset_id = NULL, part_count = NULL,
                                part_size = NULL, realtime = 0
                         WHERE path = ? AND size = ? AND mtime_ns = ?",
                    )
                    .bind(path.as_ref())
                    .bind(file.size as i64)
                    .bind(file.mtime_ns)
                    .execute(&mut *tx)
                    .await?;
                    Queueing::New
                }
                None => {
                    sqlx::query("INSERT INTO files (path, size, mtime_ns, state, queued_at) VALUES (?, ?, ?, 'queued', ?)")
                        .bind(path.as_ref())
                        .bind(file.size as i64)
                        .bind(file.mtime_ns)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await?;
                    Queueing::New
                }
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Starts a real-time upload of a file that is still growing.
    pub async fn start_realtime(
        &self,
        path: &Path,
        mtime_ns: i64,
        asset_id: &str,
    ) -> Result<i64, Error> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO files (path, size, mtime_ns, state, realtime, asset_id, queued_at)
             VALUES (?, 0, ?, 'uploading', 1, ?, ?) RETURNING id",
        )
        .bind(path.to_string_lossy().as_ref())
        .bind(mtime_ns)
        .bind(asset_id)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Real-time uploads that were under way when the client stopped.
    pub async fn unfinished_realtime(&self) -> Result<Vec<FileRow>, Error> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE realtime = 1 AND state = 'uploading' ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The oldest planned upload still to do.
    /// The oldest `limit` files waiting to be uploaded.
    pub async fn next_pending(&self, limit: usize) -> Result<Vec<FileRow>, Error> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE realtime = 0 AND state IN ('queued', 'uploading') ORDER BY id LIMIT $1"
        )))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_asset(
        &self,
        file_id: i64,
        asset_id: &str,
        part_count: u32,
        part_size: u64,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE files SET state = 'uploading', asset_id = ?, part_count = ?, part_size = ? WHERE id = ?")
            .bind(asset_id)
            .bind(i64::from(part_count))
            .bind(part_size as i64)
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a part: registered (real-time) or acknowledged.
    pub async fn record_part(
        &self,
        file_id: i64,
        number: u32,
        size: u64,
        is_final: bool,
        acked: bool,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO parts (file_id, number, size, is_final, acked) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (file_id, number) DO UPDATE SET acked = MAX(acked, excluded.acked)",
        )
        .bind(file_id)
        .bind(i64::from(number))
        .bind(size as i64)
        .bind(i64::from(is_final))
        .bind(i64::from(acked))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(number, size, is_final, acked)` of the file's known parts.
    pub async fn parts(&self, file_id: i64) -> Result<Vec<(u32, u64, bool, bool)>, Error> {
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT number, size, is_final, acked FROM parts WHERE file_id = ? ORDER BY number",
        )
        .bind(file_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(n, s, f, a)| (n as u32, s as u64, f != 0, a != 0))
            .collect())
    }

    pub async fn set_size(&self, file_id: i64, size: u64) -> Result<(), Error> {
        sqlx::query("UPDATE files SET size = ? WHERE id = ?")
            .bind(size as i64)
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_mtime(&self, file_id: i64, mtime_ns: i64) -> Result<(), Error> {
        sqlx::query("UPDATE files SET mtime_ns = ? WHERE id = ?")
            .bind(mtime_ns)
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish(
        &self,
        file_id: i64,
        state: FileState,
        error: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE files SET state = ?, error = ?, finished_at = ? WHERE id = ?")
            .bind(state.as_str())
            .bind(error)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn counts(&self) -> Result<QueueCounts, Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM files GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut counts = QueueCounts::default();
        for (state, n) in rows {
            let n = n as u64;
            match FileState::parse(&state) {
                FileState::Queued => counts.queued += n,
                FileState::Uploading => counts.uploading += n,
                FileState::Complete => counts.complete += n,
                FileState::Failed => counts.failed += n,
                FileState::PausedRejected => counts.paused_rejected += n,
            }
        }
        Ok(counts)
    }

    /// Whether this exact file (path, size, mtime) was uploaded completely.
    pub async fn is_uploaded(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE path = ? AND size = ? AND mtime_ns = ? AND state = 'complete'",
        )
        .bind(path.to_string_lossy().as_ref())
        .bind(size as i64)
        .bind(mtime_ns)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Whether any upload of this path is known (complete or under way), whatever its size.
    pub async fn knows_path(&self, path: &Path) -> Result<bool, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE path = ? AND state IN ('complete', 'uploading', 'queued')")
            .bind(path.to_string_lossy().as_ref())
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// The asset a file's upload created (known once created).
    pub async fn asset_id(&self, file_id: i64) -> Result<String, Error> {
        let id: Option<String> = sqlx::query_scalar("SELECT asset_id FROM files WHERE id = ?")
            .bind(file_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or_default())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
