//! Web users. This issue only creates the first one (`admin`); sign-in comes with the web UI.

use super::{Db, DbResult, new_id};
use crate::clock::now_ms;

impl Db {
    pub async fn user_count(&self) -> DbResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await
    }

    /// Creates a user unless the name is taken; returns whether it was created.
    pub async fn create_user(&self, username: &str, password_hash: &str) -> DbResult<bool> {
        let done = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(new_id())
        .bind(username)
        .bind(password_hash)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
