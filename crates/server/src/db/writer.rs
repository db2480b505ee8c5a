//! Group commit for SQLite: many write transactions, one `fsync`.
//!
//! SQLite allows one writer at a time, and with `synchronous = FULL` every commit waits for
//! an `fsync` of the WAL (milliseconds on real disks). Giving each request its own
//! transaction on its own pooled connection therefore caps writes at one fsync each, and the
//! losers of the write lock sleep in SQLite's busy handler. Instead, every write on SQLite
//! goes through one connection: each caller's transaction is a `SAVEPOINT` inside a shared
//! transaction, and a committer task commits whatever has accumulated in one go. A caller's
//! `commit()` returns only after that `COMMIT` is on disk, so an acknowledged write is as
//! durable as before; a caller that fails or is dropped rolls back only its own savepoint.
//!
//! A caller whose statements each stand alone (one `INSERT`, say) needs no savepoint: SQLite
//! undoes a failed statement by itself, and one that succeeded is meant to be committed.
//! [`Writer::begin`] with `Guard::None` skips the savepoint, which saves a round trip to
//! SQLite's thread while everyone else waits for the connection, and the copies of every
//! page the caller touches that a savepoint keeps for its undo.
//!
//! A caller with one statement to commit at once can send it with its `BEGIN` and `COMMIT`
//! in one round trip ([`Writer::fetch_and_commit`], used for asset creates by
//! [`super::create_queue`]), committing whatever the shared transaction holds with it.
//!
//! SQLite undoes a failed statement by itself, but on some errors (a full disk, an I/O
//! error) it rolls back the whole transaction instead, and the next `SAVEPOINT` quietly
//! starts a new one. So the shared transaction carries a marker, a row of a temporary table
//! written at its `BEGIN` and deleted with its `COMMIT`: a batch whose marker is gone was
//! rolled back under it, and every caller in it is told its write failed
//! ([`WriterState::batch_intact`]), never that it committed.
//!
//! PostgreSQL needs none of this (its commits already overlap), so there [`WriteTx`] is a
//! plain pooled transaction.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::QueryAs;
use sqlx::{Any, AnyConnection, Executor, FromRow, Transaction};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

use super::{DbResult, run_to_end};

/// The one connection that writes, and the batch it has open.
pub(crate) struct Writer {
    state: Arc<Mutex<WriterState>>,
    /// Wakes the committer: a caller has finished its savepoint (or abandoned it).
    work: Arc<Notify>,
}

struct WriterState {
    conn: AnyConnection,
    /// `BEGIN IMMEDIATE` has run and not yet been committed.
    open: bool,
    /// Callers whose work is in the open transaction, waiting for its `COMMIT`.
    members: Vec<oneshot::Sender<Result<(), String>>>,
    /// A caller was dropped inside its savepoint: undo it before anything else runs.
    abandoned: bool,
    /// The last caller finished; its savepoint is released together with the next
    /// statement the connection runs (one round trip to SQLite's thread fewer per caller,
    /// while everyone else waits for the connection).
    release_pending: bool,
    /// The temporary table of the batch marker exists on `conn`.
    marker_ready: bool,
}

/// Creates the batch marker's table (temporary: on this connection only, never on disk).
const MARKER_TABLE: &str =
    "PRAGMA temp_store = MEMORY; CREATE TEMP TABLE IF NOT EXISTS rushes_batch (open INTEGER); ";
/// Opens the shared transaction with its marker.
const BEGIN: &str = "BEGIN IMMEDIATE; INSERT INTO temp.rushes_batch (open) VALUES (1)";

impl Writer {
    /// Takes `conn` (already configured) and starts the committer task.
    pub(crate) fn start(conn: AnyConnection) -> Writer {
        let state = Arc::new(Mutex::new(WriterState {
            conn,
            open: false,
            members: Vec::new(),
            abandoned: false,
            release_pending: false,
            marker_ready: false,
        }));
        let work = Arc::new(Notify::new());
        tokio::spawn(commit_loop(Arc::downgrade(&state), work.clone()));
        Writer { state, work }
    }

