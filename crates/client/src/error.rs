//! Everything that can go wrong, worded for the person at the device.

use std::fmt;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this device is not paired; run `rushes device pair --server URL` first")]
    NotPaired,
    /// The server no longer accepts this device's credentials (unpaired, revoked, or a
    /// refresh whose answer was lost): only pairing again helps.
    #[error("the server no longer accepts this device ({0}); pair again with `rushes device pair`")]
    PairAgain(String),
    #[error("the pairing was denied on the server")]
    Denied,
    #[error("the pairing code expired before it was approved; start pairing again")]
    CodeExpired,
    #[error(
        "the server's certificate is not trusted ({0}); pass --ca with the server's ca.crt \
         (from its data directory, or https://SERVER/ca.crt)"
    )]
    Untrusted(String),
    /// The certificate is fine but this computer's clock puts "now" outside its validity:
    /// a camera or laptop whose date was lost (a flat clock battery) looks like this.
    #[error(
        "the server's certificate is not valid at this computer's time ({0}); check that \
         this computer's date and clock are right"
    )]
    WrongClock(String),
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("the server answered {status}: {detail}")]
    Http {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the upload journal failed: {0}")]
    Journal(#[from] sqlx::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn other(e: impl fmt::Display) -> Error {
        Error::Other(e.to_string())
    }

    /// Worth trying again later: the network, an overloaded or restarting server.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network(_) => true,
            Error::Http { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            _ => false,
        }
    }

    /// Stops the whole queue, not just one file: nothing will work until a person acts.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::PairAgain(_)
                | Error::NotPaired
                | Error::Untrusted(_)
                | Error::WrongClock(_)
                | Error::Journal(_)
        )
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
