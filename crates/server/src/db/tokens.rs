//! Grants and their token pairs: authentication, single-use refresh rotation with reuse
//! detection (RFC 9700 §4.14.2), revocation.

use super::{Db, DbResult, Tx, new_id};
use crate::clock::{Millis, now_ms};
use crate::domain::Scopes;
use crate::secrets;

/// A token response's secrets; the only place they exist in clear.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_secs: u64,
}

/// The caller behind a valid access token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Authenticated {
    pub device_id: String,
    pub grant_id: String,
    pub project_id: String,
    #[sqlx(try_from = "String")]
    pub scopes: Scopes,
    pub client_version: String,
    pub last_seen_at: Option<i64>,
    pub device_name: String,
    /// When the device's last pause ended (`i64::MAX` while one is open); `None` if it was
    /// never paused. Read with the token, so a create by a device that was not paused at
    /// its recording time needs no query of its own for that.
    pub pauses_end: Option<i64>,
}

impl Authenticated {
    /// Whether a pause window may cover `at` (then [`Db::was_paused_at`] says for sure).
    pub fn maybe_paused_at(&self, at: i64) -> bool {
        self.pauses_end.is_some_and(|end| end > at)
    }
}

const AUTHENTICATE: &str =
    "SELECT d.id AS device_id, g.id AS grant_id, g.project_id, g.scopes, d.client_version, d.last_seen_at,
            d.name AS device_name,
            (SELECT MAX(COALESCE(w.ended_at, 9223372036854775807)) FROM pause_windows w
             WHERE w.device_id = d.id) AS pauses_end
     FROM token_pairs t
     JOIN grants g ON g.id = t.grant_id
     JOIN devices d ON d.id = g.device_id
     WHERE t.access_hash = $1 AND t.retired_at IS NULL AND t.access_expires_at > $2
       AND g.revoked_at IS NULL";

#[derive(Debug)]
pub enum RefreshOutcome {
    Issued(IssuedTokens),
    /// A retired refresh token came back: the grant is now revoked.
    Reused,
    /// Unknown, expired, revoked, or issued to another client.
    Invalid,
}

