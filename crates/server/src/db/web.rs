//! What the web UI needs from the metadata store: users, sessions, project membership,
//! pairing-code lookups with wrong-guess accounting, and the project page's listings.

use super::{Db, DbResult, new_id};
use crate::clock::{Millis, now_ms};
use crate::secrets;

/// A code's guess budget across all users (RFC 8628 §5.1: a 6-digit code has ~20 bits).
pub const MAX_WRONG_GUESSES: i64 = 5;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub is_admin: i64,
}

/// A live code found by a person typing it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeLookup {
    pub user_code: String,
    pub device_name: String,
    pub model: String,
    pub client_id: String,
    pub client_version: String,
    pub requested_at: i64,
    pub expires_at: i64,
}

pub enum Lookup {
    Live(CodeLookup),
    Expired,
    Unknown,
}

/// An upload in flight, for the live progress on the project page.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct InFlight {
    pub id: String,
    pub path: String,
    pub total: Option<i64>,
    pub received: i64,
}

const USER_COLUMNS: &str = "id, username, password_hash, is_admin";

impl Db {
    pub async fn user_by_name(&self, username: &str) -> DbResult<Option<User>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(self.pool())
        .await
    }

    pub async fn set_password(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        let mut tx = self.begin_write().await?;
        let user: Option<String> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $1 WHERE username = $2 RETURNING id",
        )
        .bind(password_hash)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user_id) = user else {
            return Ok(false);
        };
        // A new password signs the user out everywhere.
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn set_admin(&self, username: &str, admin: bool) -> DbResult<()> {
        self.write(
            sqlx::query("UPDATE users SET is_admin = $1 WHERE username = $2")
                .bind(i64::from(admin))
                .bind(username),
        )
        .await?;
        Ok(())
    }

    pub async fn add_member(&self, project_id: &str, username: &str) -> DbResult<bool> {
        let added = self.write(sqlx::query(
            "INSERT INTO project_members (project_id, user_id) SELECT $1, id FROM users WHERE username = $2
             ON CONFLICT DO NOTHING",
        )
        .bind(project_id)
        .bind(username)
        )
        .await?;
        Ok(added.rows_affected() > 0 || self.user_by_name(username).await?.is_some())
    }

    /// Starts a session; returns the cookie value (the only copy).
    pub async fn create_session(&self, user_id: &str, lifetime_ms: Millis) -> DbResult<String> {
        let token = secrets::generate();
        let now = now_ms();
        self.write(sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(secrets::hash(&token))
            .bind(user_id)
            .bind(now)
            .bind(now + lifetime_ms)
            )
            .await?;
        Ok(token)
    }

    pub async fn session_user(&self, token: &str) -> DbResult<Option<User>> {
        sqlx::query_as(
            "SELECT u.id, u.username, u.password_hash, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(secrets::hash(token))
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await
    }

    pub async fn end_session(&self, token: &str) -> DbResult<()> {
        self.write(
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(secrets::hash(token)),
        )
        .await?;
        Ok(())
    }

    /// Projects the user may see: all for administrators, else those they are a member of.
    pub async fn visible_projects(&self, user: &User) -> DbResult<Vec<super::Project>> {
        if user.is_admin != 0 {
            return self.projects().await;
        }
        sqlx::query_as(
            "SELECT p.id, p.name, p.dir, p.created_at FROM projects p
             JOIN project_members m ON m.project_id = p.id WHERE m.user_id = $1 ORDER BY p.name",
        )
        .bind(&user.id)
        .fetch_all(self.pool())
        .await
    }

    pub async fn can_see_project(&self, user: &User, project_id: &str) -> DbResult<bool> {
        if user.is_admin != 0 {
            return Ok(self.project(project_id).await?.is_some());
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND user_id = $2",
        )
        .bind(project_id)
        .bind(&user.id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// Looks a typed code up. A miss counts as a wrong guess against every live code, and
    /// burns those that reach [`MAX_WRONG_GUESSES`].
    pub async fn lookup_code(&self, user_code: &str) -> DbResult<Lookup> {
        let now = now_ms();
        let found: Option<CodeLookup> = sqlx::query_as(
            "SELECT c.user_code, d.name AS device_name, m.name AS model, d.client_id, d.client_version,
                    c.created_at AS requested_at, c.expires_at
             FROM device_codes c JOIN devices d ON d.id = c.device_id JOIN device_models m ON m.id = d.model_id
             WHERE c.user_code = $1 AND c.state = 'pending' AND c.expires_at > $2",
        )
        .bind(user_code)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        if let Some(code) = found {
            return Ok(Lookup::Live(code));
        }
        let expired: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM device_codes WHERE user_code = $1 AND state IN ('pending', 'burned') AND expires_at > $2 - 3600000",
        )
        .bind(user_code)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE device_codes SET wrong_guesses = wrong_guesses + 1 WHERE state = 'pending' AND expires_at > $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE device_codes SET state = 'burned' WHERE state = 'pending' AND wrong_guesses >= $1")
            .bind(MAX_WRONG_GUESSES)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(if expired > 0 {
            Lookup::Expired
        } else {
            Lookup::Unknown
        })
    }

    pub async fn rename_device(&self, device_id: &str, name: &str) -> DbResult<()> {
        self.write(
            sqlx::query("UPDATE devices SET name = $1, updated_at = $2 WHERE id = $3")
                .bind(name)
                .bind(now_ms())
                .bind(device_id),
        )
        .await?;
        Ok(())
    }

    pub async fn device_project(&self, device_id: &str) -> DbResult<Option<String>> {
        sqlx::query_scalar::<_, Option<String>>("SELECT project_id FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(self.pool())
            .await
            .map(Option::flatten)
    }

    /// Uploads in flight in a project, with the bytes received so far.
    pub async fn in_flight(&self, project_id: &str) -> DbResult<Vec<InFlight>> {
        sqlx::query_as(
            "SELECT a.id, a.path, a.filesize AS total,
                    CAST(COALESCE((SELECT SUM(p.size) FROM parts p WHERE p.asset_id = a.id AND p.received_at IS NOT NULL), 0) AS BIGINT) AS received
             FROM assets a WHERE a.project_id = $1 AND a.state IN ('uploading', 'assembling') ORDER BY a.created_at",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await
    }

    /// A cheap fingerprint of a project's finished assets, to tell the page to refresh.
    pub async fn completed_marker(&self, project_id: &str) -> DbResult<String> {
        let (n, last): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(completed_at) FROM assets WHERE project_id = $1 AND state = 'complete'",
        )
        .bind(project_id)
        .fetch_one(self.pool())
        .await?;
        Ok(format!("{n}-{}", last.unwrap_or(0)))
    }

    /// Creates a user; returns false if the name is taken.
    pub async fn add_user(
        &self,
        username: &str,
        password_hash: &str,
        admin: bool,
    ) -> DbResult<bool> {
        let created = self.write(sqlx::query(
            "INSERT INTO users (id, username, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(new_id())
        .bind(username)
        .bind(password_hash)
        .bind(i64::from(admin))
        .bind(now_ms())
        )
        .await?;
        Ok(created.rows_affected() == 1)
    }
}
