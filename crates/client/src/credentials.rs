//! The device's identity and credentials, kept in `device.json` in the state directory:
//! written atomically with mode 0600, because it holds the refresh token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Who this device is, across pairings: the `client_id` is created once and kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub client_id: String,
    pub name: Option<String>,
}

/// The current pairing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pairing {
    pub server: String,
    /// Extra root certificate to trust (the server's `ca.crt`).
    pub ca: Option<PathBuf>,
    pub project_id: String,
    pub project_name: String,
    pub device_name: String,
    pub access_token: String,
    /// Unix milliseconds.
    pub access_expires_at: i64,
    pub refresh_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceFile {
    pub identity: DeviceIdentity,
    pub pairing: Option<Pairing>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("device.json")
}

/// Loads `device.json`, creating the identity (and the directory) the first time.
pub fn load_or_create(state_dir: &Path) -> Result<DeviceFile, Error> {
    std::fs::create_dir_all(state_dir)?;
    match std::fs::read(path(state_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("{} is damaged: {e}", path(state_dir).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = DeviceFile {
                identity: DeviceIdentity {
                    client_id: uuid::Uuid::new_v4().to_string(),
                    name: None,
                },
                pairing: None,
            };
            save(state_dir, &file)?;
            Ok(file)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn save(state_dir: &Path, file: &DeviceFile) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(file).map_err(Error::other)?;
    rushes_proto::atomic_file::write(&path(state_dir), &json, 0o600)?;
    Ok(())
}
