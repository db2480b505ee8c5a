//! Headless administration (`rushes project|pairing|device|asset ...`): the same
//! operations the web UI will offer, acting directly on the data directory's database.
//! Safe while the server runs: every change is one transaction, and SQLite serialises
//! writers across processes.

use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::db::{AssetListing, ClipNote, Db, Decision, DeviceListing, PendingCode, Project};

pub struct Admin {
    db: Db,
}

impl Admin {
    /// Opens the database of an existing data directory (or `database_url`, when the
    /// server keeps its metadata in PostgreSQL).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Admin> {
        if let Some(url) = database_url {
            return Ok(Admin {
                db: crate::db::Db::connect(url)
                    .await
                    .context("connecting to the database")?,
            });
        }
        let path = crate::Config::new(data_dir).database_path();
        if !path.exists() {
            bail!(
                "no Rushes database in {}; start the server once with `rushes serve --data {}`",
                data_dir.display(),
                data_dir.display()
            );
        }
        Ok(Admin {
            db: Db::open_sqlite(&path)
                .await
                .context("opening the database")?,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn create_project(&self, name: &str) -> anyhow::Result<Project> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            bail!("a project name must be 1 to 100 printable characters");
        }
        self.db
            .create_project(name)
            .await?
            .ok_or_else(|| anyhow!("a project named {name:?} exists already"))
    }

    pub async fn projects(&self) -> anyhow::Result<Vec<Project>> {
        Ok(self.db.projects().await?)
    }

