//! Projects: where paired devices upload to.

use super::{Db, DbResult, is_unique_violation, new_id};
use crate::clock::now_ms;
use crate::domain::names::folder_name;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: String,
    pub name: String,
    /// Folder of the project in the media store.
    pub dir: String,
    pub created_at: i64,
}

impl Db {
    /// Creates a project; `Ok(None)` when the name is taken.
    pub async fn create_project(&self, name: &str) -> DbResult<Option<Project>> {
        let base = folder_name(name);
        for n in 1..1000 {
            let dir = if n == 1 {
                base.clone()
            } else {
                format!("{base} ({n})")
            };
            let project = Project {
                id: new_id(),
                name: name.to_owned(),
                dir,
                created_at: now_ms(),
            };
            let inserted = self
                .write(
                    sqlx::query(
                        "INSERT INTO projects (id, name, dir, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&project.id)
                    .bind(&project.name)
                    .bind(&project.dir)
                    .bind(project.created_at),
                )
                .await;
            match inserted {
                Ok(_) => return Ok(Some(project)),
                Err(e) if is_unique_violation(&e) => {
                    if self.project_by_name(name).await?.is_some() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(sqlx::Error::Protocol(
            "no free folder name for the project".into(),
        ))
    }

    pub async fn projects(&self) -> DbResult<Vec<Project>> {
        sqlx::query_as("SELECT id, name, dir, created_at FROM projects ORDER BY name")
            .fetch_all(self.pool())
            .await
    }

    pub async fn project_by_name(&self, name: &str) -> DbResult<Option<Project>> {
        sqlx::query_as("SELECT id, name, dir, created_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
    }

    pub async fn project(&self, id: &str) -> DbResult<Option<Project>> {
        sqlx::query_as("SELECT id, name, dir, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }
}
