//! What the client tells its user while it works: a stream of [`Event`]s, serialised as
//! JSON lines by `rushes device ... --json`.

use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A file joined the queue.
    Queued {
        file: PathBuf,
        size: u64,
    },
    /// A file was not queued: the same path, size and mtime was uploaded already.
    AlreadyUploaded {
        file: PathBuf,
    },
    /// Uploading a file began (or resumed with `resumed_bytes` already on the server).
    Started {
        file: PathBuf,
        size: u64,
        asset_id: String,
        resumed_bytes: u64,
    },
    /// `bytes` more of `file` left for the server.
    Progress {
        file: PathBuf,
        bytes: u64,
    },
    /// The server acknowledged a part.
    PartDone {
        file: PathBuf,
        number: u32,
        size: u64,
    },
    Completed {
        file: PathBuf,
        asset_id: String,
    },
    Failed {
        file: PathBuf,
        error: String,
    },
    /// The server refused the clip: the device is paused for the time it was recorded.
    PausedRejected {
        file: PathBuf,
    },
    /// A transient failure; the same step runs again after `in_secs`.
    Retrying {
        file: Option<PathBuf>,
        error: String,
        in_secs: f64,
    },
    /// The folder watcher saw a file that is still growing and uploads it as it records.
    Recording {
        file: PathBuf,
    },
    /// The server says the device was paused (its status socket): clips recorded from now
    /// on are refused until it is resumed.
    Paused,
    /// The server says the device was resumed.
    Resumed,
}

/// Where a queued file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Queued,
    Uploading,
    Complete,
    Failed,
    PausedRejected,
}

impl FileState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FileState::Queued => "queued",
            FileState::Uploading => "uploading",
            FileState::Complete => "complete",
            FileState::Failed => "failed",
            FileState::PausedRejected => "paused_rejected",
        }
    }

    pub(crate) fn parse(s: &str) -> FileState {
        match s {
            "uploading" => FileState::Uploading,
            "complete" => FileState::Complete,
            "failed" => FileState::Failed,
            "paused_rejected" => FileState::PausedRejected,
            _ => FileState::Queued,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Events(broadcast::Sender<Event>);

impl Events {
    pub fn new() -> Events {
        Events(broadcast::channel(8192).0)
    }

    pub fn emit(&self, event: Event) {
        // Nobody listening is fine.
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }

    /// A handle that does not keep the stream open (for background tasks that may outlive
    /// the device: its event stream still ends when the device is dropped).
    pub fn downgrade(&self) -> WeakEvents {
        WeakEvents(self.0.downgrade())
    }
}

pub(crate) struct WeakEvents(broadcast::WeakSender<Event>);

impl WeakEvents {
    pub fn emit(&self, event: Event) {
        if let Some(events) = self.0.upgrade() {
            let _ = events.send(event);
        }
    }
}
