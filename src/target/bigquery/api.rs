//! Talking to BigQuery through gcp-bigquery-client: jobs with our own ids,
//! followed to DONE and checked, retried by `retry`'s policy; tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::job_configuration::JobConfiguration;
use gcp_bigquery_client::model::job_configuration_query::JobConfigurationQuery;
use gcp_bigquery_client::model::job_reference::JobReference;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_row::TableRow;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::retry::{self, Failure, Scope};

/// One value of a result row (BigQuery sends every scalar as a string).
pub type Cell = Option<String>;

pub struct Api {
    client: Client,
    /// Requests the client has no method for (uploads): their base URL, HTTP
    /// client and tokens, from the same authenticator as the client's.
    pub(super) raw: super::raw::Raw,
    pub project: String,
    pub policy: retry::Policy,
    /// The dataset's location (`locate`), sent with every job call.
    location: Option<String>,
    /// Bytes processed by every job so far (the cost of a run).
    pub bytes_processed: AtomicU64,
    /// `maximumBytesBilled` of every query job (BigQuery refuses dearer ones).
    pub max_bytes_billed: Option<u64>,
}

/// What a job insert carries: a query, or a load with its rows.
enum Insert<'a> {
    Query {
        sql: &'a str,
        params: Vec<QueryParameter>,
    },
    Load {
        dataset: &'a str,
        table: &'a str,
        ndjson: &'a [u8],
    },
}

