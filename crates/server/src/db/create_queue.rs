//! Asset creates on SQLite: queued, and inserted many to a statement.
//!
//! Every write on SQLite goes through the one writing connection (see [`super::writer`]).
//! A caller's turn there costs several hand-overs between its task, the writer's lock and
//! SQLite's own thread, and on a busy server each hand-over waits behind the other tasks
//! that are ready to run, while every other writer waits for the connection. Creates are
//! the write that devices make most (one per clip, many devices at once), so they do not
//! take turns: they wait here, and one task inserts all that are waiting with one
//! multi-row `INSERT`, sent to SQLite together with its `COMMIT`
//! ([`Writer::fetch_and_commit`]). A create still returns only once its row is committed.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, oneshot};

use super::assets::{AssetRow, InsertSql, MAX_ROWS_PER_INSERT, insert_statement};
use super::writer::Writer;
use super::{Asset, DbResult, NewAsset};
use crate::clock::now_ms;

type Waiting = (AssetRow, oneshot::Sender<DbResult<Asset>>);

pub(crate) struct CreateQueue {
    waiting: Mutex<Vec<Waiting>>,
    /// Wakes the inserting task: a create is waiting.
    work: Arc<Notify>,
}

impl CreateQueue {
    /// Starts the task that inserts for the queue through `writer`; it ends once both are
    /// gone.
    pub(crate) fn start(writer: &Arc<Writer>) -> Arc<CreateQueue> {
        let queue = Arc::new(CreateQueue {
            waiting: Mutex::new(Vec::new()),
            work: Arc::new(Notify::new()),
        });
        tokio::spawn(insert_loop(
            Arc::downgrade(&queue),
            queue.work.clone(),
            Arc::downgrade(writer),
        ));
        queue
    }

    /// Creates the asset; see [`super::Db::create_asset`]. A caller that stops waiting
    /// does not stop the insert (as if its answer was lost after the commit).
    pub(crate) async fn create(&self, new: NewAsset) -> DbResult<Asset> {
        let (answer, made) = oneshot::channel();
        self.lock().push((AssetRow::new(new), answer));
        self.work.notify_one();
        made.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // Nothing panics while holding it; if something did, the list is still whole.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self.lock();
        if waiting.len() > MAX_ROWS_PER_INSERT {
            // The rest go in the next turn.
            self.work.notify_one();
            return waiting.drain(..MAX_ROWS_PER_INSERT).collect();
        }
        std::mem::take(&mut *waiting)
    }

    /// Answers the rows that were inserted; the others found their names taken, and go
    /// first in the next turn under their next names.
    fn settle(&self, rows: Vec<Waiting>, made: Vec<Asset>) {
        let mut made: std::collections::HashMap<String, Asset> =
            made.into_iter().map(|a| (a.id.clone(), a)).collect();
        let mut taken = Vec::new();
        for (mut row, answer) in rows {
            match made.remove(row.id()) {
                Some(asset) => {
                    let _ = answer.send(Ok(asset));
                }
                None => {
                    row.next_name();
                    taken.push((row, answer));
                }
            }
        }
        if !taken.is_empty() {
            self.lock().splice(0..0, taken);
            self.work.notify_one();
        }
    }
}

async fn insert_loop(queue: Weak<CreateQueue>, work: Arc<Notify>, writer: Weak<Writer>) {
    loop {
        work.notified().await;
        let (Some(queue), Some(writer)) = (queue.upgrade(), writer.upgrade()) else {
            return;
        };
        let batch = queue.take_batch();
        if batch.is_empty() {
            continue;
        }
        match insert(&writer, &batch).await {
            Ok(made) => queue.settle(batch, made),
            Err(e) if batch.len() == 1 => {
                if let Some((_, answer)) = batch.into_iter().next() {
                    let _ = answer.send(Err(e));
                }
            }
            // One row can fail the statement for all (its device was removed meanwhile):
            // try them one by one, so that it fails alone.
            Err(_) => {
                for waiting in batch {
                    match insert(&writer, std::slice::from_ref(&waiting)).await {
                        Ok(made) => queue.settle(vec![waiting], made),
                        Err(e) => {
                            let _ = waiting.1.send(Err(e));
                        }
                    }
                }
            }
        }
    }
}

async fn insert(writer: &Writer, rows: &[Waiting]) -> DbResult<Vec<Asset>> {
    let now = now_ms();
    let rows: Vec<&AssetRow> = rows.iter().map(|(row, _)| row).collect();
    writer
        .fetch_and_commit(|opening, closing| {
            insert_statement(&rows, now, InsertSql::Wrapped(opening, closing))
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::db::NewAsset;
    use crate::db::test_support::{clip, db_with_device};

    #[tokio::test]
    async fn creates_that_wait_together_each_get_a_name_of_their_own_and_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_device(dir.path()).await;
        let taken = db.create_asset(&clip("d")).await.unwrap();
        assert_eq!(taken.path, "Cloud Devices/f/clip.mov");

        // All queued before the inserting task runs (one thread): one batch, in which every
        // row's first name is taken, and the rows' next names collide with each other.
        let new = clip("d");
        let made = futures_util::future::join_all((0..40).map(|_| db.create_asset(&new))).await;
        let mut paths = Vec::new();
        for asset in made {
            let asset = asset.unwrap();
            // Seen from another connection: committed, not merely written.
            let stored = db.asset(&asset.id).await.unwrap().expect("committed");
            paths.push(stored.path);
        }
        let mut expected: Vec<String> = (2..=41)
            .map(|n| format!("Cloud Devices/f/clip ({n}).mov"))
            .collect();
        paths.sort();
        expected.sort();
        assert_eq!(paths, expected);
    }

    #[tokio::test]
    async fn a_create_that_fails_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_device(dir.path()).await;
        let mut creates: Vec<NewAsset> = (0..10).map(|_| clip("d")).collect();
        // No such device: the foreign key fails the statement that carries this row.
        creates.insert(5, clip("removed"));
        let made = futures_util::future::join_all(creates.iter().map(|c| db.create_asset(c))).await;
        for (i, result) in made.into_iter().enumerate() {
            match result {
                Err(e) if i == 5 => assert!(e.to_string().contains("FOREIGN KEY"), "{e}"),
                Ok(asset) if i != 5 => {
                    assert!(db.asset(&asset.id).await.unwrap().is_some());
                }
                other => panic!("create {i}: {other:?}"),
            }
        }
        // Alone in its batch, it fails as it is, and the queue goes on.
        let alone = db.create_asset(&clip("removed")).await.unwrap_err();
        assert!(alone.to_string().contains("FOREIGN KEY"), "{alone}");
        db.create_asset(&clip("d")).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assets")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(count, 11);
    }
}
