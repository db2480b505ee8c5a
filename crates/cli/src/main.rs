//! `rushes`: the one binary. `serve` runs the server; `project`, `pairing`, `device` and
//! `asset` administer a server's data directory from the terminal.

mod admin;
mod device;
mod media_check;
mod s3_args;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rushes",
    version,
    about = "Self-hosted Camera-to-Cloud server",
    propagate_version = true
)]
struct Cli {
    /// Data directory: database, media, certificates.
    #[arg(
        long = "data",
        global = true,
        env = "RUSHES_DATA",
        default_value = "rushes-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,

    /// PostgreSQL for metadata (`postgres://user@host/db`) instead of SQLite in the data
    /// directory; every server and admin command of one installation must name the same.
    #[arg(long, global = true, env = "RUSHES_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,

    /// Device state directory (identity, credentials, upload journal) for the device
    /// commands [default: ~/.config/rushes/device].
    #[arg(
        long = "state",
        global = true,
        env = "RUSHES_DEVICE_STATE",
        value_name = "DIR"
    )]
    state_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (creates the data directory and certificates on first start).
    Serve(Box<serve::ServeArgs>),
    /// Projects devices upload into.
    #[command(subcommand)]
    Project(admin::ProjectCommand),
    /// Devices waiting for approval: list, approve or deny their codes.
    #[command(subcommand)]
    Pairing(admin::PairingCommand),
    /// Devices. On the server: list, pause, resume, unpair DEVICE. On a device: pair,
    /// status, upload, watch, unpair.
    #[command(subcommand)]
    Device(admin::DeviceCommand),
    /// Uploaded and uploading assets.
    #[command(subcommand)]
    Asset(admin::AssetCommand),
    /// Device models: register one (for --strict-clients), list them.
    #[command(subcommand)]
    Model(admin::ModelCommand),
    /// Web users: add, reset a password.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Check the database: the engine's integrity check (SQLite `integrity_check`,
    /// PostgreSQL `amcheck` when installed), then the rules the server keeps. With
    /// --media: re-read every complete clip and compare it with its size and SHA-256.
    Check(media_check::CheckArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let target = admin::Target {
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(target, *args).await,
            Command::Project(cmd) => admin::project(&target, cmd).await,
            Command::Pairing(cmd) => admin::pairing(&target, cmd).await,
            Command::Device(cmd) => {
                let state = cli.state_dir.unwrap_or_else(device::default_state_dir);
                admin::device(&target, &state, cmd).await
            }
            Command::Asset(cmd) => admin::asset(&target, cmd).await,
            Command::User(cmd) => admin::user(&target, cmd).await,
            Command::Model(cmd) => admin::model(&target, cmd).await,
            Command::Check(args) => admin::check(&target, args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
