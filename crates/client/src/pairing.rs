//! Pairing with a server: the OAuth 2.0 device authorization grant (RFC 8628) from the
//! device's side. Shows a code, polls at the server's pace, and stores the tokens.

use std::path::PathBuf;
use std::time::Duration;

use rushes_proto::error::oauth;

use crate::api::{Api, ServerOptions};
use crate::credentials::{self, Pairing};
use crate::session::now_ms;
use crate::{Device, Error};

/// What [`pair`] needs.
#[derive(Debug, Clone)]
pub struct PairOptions {
    pub server: ServerOptions,
    /// Where identity, credentials and the upload journal live.
    pub state_dir: PathBuf,
    /// The name the device proposes for itself (shown on the server, used as its folder).
    pub name: Option<String>,
}

impl PairOptions {
    pub fn new(server: impl Into<String>, state_dir: impl Into<PathBuf>) -> PairOptions {
        PairOptions {
            server: ServerOptions {
                server: server.into(),
                ca: None,
            },
            state_dir: state_dir.into(),
            name: None,
        }
    }
}

/// What to show the person who approves the pairing.
#[derive(Debug, Clone)]
pub struct PairingCode {
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: Duration,
    pub device_name: String,
}

/// Pairs this device: requests a code, hands it to `show`, polls until a person approves
/// or denies it (or it expires), then stores the tokens. Cancel by dropping the future.
pub async fn pair(options: PairOptions, show: impl FnOnce(&PairingCode)) -> Result<Device, Error> {
    let mut file = credentials::load_or_create(&options.state_dir)?;
    if let Some(name) = &options.name {
        file.identity.name = Some(name.clone());
        credentials::save(&options.state_dir, &file)?;
    }
    let api = Api::new(&options.server)?;
    let client_id = file.identity.client_id.clone();
    let code = api
        .device_code(&client_id, file.identity.name.as_deref())
        .await?;
    show(&PairingCode {
        user_code: code.user_code.clone(),
        verification_uri: code.verification_uri.clone(),
        verification_uri_complete: code.verification_uri_complete.clone(),
        expires_in: Duration::from_secs(code.expires_in),
        device_name: code.name.clone(),
    });

    let mut interval = Duration::from_secs(code.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    let tokens = loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline + Duration::from_secs(5) {
            return Err(Error::CodeExpired);
        }
        let answer = match api.poll(&client_id, &code.device_code).await {
            Ok(answer) => answer,
            // The network blinked: keep polling at the agreed pace until the code expires.
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(e),
        };
        match answer {
            Ok(tokens) => break tokens,
            Err(code) => match code.as_str() {
                oauth::AUTHORIZATION_PENDING => {}
                oauth::SLOW_DOWN => interval += Duration::from_secs(5),
                oauth::ACCESS_DENIED => return Err(Error::Denied),
                oauth::EXPIRED_TOKEN => return Err(Error::CodeExpired),
                other => return Err(Error::Other(format!("pairing failed: {other}"))),
            },
        }
    };
    let me = api.me(&tokens.access_token).await?;
    file.pairing = Some(Pairing {
        server: options.server.server.trim_end_matches('/').to_owned(),
        ca: options
            .server
            .ca
            .as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        project_id: me.project.id,
        project_name: me.project.name,
        device_name: me.name,
        access_token: tokens.access_token,
        access_expires_at: now_ms() + tokens.expires_in as i64 * 1000,
        refresh_token: tokens.refresh_token,
    });
    credentials::save(&options.state_dir, &file)?;
    Device::open(&options.state_dir).await
}
