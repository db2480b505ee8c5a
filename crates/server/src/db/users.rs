//! Web users: counting them (the first start creates `admin`). The rest lives in `web.rs`.

use super::{Db, DbResult};

impl Db {
    pub async fn user_count(&self) -> DbResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await
    }
}
