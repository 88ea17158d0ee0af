//! Where the data lives: a local directory or an `s3://bucket/prefix`, opened through object_store.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, RetryConfig};

use crate::error::{EngineError, Result};

/// A parsed `--data` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataLocation {
    /// A directory on local disk (absolute once parsed).
    Local(PathBuf),
    /// A bucket and key prefix in S3 or an S3-compatible server.
    S3 { bucket: String, prefix: String },
}

/// Extra S3 settings applied over the standard `AWS_*` environment variables, using object_store's
/// config key names (`aws_endpoint`, `aws_access_key_id`, …). Tests use this to point at a local
/// server without touching the process environment.
pub type S3Overrides = Vec<(String, String)>;

impl DataLocation {
    /// Parses `s3://bucket/prefix` or a local path. A local path is made absolute but need not
    /// exist yet (writers create it); readers call [`DataLocation::require_exists`].
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason: &str| EngineError::Location {
            location: value.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = value
            .strip_prefix("s3://")
            .or_else(|| value.strip_prefix("s3a://"))
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("an S3 location needs a bucket: s3://bucket/prefix"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(DataLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if value.contains("://") {
            return Err(bad(
                "only local directories and s3:// locations are supported",
            ));
        }
        if value.is_empty() {
            return Err(bad("empty path"));
        }
        let path = std::path::absolute(value).map_err(|e| bad(&e.to_string()))?;
        Ok(DataLocation::Local(path))
    }

    /// Fails with a clear message when a local directory does not exist. (An S3 prefix is just a
    /// key prefix: an empty one is a valid, empty location.)
    pub fn require_exists(&self) -> Result<()> {
        match self {
            DataLocation::Local(dir) if !dir.is_dir() => Err(EngineError::Location {
                location: dir.display().to_string(),
                reason: if dir.exists() {
                    "is not a directory".into()
                } else {
                    "does not exist".into()
                },
            }),
            _ => Ok(()),
        }
    }

    /// The URL DataFusion registers the store under.
    pub fn store_url(&self) -> ObjectStoreUrl {
        let url = match self {
            DataLocation::Local(_) => "file://".to_string(),
            DataLocation::S3 { bucket, .. } => format!("s3://{bucket}"),
        };
        ObjectStoreUrl::parse(url).expect("static store URL is valid")
    }

    /// What to put before an object path to show it to a user: `/` for local paths (object_store
    /// drops the leading slash), `s3://bucket/` for S3 keys.
    pub fn display_prefix(&self) -> String {
        match self {
            DataLocation::Local(_) => "/".to_string(),
            DataLocation::S3 { bucket, .. } => format!("s3://{bucket}/"),
        }
    }

    /// The object-store path of the location root.
    pub fn root(&self) -> Path {
        match self {
            DataLocation::Local(dir) => local_path(dir),
            DataLocation::S3 { prefix, .. } => Path::from(prefix.as_str()),
        }
    }

    /// The object-store path of a table's directory.
    pub fn table_dir(&self, table: &str) -> Path {
        self.root().join(table)
    }

    /// The listing URL of a table's directory (with its trailing slash, so it is a collection).
    pub fn table_url(&self, table: &str) -> Result<ListingTableUrl> {
        let url = match self {
            DataLocation::Local(dir) => {
                let dir = dir.join(table);
                format!("file://{}/", dir.display())
            }
            DataLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{table}/")
            }
            DataLocation::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}/{table}/"),
        };
        Ok(ListingTableUrl::parse(url)?)
    }

    /// Opens the object store: the local file system, or S3 configured like the AWS tools
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
    /// `AWS_ENDPOINT_URL`, …) with `overrides` on top. An `http://` endpoint turns on plain HTTP,
    /// since only local S3-compatible servers are reached that way.
    pub fn open_store(&self, overrides: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
        match self {
            DataLocation::Local(_) => Ok(Arc::new(LocalFileSystem::new())),
            DataLocation::S3 { bucket, .. } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in overrides {
                    let key: AmazonS3ConfigKey = key.parse()?;
                    builder = builder.with_config(key, value);
                }
                let endpoint = builder
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::S3Endpoint));
                if endpoint.is_some_and(|e| e.starts_with("http://")) {
                    builder = builder.with_allow_http(true);
                }
                Ok(Arc::new(builder.with_retry(s3_retry()).build()?))
            }
        }
    }
}

/// Retries for S3 requests: enough to ride out a blip, short enough that a query against an
/// unreachable server fails in seconds with a clear error (object_store's default keeps trying
/// for three minutes).
fn s3_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
    }
}

impl std::fmt::Display for DataLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataLocation::Local(dir) => write!(f, "{}", dir.display()),
            DataLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

fn local_path(dir: &FsPath) -> Path {
    // object_store's local paths are absolute paths without the leading slash.
    Path::from(dir.to_string_lossy().trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local() {
        assert_eq!(
            DataLocation::parse("s3://b/some/prefix/").unwrap(),
            DataLocation::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            DataLocation::parse("s3://b").unwrap(),
            DataLocation::S3 {
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert!(
            matches!(DataLocation::parse("data").unwrap(), DataLocation::Local(p) if p.is_absolute())
        );
        assert!(DataLocation::parse("s3:///x").is_err());
        assert!(DataLocation::parse("gs://bucket/x").is_err());
    }

    #[test]
    fn table_urls_are_collections() {
        let loc = DataLocation::parse("s3://b/p").unwrap();
        assert_eq!(loc.table_url("spans").unwrap().as_str(), "s3://b/p/spans/");
        assert_eq!(loc.table_dir("spans").as_ref(), "p/spans");
        let loc = DataLocation::parse("/tmp/x").unwrap();
        assert_eq!(
            loc.table_url("spans").unwrap().as_str(),
            "file:///tmp/x/spans/"
        );
        assert_eq!(loc.table_dir("spans").as_ref(), "tmp/x/spans");
    }

    #[test]
    fn missing_local_directory_is_reported() {
        let loc = DataLocation::parse("/definitely/not/here").unwrap();
        let msg = loc.require_exists().unwrap_err().to_string();
        assert!(
            msg.contains("/definitely/not/here") && msg.contains("does not exist"),
            "{msg}"
        );
    }
}