    /// Waits for the connection (callers queue in arrival order), opens the shared
    /// transaction if none is open, and starts this caller's savepoint if `guard` asks.
    pub(crate) async fn begin(&self, guard: Guard) -> DbResult<WriteTx> {
        let (state, work) = (self.state.clone(), self.work.clone());
        let savepoint = guard == Guard::Savepoint;
        // Spawned, so that a caller dropped halfway (its client went away) cannot leave a
        // statement running that the bookkeeping (`open`) does not know about; if the
        // caller is gone, the finished `WriteTx` is dropped, which undoes the savepoint.
        run_to_end(async move {
            let mut guard = state.lock_owned().await;
            guard.undo_abandoned().await;
            let start = match (savepoint, guard.open, guard.release_pending) {
                (true, false, _) => Some(format!("{BEGIN}; SAVEPOINT caller")),
                (true, true, true) => Some("RELEASE SAVEPOINT caller; SAVEPOINT caller".into()),
                (true, true, false) => Some("SAVEPOINT caller".into()),
                (false, false, _) => Some(BEGIN.into()),
                // An open savepoint would make SQLite keep undo copies of this caller's pages.
                (false, true, true) => Some("RELEASE SAVEPOINT caller".into()),
                (false, true, false) => None,
            };
            let start = match start {
                Some(sql) if !guard.open && !guard.marker_ready => {
                    Some(format!("{MARKER_TABLE}{sql}"))
                }
                other => other,
            };
            let started = match start {
                Some(sql) => guard
                    .conn
                    .execute(sqlx::AssertSqlSafe(sql))
                    .await
                    .map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = started {
                // Whatever state that left the connection in, the next caller starts from
                // no transaction rather than failing behind this one for ever.
                guard.fail_batch(&e).await;
                return Err(e);
            }
            guard.open = true;
            guard.marker_ready = true;
            guard.release_pending = false;
            Ok(WriteTx(Inner::Batched {
                guard: Some(guard),
                work,
                savepoint,
            }))
        })
        .await
    }

    /// Runs one statement that stands alone and commits it, with whatever else the shared
    /// transaction holds, in one round trip to SQLite's thread: `statement` builds it,
    /// wrapped in the given SQL (`BEGIN` when no transaction is open, and `COMMIT`). A
    /// [`Writer::begin`] caller makes several hand-overs between tasks instead, each
    /// waiting its turn on a busy server while the other writers wait for the connection.
    /// If it fails, nothing of the statement stays (the others' writes are committed
    /// without it); run it to the end, from a task that is not cancelled.
    pub(crate) async fn fetch_and_commit<O>(
        &self,
        statement: impl FnOnce(&'static str, &'static str) -> QueryAs<'static, Any, O, AnyArguments>,
    ) -> DbResult<Vec<O>>
    where
        O: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        let mut state = self.state.lock().await;
        state.undo_abandoned().await;
        if state.open && !state.batch_intact().await {
            state.fail_batch(&batch_lost()).await;
        }
        let began = !state.open;
        // Alone, the statement needs no marker; joining the batch, it commits the marker's
        // removal with it.
        let (opening, closing) = if began {
            ("BEGIN IMMEDIATE; ", "; COMMIT")
        } else {
            ("", "; DELETE FROM temp.rushes_batch; COMMIT")
        };
        match statement(opening, closing).fetch_all(&mut state.conn).await {
            Ok(rows) => {
                state.committed();
                Ok(rows)
            }
            Err(e) => {
                if began {
                    // Whether the BEGIN, the statement or the COMMIT failed, the
                    // transaction held only the statement.
                    let _ = state.conn.execute("ROLLBACK").await;
                } else {
                    // The statement failed, and the others' writes are still to commit;
                    // or the COMMIT failed, and this one fails again and tells them.
                    state.commit().await;
                }
                Err(e)
            }
        }
    }
}

impl WriterState {
    /// Rolls back the savepoint of a caller that was dropped mid-transaction (the innermost:
    /// the caller before it had its own released when this one began).
    async fn undo_abandoned(&mut self) {
        if !self.abandoned {
            return;
        }
        self.abandoned = false;
        let undo = self
            .conn
            .execute("ROLLBACK TO SAVEPOINT caller; RELEASE SAVEPOINT caller")
            .await;
        if let Err(e) = undo {
            self.fail_batch(&e).await;
        }
    }

