//! A `gs://` bucket, listed and read through GCS's JSON API. Not through
//! object_store: its listing parses every name into its `Path`, which cannot
//! hold an empty segment (`a//b`), a `.` or `..` segment or a control
//! character, and one such name fails the whole listing. GCS accepts any UTF-8
//! name of 1 to 1024 bytes without CR or LF; JSON carries each as it is, and
//! the name is percent-encoded byte by byte when the object is fetched.
//! object_store still supplies the credentials (Application Default
//! Credentials, token refresh).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::warn;

use super::{Fetched, Location, ObjectRef};

const GCS: &str = "https://storage.googleapis.com";
/// Only what an `ObjectRef` needs: a page of 1,000 names stays small.
const FIELDS: &str = "items(name,generation,size,updated,md5Hash),nextPageToken";

#[derive(Debug, Clone)]
pub struct Bucket {
    http: reqwest::Client,
    /// `…/storage/v1/b/BUCKET/o`: the objects collection.
    objects: String,
    /// Names start with this (`PREFIX/`, or empty for the whole bucket).
    prefix: String,
    credentials: GcpCredentialProvider,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    name: String,
    generation: String,
    size: String,
    updated: String,
    md5_hash: Option<String>,
}

impl Bucket {
    /// GCS through Application Default Credentials, or the emulator named by
    /// `STORAGE_EMULATOR_HOST` without auth.
    pub fn open(bucket: &str, prefix: &str) -> Result<Bucket> {
        let (base, builder) = match crate::emulator::base_url("STORAGE_EMULATOR_HOST") {
            Some(base) => {
                let key = serde_json::json!({
                    "disable_oauth": true,
                    "client_email": "",
                    "private_key": "",
                    "private_key_id": "",
                });
                let builder =
                    GoogleCloudStorageBuilder::new().with_service_account_key(key.to_string());
                (base, builder)
            }
            None => (GCS.to_owned(), GoogleCloudStorageBuilder::from_env()),
        };
        let credentials = builder
            .with_bucket_name(bucket)
            .build()
            .context("configuring Google Cloud Storage")?
            .credentials()
            .clone();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Between two reads, not for a whole body: large files take longer.
            .read_timeout(Duration::from_secs(30))
            .build()
            .context("configuring Google Cloud Storage")?;
        Ok(Bucket {
            http,
            objects: format!("{base}/storage/v1/b/{}/o", encode(bucket)),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            credentials,
        })
    }