    async fn project_named(&self, name: &str) -> anyhow::Result<Project> {
        self.db
            .project_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("no project named {name:?} (see `rushes project list`)"))
    }

    /// Creates a web user and returns its generated password (shown once).
    pub async fn add_user(&self, name: &str, admin: bool) -> anyhow::Result<String> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > 64
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "._-@".contains(c))
        {
            bail!("a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'");
        }
        let password = crate::passwords::generate();
        if !self
            .db
            .add_user(name, &crate::passwords::hash(&password)?, admin)
            .await?
        {
            bail!("a user named {name:?} exists already");
        }
        Ok(password)
    }

    /// Sets a new generated password (signing the user out everywhere) and returns it.
    pub async fn reset_password(&self, name: &str) -> anyhow::Result<String> {
        let password = crate::passwords::generate();
        if !self
            .db
            .set_password(name, &crate::passwords::hash(&password)?)
            .await?
        {
            bail!("no user named {name:?}");
        }
        Ok(password)
    }

    pub async fn add_member(&self, project: &str, user: &str) -> anyhow::Result<()> {
        let project = self.project_named(project).await?;
        if !self.db.add_member(&project.id, user).await? {
            bail!("no user named {user:?} (see `rushes user add`)");
        }
        Ok(())
    }

    pub async fn register_model(&self, client_secret: &str, name: &str) -> anyhow::Result<()> {
        let (secret, name) = (client_secret.trim(), name.trim());
        if secret.is_empty() || secret.len() > 256 || name.is_empty() || name.chars().count() > 100
        {
            bail!("give the model's client_secret (1 to 256 characters) and a name (1 to 100)");
        }
        Ok(self.db.register_model(secret, name).await?)
    }

    pub async fn models(&self) -> anyhow::Result<Vec<(String, String, bool)>> {
        Ok(self
            .db
            .models()
            .await?
            .into_iter()
            .map(|(s, n, r)| (s, n, r != 0))
            .collect())
    }

    pub async fn pending_codes(&self) -> anyhow::Result<Vec<PendingCode>> {
        Ok(self.db.pending_codes().await?)
    }

    pub async fn approve(&self, code: &str, project: &str) -> anyhow::Result<()> {
        let code = normalise_code(code)?;
        let project = self.project_named(project).await?;
        decided(self.db.approve_code(&code, &project.id).await?, &code)
    }

    pub async fn deny(&self, code: &str) -> anyhow::Result<()> {
        let code = normalise_code(code)?;
        decided(self.db.deny_code(&code).await?, &code)
    }

    pub async fn devices(&self, project: Option<&str>) -> anyhow::Result<Vec<DeviceListing>> {
        let project_id = match project {
            Some(name) => Some(self.project_named(name).await?.id),
            None => None,
        };
        Ok(self.db.devices(project_id.as_deref()).await?)
    }

    /// The one device whose id, client_id or name is `selector`.
    pub async fn device(&self, selector: &str) -> anyhow::Result<DeviceListing> {
        let mut found = self.db.find_devices(selector).await?;
        match found.len() {
            0 => bail!(
                "no device with id, client_id or name {selector:?} (see `rushes device list`)"
            ),
            1 => Ok(found.remove(0)),
            n => bail!("{n} devices are named {selector:?}; use the id or client_id instead"),
        }
    }

    /// Pauses the device, or one of its channels (`Some(index)`).
    pub async fn pause(
        &self,
        selector: &str,
        channel: Option<i64>,
    ) -> anyhow::Result<DeviceListing> {
        let device = self.device(selector).await?;
        self.db.pause_device(&device.id, channel).await?;
        Ok(device)
    }

    pub async fn resume(
        &self,
        selector: &str,
        channel: Option<i64>,
    ) -> anyhow::Result<DeviceListing> {
        let device = self.device(selector).await?;
        self.db.resume_device(&device.id, channel).await?;
        Ok(device)
    }

    pub async fn unpair(&self, selector: &str) -> anyhow::Result<DeviceListing> {
        let device = self.device(selector).await?;
        self.db.unpair_device(&device.id).await?;
        Ok(device)
    }

    /// Recorded device traffic, oldest first, at most the newest `limit`: the failed
    /// requests every server keeps in the database, merged (by request id) with the
    /// `--capture` files of `data_dir`, when there are any. `device` is a selector as for
    /// [`Admin::device`]; `errors_only` keeps failures and unknown routes.
    pub async fn traffic(
        &self,
        data_dir: &Path,
        device: Option<&str>,
        errors_only: bool,
        limit: usize,
    ) -> anyhow::Result<Vec<crate::capture::TrafficRecord>> {
        let device_id = match device {
            Some(selector) => Some(self.device(selector).await?.id),
            None => None,
        };
        let mut by_id = std::collections::BTreeMap::new();
        let wanted = |r: &crate::capture::TrafficRecord| {
            (device_id.is_none() || r.device_id == device_id) && (!errors_only || r.is_error())
        };
        let captured =
            crate::capture::read_captures(data_dir, limit, wanted).with_context(|| {
                format!(
                    "reading {}",
                    crate::capture::captures_dir(data_dir).display()
                )
            })?;
        for record in captured {
            by_id.insert(record.id.clone(), record);
        }
        let rows = self
            .db
            .traffic(
                device_id.as_deref(),
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await?;
        for mut row in rows {
            if let Some(line) = by_id.get(&row.id) {
                row.body_sha256.clone_from(&line.body_sha256);
            }
            by_id.insert(row.id.clone(), row);
        }
        let names: std::collections::HashMap<String, String> = self
            .db
            .devices(None)
            .await?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        let mut records: Vec<_> = by_id
            .into_values()
            .filter(|r| device_id.is_none() || r.device_id == device_id)
            .filter(|r| !errors_only || r.is_error())
            .map(|mut r| {
                if r.device_name.is_none() {
                    r.device_name = r.device_id.as_ref().and_then(|id| names.get(id).cloned());
                }
                r
            })
            .collect();
        // Ids are time-ordered (UUIDv7), so the map's order is arrival order.
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
        Ok(records)
    }

    pub async fn assets(&self, project: Option<&str>) -> anyhow::Result<Vec<AssetListing>> {
        let project_id = match project {
            Some(name) => Some(self.project_named(name).await?.id),
            None => None,
        };
        Ok(self.db.asset_listing(project_id.as_deref()).await?)
    }

    /// The complete clips `rushes check --media` re-reads: of one project (by name) and
    /// completed since a time, when given.
    pub async fn clips_to_scrub(
        &self,
        project: Option<&str>,
        since: Option<crate::clock::Millis>,
    ) -> anyhow::Result<Vec<crate::db::ScrubClip>> {
        let project_id = match project {
            Some(name) => Some(self.project_named(name).await?.id),
            None => None,
        };
        Ok(self.db.clips_to_scrub(project_id.as_deref(), since).await?)
    }

    /// Re-reads one clip from `store`, records what was found and returns it.
    pub async fn verify_clip(
        &self,
        store: &dyn crate::media::MediaStore,
        clip: &crate::db::ScrubClip,
        pace: &mut crate::scrub::Pace,
        progress: impl FnMut(u64),
    ) -> anyhow::Result<crate::scrub::Finding> {
        crate::scrub::verify_and_record(&self.db, store, clip, pace, progress).await
    }

    /// A clip's comments and markers from its device, in time order.
    pub async fn asset_comments(&self, asset_id: &str) -> anyhow::Result<Vec<ClipNote>> {
        self.db.clip_notes(asset_id.trim()).await?.ok_or_else(|| {
            anyhow::anyhow!("no asset with id {asset_id:?} (see `rushes asset list`)")
        })
    }
}

/// Accepts `123456`, `123 456` and `123-456`.
fn normalise_code(code: &str) -> anyhow::Result<String> {
    let digits: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("a pairing code is 6 digits, as the device shows it");
    }
    Ok(digits)
}

fn decided(decision: Decision, code: &str) -> anyhow::Result<()> {
    match decision {
        Decision::Done => Ok(()),
        Decision::Expired => bail!("code {code} has expired; ask the device for a new one"),
        Decision::Unknown => {
            bail!("no pending pairing with code {code} (see `rushes pairing list`)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalised() {
        assert_eq!(normalise_code("123 456").unwrap(), "123456");
        assert_eq!(normalise_code("123-456").unwrap(), "123456");
        assert!(normalise_code("12345").is_err());
        assert!(normalise_code("12345a").is_err());
    }
}
