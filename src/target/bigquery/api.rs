//! Talking to BigQuery through gcp-bigquery-client: jobs with our own ids,
//! followed to DONE and checked, retried by `retry`'s policy; tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::table::Table;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::retry::{self, Failure};

/// One value of a result row (BigQuery sends every scalar as a string).
pub type Cell = Option<String>;

pub struct Api {
    client: Client,
    pub project: String,
    pub policy: retry::Policy,
    /// Bytes processed by every job so far (the cost of a run).
    pub bytes_processed: AtomicU64,
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct Done {
    pub job_id: String,
    pub location: Option<String>,
    pub bytes_processed: u64,
}

/// The emulator takes any token.
#[derive(Clone)]
struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".into())
    }
}

impl Api {
    /// The emulator named by `BIGQUERY_EMULATOR_HOST` (no auth), else the key
    /// file given, else Application Default Credentials.
    pub async fn connect(project: &str, credentials: Option<&str>) -> Result<Api> {
        if let Ok(host) = std::env::var("BIGQUERY_EMULATOR_HOST")
            && !host.is_empty()
        {
            let base = if host.contains("://") {
                host
            } else {
                format!("http://{host}")
            };
            return Api::unauthenticated(&base, project).await;
        }
        let client = match credentials {
            Some(file) => builder().build_from_service_account_key_file(file).await,
            None => builder().build_from_application_default_credentials().await,
        }
        .context("connecting to BigQuery (credentials)")?;
        Ok(Api {
            client,
            project: project.to_owned(),
            policy: retry::Policy::default(),
            bytes_processed: AtomicU64::new(0),
        })
    }

    /// An endpoint that needs no token (the emulator, recorded answers in tests).
    pub async fn unauthenticated(base: &str, project: &str) -> Result<Api> {
        let client = builder()
            .with_v2_base_url(format!("{}/bigquery/v2", base.trim_end_matches('/')))
            .build_from_authenticator(Arc::new(NoAuth))
            .await?;
        Ok(Api {
            client,
            project: project.to_owned(),
            policy: retry::Policy::default(),
            bytes_processed: AtomicU64::new(0),
        })
    }

    /// Runs one query job to completion under the retry policy. The first try
    /// uses `job_id`; a job that failed transiently is run again as `job_id_rN`.
    pub async fn run(&self, job_id: &str, sql: &str, params: Vec<Value>) -> Result<Done, Failure> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let id = if attempt == 0 {
                job_id.to_owned()
            } else {
                format!("{job_id}_r{attempt}")
            };
            match self.run_once(&id, sql, &params).await {
                Ok(done) => {
                    self.bytes_processed
                        .fetch_add(done.bytes_processed, Ordering::Relaxed);
                    info!(job_id = %done.job_id, bytes_processed = done.bytes_processed, "BigQuery job done");
                    return Ok(done);
                }
                // Calls retry their own HTTP failures; here only jobs that ran and failed.
                Err(f @ Failure::Job { .. })
                    if self.policy.again(&f, attempt, started.elapsed()) =>
                {
                    let wait = self.policy.backoff(attempt);
                    warn!(job_id = %id, error = %f, wait_seconds = wait.as_secs_f64(), "BigQuery job failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(f) => return Err(f),
            }
        }
    }

    async fn run_once(&self, job_id: &str, sql: &str, params: &[Value]) -> Result<Done, Failure> {
        let mut query = json!({ "query": sql, "useLegacySql": false });
        if !params.is_empty() {
            query["parameterMode"] = "NAMED".into();
            query["queryParameters"] = Value::Array(params.to_vec());
        }
        let job: Job = serde_json::from_value(json!({
            "jobReference": { "projectId": self.project, "jobId": job_id },
            "configuration": { "query": query },
        }))
        .expect("a well-formed job");
        let inserted = self
            .call(|| self.client.job().insert(&self.project, job.clone()))
            .await;
        let location = match inserted {
            Ok(job) => job.job_reference.and_then(|r| r.location),
            // The job exists already: an earlier try of this very insert got through.
            Err(Failure::Http { code: 409, .. }) => None,
            Err(f) => return Err(f),
        };
        self.wait(job_id, location).await
    }