impl Insert<'_> {
    /// Whether `job` (found under this insert's id) is an earlier try of it.
    fn is_same(&self, job: &Job) -> bool {
        let config = job.configuration.as_ref();
        match self {
            Insert::Query { sql, .. } => {
                config
                    .and_then(|c| c.query.as_ref())
                    .map(|q| q.query.as_str())
                    == Some(*sql)
            }
            Insert::Load { dataset, table, .. } => config
                .and_then(|c| c.load.as_ref())
                .and_then(|l| l.destination_table.as_ref())
                .is_some_and(|t| t.dataset_id == *dataset && t.table_id == *table),
        }
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct Done {
    pub job_id: String,
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
        if let Some(base) = crate::emulator::base_url("BIGQUERY_EMULATOR_HOST") {
            return Api::unauthenticated(&base, project).await;
        }
        let auth = super::auth::authenticator(credentials)
            .await
            .context("connecting to BigQuery (credentials)")?;
        Api::new(GOOGLE, auth, project).await
    }

    /// An endpoint that needs no token (the emulator, recorded answers in tests).
    pub async fn unauthenticated(base: &str, project: &str) -> Result<Api> {
        Api::new(base, Arc::new(NoAuth), project).await
    }

    async fn new(base: &str, auth: Arc<dyn Authenticator>, project: &str) -> Result<Api> {
        let base = base.trim_end_matches('/');
        let http = http_client();
        let mut builder = ClientBuilder::new();
        builder.with_client(http.clone());
        let client = builder
            .with_v2_base_url(format!("{base}/bigquery/v2"))
            .build_from_authenticator(auth.clone())
            .await?;
        Ok(Api {
            client,
            raw: super::raw::Raw {
                base: base.to_owned(),
                http,
                auth,
            },
            project: project.to_owned(),
            policy: retry::Policy::default(),
            location: None,
            bytes_processed: AtomicU64::new(0),
            max_bytes_billed: None,
        })
    }

    /// The dataset's location, once `locate` has read it.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// Reads the dataset's location once: regional jobs are invisible to job
    /// reads that do not name it.
    pub async fn locate(&mut self, dataset: &str) -> Result<(), Failure> {
        let found = self
            .call(|| self.client.dataset().get(&self.project, dataset))
            .await?;
        self.location = found.location;
        Ok(())
    }

    /// A dataset's location, or None when there is no such dataset.
    pub async fn dataset_location(&self, dataset: &str) -> Result<Option<String>, Failure> {
        match self
            .call(|| self.client.dataset().get(&self.project, dataset))
            .await
        {
            Ok(found) => Ok(Some(found.location.unwrap_or_else(|| "US".into()))),
            Err(Failure::Http { code: 404, .. }) => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// Runs one query job to completion under the retry policy. The first try
    /// uses `job_id`; a job that failed transiently is run again as `job_id_rN`.
    pub async fn run(
        &self,
        job_id: &str,
        sql: &str,
        params: Vec<QueryParameter>,
    ) -> Result<Done, Failure> {
        self.run_job(job_id, &Insert::Query { sql, params }).await
    }

    /// Runs one load job to completion: `ndjson` appended to `dataset.table`
    /// (created beforehand), sent in the request itself. Free of charge.
    pub async fn load(
        &self,
        job_id: &str,
        dataset: &str,
        table: &str,
        ndjson: &[u8],
    ) -> Result<Done, Failure> {
        let load = Insert::Load {
            dataset,
            table,
            ndjson,
        };
        self.run_job(job_id, &load).await
    }

    /// Creates a dataset from its REST representation; one that exists is fine.
    pub async fn create_dataset(&self, dataset: &Value) -> Result<(), Failure> {
        let created = self
            .policy
            .retry(Scope::Call, |_| {
                self.raw.insert_dataset(&self.project, dataset)
            })
            .await;
        match created {
            Ok(_) | Err(Failure::Http { code: 409, .. }) => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// The first try uses `job_id`; a job that failed transiently is run again
    /// as `job_id_rN`.
    async fn run_job(&self, job_id: &str, insert: &Insert<'_>) -> Result<Done, Failure> {
        let done = self
            .policy
            .retry(Scope::Job, |attempt| {
                let id = match attempt {
                    0 => job_id.to_owned(),
                    n => format!("{job_id}_r{n}"),
                };
                async move { self.run_once(id, insert).await }
            })
            .await
            .map_err(|f| self.said_over_the_cap(f))?;
        self.bytes_processed
            .fetch_add(done.bytes_processed, Ordering::Relaxed);
        info!(job_id = %done.job_id, bytes_processed = done.bytes_processed, "BigQuery job done");
        Ok(done)
    }

    /// A job BigQuery refused for `maximumBytesBilled` says so, in one line.
    fn said_over_the_cap(&self, f: Failure) -> Failure {
        match f {
            Failure::Job {
                job_id,
                reason,
                message,
            } if reason == "bytesBilledLimitExceeded" => Failure::Job {
                message: format!(
                    "refused: it would bill more than --max-bytes-billed ({} bytes): {message}",
                    self.max_bytes_billed.unwrap_or_default()
                ),
                job_id,
                reason,
            },
            other => other,
        }
    }

    /// Inserts the job and follows it to DONE. A 409 means the id exists: an
    /// earlier try of this very insert whose answer was lost (same query text,
    /// or same load destination: follow it), or another job's (then a fresh id).
    async fn run_once(&self, mut id: String, insert: &Insert<'_>) -> Result<Done, Failure> {
        loop {
            match self.insert(&id, insert).await {
                Ok(()) => break,
                Err(Failure::Http { code: 409, .. }) => {
                    if insert.is_same(&self.get_job(&id).await?) {
                        debug!(job_id = %id, "job exists already: an earlier try of this insert; following it");
                        break;
                    }
                    let fresh = format!("{id}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    warn!(job_id = %id, fresh_id = %fresh, "job id taken by another job; using a fresh one");
                    id = fresh;
                }
                Err(f) => return Err(f),
            }
        }
        self.wait(&id).await
    }

    /// One job insert, its HTTP failures retried (with the same id).
    async fn insert(&self, id: &str, insert: &Insert<'_>) -> Result<(), Failure> {
        match insert {
            Insert::Query { sql, params } => {
                let job = self.query_job(id, sql, params.clone());
                self.call(|| self.client.job().insert(&self.project, job.clone()))
                    .await
                    .map(drop)
            }
            Insert::Load {
                dataset,
                table,
                ndjson,
            } => {
                let job = self.load_job(id, dataset, table);
                self.policy
                    .retry(Scope::Call, |_| {
                        self.raw.insert_load(&self.project, &job, ndjson.to_vec())
                    })
                    .await
                    .map(drop)
            }
        }
    }

    /// The resource of a load job appending NDJSON to an existing table.
    fn load_job(&self, id: &str, dataset: &str, table: &str) -> Value {
        serde_json::json!({
            "jobReference": { "projectId": self.project, "jobId": id, "location": self.location },
            "configuration": { "load": {
                "destinationTable": { "projectId": self.project, "datasetId": dataset, "tableId": table },
                "sourceFormat": "NEWLINE_DELIMITED_JSON",
                "writeDisposition": "WRITE_APPEND",
                "createDisposition": "CREATE_NEVER",
            } },
        })
    }

    /// The typed request of a query job, in the dataset's location.
    fn query_job(&self, id: &str, sql: &str, params: Vec<QueryParameter>) -> Job {
        let query = JobConfigurationQuery {
            query: sql.to_owned(),
            use_legacy_sql: Some(false),
            parameter_mode: (!params.is_empty()).then(|| "NAMED".to_owned()),
            maximum_bytes_billed: self.max_bytes_billed.map(|b| b.to_string()),
            query_parameters: (!params.is_empty()).then_some(params),
            ..Default::default()
        };
        Job {
            job_reference: Some(JobReference {
                project_id: Some(self.project.clone()),
                job_id: Some(id.to_owned()),
                location: self.location.clone(),
            }),
            configuration: Some(JobConfiguration {
                query: Some(query),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn get_job(&self, id: &str) -> Result<Job, Failure> {
        self.call(|| {
            self.client
                .job()
                .get_job(&self.project, id, self.location.as_deref())
        })
        .await
    }

    /// Polls `jobs.get` until DONE, then checks `errorResult`.
    async fn wait(&self, job_id: &str) -> Result<Done, Failure> {
        let mut pause = Duration::from_millis(100);
        loop {
            let job = self.get_job(job_id).await?;
            if let Some(done) = finished(job_id, &job)? {
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
                location: self.location.clone(),
                ..Default::default()
            };
            let page = self
                .call(|| {
                    self.client
                        .job()
                        .get_query_results(&self.project, &done.job_id, params.clone())
                })
                .await?;
            if page.job_complete == Some(false) {
                return Err(Failure::Job {
                    job_id: done.job_id.clone(),
                    reason: "incomplete".into(),
                    message: "results asked for before the job completed".into(),
                });
            }
            rows.extend(page.rows.unwrap_or_default().into_iter().map(cells));
            match page.page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
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
        self.policy
            .retry(Scope::Call, |_| {
                let call = f();
                async move { call.await.map_err(failure) }
            })
            .await
    }
}

/// BigQuery's own endpoint (REST and uploads).
const GOOGLE: &str = "https://bigquery.googleapis.com";

/// An HTTP client with timeouts, so a hung connection cannot stall a run (an
/// upload of a staging part included).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .build()
        .expect("a TLS-capable HTTP client")
}

/// Reads a `jobs.get` answer: None while running; the job's failure if DONE with
/// an `errorResult`; else what it processed.
pub fn finished(job_id: &str, job: &Job) -> Result<Option<Done>, Failure> {
    let status = job.status.clone().unwrap_or_default();
    if status.state.as_deref() != Some("DONE") {
        return Ok(None);
    }
    if let Some(err) = status.error_result {
        let message = err.message.unwrap_or_default();
        // The first of `errors` often says more than `errorResult`.
        let detail = status
            .errors
            .and_then(|e| e.into_iter().next())
            .and_then(|e| e.message)
            .unwrap_or_default();
        let message = if detail.is_empty() || detail == message {
            message
        } else {
            format!("{message}; {detail}")
        };
        return Err(Failure::Job {
            job_id: job_id.to_owned(),
            reason: err.reason.unwrap_or_default(),
            message,
        });
    }
    let stats = job.statistics.as_ref();
    let bytes = stats
        .and_then(|s| s.query.as_ref())
        .and_then(|q| q.total_bytes_processed.as_deref())
        .or(stats.and_then(|s| s.total_bytes_processed.as_deref()))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    Ok(Some(Done {
        job_id: job_id.to_owned(),
        bytes_processed: bytes,
    }))
}

fn cells(row: TableRow) -> Vec<Cell> {
    row.columns
        .unwrap_or_default()
        .into_iter()
        .map(|c| match c.value {
            Some(Value::String(s)) => Some(s),
            _ => None,
        })
        .collect()
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
