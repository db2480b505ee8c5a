//! `rushes check`: is the metadata store intact after a crash, and does it still hold
//! together?
//!
//! Two layers. The engine's own check finds torn pages and broken indexes: SQLite's
//! `PRAGMA integrity_check` and `foreign_key_check`; PostgreSQL's `amcheck` (every B-tree
//! index against its table, every table's heap) when that extension is installed. Then the
//! rules the server's transactions keep on both engines: a complete asset has its SHA-256
//! and size, every part it was planned with arrived, its parts add up to its size, and so
//! on. A crash between two statements of a transaction must never break one of them; the
//! load and crash suite (`rushes-load`) runs this after killing the server.

use super::{Backend, Db, DbResult};

/// Rules the server's transactions keep, as queries for the ids that break them.
const RULES: &[(&str, &str)] = &[
    (
        "an asset has a known state",
        "SELECT id FROM assets
         WHERE state NOT IN ('uploading', 'assembling', 'complete', 'abandoned',
                             'superseded', 'duplicate')",
    ),
    (
        "a superseded asset holds no parts",
        "SELECT DISTINCT a.id FROM assets a JOIN parts p ON p.asset_id = a.id
         WHERE a.state = 'superseded'",
    ),
    (
        "a duplicate names a complete clip with its SHA-256 and size",
        "SELECT a.id FROM assets a WHERE a.state = 'duplicate'
         AND NOT EXISTS (SELECT 1 FROM assets o WHERE o.id = a.duplicate_of AND o.state = 'complete'
                         AND o.sha256 = a.sha256 AND o.filesize = a.filesize)",
    ),
    (
        "a complete asset has its SHA-256, size and completion time",
        "SELECT id FROM assets WHERE state = 'complete'
         AND (sha256 IS NULL OR filesize IS NULL OR completed_at IS NULL)",
    ),
    (
        "a planned asset being joined or complete has received every part",
        "SELECT a.id FROM assets a
         WHERE a.state IN ('assembling', 'complete') AND a.part_count IS NOT NULL
           AND a.part_count <> (SELECT COUNT(*) FROM parts p
                                WHERE p.asset_id = a.id AND p.received_at IS NOT NULL)",
    ),
    (
        "a real-time asset being joined or complete has received every part, one final",
        "SELECT a.id FROM assets a
         WHERE a.state IN ('assembling', 'complete') AND a.part_count IS NULL
           AND (EXISTS (SELECT 1 FROM parts p WHERE p.asset_id = a.id AND p.received_at IS NULL)
                OR (SELECT COUNT(*) FROM parts p WHERE p.asset_id = a.id AND p.is_final = 1) <> 1)",
    ),
    (
        "the parts of an asset being joined or complete add up to its size",
        "SELECT a.id FROM assets a
         WHERE a.state IN ('assembling', 'complete')
           AND a.filesize <> (SELECT COALESCE(SUM(p.size), 0) FROM parts p
                              WHERE p.asset_id = a.id AND p.received_at IS NOT NULL)",
    ),
    (
        "a part's number is within its asset's plan",
        "SELECT DISTINCT p.asset_id FROM parts p JOIN assets a ON a.id = p.asset_id
         WHERE a.part_count IS NOT NULL AND (p.number < 1 OR p.number > a.part_count)",
    ),
    (
        "a received part names where its bytes are",
        "SELECT DISTINCT asset_id FROM parts WHERE received_at IS NOT NULL AND stored_as IS NULL",
    ),
    (
        "a pairing code has a known state",
        "SELECT id FROM device_codes
         WHERE state NOT IN ('pending', 'approved', 'denied', 'used', 'burned')",
    ),
];

/// What `Db::check` ran and found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// The checks that ran, in order.
    pub ran: Vec<String>,
    /// Checks that could not run here, and why.
    pub skipped: Vec<String>,
    /// Everything found broken; empty when the database is intact.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Db {
    /// The engine's integrity check, then the server's consistency rules.
    pub async fn check(&self) -> DbResult<CheckReport> {
        let mut report = CheckReport::default();
        match self.backend {
            Backend::Sqlite => self.check_sqlite(&mut report).await?,
            Backend::Postgres => self.check_postgres(&mut report).await?,
        }
        for &(rule, sql) in RULES {
            let ids: Vec<String> = sqlx::query_scalar(sql).fetch_all(&self.pool).await?;
            if !ids.is_empty() {
                report
                    .problems
                    .push(format!("{rule}: broken by {}", sample(&ids)));
            }
        }
        report
            .ran
            .push(format!("{} consistency rules", RULES.len()));
        Ok(report)
    }

    async fn check_sqlite(&self, report: &mut CheckReport) -> DbResult<()> {
        let verdict: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        if verdict != ["ok"] {
            report.problems.extend(verdict);
        }
        report.ran.push("SQLite integrity_check".into());
        let orphans: Vec<String> = sqlx::query_scalar(
            "SELECT \"table\" || ' refers to a missing ' || parent FROM pragma_foreign_key_check",
        )
        .fetch_all(&self.pool)
        .await?;
        if !orphans.is_empty() {
            report.problems.push(format!(
                "{} rows refer to rows that do not exist: {}",
                orphans.len(),
                sample(&orphans)
            ));
        }
        report.ran.push("SQLite foreign_key_check".into());
        Ok(())
    }

    async fn check_postgres(&self, report: &mut CheckReport) -> DbResult<()> {
        let amcheck: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_extension WHERE extname = 'amcheck'")
                .fetch_one(&self.pool)
                .await?;
        if amcheck == 0 {
            report.skipped.push(
                "PostgreSQL index and table check: the amcheck extension is not installed \
                 (a superuser can run CREATE EXTENSION amcheck in this database)"
                    .into(),
            );
            return Ok(());
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_am am ON am.oid = c.relam
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE am.amname = 'btree' AND n.nspname = current_schema()
             ORDER BY c.relname",
        )
        .fetch_all(&self.pool)
        .await?;
        for index in &indexes {
            // Raises an error naming the damage; true: every table row must be in the index.
            let checked =
                sqlx::query("SELECT 1 FROM (SELECT bt_index_check($1::regclass, true)) c")
                    .bind(index)
                    .execute(&self.pool)
                    .await;
            if let Err(e) = checked {
                report.problems.push(format!("index {index}: {e}"));
            }
        }
        report
            .ran
            .push(format!("PostgreSQL amcheck of {} indexes", indexes.len()));
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        for table in &tables {
            let damage: Vec<String> =
                sqlx::query_scalar("SELECT msg FROM verify_heapam($1::regclass)")
                    .bind(table)
                    .fetch_all(&self.pool)
                    .await?;
            if !damage.is_empty() {
                report
                    .problems
                    .push(format!("table {table}: {}", sample(&damage)));
            }
        }
        report.ran.push(format!(
            "PostgreSQL verify_heapam of {} tables",
            tables.len()
        ));
        Ok(())
    }
}

/// The first few of `items`, and how many more.
fn sample(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}