    /// Something broke the shared transaction (SQLite may already have rolled it back):
    /// roll back whatever is left and tell every waiting caller its write did not happen.
    async fn fail_batch(&mut self, error: &sqlx::Error) {
        let _ = self.conn.execute("ROLLBACK").await;
        self.open = false;
        self.release_pending = false;
        for member in self.members.drain(..) {
            let _ = member.send(Err(error.to_string()));
        }
    }

    /// Commits the shared transaction and answers everyone in it.
    async fn commit(&mut self) {
        self.undo_abandoned().await;
        if !self.open {
            return;
        }
        if !self.batch_intact().await {
            self.fail_batch(&batch_lost()).await;
            return;
        }
        // COMMIT also releases a savepoint still open; the marker goes with it.
        match self
            .conn
            .execute("DELETE FROM temp.rushes_batch; COMMIT")
            .await
        {
            Ok(_) => self.committed(),
            Err(e) => self.fail_batch(&e).await,
        }
    }

    /// Whether the shared transaction is still the one opened (its marker is there), not
    /// rolled back by SQLite and perhaps replaced by one a later `SAVEPOINT` began.
    async fn batch_intact(&mut self) -> bool {
        let marker: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM temp.rushes_batch")
            .fetch_one(&mut self.conn)
            .await;
        matches!(marker, Ok(1))
    }

    /// The shared transaction was committed: tells everyone in it.
    fn committed(&mut self) {
        self.open = false;
        self.release_pending = false;
        for member in self.members.drain(..) {
            let _ = member.send(Ok(()));
        }
    }
}

fn batch_lost() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(
        "SQLite rolled back the shared transaction (a statement in it failed)",
    ))
}

/// Commits after callers release their savepoints. It queues for the connection behind the
/// callers already waiting, so their work joins the same commit: the busier the server,
/// the more each `fsync` carries.
async fn commit_loop(state: std::sync::Weak<Mutex<WriterState>>, work: Arc<Notify>) {
    loop {
        work.notified().await;
        let Some(state) = state.upgrade() else { return };
        state.lock().await.commit().await;
    }
}

/// What undoes a caller's writes if it fails or goes away before committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// A savepoint: all of the caller's statements or none.
    Savepoint,
    /// Nothing: each statement is atomic on its own, and what succeeded is committed even
    /// if the caller is not there to see it (as if its answer was lost after the commit).
    None,
}

/// A write transaction: a savepoint in the shared SQLite transaction, or a pooled
/// PostgreSQL transaction. Dereferences to the connection, like `sqlx::Transaction`.
/// Dropped without [`WriteTx::commit`], its changes are rolled back (with [`Guard::None`],
/// its statements that succeeded stay and are committed with the others).
pub(crate) struct WriteTx(Inner);

enum Inner {
    Pooled(Option<Transaction<'static, Any>>),
    Batched {
        guard: Option<OwnedMutexGuard<WriterState>>,
        work: Arc<Notify>,
        savepoint: bool,
    },
}

impl WriteTx {
    pub(crate) fn pooled(tx: Transaction<'static, Any>) -> WriteTx {
        WriteTx(Inner::Pooled(Some(tx)))
    }

    /// Makes the changes durable; returns once they are committed to disk.
    pub(crate) async fn commit(mut self) -> DbResult<()> {
        let (mut guard, work, savepoint) = match &mut self.0 {
            Inner::Pooled(tx) => {
                return match tx.take() {
                    Some(tx) => tx.commit().await,
                    None => Err(sqlx::Error::PoolClosed),
                };
            }
            Inner::Batched {
                guard,
                work,
                savepoint,
            } => match guard.take() {
                Some(guard) => (guard, work.clone(), *savepoint),
                None => return Err(sqlx::Error::PoolClosed),
            },
        };
        // No await until the hand-over is done: a caller going away cannot cut it short.
        guard.release_pending = savepoint;
        let (tx, rx) = oneshot::channel();
        guard.members.push(tx);
        drop(guard);
        work.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            // Nothing of this write happened; the caller may try again.
            Ok(Err(message)) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "commit failed: {message}"
            )))),
            Err(_) => Err(sqlx::Error::PoolClosed),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Inner::Batched {
            guard,
            work,
            savepoint,
        } = &mut self.0
            && let Some(mut guard) = guard.take()
        {
            // Without a savepoint there is nothing to undo: a statement that failed was
            // undone by SQLite, and if the failure ended the shared transaction, its `COMMIT`
            // fails and every caller waiting for it hears so.
            guard.abandoned = *savepoint;
            drop(guard);
            work.notify_one();
        }
    }
}

