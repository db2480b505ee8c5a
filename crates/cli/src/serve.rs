//! `rushes serve`: flags → [`rushes_server::Config`], logging, the start-up banner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rushes_server::{Application, Config};
use tracing_subscriber::EnvFilter;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (HTTPS).
    #[arg(long, env = "RUSHES_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Base URL devices reach this server at, used in pairing and upload URLs
    /// [default: the Host each request arrived with].
    #[arg(long, env = "RUSHES_PUBLIC_URL")]
    public_url: Option<String>,
    /// Extra name for the generated server certificate (repeatable), e.g. api.frame.io.
    #[arg(long = "tls-name", value_name = "NAME")]
    tls_names: Vec<String>,
    /// Your own certificate chain (PEM) instead of the generated one.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Refuse device models whose client_secret was not registered.
    #[arg(long)]
    strict_clients: bool,
    /// Seconds a device waits between polls while pairing.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    poll_interval: u64,
    /// Seconds a pairing code stays valid.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    code_lifetime: u64,
    /// Seconds an access token stays valid.
    #[arg(long, default_value_t = 8 * 3600, value_name = "SECS")]
    access_token_lifetime: u64,
    /// Seconds a refresh token stays valid.
    #[arg(long, default_value_t = 14 * 24 * 3600, value_name = "SECS")]
    refresh_token_lifetime: u64,
    /// Seconds an upload URL stays valid.
    #[arg(long, default_value_t = 24 * 3600, value_name = "SECS")]
    upload_url_lifetime: u64,
    /// Target upload part size in bytes (at least 5 MiB is used).
    #[arg(long, default_value_t = 25 * 1024 * 1024, value_name = "BYTES")]
    part_size: u64,
    /// Most parts per asset (lower it for stores capped below 10,000, e.g. 1000).
    #[arg(long, visible_alias = "s3-max-parts", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_parts: u32,
    #[command(flatten)]
    s3: crate::s3_args::S3Args,
    /// Abort an S3 upload that received no part for this many seconds, freeing its parts.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_name = "SECS")]
    s3_abandon_after: u64,
    /// Longest pause, in seconds, between two listings of a pending S3 upload's parts.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    s3_max_check_pause: u64,
    /// Seconds a part upload may send nothing before it is dropped.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    idle_timeout: u64,
    /// Requests a second each paired device may make on the device API; more are answered
    /// 429 with `Retry-After` (0: no limit).
    #[arg(
        long,
        env = "RUSHES_RATE_LIMIT",
        default_value_t = 50,
        value_name = "PER_SECOND"
    )]
    rate_limit: u32,
    /// Also record every device-API request (secrets redacted, part bodies as length and
    /// SHA-256) in <data>/captures/YYYY-MM-DD.jsonl, for a support bundle.
    #[arg(long, env = "RUSHES_CAPTURE")]
    capture: bool,
    /// How many failed device-API requests the database keeps (tests lower it).
    #[arg(long, default_value_t = 1000, hide = true, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    traffic_rows: u64,
    /// Seconds a status socket may stay silent before it is closed (tests shorten it).
    #[arg(long, default_value_t = 60, value_name = "SECS", hide = true)]
    socket_idle_timeout: u64,
    /// Re-read every complete clip and compare it with its recorded size and SHA-256 at
    /// least once every this many days, a clip at a time; damage is logged and shown in
    /// the web UI, never repaired (0: off).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    scrub_every: u64,
    /// The same period in seconds (tests shorten it); overrides --scrub-every.
    #[arg(long, value_name = "SECS", hide = true)]
    scrub_every_secs: Option<u64>,
    /// Most megabytes (10^6 bytes) a second the server's own scrub reads (0: no bound).
    #[arg(long, default_value_t = 50.0, value_name = "MB/s")]
    scrub_max_rate: f64,
    /// Log format on stderr.
    #[arg(long, env = "RUSHES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub async fn run(target: crate::admin::Target, args: ServeArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // A log line that cannot be written (stderr redirected to a full disk) is lost, never
    // reported: tracing-subscriber reports it with `eprintln!`, which panics when stderr
    // fails too, and that would end whatever task was logging (a request, the writer).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let mut config = Config::new(target.data_dir);
    config.database_url = target.database_url;
    config.listen = args.listen;
    config.public_url = args.public_url;
    config.tls_names = args.tls_names;
    config.tls_cert = args.tls_cert;
    config.tls_key = args.tls_key;
    config.strict_clients = args.strict_clients;
    config.poll_interval = Duration::from_secs(args.poll_interval.max(1));
    config.device_code_lifetime = Duration::from_secs(args.code_lifetime.max(1));
    config.access_token_lifetime = Duration::from_secs(args.access_token_lifetime.max(1));
    config.refresh_token_lifetime = Duration::from_secs(args.refresh_token_lifetime.max(1));
    config.upload_url_lifetime = Duration::from_secs(args.upload_url_lifetime.max(1));
    config.part_size = args.part_size;
    config.max_parts = args.max_parts;
    config.idle_timeout = Duration::from_secs(args.idle_timeout.max(1));
    config.requests_per_second = args.rate_limit;
    config.capture = args.capture;
    config.traffic_rows = usize::try_from(args.traffic_rows).unwrap_or(1000);
    config.socket_idle_timeout = Duration::from_secs(args.socket_idle_timeout.max(1));
    config.s3 = args.s3.config()?;
    config.scrub_every = match args.scrub_every_secs {
        Some(secs) => Duration::from_secs(secs),
        None => Duration::from_secs(args.scrub_every.saturating_mul(24 * 3600)),
    };
    if !(args.scrub_max_rate.is_finite() && args.scrub_max_rate >= 0.0) {
        anyhow::bail!("--scrub-max-rate is a number of MB/s, 0 for no bound");
    }
    config.scrub_bytes_per_second =
        (args.scrub_max_rate > 0.0).then_some((args.scrub_max_rate * 1e6) as u64);
    config.s3_abandon_after = Duration::from_secs(args.s3_abandon_after.max(1));
    config.s3_max_check_pause = Duration::from_secs(args.s3_max_check_pause.max(1));

    let app = Application::build(config).await?;
    let banner = &app.banner;
    println!("Rushes is running at {}", banner.url);
    println!("  listening on {}", banner.listening_on);
    println!("  media: {}", banner.media);
    if let (Some(path), Some(fingerprint)) = (&banner.ca_path, &banner.ca_fingerprint) {
        println!(
            "  root certificate: {} (also at {}/ca.crt)",
            path.display(),
            banner.url
        );
        println!("  SHA-256 fingerprint: {fingerprint}");
    }
    if let Some(password) = &banner.admin_password {
        println!("  web user 'admin' created; password (shown only this once): {password}");
    }
    app.run().await
}
