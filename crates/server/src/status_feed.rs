//! Where the status sockets of this server learn that a device was paused, resumed,
//! unpaired or had its grant revoked, whichever process made the change: the web UI of
//! this server or of another one sharing the database, or `rushes device pause` (a process
//! of its own writing the database directly). One task per server polls the database for
//! changes stamped after the last one it saw (`Db::status_changes`, an index probe that
//! finds nothing most of the time) and broadcasts them; each socket keeps those of its
//! own device. A poll works the same on SQLite shared by several processes and on
//! PostgreSQL, so there is one mechanism to get right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::db::{Db, DeviceStatus};

/// How often the database is asked for changes: half the 2 s the contract allows.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Changes held for sockets that have not read them yet; one that falls further behind
/// re-reads its device's state instead (bounded memory whatever the sockets do).
const BACKLOG: usize = 1024;
/// Status sockets one server keeps open at once; more are answered 503.
const MAX_SOCKETS: usize = 20_000;
/// Status sockets one grant keeps open on one server; more are answered 429. A camera
/// holds one, plus those it abandoned while reconnecting until their idle timeout.
pub const MAX_SOCKETS_PER_GRANT: usize = 32;

pub struct StatusFeed {
    changes: broadcast::Sender<Arc<DeviceStatus>>,
    sockets: Arc<Semaphore>,
    per_grant: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for StatusFeed {
    fn default() -> Self {
        StatusFeed {
            changes: broadcast::channel(BACKLOG).0,
            sockets: Arc::new(Semaphore::new(MAX_SOCKETS)),
            per_grant: Arc::default(),
        }
    }
}

/// Why a socket was not admitted.
pub enum Refused {
    ServerFull,
    GrantFull,
}

/// One open socket's place under both caps, given back when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    per_grant: Arc<Mutex<HashMap<String, usize>>>,
    grant_id: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut counts = self.per_grant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.grant_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.grant_id);
            }
        }
    }
}

impl StatusFeed {
    /// Every change from now on (filter by device).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DeviceStatus>> {
        self.changes.subscribe()
    }

    /// A place for one more open socket of `grant_id`, held until the socket ends.
    pub fn admit(&self, grant_id: &str) -> Result<Admission, Refused> {
        let permit = self
            .sockets
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::ServerFull)?;
        // A poisoned lock (a panic elsewhere while holding it) only loses the count.
        let mut counts = self.per_grant.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(grant_id.to_owned()).or_insert(0);
        if *n >= MAX_SOCKETS_PER_GRANT {
            return Err(Refused::GrantFull);
        }
        *n += 1;
        Ok(Admission {
            _permit: permit,
            per_grant: self.per_grant.clone(),
            grant_id: grant_id.to_owned(),
        })
    }

    /// Starts the polling task. Errors (a database restarting) are logged and the poll
    /// tried again; changes are not lost, since the cursor only moves past what was read.
    pub fn spawn(&self, db: Db) {
        let changes = self.changes.clone();
        tokio::spawn(async move {
            let mut cursor = None;
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = poll(&db, &changes, &mut cursor).await {
                    tracing::warn!(error = %e, "the status feed could not read the database");
                }
            }
        });
    }
}

async fn poll(
    db: &Db,
    changes: &broadcast::Sender<Arc<DeviceStatus>>,
    cursor: &mut Option<i64>,
) -> crate::db::DbResult<()> {
    let after = match *cursor {
        Some(after) => after,
        // What happened before this server started is read by each socket as it opens.
        None => *cursor.insert(db.status_seq().await?),
    };
    let batch = db.status_changes(after).await?;
    if let Some(last) = batch.last() {
        *cursor = Some(last.status_seq);
    }
    for change in batch {
        // No socket listening is not an error.
        let _ = changes.send(Arc::new(change));
    }
    Ok(())
}