/// Only `commit` (which consumes the value) and `drop` empty a `WriteTx`.
const OPEN: &str = "a WriteTx is open until committed or dropped";

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            Inner::Pooled(tx) => tx.as_deref().expect(OPEN),
            Inner::Batched { guard, .. } => &guard.as_ref().expect(OPEN).conn,
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            Inner::Pooled(tx) => tx.as_deref_mut().expect(OPEN),
            Inner::Batched { guard, .. } => &mut guard.as_mut().expect(OPEN).conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::db::Db;

    async fn insert(tx: &mut super::WriteTx, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'v')")
            .bind(key)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_undone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        // A deferred foreign key is checked at COMMIT: the way to make one fail on demand.
        let mut setup = db.begin_write().await.unwrap();
        sqlx::query(
            "CREATE TABLE refs (key TEXT REFERENCES settings (key) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(&mut *setup)
        .await
        .unwrap();
        setup.commit().await.unwrap();

        let mut bad = db.begin_write().await.unwrap();
        insert(&mut bad, "written").await.unwrap();
        sqlx::query("INSERT INTO refs (key) VALUES ('nowhere')")
            .execute(&mut *bad)
            .await
            .unwrap();
        let failed = bad.commit().await.unwrap_err();
        assert!(failed.to_string().contains("commit failed"), "{failed}");

        let mut good = db.begin_write().await.unwrap();
        insert(&mut good, "after").await.unwrap();
        good.commit().await.unwrap();
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM settings WHERE key IN ('written', 'after') UNION ALL SELECT key FROM refs",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(keys, ["after"]);
    }

    #[tokio::test]
    async fn a_statement_committed_at_once_takes_the_open_transaction_with_it_or_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let writer = db.writer.clone().unwrap();
        let statement = |key: &'static str| {
            move |opening: &'static str, closing: &'static str| {
                sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(format!(
                    "{opening}INSERT INTO settings (key, value) VALUES ('{key}', 'v') RETURNING key{closing}"
                )))
            }
        };
        // Nothing open: BEGIN, the statement and COMMIT in one go.
        let rows = writer.fetch_and_commit(statement("alone")).await.unwrap();
        assert_eq!(rows, [("alone".to_owned(),)]);

        for (key, fails) in [("a", true), ("b", false)] {
            // A caller hands its write over for the next commit (its first poll), and the
            // statement gets the connection before the committer does.
            let mut tx = db.begin_write().await.unwrap();
            insert(&mut tx, key).await.unwrap();
            let mut commit = Box::pin(tx.commit());
            assert!(futures_util::FutureExt::now_or_never(&mut commit).is_none());
            // A taken key fails the statement; the caller's write is committed all the same.
            let done = writer
                .fetch_and_commit(statement(if fails { "alone" } else { "with-b" }))
                .await;
            assert_eq!(done.is_err(), fails, "{done:?}");
            commit.await.unwrap();
        }

        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key FROM settings WHERE value = 'v' ORDER BY key")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(keys, ["a", "alone", "b", "with-b"]);
        // The batches it joined were closed properly: later ones commit.
        let mut next = db.begin_write().await.unwrap();
        insert(&mut next, "next").await.unwrap();
        next.commit().await.unwrap();
    }

    #[tokio::test]
    async fn callers_commit_alone_or_together_and_a_dropped_or_failed_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.unwrap();

        let mut a = db.begin_write().await.unwrap();
        insert(&mut a, "a").await.unwrap();
        a.commit().await.unwrap();
        let mut dropped = db.begin_write().await.unwrap();
        insert(&mut dropped, "dropped").await.unwrap();
        drop(dropped);
        let mut failed = db.begin_write().await.unwrap();
        insert(&mut failed, "failed").await.unwrap();
        assert!(insert(&mut failed, "a").await.is_err(), "key a exists");
        drop(failed);
        // A caller given up on while it waits for the connection leaves nothing behind.
        let _ = tokio::time::timeout(Duration::ZERO, db.begin_write()).await;
        let mut c = db.begin_write().await.unwrap();
        insert(&mut c, "c").await.unwrap();
        c.commit().await.unwrap();
        // Without a savepoint, a failed statement leaves nothing and one that succeeded
        // stays, even when its caller goes away before committing; a savepoint caller
        // dropped right after still undoes only its own write.
        let mut standalone = db.begin_standalone_writes().await.unwrap();
        assert!(insert(&mut standalone, "c").await.is_err(), "key c exists");
        insert(&mut standalone, "s1").await.unwrap();
        drop(standalone);
        let mut dropped = db.begin_write().await.unwrap();
        insert(&mut dropped, "dropped").await.unwrap();
        drop(dropped);
        let mut standalone = db.begin_standalone_writes().await.unwrap();
        insert(&mut standalone, "s2").await.unwrap();
        standalone.commit().await.unwrap();
        // Many at once share commits; each returns once its own write is committed.
        let writes = (0..50).map(|i| {
            let db = db.clone();
            async move {
                db.write(
                    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, 'v')")
                        .bind(format!("k{i:02}")),
                )
                .await
            }
        });
        for result in futures_util::future::join_all(writes).await {
            result.unwrap();
        }

        // Seen from another connection: committed, not merely written.
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM settings ORDER BY key")
            .fetch_all(db.pool())
            .await
            .unwrap();
        let mut expected: Vec<String> = vec!["a".into(), "c".into()];
        expected.extend((0..50).map(|i| format!("k{i:02}")));
        expected.extend(["s1".into(), "s2".into()]);
        let ours: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                ["a", "c", "s1", "s2", "dropped", "failed"].contains(&k.as_str())
                    || k.starts_with('k')
            })
            .collect();
        assert_eq!(ours, expected);
    }

    /// SQLite rolls the whole transaction back on some failed statements (a full disk, an
    /// I/O error), not only the statement. A caller whose write was in the shared
    /// transaction must then hear that it failed, even when a later caller's `SAVEPOINT`
    /// (which outside a transaction starts one) is committed. The `ROLLBACK` below is what
    /// SQLite does by itself then: no setting makes an error do it on demand (a small
    /// `max_page_count` gives `SQLITE_FULL` undoing only the statement).
    #[tokio::test]
    async fn a_batch_sqlite_rolled_back_is_reported_failed_to_everyone_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(&dir.path().join("t.db")).await.unwrap();
        let mut first = db.begin_write().await.unwrap();
        insert(&mut first, "first").await.unwrap();
        // Two callers queue for the connection while the first holds it: they get it, in
        // order, before the committer (woken by the first's hand-over) does.
        let failing = tokio::spawn({
            let db = db.clone();
            async move { db.begin_standalone_writes().await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let later = tokio::spawn({
            let db = db.clone();
            async move { db.begin_write().await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let first_commit = tokio::spawn(first.commit());
        let mut failing = failing.await.unwrap().unwrap();
        sqlx::query("ROLLBACK")
            .execute(&mut *failing)
            .await
            .unwrap();
        drop(failing);
        let mut later = later.await.unwrap().unwrap();
        insert(&mut later, "later").await.unwrap();
        let later_commit = later.commit().await;
        let first_commit = first_commit.await.unwrap();

        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM settings WHERE key IN ('first', 'later') ORDER BY key",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert!(
            !keys.contains(&"first".to_owned()),
            "the test did not lose the write: {keys:?}"
        );
        assert!(
            first_commit.is_err(),
            "a write SQLite rolled back was reported committed"
        );
        assert!(
            later_commit.is_err() || keys.contains(&"later".to_owned()),
            "{later_commit:?} {keys:?}"
        );
        // And the writer goes on.
        db.write(sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('after', 'v')",
        ))
        .await
        .unwrap();
    }
}
