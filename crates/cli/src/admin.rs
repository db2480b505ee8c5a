//! The administration commands. Each prints a table for people, or with `--json` a stable
//! JSON array documented in docs/cli.md.

use std::path::Path;

use clap::{Args, Subcommand};
use rushes_server::admin::Admin;
use rushes_server::clock::rfc3339;
use serde_json::{Value, json};

/// Which server's metadata an admin command acts on.
pub struct Target {
    pub data_dir: std::path::PathBuf,
    /// The server's `--database-url`, when it keeps metadata in PostgreSQL.
    pub database_url: Option<String>,
}

impl Target {
    pub(crate) async fn open(&self) -> anyhow::Result<Admin> {
        Admin::open(&self.data_dir, self.database_url.as_deref()).await
    }
}

#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create { name: String },
    /// List projects.
    List(JsonFlag),
    /// Let a web user see a project (administrators see every project).
    AddMember { project: String, user: String },
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Register a device model by the client_secret its firmware sends (needed with
    /// --strict-clients; also names the model in listings).
    Register {
        client_secret: String,
        #[arg(long)]
        name: String,
    },
    /// Device models seen or registered.
    List(JsonFlag),
}

pub async fn model(data: &Target, cmd: ModelCommand) -> anyhow::Result<()> {
    let admin = data.open().await?;
    match cmd {
        ModelCommand::Register {
            client_secret,
            name,
        } => {
            admin.register_model(&client_secret, &name).await?;
            println!("registered device model {name:?}");
        }
        ModelCommand::List(flag) => {
            let rows: Vec<Value> = admin
                .models()
                .await?
                .into_iter()
                .map(|(secret, name, registered)| json!({"name": name, "client_secret": secret, "registered": registered}))
                .collect();
            print_rows(&rows, flag.json, &["name", "registered", "client_secret"]);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a web user; prints its password once.
    Add {
        name: String,
        /// Administrators see every project.
        #[arg(long)]
        admin: bool,
    },
    /// Give a user a new password (printed once) and sign them out everywhere.
    Password { name: String },
}

pub async fn user(data: &Target, cmd: UserCommand) -> anyhow::Result<()> {
    let admin = data.open().await?;
    match cmd {
        UserCommand::Add {
            name,
            admin: is_admin,
        } => {
            let password = admin.add_user(&name, is_admin).await?;
            println!("created user {name:?}; password (shown only this once): {password}");
        }
        UserCommand::Password { name } => {
            let password = admin.reset_password(&name).await?;
            println!("new password for {name:?} (shown only this once): {password}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum PairingCommand {
    /// Codes waiting for approval, with the device that asked.
    List(JsonFlag),
    /// Pair the device showing CODE with a project.
    Approve {
        code: String,
        #[arg(long, default_value = "Default")]
        project: String,
    },
    /// Refuse the device showing CODE.
    Deny { code: String },
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// (device) Pair this computer with a server as a C2C device.
    Pair(crate::device::PairArgs),
    /// (device) Server, project, token expiry and upload queue of this device.
    Status(JsonFlag),
    /// (device) Upload files, with progress; resumes where a previous run stopped.
    Upload(crate::device::UploadArgs),
    /// (device) Upload every new file of a folder, growing files as they record.
    Watch(crate::device::WatchArgs),
    /// (server) List devices.
    List {
        /// Only devices paired with this project.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// (server) Refuse uploads of clips recorded from now on (409 Channel Paused).
    Pause {
        device: String,
        /// Only this channel of the device (its index, as assets name it).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=rushes_server::db::MAX_CHANNEL))]
        channel: Option<i64>,
    },
    /// (server) Accept uploads again.
    Resume {
        device: String,
        /// Only this channel of the device.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..=rushes_server::db::MAX_CHANNEL))]
        channel: Option<i64>,
    },
    /// With DEVICE (server): revoke that device's tokens, it must pair again. Without
    /// (device): unpair this computer.
    Unpair { device: Option<String> },
    /// (server) What devices sent: the failed requests kept in the database, plus every
    /// request in the `serve --capture` files of the data directory. Secrets are redacted.
    Traffic {
        /// Only this device's requests (id, client_id or name).
        #[arg(long)]
        device: Option<String>,
        /// Only requests answered 4xx/5xx or sent to an unknown route.
        #[arg(long)]
        errors: bool,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Subcommand)]
pub enum AssetCommand {
    /// List assets: path in the project, size, state, SHA-256, device, recorded-at.
    List {
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// A clip's comments and markers from its device, in time order (timecodes at the
    /// clip's rate when a marker gave one; frame numbers otherwise).
    Comments {
        /// The asset's id (see `rushes asset list`).
        asset: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub async fn project(data: &Target, cmd: ProjectCommand) -> anyhow::Result<()> {
    let admin = data.open().await?;
    match cmd {
        ProjectCommand::Create { name } => {
            let p = admin.create_project(&name).await?;
            println!("created project {:?} ({})", p.name, p.id);
        }
        ProjectCommand::AddMember { project, user } => {
            admin.add_member(&project, &user).await?;
            println!("{user:?} is a member of {project:?}");
        }
        ProjectCommand::List(flag) => {
            let rows: Vec<Value> = admin
                .projects()
                .await?
                .into_iter()
                .map(|p| json!({"id": p.id, "name": p.name, "created_at": rfc3339(p.created_at)}))
                .collect();
            print_rows(&rows, flag.json, &["name", "id", "created_at"]);
        }
    }
    Ok(())
}

pub async fn pairing(data: &Target, cmd: PairingCommand) -> anyhow::Result<()> {
    let admin = data.open().await?;
    match cmd {
        PairingCommand::List(flag) => {
            let rows: Vec<Value> = admin
                .pending_codes()
                .await?
                .into_iter()
                .map(|c| {
                    json!({
                        "user_code": c.user_code, "device_id": c.device_id, "device_name": c.device_name,
                        "model": c.model, "client_id": c.client_id, "client_version": c.client_version,
                        "scopes": c.scopes, "requested_at": rfc3339(c.requested_at),
                        "expires_at": rfc3339(c.expires_at),
                    })
                })
                .collect();
            print_rows(
                &rows,
                flag.json,
                &[
                    "user_code",
                    "device_name",
                    "model",
                    "client_id",
                    "client_version",
                    "requested_at",
                ],
            );
        }
        PairingCommand::Approve { code, project } => {
            admin.approve(&code, &project).await?;
            println!("approved {code}: the device is paired with project {project:?}");
        }
        PairingCommand::Deny { code } => {
            admin.deny(&code).await?;
            println!("denied {code}");
        }
    }
    Ok(())
}

pub async fn device(data: &Target, state: &Path, cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Pair(args) => crate::device::pair(state, args).await,
        DeviceCommand::Status(flag) => crate::device::status(state, flag.json).await,
        DeviceCommand::Upload(args) => crate::device::upload(state, args).await,
        DeviceCommand::Watch(args) => crate::device::watch(state, args).await,
        DeviceCommand::Unpair { device: None } => crate::device::unpair(state).await,
        DeviceCommand::List {
            project,
            json: flag,
        } => {
            let rows: Vec<Value> = data.open()
                .await?
                .devices(project.as_deref())
                .await?
                .into_iter()
                .map(|d| {
                    json!({
                        "id": d.id, "name": d.name, "client_id": d.client_id, "model": d.model,
                        "client_version": d.client_version, "project": d.project, "status": d.status,
                        "last_seen_at": d.last_seen_at.map(rfc3339),
                    })
                })
                .collect();
            print_rows(
                &rows,
                flag.json,
                &[
                    "name",
                    "status",
                    "project",
                    "client_id",
                    "client_version",
                    "last_seen_at",
                    "id",
                ],
            );
            Ok(())
        }
        DeviceCommand::Pause { device, channel } => {
            let d = data.open().await?.pause(&device, channel).await?;
            println!(
                "paused {:?}{}: clips recorded from now on are refused",
                d.name,
                channel_suffix(channel)
            );
            Ok(())
        }
        DeviceCommand::Resume { device, channel } => {
            let d = data.open().await?.resume(&device, channel).await?;
            println!("resumed {:?}{}", d.name, channel_suffix(channel));
            Ok(())
        }
        DeviceCommand::Traffic {
            device,
            errors,
            limit,
            json: flag,
        } => {
            let rows: Vec<Value> = data
                .open()
                .await?
                .traffic(&data.data_dir, device.as_deref(), errors, limit)
                .await?
                .into_iter()
                .map(|r| {
                    json!({
                        "id": r.id, "at": rfc3339(r.at), "device_id": r.device_id,
                        "device": r.device_name, "remote_addr": r.remote_addr,
                        "method": r.method, "path": r.path, "query": r.query,
                        "headers": r.headers, "body": r.body,
                        "body_length": r.body_length, "body_sha256": r.body_sha256,
                        "status": r.status, "detail": r.detail, "known_route": r.known_route,
                    })
                })
                .collect();
            print_rows(
                &rows,
                flag.json,
                &[
                    "at",
                    "device",
                    "remote_addr",
                    "method",
                    "path",
                    "status",
                    "detail",
                ],
            );
            Ok(())
        }
        DeviceCommand::Unpair {
            device: Some(device),
        } => {
            let d = data.open().await?.unpair(&device).await?;
            println!("unpaired {:?}: its tokens no longer work", d.name);
            Ok(())
        }
    }
}

pub async fn asset(data: &Target, cmd: AssetCommand) -> anyhow::Result<()> {
    let admin = data.open().await?;
    let (project, flag) = match cmd {
        AssetCommand::List { project, json } => (project, json),
        AssetCommand::Comments { asset, json } => {
            return asset_comments(&admin, &asset, json).await;
        }
    };
    let rows: Vec<Value> = admin
        .assets(project.as_deref())
        .await?
        .into_iter()
        .map(|a| {
            let state = match a.state.as_str() {
                "complete" | "abandoned" => a.state.as_str(),
                _ => "uploading",
            };
            json!({
                "id": a.id, "project": a.project, "path": a.path, "size": a.size, "state": state,
                "sha256": a.sha256, "device": a.device, "device_id": a.device_id,
                "recorded_at": rfc3339(a.recorded_at), "created_at": rfc3339(a.created_at),
                "verified_at": a.verified_at.map(rfc3339), "damaged": a.damage.is_some(),
                "damage": a.damage,
            })
        })
        .collect();
    print_rows(
        &rows,
        flag.json,
        &[
            "project",
            "path",
            "size",
            "state",
            "sha256",
            "device",
            "recorded_at",
        ],
    );
    Ok(())
}

async fn asset_comments(admin: &Admin, asset: &str, flag: JsonFlag) -> anyhow::Result<()> {
    let rows: Vec<Value> = admin
        .asset_comments(asset)
        .await?
        .into_iter()
        .map(|n| {
            json!({
                "id": n.id, "kind": n.kind, "text": n.text, "frame": n.frame,
                "timecode": n.timecode, "rate": n.rate, "input": n.input, "author": n.author,
                "created_at": rfc3339(n.created_at),
            })
        })
        .collect();
    print_rows(
        &rows,
        flag.json,
        &[
            "timecode",
            "frame",
            "kind",
            "text",
            "input",
            "author",
            "created_at",
        ],
    );
    Ok(())
}

pub async fn check(data: &Target, args: crate::media_check::CheckArgs) -> anyhow::Result<()> {
    if args.media() {
        return crate::media_check::run(data, args).await;
    }
    let admin = data.open().await?;
    let report = admin.db().check().await?;
    println!("checked: {}", report.ran.join(", "));
    for skipped in &report.skipped {
        println!("skipped: {skipped}");
    }
    if !report.is_ok() {
        anyhow::bail!(
            "the database is damaged:\n  - {}",
            report.problems.join("\n  - ")
        );
    }
    println!("database: ok");
    Ok(())
}

/// JSON array, or an aligned table of `columns`.
fn print_rows(rows: &[Value], as_json: bool, columns: &[&str]) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let cell = |row: &Value, col: &str| match &row[col] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(columns.iter().map(|c| cell(row, c)).collect());
    }
}

/// ", channel N" when a command acted on one channel of a device.
fn channel_suffix(channel: Option<i64>) -> String {
    channel
        .map(|n| format!(", channel {n}"))
        .unwrap_or_default()
}
