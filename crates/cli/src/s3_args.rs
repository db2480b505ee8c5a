//! The flags that name an S3-compatible media store, shared by `serve` and
//! `check --media`, which must read the same store the server writes.

use clap::Args;
use rushes_server::config::S3Config;

#[derive(Args)]
pub struct S3Args {
    /// Keep media in this S3-compatible store instead of the data directory; devices then
    /// upload straight to it. Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(
        long,
        env = "RUSHES_S3_ENDPOINT",
        requires = "s3_bucket",
        value_name = "URL"
    )]
    s3_endpoint: Option<String>,
    /// The bucket (it must exist).
    #[arg(
        long,
        env = "RUSHES_S3_BUCKET",
        requires = "s3_endpoint",
        value_name = "NAME"
    )]
    s3_bucket: Option<String>,
    /// The store's region (`auto` for stores without regions).
    #[arg(
        long,
        env = "RUSHES_S3_REGION",
        default_value = "us-east-1",
        value_name = "REGION"
    )]
    s3_region: String,
    /// Address the bucket as `bucket.endpoint` instead of `endpoint/bucket`.
    #[arg(long)]
    s3_virtual_host: bool,
}

impl S3Args {
    /// The store these flags name, `None` for the data directory's own.
    pub fn config(&self) -> anyhow::Result<Option<S3Config>> {
        let (Some(endpoint), Some(bucket)) = (&self.s3_endpoint, &self.s3_bucket) else {
            return Ok(None);
        };
        let credential = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--s3-endpoint needs {name} in the environment"))
        };
        Ok(Some(S3Config {
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            region: self.s3_region.clone(),
            path_style: !self.s3_virtual_host,
            access_key: credential("AWS_ACCESS_KEY_ID")?,
            secret_key: credential("AWS_SECRET_ACCESS_KEY")?,
        }))
    }
}