/// Issues a new token pair under `grant_id`. A refresh token only with `offline`.
pub(super) async fn issue(
    tx: &mut Tx,
    grant_id: &str,
    scopes: &Scopes,
    now: Millis,
    (access_ms, refresh_ms): (Millis, Millis),
) -> DbResult<IssuedTokens> {
    let access_token = secrets::generate();
    let refresh_token = scopes.offline().then(secrets::generate);
    sqlx::query(
        "INSERT INTO token_pairs (id, grant_id, access_hash, refresh_hash, access_expires_at,
                                  refresh_expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(grant_id)
    .bind(secrets::hash(&access_token))
    .bind(refresh_token.as_deref().map(secrets::hash))
    .bind(now + access_ms)
    .bind(refresh_token.as_ref().map(|_| now + refresh_ms))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(IssuedTokens {
        access_token,
        refresh_token,
        expires_in_secs: u64::try_from(access_ms / 1000).unwrap_or(0),
    })
}

impl Db {
    /// The device behind `access_token`, if the token is current and its grant stands.
    pub async fn authenticate(&self, access_token: &str) -> DbResult<Option<Authenticated>> {
        let (hash, now) = (secrets::hash(access_token), now_ms());
        if let Some(inline) = &self.inline {
            return inline.query_row(
                AUTHENTICATE,
                rusqlite::named_params! {"$1": hash, "$2": now},
                |row| {
                    let scopes: String = row.get("scopes")?;
                    Ok(Authenticated {
                        device_id: row.get("device_id")?,
                        grant_id: row.get("grant_id")?,
                        project_id: row.get("project_id")?,
                        scopes: scopes.parse().map_err(|e: String| {
                            // Column 3 of AUTHENTICATE.
                            rusqlite::Error::FromSqlConversionFailure(
                                3,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })?,
                        client_version: row.get("client_version")?,
                        last_seen_at: row.get("last_seen_at")?,
                        device_name: row.get("device_name")?,
                        pauses_end: row.get("pauses_end")?,
                    })
                },
            );
        }
        sqlx::query_as(AUTHENTICATE)
            .bind(hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await
    }

    /// Rotates a refresh token: retires its pair and issues a new one. Presenting a token
    /// that was already rotated revokes the whole grant.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_id: &str,
        lifetimes: (Millis, Millis),
    ) -> DbResult<RefreshOutcome> {
        let now = now_ms();
        let hash = secrets::hash(refresh_token);
        let mut tx = self.begin_write().await?;
        let retired: Option<(String, Option<i64>)> = sqlx::query_as(
            "UPDATE token_pairs SET retired_at = $1 WHERE refresh_hash = $2 AND retired_at IS NULL
             RETURNING grant_id, refresh_expires_at",
        )
        .bind(now)
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((grant_id, expires_at)) = retired else {
            // Not current: unknown, or a replay of a rotated token.
            let replayed: Option<String> =
                sqlx::query_scalar("SELECT grant_id FROM token_pairs WHERE refresh_hash = $1")
                    .bind(&hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(grant_id) = replayed else {
                return Ok(RefreshOutcome::Invalid);
            };
            let revoked = revoke_grant(&mut tx, &grant_id, now).await?;
            tx.commit().await?;
            // A replay on a grant that was already gone is just an invalid token.
            return Ok(if revoked {
                RefreshOutcome::Reused
            } else {
                RefreshOutcome::Invalid
            });
        };
        let grant: Option<(String, String)> = sqlx::query_as(
            "SELECT g.scopes, d.client_id FROM grants g JOIN devices d ON d.id = g.device_id
             WHERE g.id = $1 AND g.revoked_at IS NULL",
        )
        .bind(&grant_id)
        .fetch_optional(&mut *tx)
        .await?;
        let usable = expires_at.is_some_and(|at| at > now);
        let outcome = match grant {
            Some((scopes, owner)) if usable && owner == client_id => {
                let scopes: Scopes = scopes.parse().unwrap_or_default();
                RefreshOutcome::Issued(issue(&mut tx, &grant_id, &scopes, now, lifetimes).await?)
            }
            // Leave the token as it was: a wrong client_id must not burn the owner's token.
            Some((_, owner)) if owner != client_id => return Ok(RefreshOutcome::Invalid),
            _ => RefreshOutcome::Invalid,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes the grant `token` (access or refresh) belongs to, if it was issued to
    /// `client_id`. Silent about unknown tokens (RFC 7009 §2.2).
    pub async fn revoke_token(&self, token: &str, client_id: &str) -> DbResult<()> {
        let hash = secrets::hash(token);
        let mut tx = self.begin_write().await?;
        let grant: Option<(String, String)> = sqlx::query_as(
            "SELECT g.id, d.client_id FROM token_pairs t
             JOIN grants g ON g.id = t.grant_id JOIN devices d ON d.id = g.device_id
             WHERE t.access_hash = $1 OR t.refresh_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((grant_id, owner)) = grant
            && owner == client_id
        {
            revoke_grant(&mut tx, &grant_id, now_ms()).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// Ends a grant and unbinds its device from the project. Returns false if it had ended.
pub(super) async fn revoke_grant(tx: &mut Tx, grant_id: &str, now: Millis) -> DbResult<bool> {
    let device: Option<String> = sqlx::query_scalar(
        "UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING device_id",
    )
    .bind(now)
    .bind(grant_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(device_id) = device else {
        return Ok(false);
    };
    sqlx::query("UPDATE devices SET project_id = NULL, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&device_id)
        .execute(&mut **tx)
        .await?;
    // Its status socket closes (every revocation path comes through here).
    super::devices::bump_status(tx, &device_id).await?;
    Ok(true)
}