    /// Every object whose name starts with the prefix and is not before
    /// `start` (a full name; GCS compares names as bytes, as `str` does), page by page.
    pub async fn list(&self, start: &str) -> Result<Vec<ObjectRef>> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", self.prefix.as_str()), ("fields", FIELDS)];
            if !start.is_empty() {
                query.push(("startOffset", start));
            }
            if let Some(token) = &token {
                query.push(("pageToken", token.as_str()));
            }
            let (status, body) = self.get(&self.objects, &query).await?;
            if !status.is_success() {
                bail!("GCS answered HTTP {status}: {}", excerpt(&body));
            }
            let page: Page = serde_json::from_slice(&body).context("GCS listing")?;
            for item in page.items {
                objects.push(item.object()?);
            }
            match page.next_page_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(objects),
            }
        }
    }

    /// The listed generation's bytes. Gone (deleted or replaced since the
    /// listing) or refused for this object alone (e.g. encrypted with a key we
    /// lack) is `Unreadable`; refused credentials and failures that outlast the
    /// retries fail the run, so a rerun reads it.
    pub async fn fetch(&self, name: &str, generation: &str) -> Result<Fetched> {
        let url = format!("{}/{}", self.objects, encode(name));
        let query = [("alt", "media"), ("generation", generation)];
        let (status, body) = self
            .get(&url, &query)
            .await
            .with_context(|| format!("reading {name:?}"))?;
        match status {
            s if s.is_success() => Ok(Fetched::Body(body)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                bail!(
                    "reading {name:?}: GCS answered HTTP {status}: {}",
                    excerpt(&body)
                )
            }
            s if s.is_client_error() => Ok(Fetched::Unreadable(format!(
                "GCS answered HTTP {status}: {}",
                excerpt(&body)
            ))),
            _ => bail!(
                "reading {name:?}: GCS answered HTTP {status}: {}",
                excerpt(&body)
            ),
        }
    }

    /// One GET, its whole answer read. Transient failures (5xx, 408, 429, a
    /// connection that breaks or stalls) are retried with exponential backoff
    /// and jitter, bounded so an unreachable GCS fails the run within two
    /// minutes; any other answer is returned as it is.
    async fn get(&self, url: &str, query: &[(&str, &str)]) -> Result<(StatusCode, Bytes)> {
        const RETRIES: u32 = 8;
        const BUDGET: Duration = Duration::from_secs(100);
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let credential = self
                .credentials
                .get_credential()
                .await
                .context("Google Cloud credentials")?;
            let mut request = self.http.get(url).query(query);
            if !credential.bearer.is_empty() {
                request = request.bearer_auth(&credential.bearer);
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) if !is_transient(status) => return Ok((status, body)),
                        Ok(body) => format!("HTTP {status}: {}", excerpt(&body)),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if attempt == RETRIES || started.elapsed() > BUDGET {
                bail!("GCS failed {} times, last: {failure}", attempt + 1);
            }
            let wait = backoff(attempt);
            warn!(error = %failure, wait_seconds = wait.as_secs_f64(), "GCS call failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

impl Item {
    fn object(self) -> Result<ObjectRef> {
        let context = || format!("GCS listing: object {:?}", self.name);
        let size = self.size.parse().with_context(context)?;
        let last_modified = chrono::DateTime::parse_from_rfc3339(&self.updated)
            .with_context(context)?
            .to_utc();
        let generation = match self.md5_hash.as_deref().and_then(base64_md5) {
            Some(md5) => format!("\"{md5}\""),
            None => self.generation.clone(),
        };
        Ok(ObjectRef {
            name: self.name,
            generation,
            size,
            last_modified,
            location: Location::Bucket {
                generation: self.generation,
            },
        })
    }
}

/// The object's MD5 in hex, as GCS's XML API gives it as the ETag of an object
/// that has one: the generation object_store's listing recorded, so objects
/// done by earlier versions stay done.
fn base64_md5(md5: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(md5).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// 0.5 s doubling to 15 s, plus up to half again of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500 * (1 << attempt.min(5))).min(Duration::from_secs(15));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: an
/// object name is one path segment, its `/` included, never normalised.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 3);
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of an error answer, for a one-line message.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_one_segment_with_every_reserved_byte_escaped() {
        assert_eq!(encode("a//b.ndjson"), "a%2F%2Fb.ndjson");
        assert_eq!(encode("../y"), "..%2Fy");
        assert_eq!(encode("c/./d"), "c%2F.%2Fd");
        assert_eq!(encode("tab\there\u{1}"), "tab%09here%01");
        assert_eq!(encode("e/"), "e%2F");
        assert_eq!(encode("100% #?+&=\\"), "100%25%20%23%3F%2B%26%3D%5C");
        assert_eq!(encode("é~"), "%C3%A9~");
    }

    #[test]
    fn the_generation_is_the_xml_etag_when_there_is_an_md5_else_gcs_generation() {
        let item = |md5: Option<&str>| Item {
            name: "in/a//b".into(),
            generation: "1763773200123456".into(),
            size: "5".into(),
            updated: "2025-11-22T01:00:00.123Z".into(),
            md5_hash: md5.map(Into::into),
        };
        let with = item(Some("XUFAKrxLKna5cZ2REBfFkg==")).object().unwrap();
        assert_eq!(with.generation, "\"5d41402abc4b2a76b9719d911017c592\"");
        assert_eq!(
            with.location,
            Location::Bucket {
                generation: "1763773200123456".into()
            }
        );
        assert_eq!(with.size, 5);
        assert_eq!(with.last_modified.timestamp_millis(), 1_763_773_200_123);
        // Composite objects have no MD5.
        let without = item(None).object().unwrap();
        assert_eq!(without.generation, "1763773200123456");
    }

    #[test]
    fn only_transient_answers_are_retried_and_waits_are_bounded() {
        assert!(is_transient(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_transient(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_transient(StatusCode::NOT_FOUND));
        assert!(!is_transient(StatusCode::FORBIDDEN));
        assert!(backoff(0) >= Duration::from_millis(500));
        assert!(backoff(30) <= Duration::from_secs(23));
        let total: Duration = (0..8).map(backoff).sum();
        assert!(total < Duration::from_secs(100));
    }

    /// A stand-in for GCS on a local port: answers each connection with the
    /// next of `answers` (status, JSON or bytes) and records the request lines.
    fn server(answers: Vec<(u16, &'static str)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                seen.push(line.trim_end().to_owned());
                // The headers, up to the blank line.
                while reader.read_line(&mut line).unwrap() > 2 {}
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            seen
        });
        (base, handle)
    }

    fn bucket(base: &str) -> Bucket {
        let credentials: GcpCredentialProvider = std::sync::Arc::new(
            object_store::StaticCredentialProvider::new(object_store::gcp::GcpCredential {
                bearer: String::new(),
            }),
        );
        Bucket {
            http: reqwest::Client::new(),
            objects: format!("{base}/storage/v1/b/b/o"),
            prefix: "in/".into(),
            credentials,
        }
    }

    const ITEM: &str =
        r#"{"name":"in/NAME","generation":"7","size":"1","updated":"2025-11-22T01:00:00Z"}"#;

    #[tokio::test]
    async fn a_listing_from_a_watermark_asks_gcs_to_start_there() {
        let page = format!(r#"{{"items":[{}]}}"#, ITEM.replace("NAME", "2026/11/23/x"));
        let (base, seen) = server(vec![(200, page.leak())]);
        let listed = bucket(&base).list("in/2026/11/23/").await.unwrap();
        assert_eq!(listed.len(), 1);
        let seen = seen.join().unwrap();
        assert!(
            seen[0].contains("startOffset=in%2F2026%2F11%2F23%2F"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn every_page_is_listed_and_a_503_is_retried() {
        let page1 = format!(
            r#"{{"items":[{}],"nextPageToken":"t/1"}}"#,
            ITEM.replace("NAME", "a//b")
        );
        let page2 = format!(r#"{{"items":[{}]}}"#, ITEM.replace("NAME", "./x"));
        let (base, seen) = server(vec![(503, "{}"), (200, page1.leak()), (200, page2.leak())]);
        let names: Vec<_> = bucket(&base)
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["in/a//b", "in/./x"]);
        let seen = seen.join().unwrap();
        assert_eq!(seen[0], seen[1], "the same page again");
        assert!(seen[1].contains("prefix=in%2F") && !seen[1].contains("pageToken"));
        assert!(seen[2].contains("pageToken=t%2F1"), "{}", seen[2]);
    }

    #[tokio::test]
    async fn a_vanished_or_refused_object_is_unreadable_but_bad_credentials_fail() {
        let (base, seen) = server(vec![
            (404, "gone"),
            (400, "encrypted"),
            (403, "denied"),
            (200, "body"),
        ]);
        let b = bucket(&base);
        assert!(matches!(
            b.fetch("in/a//b", "7").await.unwrap(),
            Fetched::Unreadable(_)
        ));
        assert!(matches!(
            b.fetch("in/c", "7").await.unwrap(),
            Fetched::Unreadable(_)
        ));
        assert!(b.fetch("in/c", "7").await.is_err());
        assert!(
            matches!(b.fetch("in/\t", "8").await.unwrap(), Fetched::Body(x) if &x[..] == b"body")
        );
        let seen = seen.join().unwrap();
        assert_eq!(
            seen[0],
            "GET /storage/v1/b/b/o/in%2Fa%2F%2Fb?alt=media&generation=7 HTTP/1.1"
        );
        assert_eq!(
            seen[3],
            "GET /storage/v1/b/b/o/in%2F%09?alt=media&generation=8 HTTP/1.1"
        );
    }
}
