//! Pairing: device models, devices and their device codes (RFC 8628), from the camera's
//! first request to the approval by a person.

use super::{Db, DbResult, IssuedTokens, Tx, new_id};
use crate::clock::{Millis, now_ms};
use crate::domain::Scopes;
use crate::secrets;

/// What `POST /v2/auth/device/code` asks for, already parsed.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Scopes,
    pub client_version: String,
    /// Extension: a name the device proposes for itself.
    pub name: Option<String>,
    pub lifetime_ms: Millis,
    pub interval_secs: i64,
    /// Refuse unknown `client_secret`s.
    pub strict: bool,
}

/// A freshly issued device code; `device_code` is the only copy of the secret.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub device_name: String,
}

/// The answer to one poll of `POST /v2/auth/token` with a device code.
#[derive(Debug)]
pub enum PollOutcome {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Unknown, already used, or issued to another `client_id`.
    InvalidGrant,
    /// The `client_secret` does not match the device's model (strict mode only).
    InvalidClient,
    Approved(IssuedTokens),
}

/// A code waiting for a person, as `rushes pairing list` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct PendingCode {
    pub user_code: String,
    pub device_id: String,
    pub device_name: String,
    pub model: String,
    pub client_id: String,
    pub client_version: String,
    pub scopes: String,
    pub requested_at: i64,
    pub expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    id: String,
    state: String,
    project_id: Option<String>,
    scopes: String,
    interval_secs: i64,
    last_poll_at: Option<i64>,
    expires_at: i64,
    device_id: String,
    client_id: String,
    client_secret: String,
}

/// Whether a code could be approved or denied, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    Expired,
    Unknown,
}

impl Db {
    /// Registers (or refreshes) the device and issues a device code for it. `Ok(None)`
    /// when strict mode refuses the device model.
    pub async fn request_device_code(&self, req: &CodeRequest) -> DbResult<Option<DeviceCode>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let model: Option<(String, i64)> =
            sqlx::query_as("SELECT id, registered FROM device_models WHERE client_secret = $1")
                .bind(&req.client_secret)
                .fetch_optional(&mut *tx)
                .await?;
        let model_id = match model {
            Some((_, registered)) if req.strict && registered == 0 => return Ok(None),
            Some((id, _)) => id,
            None if req.strict => return Ok(None),
            None => {
                let id = new_id();
                sqlx::query(
                    "INSERT INTO device_models (id, client_secret, name, registered, created_at)
                     VALUES ($1, $2, $3, 0, $4)",
                )
                .bind(&id)
                .bind(&req.client_secret)
                .bind("Unregistered model")
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };

        let existing: Option<(String, String)> =
            sqlx::query_as("SELECT id, name FROM devices WHERE client_id = $1")
                .bind(&req.client_id)
                .fetch_optional(&mut *tx)
                .await?;
        let (device_id, device_name) = match existing {
            Some((id, old_name)) => {
                let name = req.name.clone().unwrap_or(old_name);
                sqlx::query(
                    "UPDATE devices SET model_id = $1, name = $2, client_version = $3, updated_at = $4
                     WHERE id = $5",
                )
                .bind(&model_id)
                .bind(&name)
                .bind(&req.client_version)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                (id, name)
            }
            None => {
                let id = new_id();
                let name = req
                    .name
                    .clone()
                    .unwrap_or_else(|| default_device_name(&req.client_id));
                sqlx::query(
                    "INSERT INTO devices (id, client_id, model_id, name, client_version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(&id)
                .bind(&req.client_id)
                .bind(&model_id)
                .bind(&name)
                .bind(&req.client_version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (id, name)
            }
        };

        // User codes are unique among live codes; with 10^6 codes a clash is rare, so retry.
        let user_code = loop {
            let candidate = secrets::user_code();
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM device_codes WHERE user_code = $1 AND state = 'pending' AND expires_at > $2",
            )
            .bind(&candidate)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if live == 0 {
                break candidate;
            }
        };
        let device_code = secrets::generate();
        sqlx::query(
            "INSERT INTO device_codes (id, device_code_hash, user_code, device_id, scopes, state,
                                       interval_secs, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8)",
        )
        .bind(new_id())
        .bind(secrets::hash(&device_code))
        .bind(&user_code)
        .bind(&device_id)
        .bind(req.scopes.to_string())
        .bind(req.interval_secs)
        .bind(now + req.lifetime_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(DeviceCode {
            device_code,
            user_code,
            device_name,
        }))
    }

