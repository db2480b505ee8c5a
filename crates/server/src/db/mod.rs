//! The metadata store: every piece of state that is not media bytes, in SQL.
//!
//! [`Db`] is the narrow interface the rest of the server uses: domain-level methods, one
//! file per concept below. Queries go through sqlx's `Any` driver with portable SQL (`$N`
//! placeholders, TEXT and BIGINT columns only), so the same query layer serves SQLite (the
//! embedded default) and PostgreSQL (scaled out) without two hand-kept copies. On SQLite
//! the lookups every asset create makes also run, with the same SQL text, on the
//! request's own thread (see [`inline`]).
//!
//! Concurrency rule: every state change is one transaction, and state transitions that can
//! race (a device code used once, a refresh token rotated once, an asset finalised once) are
//! compare-and-set `UPDATE ... WHERE <old state> RETURNING`, which is correct on both
//! engines and across several server processes.

mod assets;
mod channels;
mod check;
mod comments;
mod create_queue;
mod devices;
mod inline;
mod pairing;
mod projects;
mod remote;
mod scrub;
mod settings;
mod tokens;
mod traffic;
mod users;
mod web;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Executor};

pub use assets::{Asset, AssetListing, AssetState, NewAsset, Part, PartRecord, Superseding};
pub use channels::{ChannelCreated, ChannelRow, MAX_CHANNEL, NewChannel, media_type};
pub use check::CheckReport;
pub use comments::{ClipNote, CommentRow, NewMarker};
pub use devices::{DeviceListing, DeviceRecord, DeviceStatus};
pub use pairing::{CodeRequest, Decision, DeviceCode, PendingCode, PollOutcome};
pub use projects::Project;
pub use scrub::ScrubClip;
pub use tokens::{Authenticated, IssuedTokens, RefreshOutcome};
pub use web::{CodeLookup, InFlight, Lookup, MAX_WRONG_GUESSES, User};

pub type DbResult<T> = Result<T, sqlx::Error>;

/// Every SQLite connection: FULL makes a commit reach the disk before we answer 200 (power
/// loss too); the busy timeout covers other processes on the same file (admin commands, a
/// second server); a savepoint's undo copies of pages (multi-statement writes, see [`writer`])
/// stay in memory instead of going through a temporary file.
const SQLITE_PRAGMAS: &str =
    "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA temp_store = MEMORY";
pub(crate) type Tx = writer::WriteTx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the connection every write goes through (group commit).
    writer: Option<Arc<writer::Writer>>,
    /// SQLite only: where asset creates wait to be inserted many at once.
    creates: Option<Arc<create_queue::CreateQueue>>,
    /// SQLite only: the hottest lookups, run on the caller's thread (see [`inline`]).
    inline: Option<Arc<inline::InlineReads>>,
}

impl Db {
    /// Opens (creating if needed) the embedded SQLite database and applies migrations.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Db> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url).await
    }

    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL (use sqlite:// or postgres://)");
        };
        let options = AnyConnectOptions::from_str(url)?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer and is a property of the file, set once
            // here because switching needs a lock that busy_timeout cannot wait for.
            let mut conn = sqlx::AnyConnection::connect_with(&options).await?;
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.close().await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            // A ping before each use is a round trip to the connection's thread that a local
            // file cannot fail; a PostgreSQL server can drop a connection.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let writer = match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::AnyConnection::connect_with(&options).await?;
                conn.execute(SQLITE_PRAGMAS).await?;
                Some(Arc::new(writer::Writer::start(conn)))
            }
            Backend::Postgres => None,
        };
        let creates = writer.as_ref().map(create_queue::CreateQueue::start);
        let inline = match backend {
            Backend::Sqlite => {
                let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                    .get_filename()
                    .to_owned();
                Some(Arc::new(inline::InlineReads::new(&path)))
            }
            Backend::Postgres => None,
        };
        let db = Db {
            pool,
            backend,
            writer,
            creates,
            inline,
        };
        // One folder for both engines: the SQL is portable (see the migrations' header).
        sqlx::migrate!("./migrations").run(&db.pool).await?;
        Ok(db)
    }

    /// Starts a transaction that will write. On SQLite it is a savepoint on the one writing
    /// connection, which holds the write lock (`BEGIN IMMEDIATE`), so a transaction that
    /// reads first never fails to upgrade; see [`writer`] for how commits are grouped.
    pub(crate) async fn begin_write(&self) -> DbResult<Tx> {
        self.begin_guarded(writer::Guard::Savepoint).await
    }

    /// Starts a transaction whose statements each stand alone: on SQLite, one that failed
    /// leaves nothing behind and the others are committed, caller or no caller (see
    /// [`writer::Guard::None`]). Cheaper than [`Db::begin_write`] when that is enough.
    pub(crate) async fn begin_standalone_writes(&self) -> DbResult<Tx> {
        self.begin_guarded(writer::Guard::None).await
    }

    async fn begin_guarded(&self, guard: writer::Guard) -> DbResult<Tx> {
        match &self.writer {
            Some(writer) => writer.begin(guard).await,
            None => Ok(writer::WriteTx::pooled(self.pool.begin().await?)),
        }
    }

    /// Runs one writing statement in a transaction of its own.
    pub(crate) async fn write<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> DbResult<sqlx::any::AnyQueryResult> {
        let mut tx = self.begin_standalone_writes().await?;
        let done = query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs `task` to the end even if the caller stops waiting for it (a request dropped
/// because its client went away): for steps that must not stop halfway.
pub(crate) async fn run_to_end<T: Send + 'static>(
    task: impl Future<Output = DbResult<T>> + Send + 'static,
) -> DbResult<T> {
    tokio::spawn(task)
        .await
        .unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(e.to_string()))))
}

/// True when `err` is a uniqueness violation (used to retry with another name or code).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::{Db, NewAsset};
    use crate::domain::AssetName;

    /// A SQLite database with project `p` and device `d` in it.
    pub async fn db_with_device(dir: &std::path::Path) -> Db {
        let db = Db::open_sqlite(&dir.join("t.db")).await.unwrap();
        for sql in [
            "INSERT INTO projects (id, name, dir, created_at) VALUES ('p', 'P', 'p', 0)",
            "INSERT INTO device_models (id, client_secret, name, registered, created_at)
             VALUES ('m', 's', 'M', 1, 0)",
            "INSERT INTO devices (id, client_id, model_id, name, project_id, client_version,
                                  created_at, updated_at)
             VALUES ('d', 'c', 'm', 'D', 'p', '1', 0, 0)",
        ] {
            db.write(sqlx::query(sql)).await.unwrap();
        }
        db
    }

    /// A 1-byte `clip.mov` from `device_id`, recorded at time 0, in project `p`; real-time
    /// (no part plan), so never a repeated create's candidate.
    pub fn clip(device_id: &str) -> NewAsset {
        NewAsset {
            project_id: "p".into(),
            device_id: device_id.into(),
            name: AssetName::parse("clip.mov").unwrap(),
            folder: "Cloud Devices/f".into(),
            filetype: "video/quicktime".into(),
            filesize: Some(1),
            channel: 0,
            offset_secs: 0,
            recorded_at: 0,
            auto_version_id: None,
            plan: None,
        }
    }
}
