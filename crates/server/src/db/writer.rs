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
//! PostgreSQL needs none of this (its commits already overlap), so there [`WriteTx`] is a
//! plain pooled transaction.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{Any, AnyConnection, Executor, Transaction};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

use super::{DbResult, run_to_end};

/// The one connection that writes, and the batch it has open.
pub(crate) struct Writer {
    state: Arc<Mutex<WriterState>>,
    /// Wakes the committer: a caller has released its savepoint (or abandoned it).
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
}

impl Writer {
    /// Takes `conn` (already configured) and starts the committer task.
    pub(crate) fn start(conn: AnyConnection) -> Writer {
        let state = Arc::new(Mutex::new(WriterState {
            conn,
            open: false,
            members: Vec::new(),
            abandoned: false,
        }));
        let work = Arc::new(Notify::new());
        tokio::spawn(commit_loop(Arc::downgrade(&state), work.clone()));
        Writer { state, work }
    }

    /// Waits for the connection (callers queue in arrival order), opens the shared
    /// transaction if none is open, and starts this caller's savepoint.
    pub(crate) async fn begin(&self) -> DbResult<WriteTx> {
        let (state, work) = (self.state.clone(), self.work.clone());
        // Spawned, so that a caller dropped halfway (its client went away) cannot leave a
        // statement running that the bookkeeping (`open`) does not know about; if the
        // caller is gone, the finished `WriteTx` is dropped, which undoes the savepoint.
        run_to_end(async move {
            let mut guard = state.lock_owned().await;
            guard.undo_abandoned().await;
            if !guard.open {
                guard.conn.execute("BEGIN IMMEDIATE").await?;
                guard.open = true;
            }
            if let Err(e) = guard.conn.execute("SAVEPOINT caller").await {
                guard.fail_batch(&e).await;
                return Err(e);
            }
            Ok(WriteTx(Inner::Batched {
                guard: Some(guard),
                work,
            }))
        })
        .await
    }
}

impl WriterState {
    /// Rolls back the savepoint of a caller that was dropped mid-transaction.
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
        match self.conn.execute("COMMIT").await {
            Ok(_) => {
                self.open = false;
                for member in self.members.drain(..) {
                    let _ = member.send(Ok(()));
                }
            }
            Err(e) => self.fail_batch(&e).await,
        }
    }
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

/// A write transaction: a savepoint in the shared SQLite transaction, or a pooled
/// PostgreSQL transaction. Dereferences to the connection, like `sqlx::Transaction`.
/// Dropped without [`WriteTx::commit`], its changes are rolled back.
pub(crate) struct WriteTx(Inner);

enum Inner {
    Pooled(Option<Transaction<'static, Any>>),
    Batched {
        guard: Option<OwnedMutexGuard<WriterState>>,
        work: Arc<Notify>,
    },
}

impl WriteTx {
    pub(crate) fn pooled(tx: Transaction<'static, Any>) -> WriteTx {
        WriteTx(Inner::Pooled(Some(tx)))
    }

    /// Makes the changes durable; returns once they are committed to disk.
    pub(crate) async fn commit(mut self) -> DbResult<()> {
        let (mut guard, work) = match &mut self.0 {
            Inner::Pooled(tx) => {
                return match tx.take() {
                    Some(tx) => tx.commit().await,
                    None => Err(sqlx::Error::PoolClosed),
                };
            }
            Inner::Batched { guard, work } => match guard.take() {
                Some(guard) => (guard, work.clone()),
                None => return Err(sqlx::Error::PoolClosed),
            },
        };
        // Spawned for the same reason as `begin`: once started, the release and the
        // hand-over to the committer happen even if the caller goes away.
        let rx = run_to_end(async move {
            if let Err(e) = guard.conn.execute("RELEASE SAVEPOINT caller").await {
                guard.abandoned = true;
                drop(guard);
                work.notify_one();
                return Err(e);
            }
            let (tx, rx) = oneshot::channel();
            guard.members.push(tx);
            drop(guard);
            work.notify_one();
            Ok(rx)
        })
        .await?;
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
        if let Inner::Batched { guard, work } = &mut self.0
            && let Some(mut guard) = guard.take()
        {
            guard.abandoned = true;
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
