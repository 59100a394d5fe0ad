//! Where callback files come from: a local folder or `gs://BUCKET/PREFIX`, behind
//! one `ObjectStore`. Listing is recursive; bodies are fetched whole, a bounded
//! number at a time (see `pipeline`).

mod decode;
mod inflate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::error::UsageError;

pub use decode::{Decoded, decode, lines};

/// One object to read, identified by name and generation (or its nearest
/// equivalent: the ETag, else size and time), so a rewritten file is read again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub name: String,
    pub generation: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
pub struct Source {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    /// A single file given as the source: list only it.
    only: Option<Path>,
    url: String,
}

impl Source {
    /// `gs://BUCKET/PREFIX`, `file:///abs/dir` or a plain path (folder or file).
    pub fn open(url: &str) -> Result<Source> {
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(UsageError::new(format!("source {url:?} names no bucket")).into());
            }
            let store = gcs(bucket)?;
            let prefix = (!prefix.trim_matches('/').is_empty()).then(|| Path::from(prefix));
            return Ok(Source {
                store,
                prefix,
                only: None,
                url: url.into(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if url.contains("://") => {
                return Err(UsageError::new(format!(
                    "source {url:?}: use gs://BUCKET/PREFIX, file:///DIR or a path"
                ))
                .into());
            }
            None => PathBuf::from(url),
        };
        let path = path
            .canonicalize()
            .map_err(|e| UsageError::new(format!("source {}: {e}", path.display())))?;
        let (root, only) = if path.is_file() {
            let name = path.file_name().and_then(|n| n.to_str()).map(Path::from);
            (path.parent().map(PathBuf::from).unwrap_or_default(), name)
        } else {
            (path, None)
        };
        let store = LocalFileSystem::new_with_prefix(&root)
            .with_context(|| format!("opening {}", root.display()))?;
        Ok(Source {
            store: Arc::new(store),
            prefix: None,
            only,
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A folder on this machine (not a bucket).
    pub fn is_local(&self) -> bool {
        !self.url.starts_with("gs://")
    }

    /// Every object below the prefix, sorted by name.
    pub async fn list(&self) -> Result<Vec<ObjectRef>> {
        let metas: Vec<_> = self
            .store
            .list(self.prefix.as_ref())
            .try_collect()
            .await
            .with_context(|| format!("listing {}", self.url))?;
        let mut objects: Vec<ObjectRef> = metas
            .into_iter()
            .filter(|m| self.only.as_ref().is_none_or(|only| &m.location == only))
            .map(|m| ObjectRef {
                generation: m.version.or(m.e_tag).unwrap_or_else(|| {
                    format!("{}@{}", m.size, m.last_modified.timestamp_millis())
                }),
                name: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect();
        objects.sort();
        Ok(objects)
    }

    pub async fn fetch(&self, object: &ObjectRef) -> Result<Bytes> {
        let location = Path::from(object.name.as_str());
        let got = self.store.get(&location).await;
        let body = match got {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        body.with_context(|| format!("reading {}", object.name))
    }
}

/// GCS through Application Default Credentials, or the emulator named by
/// `STORAGE_EMULATOR_HOST` without auth.
fn gcs(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    let builder = match std::env::var("STORAGE_EMULATOR_HOST") {
        Ok(host) if !host.is_empty() => {
            let base = if host.contains("://") {
                host
            } else {
                format!("http://{host}")
            };
            let key = serde_json::json!({
                "gcs_base_url": base.trim_end_matches('/'),
                "disable_oauth": true,
                "client_email": "",
                "private_key": "",
                "private_key_id": "",
            });
            GoogleCloudStorageBuilder::new()
                .with_service_account_key(key.to_string())
                .with_client_options(ClientOptions::new().with_allow_http(true))
        }
        _ => GoogleCloudStorageBuilder::from_env(),
    };
    // Retries with backoff and jitter on 5xx, 429 and broken connections, bounded so
    // an unreachable GCS fails the run (exit 1) within two minutes.
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(100),
    };
    let store = builder
        .with_retry(retry)
        .with_bucket_name(bucket)
        .build()
        .context("configuring Google Cloud Storage")?;
    Ok(Arc::new(store))
}