    /// One poll of the device-code grant. Polls are measured from the previous poll's
    /// arrival, so a client that slows down by the returned 5 s always recovers.
    pub async fn poll_device_code(
        &self,
        device_code: &str,
        client_id: &str,
        client_secret: Option<&str>,
        strict: bool,
        lifetimes: (Millis, Millis),
    ) -> DbResult<PollOutcome> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row: Option<CodeRow> = sqlx::query_as(
            "SELECT c.id, c.state, c.project_id, c.scopes, c.interval_secs, c.last_poll_at, c.expires_at,
                    d.id AS device_id, d.client_id, m.client_secret
             FROM device_codes c
             JOIN devices d ON d.id = c.device_id
             JOIN device_models m ON m.id = d.model_id
             WHERE c.device_code_hash = $1",
        )
        .bind(secrets::hash(device_code))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(code) = row else {
            return Ok(PollOutcome::InvalidGrant);
        };
        if code.client_id != client_id {
            return Ok(PollOutcome::InvalidGrant);
        }
        if strict && client_secret.is_some_and(|s| s != code.client_secret) {
            return Ok(PollOutcome::InvalidClient);
        }
        if code.state == "used" {
            return Ok(PollOutcome::InvalidGrant);
        }
        if code.expires_at <= now {
            return Ok(PollOutcome::Expired);
        }
        let outcome = match code.state.as_str() {
            "denied" => PollOutcome::Denied,
            // Too many wrong guesses while it was live: as good as expired.
            "burned" => PollOutcome::Expired,
            "approved" => {
                // Compare-and-set: of two racing polls, one wins the tokens.
                let won = sqlx::query(
                    "UPDATE device_codes SET state = 'used' WHERE id = $1 AND state = 'approved'",
                )
                .bind(&code.id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let Some(project_id) = code.project_id.filter(|_| won) else {
                    return Ok(PollOutcome::InvalidGrant);
                };
                let scopes: Scopes = code.scopes.parse().unwrap_or_default();
                let tokens = pair_device(
                    &mut tx,
                    &code.device_id,
                    &project_id,
                    &scopes,
                    now,
                    lifetimes,
                )
                .await?;
                PollOutcome::Approved(tokens)
            }
            _ => {
                let too_soon = code
                    .last_poll_at
                    .is_some_and(|last| now - last < code.interval_secs * 1000);
                let interval = if too_soon {
                    code.interval_secs + 5
                } else {
                    code.interval_secs
                };
                sqlx::query(
                    "UPDATE device_codes SET last_poll_at = $1, interval_secs = $2 WHERE id = $3",
                )
                .bind(now)
                .bind(interval)
                .bind(&code.id)
                .execute(&mut *tx)
                .await?;
                if too_soon {
                    PollOutcome::SlowDown
                } else {
                    PollOutcome::Pending
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Approves the live code `user_code`, pairing its device with `project_id`.
    pub async fn approve_code(&self, user_code: &str, project_id: &str) -> DbResult<Decision> {
        self.decide_code(user_code, "approved", Some(project_id))
            .await
    }

    pub async fn deny_code(&self, user_code: &str) -> DbResult<Decision> {
        self.decide_code(user_code, "denied", None).await
    }

    async fn decide_code(
        &self,
        user_code: &str,
        state: &str,
        project_id: Option<&str>,
    ) -> DbResult<Decision> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE device_codes SET state = $1, project_id = $2
             WHERE user_code = $3 AND state = 'pending' AND expires_at > $4",
        )
        .bind(state)
        .bind(project_id)
        .bind(user_code)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done > 0 {
            tx.commit().await?;
            return Ok(Decision::Done);
        }
        let expired: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_codes WHERE user_code = $1 AND state = 'pending' AND expires_at <= $2",
        )
        .bind(user_code)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        Ok(if expired > 0 {
            Decision::Expired
        } else {
            Decision::Unknown
        })
    }

    /// Registers a device model by its `client_secret` (what `--strict-clients` admits),
    /// naming it; idempotent.
    pub async fn register_model(&self, client_secret: &str, name: &str) -> DbResult<()> {
        self.write(sqlx::query(
            "INSERT INTO device_models (id, client_secret, name, registered, created_at) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (client_secret) DO UPDATE SET name = excluded.name, registered = 1",
        )
        .bind(new_id())
        .bind(client_secret)
        .bind(name)
        .bind(now_ms())
        )
        .await?;
        Ok(())
    }

    /// Device models seen or registered: `(client_secret, name, registered)`.
    pub async fn models(&self) -> DbResult<Vec<(String, String, i64)>> {
        sqlx::query_as("SELECT client_secret, name, registered FROM device_models ORDER BY name")
            .fetch_all(self.pool())
            .await
    }

    pub async fn pending_codes(&self) -> DbResult<Vec<PendingCode>> {
        sqlx::query_as(
            "SELECT c.user_code, d.id AS device_id, d.name AS device_name, m.name AS model, d.client_id,
                    d.client_version, c.scopes, c.created_at AS requested_at, c.expires_at
             FROM device_codes c
             JOIN devices d ON d.id = c.device_id
             JOIN device_models m ON m.id = d.model_id
             WHERE c.state = 'pending' AND c.expires_at > $1
             ORDER BY c.created_at",
        )
        .bind(now_ms())
        .fetch_all(self.pool())
        .await
    }
}

/// Binds the device to the project under a new grant (ending any earlier one: a device is
/// paired with one project at a time) and issues its first tokens.
async fn pair_device(
    tx: &mut Tx,
    device_id: &str,
    project_id: &str,
    scopes: &Scopes,
    now: Millis,
    lifetimes: (Millis, Millis),
) -> DbResult<IssuedTokens> {
    sqlx::query("UPDATE grants SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    let grant_id = new_id();
    sqlx::query("INSERT INTO grants (id, device_id, project_id, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&grant_id)
        .bind(device_id)
        .bind(project_id)
        .bind(scopes.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE devices SET project_id = $1, updated_at = $2 WHERE id = $3")
        .bind(project_id)
        .bind(now)
        .bind(device_id)
        .execute(&mut **tx)
        .await?;
    // A status socket opened under the grant just ended closes.
    super::devices::bump_status(tx, device_id).await?;
    super::tokens::issue(tx, &grant_id, scopes, now, lifetimes).await
}

fn default_device_name(client_id: &str) -> String {
    let tail: String = client_id
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("C2C device {tail}")
}