    /// Polls `jobs.get` until DONE, then checks `errorResult`.
    async fn wait(&self, job_id: &str, location: Option<String>) -> Result<Done, Failure> {
        let mut pause = Duration::from_millis(100);
        loop {
            let job = self
                .call(|| {
                    self.client
                        .job()
                        .get_job(&self.project, job_id, location.as_deref())
                })
                .await?;
            let value = serde_json::to_value(&job).unwrap_or_default();
            if let Some(done) = finished(job_id, &value)? {
                return Ok(done);
            }
            debug!(job_id, "BigQuery job running");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Result rows of a finished query job, following page tokens.
    pub async fn rows(&self, done: &Done) -> Result<Vec<Vec<Cell>>, Failure> {
        let mut rows = Vec::new();
        let mut page_token = None;
        loop {
            let params = GetQueryResultsParameters {
                page_token: page_token.clone(),
                location: done.location.clone(),
                ..Default::default()
            };
            let page = self
                .call(|| {
                    self.client
                        .job()
                        .get_query_results(&self.project, &done.job_id, params.clone())
                })
                .await?;
            let page = serde_json::to_value(&page).unwrap_or_default();
            if page["jobComplete"] == false {
                return Err(Failure::Job {
                    job_id: done.job_id.clone(),
                    reason: "incomplete".into(),
                    message: "results asked for before the job completed".into(),
                });
            }
            rows.extend(cells(&page));
            match page["pageToken"].as_str() {
                Some(t) if !t.is_empty() => page_token = Some(t.to_owned()),
                _ => return Ok(rows),
            }
        }
    }

    /// A table's metadata as JSON, or None if it does not exist.
    pub async fn table(&self, dataset: &str, table: &str) -> Result<Option<Value>, Failure> {
        match self
            .call(|| self.client.table().get(&self.project, dataset, table, None))
            .await
        {
            Ok(t) => Ok(Some(serde_json::to_value(&t).unwrap_or_default())),
            Err(Failure::Http { code: 404, .. }) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// Creates a table from its REST representation; one that exists already is fine.
    pub async fn create_table(&self, table: Value) -> Result<(), Failure> {
        let table: Table = serde_json::from_value(table).expect("a well-formed table");
        match self
            .call(|| self.client.table().create(table.clone()))
            .await
        {
            Ok(_) | Err(Failure::Http { code: 409, .. }) => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Replaces a table's schema (adding a column).
    pub async fn patch_table(
        &self,
        dataset: &str,
        table_id: &str,
        table: Value,
    ) -> Result<(), Failure> {
        let table: Table = serde_json::from_value(table).expect("a well-formed table");
        self.call(|| {
            self.client
                .table()
                .patch(&self.project, dataset, table_id, table.clone())
        })
        .await
        .map(drop)
    }

    /// One API call, retried on transient HTTP failures.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, BQError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match f().await.map_err(failure) {
                Err(e) if self.policy.again(&e, attempt, started.elapsed()) => {
                    let wait = self.policy.backoff(attempt);
                    warn!(error = %e, wait_seconds = wait.as_secs_f64(), "BigQuery call failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A client builder with timeouts, so a hung connection cannot stall a run.
fn builder() -> ClientBuilder {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a TLS-capable HTTP client");
    let mut builder = ClientBuilder::new();
    builder.with_client(http);
    builder
}

/// Reads a `jobs.get` answer: None while running; the job's failure if DONE with
/// an `errorResult`; else what it processed.
pub fn finished(job_id: &str, job: &Value) -> Result<Option<Done>, Failure> {
    if job["status"]["state"] != "DONE" {
        return Ok(None);
    }
    if let Some(err) = job["status"]["errorResult"].as_object() {
        let text = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // The first of `errors` often says more than `errorResult`.
        let detail = job["status"]["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        let message = if detail.is_empty() || detail == text("message") {
            text("message")
        } else {
            format!("{}; {detail}", text("message"))
        };
        return Err(Failure::Job {
            job_id: job_id.to_owned(),
            reason: text("reason"),
            message,
        });
    }
    let stats = &job["statistics"];
    let bytes = stats["query"]["totalBytesProcessed"]
        .as_str()
        .or(stats["totalBytesProcessed"].as_str())
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    Ok(Some(Done {
        job_id: job_id.to_owned(),
        location: job["jobReference"]["location"].as_str().map(str::to_owned),
        bytes_processed: bytes,
    }))
}

fn cells(page: &Value) -> Vec<Vec<Cell>> {
    page["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row["f"]
                        .as_array()
                        .map(|cells| {
                            cells
                                .iter()
                                .map(|c| c["v"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn failure(e: BQError) -> Failure {
    match e {
        BQError::ResponseError { error } => Failure::Http {
            code: error.error.code,
            reason: error
                .error
                .errors
                .first()
                .and_then(|e| e.get("reason"))
                .cloned()
                .unwrap_or_default(),
            message: error.error.message,
        },
        BQError::RequestError(e) => Failure::Transport(e.without_url().to_string()),
        other => Failure::Transport(other.to_string()),
    }
}
