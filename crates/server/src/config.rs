//! Everything an operator can set, with the defaults of c2c-api.md. The CLI fills it from
//! flags and environment variables; tests fill it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::media::s3::S3Config;

#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory: database, media, certificates.
    pub data_dir: PathBuf,
    /// `postgres://...` to keep metadata in PostgreSQL; `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    /// Base URL used in `verification_uri` and upload URLs. `None`: derived from `listen`.
    pub public_url: Option<String>,
    /// Extra DNS names (or IPs) for the generated server certificate, e.g. `api.frame.io`.
    pub tls_names: Vec<String>,
    /// An operator's own certificate chain and key (PEM) instead of the generated ones.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse device models whose `client_secret` nobody registered.
    pub strict_clients: bool,
    pub device_code_lifetime: Duration,
    pub poll_interval: Duration,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub upload_url_lifetime: Duration,
    /// Target size of an upload part; the planner never goes below 5 MiB.
    pub part_size: u64,
    /// Most parts an asset may have (stores with a lower cap than 10,000 set it lower).
    pub max_parts: u32,
    /// How long a request may take, except part uploads, which have `idle_timeout` instead.
    pub request_timeout: Duration,
    /// A part upload that sends no byte for this long is abandoned.
    pub idle_timeout: Duration,
    /// Media in an S3-compatible bucket instead of the data directory.
    pub s3: Option<S3Config>,
    /// An S3 upload that receives no part for this long is aborted and its parts freed.
    pub s3_abandon_after: Duration,
    /// Longest pause between two listings of a pending S3 upload's parts.
    pub s3_max_check_pause: Duration,
    /// Requests a second one device grant may make on the device API (0: no limit).
    pub requests_per_second: u32,
    /// `--capture`: every device-API request also goes to `<data>/captures/*.jsonl`.
    pub capture: bool,
    /// How many failed device-API requests the database keeps (the newest).
    pub traffic_rows: usize,
    /// A status socket over which the device sends no frame for this long is closed.
    pub socket_idle_timeout: Duration,
    /// Every complete clip is re-read and compared with its record at least this often
    /// (`scrub`); zero: the server does not scrub.
    pub scrub_every: Duration,
    /// The most bytes a second the server's scrub reads (`None`: no bound).
    pub scrub_bytes_per_second: Option<u64>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            database_url: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_url: None,
            tls_names: Vec::new(),
            tls_cert: None,
            tls_key: None,
            strict_clients: false,
            device_code_lifetime: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            access_token_lifetime: Duration::from_secs(8 * 3600),
            refresh_token_lifetime: Duration::from_secs(14 * 24 * 3600),
            upload_url_lifetime: Duration::from_secs(24 * 3600),
            part_size: 25 * 1024 * 1024,
            max_parts: rushes_proto::parts::MAX_PARTS,
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            s3: None,
            s3_abandon_after: Duration::from_secs(7 * 24 * 3600),
            s3_max_check_pause: Duration::from_secs(30),
            requests_per_second: 50,
            capture: false,
            traffic_rows: 1000,
            socket_idle_timeout: Duration::from_secs(60),
            scrub_every: Duration::from_secs(30 * 24 * 3600),
            scrub_bytes_per_second: Some(50_000_000),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("rushes.db")
    }

    /// Opens the metadata store this configuration names.
    pub async fn open_database(&self) -> anyhow::Result<crate::db::Db> {
        match &self.database_url {
            Some(url) => crate::db::Db::connect(url).await,
            None => crate::db::Db::open_sqlite(&self.database_path()).await,
        }
    }

    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }
}
