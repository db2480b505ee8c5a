//! What every request handler can reach.

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::media::MediaStore;
use crate::media::local::LocalStore;
use crate::media::s3::S3Store;
use crate::web::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    /// Base URL of this server as devices reach it, without a trailing slash.
    pub public_url: Arc<str>,
    pub media: Arc<dyn MediaStore>,
    /// The local store, when it is the media store: it also receives the part bytes.
    pub local: Option<Arc<LocalStore>>,
    /// The S3 store, when it is the media store: parts are watched for, files streamed.
    pub s3: Option<Arc<S3Store>>,
    /// `tls/ca.crt`, offered for download (none with an operator's own certificate).
    pub ca_pem: Option<Arc<str>>,
    /// Key for the web UI's CSRF tokens (the server-wide signing key).
    pub web_key: Arc<[u8]>,
    pub login_limiter: Arc<RateLimiter>,
    pub code_limiter: Arc<RateLimiter>,
    /// The device API's per-grant request limit; `None` when turned off.
    pub token_limiter: Option<Arc<crate::throttle::TokenLimiter>>,
    /// The device traffic record (see [`crate::capture`]).
    pub traffic: Arc<crate::capture::Traffic>,
    /// Pause, resume and revocation of devices, from whichever server made them, for the
    /// status sockets of this one.
    pub status_feed: Arc<crate::status_feed::StatusFeed>,
}

impl AppState {
    /// Access and refresh token lifetimes in milliseconds.
    pub fn lifetimes(&self) -> (i64, i64) {
        (
            ms(self.config.access_token_lifetime),
            ms(self.config.refresh_token_lifetime),
        )
    }
}

pub fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
