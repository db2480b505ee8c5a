//! Building and running the server: data directory, database, certificates, the first
//! user and project, the HTTPS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::Config;
use crate::db::Db;
use crate::media::MediaStore;
use crate::media::local::LocalStore;
use crate::media::s3::S3Store;
use crate::signing::UrlSigner;
use crate::state::AppState;
use crate::throttle::TokenLimiter;
use crate::web::RateLimiter;
use crate::{finalise, part_watch, routes, secrets, tls, transport};

/// What the operator must be told at start.
pub struct Banner {
    pub url: String,
    /// The bound address (the port is known even when asked for port 0).
    pub listening_on: SocketAddr,
    /// Where media goes: a folder or an S3 bucket.
    pub media: String,
    pub ca_path: Option<std::path::PathBuf>,
    pub ca_fingerprint: Option<String>,
    /// The `admin` user's password, only on the start that created it.
    pub admin_password: Option<String>,
}

pub struct Application {
    listener: std::net::TcpListener,
    rustls: RustlsConfig,
    state: AppState,
    handle: Handle<SocketAddr>,
    pub banner: Banner,
}

impl Application {
    /// Prepares everything (creating what is missing, reusing what exists) and binds the
    /// port; [`Application::run`] then serves.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // Several crates link rustls; name the provider once for the whole process.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("creating the data directory {}", config.data_dir.display())
        })?;
        let db = config
            .open_database()
            .await
            .context("opening the database")?;
        let admin_password = bootstrap(&db).await?;
        let tls = tls::load_or_create(&config).context("preparing the TLS certificate")?;

        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("listening on {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let host = if local_addr.ip().is_unspecified() {
            gethostname::gethostname()
                .into_string()
                .unwrap_or_else(|_| "localhost".into())
        } else if local_addr.is_ipv6() {
            format!("[{}]", local_addr.ip())
        } else {
            local_addr.ip().to_string()
        };
        let default_url = format!("https://{host}:{}", local_addr.port());
        let public_url = config
            .public_url
            .clone()
            .unwrap_or(default_url)
            .trim_end_matches('/')
            .to_owned();

        let key = db
            .setting_or_init("upload_url_key", secrets::generate)
            .await?;
        let key = secrets::unhex(&key).context("the stored upload URL key is corrupt")?;
        let signer = UrlSigner::new(key.clone());
        let s3_description = config
            .s3
            .as_ref()
            .map(|c| format!("S3 bucket {} at {}", c.bucket, c.endpoint));
        let (media, local, s3): (Arc<dyn MediaStore>, _, _) = match &config.s3 {
            Some(s3_config) => {
                let store = Arc::new(S3Store::new(s3_config)?);
                store.check_bucket().await.with_context(|| {
                    format!(
                        "using S3 bucket {:?} at {}",
                        s3_config.bucket, s3_config.endpoint
                    )
                })?;
                (store.clone(), None, Some(store))
            }
            None => {
                let local = Arc::new(LocalStore::new(&config.data_dir, signer)?);
                (local.clone(), Some(local), None)
            }
        };
        let rustls =
            RustlsConfig::from_pem(tls.cert_chain_pem.into_bytes(), tls.key_pem.into_bytes())
                .await
                .context("loading the TLS certificate and key")?;
        let banner = Banner {
            url: public_url.clone(),
            listening_on: local_addr,
            media: match &s3_description {
                Some(d) => d.clone(),
                None => config.media_dir().display().to_string(),
            },
            ca_path: tls.ca.as_ref().map(|ca| ca.path.clone()),
            ca_fingerprint: tls.ca.as_ref().map(|ca| ca.fingerprint.clone()),
            admin_password,
        };
        let token_limiter = TokenLimiter::new(config.requests_per_second).map(Arc::new);
        let traffic = crate::capture::Traffic::start(db.clone(), &config);
        let state = AppState {
            db,
            config: Arc::new(config),
            public_url: public_url.into(),
            media,
            local,
            s3,
            ca_pem: tls.ca.map(|ca| ca.pem.into()),
            web_key: key.into(),
            // Per process: enough to make guessing slow (see docs).
            login_limiter: Arc::new(RateLimiter::new(10, Duration::from_secs(60))),
            code_limiter: Arc::new(RateLimiter::new(10, Duration::from_secs(60))),
            token_limiter,
            traffic,
            status_feed: Arc::new(crate::status_feed::StatusFeed::default()),
        };
        Ok(Application {
            listener,
            rustls,
            state,
            handle: Handle::new(),
            banner,
        })
    }

    /// The routes as a tower service, for callers in the same process that bring their own
    /// requests (the fuzz targets in `fuzz/`); requests need a `ConnectInfo<SocketAddr>`
    /// extension, which the real server adds. No background task runs.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGINT or SIGTERM, then drains connections for up to 10 s.
    pub async fn run(self) -> anyhow::Result<()> {
        let app = routes::router(self.state.clone());
        if let Some(s3) = &self.state.s3 {
            part_watch::spawn(self.state.clone(), s3.clone());
        }
        self.state.status_feed.spawn(self.state.db.clone());
        if !self.state.config.scrub_every.is_zero() {
            crate::scrub::spawn(
                self.state.db.clone(),
                self.state.media.clone(),
                crate::scrub::Schedule {
                    every: self.state.config.scrub_every,
                    bytes_per_second: self.state.config.scrub_bytes_per_second,
                },
            );
        }
        let recover_state = self.state.clone();
        tokio::spawn(async move {
            if let Err(e) = finalise::recover(&recover_state).await {
                tracing::error!(error = format!("{e:#}"), "recovery after start failed");
            }
        });
        let handle = self.handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let app = app.layer(axum::middleware::from_fn(transport::answer_readably));
        let acceptor =
            transport::TlsAcceptor::new(self.rustls.get_inner(), Duration::from_secs(10));
        let mut server = axum_server::from_tcp(self.listener)?
            .acceptor(acceptor)
            .handle(self.handle);
        // Slow clients: headers must arrive within 30 s (bodies have their own timeouts).
        // hyper's HTTP/1 read buffer (about 400 KiB by default, which bounds a header block)
        // stays as it is: it also carries part bodies. The contract's 64 KiB limit is
        // `answer_readably`'s, on both versions; HTTP/2's own limit is raised above it so
        // that it is ours that answers (hyper's 16 KiB default would refuse sooner).
        server
            .http_builder()
            .http1()
            .header_read_timeout(Duration::from_secs(30));
        server
            .http_builder()
            .http2()
            // HTTP/2 counts 32 bytes per field where our limit counts 4 (`: `, CRLF): a
            // half more lets `answer_readably` decide for any block of fields over ~40
            // bytes on average, while a stream's headers cost at most 96 KiB.
            .max_header_list_size(
                (transport::MAX_HEADER_BYTES + transport::MAX_HEADER_BYTES / 2) as u32,
            );
        server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await?;
        self.state.db.close().await;
        Ok(())
    }
}

/// On the first start: the `admin` user (returning its one-time password) and the
/// `Default` project.
async fn bootstrap(db: &Db) -> anyhow::Result<Option<String>> {
    let mut password = None;
    if db.user_count().await? == 0 {
        let secret = crate::passwords::generate();
        if db
            .add_user("admin", &crate::passwords::hash(&secret)?, true)
            .await?
        {
            password = Some(secret);
        }
    }
    if db.projects().await?.is_empty() {
        db.create_project("Default").await?;
    }
    Ok(password)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
