//! Small server-wide values kept in the database so that every server process sharing it
//! agrees on them (the upload URL signing key).

use super::{Db, DbResult};

impl Db {
    /// Returns the value stored under `key`, storing `make()` first if there is none.
    /// Racing callers all get the value that won.
    pub async fn setting_or_init(
        &self,
        key: &str,
        make: impl FnOnce() -> String,
    ) -> DbResult<String> {
        self.write(
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(make()),
        )
        .await?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(self.pool())
            .await
    }
}
