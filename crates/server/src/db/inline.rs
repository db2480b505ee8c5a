//! SQLite reads run on the caller's own thread, for the lookups every device request makes.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every query is a hand-off to
//! that thread and back: two wake-ups, a channel, and the row converted for the `Any`
//! driver. For an indexed lookup in a file the OS has cached, that costs more than the
//! lookup. The token check and the repeated-create lookup, made by every asset create,
//! run here instead, through rusqlite on the request's thread, with the same SQL text as
//! their portable versions. The trade: a lookup that must wait for the disk holds one of
//! the request threads meanwhile. Everything else stays on the shared query layer, and
//! PostgreSQL (a server across a socket, where the await is the point) never comes here.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row};

use super::DbResult;

/// Idle connections kept; more may be opened while many requests read at once.
const KEEP_IDLE: usize = 8;

pub(crate) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReads {
    /// Reads the database at `path`, which must exist (the pooled connections made it).
    pub(crate) fn new(path: &Path) -> InlineReads {
        InlineReads {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The first row of `sql` (portable SQL: `$N` parameters, bound by name), if any.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> DbResult<Option<T>> {
        let conn = match self.lock().pop() {
            Some(conn) => conn,
            None => self.open().map_err(into_sqlx)?,
        };
        let found = conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row(params, row).optional());
        let mut idle = self.lock();
        if idle.len() < KEEP_IDLE {
            idle.push(conn);
        }
        found.map_err(into_sqlx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }
}

fn into_sqlx(err: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(err))
}

#[cfg(test)]
mod tests {
    use rushes_proto::parts::PartPlan;

    use crate::db::test_support::{clip, db_with_device};
    use crate::db::{Db, NewAsset};
    use crate::secrets::hash;

    /// The same database without the inline path: every query through sqlx's pool, as on
    /// PostgreSQL.
    fn pooled(db: &Db) -> Db {
        Db {
            inline: None,
            ..db.clone()
        }
    }

    async fn run(db: &Db, sql: &str) {
        db.write(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn inline_lookups_answer_as_the_pooled_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_device(dir.path()).await;
        let pooled = pooled(&db);
        assert!(db.inline.is_some());
        run(&db, "INSERT INTO grants (id, device_id, project_id, scopes, created_at) VALUES ('g', 'd', 'p', 'asset_create offline', 0)").await;
        run(&db, "INSERT INTO grants (id, device_id, project_id, scopes, created_at, revoked_at) VALUES ('r', 'd', 'p', 'asset_create', 0, 1)").await;
        let far = i64::MAX / 2;
        for (token, grant, expires, retired) in [
            ("live", "g", far, "NULL"),
            ("expired", "g", 1, "NULL"),
            ("retired", "g", far, "5"),
            ("revoked", "r", far, "NULL"),
        ] {
            run(&db, &format!(
                "INSERT INTO token_pairs (id, grant_id, access_hash, access_expires_at, created_at, retired_at)
                 VALUES ('{token}', '{grant}', '{}', {expires}, 0, {retired})",
                hash(token)
            ))
            .await;
        }
        // A pause that is still open: the COALESCE to i64::MAX must read back alike.
        run(&db, "INSERT INTO pause_windows (id, device_id, channel, started_at) VALUES ('w', 'd', NULL, 10)").await;

        for token in ["live", "expired", "retired", "revoked", "unknown"] {
            let inline = db.authenticate(token).await.unwrap();
            let through_pool = pooled.authenticate(token).await.unwrap();
            assert_eq!(
                format!("{inline:?}"),
                format!("{through_pool:?}"),
                "{token}"
            );
            assert_eq!(inline.is_some(), token == "live", "{token}");
        }
        let live = db.authenticate("live").await.unwrap().unwrap();
        assert_eq!(
            (live.device_id.as_str(), live.scopes.to_string().as_str()),
            ("d", "asset_create offline")
        );
        assert_eq!(live.pauses_end, Some(i64::MAX));

        let planned = NewAsset {
            plan: Some(PartPlan::new(1, 25 << 20, 10_000)),
            ..clip("d")
        };
        let made = db.create_asset(&planned).await.unwrap();
        for (name, size) in [("clip.mov", 1), ("clip.mov", 2), ("other.mov", 1)] {
            let inline = db.retried_create("d", name, size, 0).await.unwrap();
            let through_pool = pooled.retried_create("d", name, size, 0).await.unwrap();
            let (inline, through_pool) = (inline.map(|a| a.id), through_pool.map(|a| a.id));
            assert_eq!(inline, through_pool, "{name} {size}");
            let expected = ((name, size) == ("clip.mov", 1)).then(|| made.id.clone());
            assert_eq!(inline, expected, "{name} {size}");
        }
    }

    #[tokio::test]
    async fn a_row_the_inline_path_cannot_read_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_device(dir.path()).await;
        run(&db, "INSERT INTO grants (id, device_id, project_id, scopes, created_at) VALUES ('g', 'd', 'p', 'no such scope', 0)").await;
        run(
            &db,
            &format!(
                "INSERT INTO token_pairs (id, grant_id, access_hash, access_expires_at, created_at)
             VALUES ('t', 'g', '{}', {}, 0)",
                hash("t"),
                i64::MAX / 2
            ),
        )
        .await;
        let err = db.authenticate("t").await.unwrap_err();
        assert!(err.to_string().contains("no"), "{err}");
    }
}
