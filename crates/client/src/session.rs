//! The device's tokens: handed out to API calls, refreshed before they expire (or once after
//! a 401), and persisted before anything else happens, because refresh tokens are single
//! use: a rotated pair that is not saved is a device that must pair again.

use std::future::Future;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::Error;
use crate::api::Api;
use crate::credentials::{self, DeviceFile, Pairing};

/// Refresh this long before the access token expires.
const REFRESH_MARGIN_MS: i64 = 120_000;

pub(crate) struct Session {
    pub api: Api,
    pub client_id: String,
    state_dir: PathBuf,
    file: Mutex<DeviceFile>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Session {
    pub fn new(state_dir: PathBuf, file: DeviceFile, api: Api) -> Session {
        Session {
            api,
            client_id: file.identity.client_id.clone(),
            state_dir,
            file: Mutex::new(file),
        }
    }

    pub async fn pairing(&self) -> Result<Pairing, Error> {
        self.file
            .lock()
            .await
            .pairing
            .clone()
            .ok_or(Error::NotPaired)
    }

    /// A current access token, refreshed first if it is about to expire.
    pub async fn token(&self) -> Result<String, Error> {
        let mut file = self.file.lock().await;
        let pairing = file.pairing.as_ref().ok_or(Error::NotPaired)?;
        if pairing.access_expires_at - now_ms() > REFRESH_MARGIN_MS {
            return Ok(pairing.access_token.clone());
        }
        self.refresh_locked(&mut file).await
    }

    /// After a 401 with `used`: refresh, unless another task already did.
    async fn after_unauthorized(&self, used: &str) -> Result<String, Error> {
        let mut file = self.file.lock().await;
        let pairing = file.pairing.as_ref().ok_or(Error::NotPaired)?;
        if pairing.access_token != used {
            return Ok(pairing.access_token.clone());
        }
        self.refresh_locked(&mut file).await
    }

    async fn refresh_locked(&self, file: &mut DeviceFile) -> Result<String, Error> {
        let pairing = file.pairing.as_mut().ok_or(Error::NotPaired)?;
        let Some(refresh) = pairing.refresh_token.clone() else {
            return Err(Error::PairAgain(
                "the access token expired and no refresh token was granted".into(),
            ));
        };
        match self.api.refresh(&self.client_id, &refresh).await? {
            Ok(tokens) => {
                pairing.access_token = tokens.access_token.clone();
                pairing.access_expires_at = now_ms() + tokens.expires_in as i64 * 1000;
                pairing.refresh_token = tokens.refresh_token.or(Some(refresh));
                credentials::save(&self.state_dir, file)?;
                tracing::info!("access token refreshed");
                Ok(tokens.access_token)
            }
            Err(code) => Err(Error::PairAgain(format!(
                "refreshing the token was refused: {code}"
            ))),
        }
    }

    /// Runs an authenticated call; a 401 triggers one refresh and one retry.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let token = self.token().await?;
        match op(token.clone()).await {
            Err(e) if e.status() == Some(401) => {
                let fresh = self.after_unauthorized(&token).await?;
                match op(fresh).await {
                    Err(e) if e.status() == Some(401) => Err(Error::PairAgain(
                        "the server refuses this device's token".into(),
                    )),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Forgets the pairing locally (after revoking it on the server, if reachable).
    pub async fn forget(&self) -> Result<Option<Pairing>, Error> {
        let mut file = self.file.lock().await;
        let old = file.pairing.take();
        credentials::save(&self.state_dir, &file)?;
        Ok(old)
    }
}
