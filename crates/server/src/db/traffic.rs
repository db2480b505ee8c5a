//! Failed device-API requests (see [`crate::capture`]): written in batches by one task per
//! server, each batch pruning the table to the newest `keep` in the same transaction, so
//! the bound holds on any number of servers without a schedule or a lock.

use super::{Db, DbResult};
use crate::capture::TrafficRecord;

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    at: i64,
    device_id: Option<String>,
    device_name: Option<String>,
    remote_addr: String,
    method: String,
    path: String,
    query: Option<String>,
    headers: String,
    body: Option<String>,
    body_length: i64,
    status: i64,
    detail: Option<String>,
    known_route: i64,
}

impl Db {
    /// Stores `records` and drops all but the newest `keep` rows. Two servers pruning at
    /// once delete the same old rows; neither can delete a row newer than its own cut.
    pub(crate) async fn record_traffic(
        &self,
        records: &[TrafficRecord],
        keep: usize,
    ) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO device_traffic (id, at, device_id, remote_addr, method, path, query,
                     headers, body, body_length, status, detail, known_route)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(&r.id)
            .bind(r.at)
            .bind(r.device_id.clone())
            .bind(&r.remote_addr)
            .bind(&r.method)
            .bind(&r.path)
            .bind(r.query.clone())
            .bind(serde_json::to_string(&r.headers).unwrap_or_else(|_| "[]".into()))
            .bind(r.body.clone())
            .bind(i64::try_from(r.body_length).unwrap_or(i64::MAX))
            .bind(i64::from(r.status))
            .bind(r.detail.clone())
            .bind(i64::from(r.known_route))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM device_traffic WHERE id <
                 (SELECT id FROM device_traffic ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// The newest `limit` records, newest first, of one device or all.
    pub async fn traffic(
        &self,
        device_id: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<TrafficRecord>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT t.id, t.at, t.device_id, d.name AS device_name, t.remote_addr, t.method,
                    t.path, t.query, t.headers, t.body, t.body_length, t.status, t.detail,
                    t.known_route
             FROM device_traffic t LEFT JOIN devices d ON d.id = t.device_id
             WHERE $1 IS NULL OR t.device_id = $1
             ORDER BY t.id DESC LIMIT $2",
        )
        .bind(device_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TrafficRecord {
                id: r.id,
                at: r.at,
                device_id: r.device_id,
                device_name: r.device_name,
                remote_addr: r.remote_addr,
                method: r.method,
                path: r.path,
                query: r.query,
                headers: serde_json::from_str(&r.headers).unwrap_or_default(),
                body: r.body,
                body_length: u64::try_from(r.body_length).unwrap_or(0),
                body_sha256: None,
                status: u16::try_from(r.status).unwrap_or(0),
                detail: r.detail,
                known_route: r.known_route != 0,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> TrafficRecord {
        TrafficRecord {
            id: id.into(),
            at: 1,
            device_id: Some("d".into()),
            device_name: None,
            remote_addr: "127.0.0.1:1".into(),
            method: "GET".into(),
            path: "/v2/nothing".into(),
            query: None,
            headers: vec![("x-client-version".into(), "1".into())],
            body: None,
            body_length: 0,
            body_sha256: None,
            status: 404,
            detail: Some("No route".into()),
            known_route: false,
        }
    }

    #[tokio::test]
    async fn keeps_the_newest_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::test_support::db_with_device(dir.path()).await;
        db.record_traffic(&[record("01"), record("02")], 3)
            .await
            .unwrap();
        db.record_traffic(&[record("03"), record("04"), record("05")], 3)
            .await
            .unwrap();
        let ids: Vec<String> = db
            .traffic(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["05", "04", "03"]);
        let mine = db.traffic(Some("d"), 2).await.unwrap();
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0].device_name.as_deref(), Some("D"));
        assert_eq!(mine[0].headers, record("x").headers);
        assert!(db.traffic(Some("other"), 100).await.unwrap().is_empty());
    }
}
