//! Where callback files come from: a local folder or `gs://BUCKET/PREFIX`, behind
//! one `ObjectStore`. Listing is recursive; bodies are fetched whole, a bounded
//! number at a time (see `pipeline`).

mod decode;
mod inflate;
mod local;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::gcp::GoogleCloudStorageBuilder;
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
    /// Where to read it: exactly what the listing gave, never rebuilt from `name`
    /// (a rebuilt bucket path would be escaped a second time).
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    Bucket(Path),
    File(PathBuf),
}

/// An object's body, or why it will never be readable (it is dead-lettered and
/// marked done). Errors a rerun may not meet (timeouts, 5xx) are `Err` instead.
#[derive(Debug)]
pub enum Fetched {
    Body(Bytes),
    Unreadable(String),
}

#[derive(Debug, Clone)]
enum Store {
    Bucket {
        store: Arc<dyn ObjectStore>,
        prefix: Option<Path>,
    },
    Folder {
        root: PathBuf,
        /// A single file given as the source: list only it.
        only: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Source {
    store: Store,
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
            let prefix = prefix.trim_matches('/');
            let prefix = (!prefix.is_empty())
                .then(|| Path::parse(prefix))
                .transpose()
                .map_err(|e| UsageError::new(format!("source {url:?}: {e}")))?;
            return Ok(Source {
                store: Store::Bucket { store, prefix },
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
            let name = path.file_name().map(PathBuf::from);
            (path.parent().map(PathBuf::from).unwrap_or_default(), name)
        } else {
            (path, None)
        };
        Ok(Source {
            store: Store::Folder { root, only },
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A folder on this machine (not a bucket).
    pub fn is_local(&self) -> bool {
        matches!(self.store, Store::Folder { .. })
    }

    /// Every object below the prefix, sorted by name.
    pub async fn list(&self) -> Result<Vec<ObjectRef>> {
        let mut objects = match &self.store {
            Store::Folder { root, only } => local::list(root, only.as_deref())
                .with_context(|| format!("listing {}", self.url))?,
            Store::Bucket { store, prefix } => store
                .list(prefix.as_ref())
                .map_ok(|m| ObjectRef {
                    generation: m.version.or(m.e_tag).unwrap_or_else(|| {
                        format!("{}@{}", m.size, m.last_modified.timestamp_millis())
                    }),
                    name: m.location.to_string(),
                    size: m.size,
                    last_modified: m.last_modified,
                    location: Location::Bucket(m.location),
                })
                .try_collect()
                .await
                .with_context(|| format!("listing {}", self.url))?,
        };
        objects.sort();
        Ok(objects)
    }

    pub async fn fetch(&self, object: &ObjectRef) -> Result<Fetched> {
        let location = match &object.location {
            Location::File(path) => return local::read(path),
            Location::Bucket(location) => location,
        };
        let Store::Bucket { store, .. } = &self.store else {
            anyhow::bail!("{}: a bucket object in a folder source", object.name);
        };
        let got = match store.get(location).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match got {
            Ok(body) => Ok(Fetched::Body(body)),
            // Deleted since the listing: this generation will not come back.
            Err(e @ object_store::Error::NotFound { .. }) => Ok(Fetched::Unreadable(e.to_string())),
            Err(e) => Err(e).with_context(|| format!("reading {}", object.name)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use proptest::prelude::*;

    /// Object names a bucket holds and object_store can list: spaces, `#`, `?`,
    /// `%`, backslashes, non-ASCII.
    fn bucket_name() -> impl Strategy<Value = String> {
        let segment = proptest::collection::vec(
            prop_oneof![
                "[a-z0-9]{1,3}",
                Just(" ".into()),
                Just("#".into()),
                Just("?".into()),
                Just("%".into()),
                Just("%2F".into()),
                Just("\\".into()),
                Just("é".into()),
                Just("नम".into()),
                Just("+&=".into()),
            ],
            1..5,
        )
        .prop_map(|p: Vec<String>| p.concat())
        .prop_filter("not relative", |s| s != "." && s != "..");
        proptest::collection::vec(segment, 1..4).prop_map(|s| s.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn a_bucket_object_is_fetched_at_exactly_the_listed_path(
            names in proptest::collection::btree_set(bucket_name(), 1..6)
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let store = Arc::new(InMemory::new());
                for (i, name) in names.iter().enumerate() {
                    // The GCS listing parses raw names as they are.
                    let path = Path::parse(format!("pre/{name}")).unwrap();
                    store.put(&path, format!("{i}").into()).await.unwrap();
                }
                let source = Source {
                    store: Store::Bucket { store, prefix: Some(Path::parse("pre").unwrap()) },
                    url: "gs://test/pre".into(),
                };
                let listed = source.list().await.unwrap();
                prop_assert_eq!(listed.len(), names.len());
                for object in &listed {
                    let Location::Bucket(path) = &object.location else {
                        panic!("a bucket lists bucket paths");
                    };
                    prop_assert_eq!(path.as_ref(), object.name.as_str());
                    match source.fetch(object).await.unwrap() {
                        Fetched::Body(body) => prop_assert!(!body.is_empty()),
                        Fetched::Unreadable(why) => prop_assert!(false, "{}: {}", object.name, why),
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn a_bucket_object_deleted_after_listing_is_unreadable_not_an_error() {
        let store = Arc::new(InMemory::new());
        let path = Path::parse("a b#1").unwrap();
        store.put(&path, "x".into()).await.unwrap();
        let source = Source {
            store: Store::Bucket {
                store: store.clone(),
                prefix: None,
            },
            url: "gs://test".into(),
        };
        let listed = source.list().await.unwrap();
        store.delete(&path).await.unwrap();
        assert!(matches!(
            source.fetch(&listed[0]).await.unwrap(),
            Fetched::Unreadable(_)
        ));
    }
}
