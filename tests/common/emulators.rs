//! The emulators the end-to-end tests talk to (fake-gcs-server, and bqemulator
//! behind the strict BigQuery double), started by scripts/test.sh: making
//! buckets, datasets and rows, and reading tables and the double's job log back.

use serde_json::{Value, json};

use super::{fixtures, funnel_callbacks};

pub struct Emulators {
    pub gcs: String,
    pub bq: String,
    pub http: reqwest::Client,
}

pub fn emulators() -> Emulators {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with `bash scripts/test.sh`")
        })
    };
    Emulators {
        gcs: var("STORAGE_EMULATOR_HOST"),
        bq: var("BIGQUERY_EMULATOR_HOST"),
        http: reqwest::Client::new(),
    }
}

/// A Glific messages row; `streamed_at` is its `bq_inserted_at` (local time).
pub fn message_row(
    id: i64,
    key: Option<&str>,
    status: Option<&str>,
    inserted_at: &str,
    streamed_at: Option<&str>,
) -> Value {
    let mut row = json!({
        "id": id, "type": "text", "flow": "outbound", "status": "sent",
        "sender_phone": "91XXXXXXXX00", "receiver_phone": "91XXXXXXXX01", "contact_phone": "91XXXXXXXX01",
        "body": "hello", "inserted_at": inserted_at, "bsp_status": status, "bsp_message_id": key,
    });
    if let Some(at) = streamed_at {
        row["bq_inserted_at"] = at.into();
    }
    row
}

#[allow(non_snake_case)]
pub fn K(n: u32) -> String {
    format!("6a3c3a52-{n:04}-4a8e-9d41-0000000000{n:02}")
}

impl Emulators {
    /// A POST that must succeed. bqemulator shares one DuckDB connection between
    /// requests and now and then answers 500 ("connection has an unfinished result")
    /// when tests run at once, before doing anything: such answers are retried, as
    /// the job itself retries BigQuery's 500s.
    pub async fn post(&self, url: String, body: Value) -> Value {
        for attempt in 1.. {
            let resp = self.http.post(&url).json(&body).send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            if status == reqwest::StatusCode::INTERNAL_SERVER_ERROR && attempt < 5 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                continue;
            }
            assert!(status.is_success(), "{url}: {status} {text}");
            return serde_json::from_str(&text).unwrap_or(Value::Null);
        }
        unreachable!("the loop returns")
    }

    pub async fn bucket(&self, name: &str) {
        self.post(
            format!("{}/storage/v1/b?project=demo", self.gcs),
            json!({ "name": name }),
        )
        .await;
    }

    pub async fn upload(&self, bucket: &str, files: &[&str]) {
        for f in files {
            let data = std::fs::read(fixtures().join("callbacks").join(f)).unwrap();
            self.put(bucket, &format!("gupshup/{f}"), data).await;
        }
    }

    /// Writes one object, whatever its name (the JSON API, as a receiver would).
    pub async fn put(&self, bucket: &str, name: &str, body: impl Into<reqwest::Body>) {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/upload/storage/v1/b/{bucket}/o", self.gcs),
            [("uploadType", "media"), ("name", name)],
        )
        .unwrap();
        let resp = self.http.post(url).body(body).send().await.unwrap();
        assert!(resp.status().is_success(), "{name:?}: {}", resp.status());
    }

    /// A new bucket holding the callbacks whose funnel is worked out by hand.
    pub async fn funnel_bucket(&self) -> String {
        let bucket = unique("funnel").replace('_', "-");
        self.bucket(&bucket).await;
        self.put(&bucket, "gupshup/f.ndjson", funnel_callbacks())
            .await;
        bucket
    }

    pub fn bq_url(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/demo{path}", self.bq)
    }

    /// A dataset with Glific's messages table, MONTH-partitioned on inserted_at, plus the key column.
    pub async fn dataset(&self, name: &str) {
        self.dataset_in(name, "US").await;
    }

    /// `dataset` made in `location` (the strict double keeps regional jobs apart).
    pub async fn dataset_in(&self, name: &str, location: &str) {
        self.dataset_shaped(name, location, true, true).await;
    }

    /// A dataset whose messages table is partitioned or not, with Glific's
    /// write-time column `bq_inserted_at` or without it.
    pub async fn dataset_shaped(
        &self,
        name: &str,
        location: &str,
        partitioned: bool,
        write_time: bool,
    ) {
        // Streamed rows stay in the buffer until flushed, as in BigQuery.
        self.rules(name, json!({ "streaming_buffer": true })).await;
        self.post(
            self.bq_url("/datasets"),
            json!({ "datasetReference": { "projectId": "demo", "datasetId": name }, "location": location }),
        )
        .await;
        let fields: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("../schemas/messages.json")).unwrap(),
        )
        .unwrap();
        let fields: Vec<Value> = fields
            .into_iter()
            .filter(|f| write_time || f["name"] != "bq_inserted_at")
            .collect();
        let mut table = json!({
            "tableReference": { "projectId": "demo", "datasetId": name, "tableId": "messages" },
            "schema": { "fields": fields },
        });
        if partitioned {
            table["timePartitioning"] = json!({ "type": "MONTH", "field": "inserted_at" });
        }
        self.post(self.bq_url(&format!("/datasets/{name}/tables")), table)
            .await;
    }

    /// Appends message rows (id, key, bsp_status, inserted_at) the way Glific does
    /// (insertAll), then lets them leave the streaming buffer.
    pub async fn rows(&self, dataset: &str, rows: &[(i64, Option<String>, Option<&str>, &str)]) {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(id, key, status, at)| message_row(*id, key.as_deref(), *status, at, None))
            .collect();
        self.stream(dataset, rows).await;
        self.flush(dataset).await;
    }

    /// Rows streamed with insertAll: they stay in the double's streaming buffer until `flush`.
    pub async fn stream(&self, dataset: &str, rows: Vec<Value>) {
        let rows: Vec<Value> = rows.into_iter().map(|r| json!({ "json": r })).collect();
        let answer = self
            .post(
                self.bq_url(&format!("/datasets/{dataset}/tables/messages/insertAll")),
                json!({ "rows": rows }),
            )
            .await;
        assert_eq!(
            answer["insertErrors"].as_array().map_or(0, Vec::len),
            0,
            "{answer}"
        );
    }

    /// Every streamed row of the dataset leaves the streaming buffer.
    pub async fn flush(&self, dataset: &str) {
        self.post(
            format!("{}/_double/flush", self.bq),
            json!({ "dataset": dataset }),
        )
        .await;
    }

    /// Switches rules of the strict BigQuery double for one dataset.
    pub async fn rules(&self, dataset: &str, rules: Value) {
        let mut body = rules;
        body["dataset"] = dataset.into();
        self.post(format!("{}/_double/rules", self.bq), body).await;
    }

    /// The jobs the double saw for a dataset whose query holds `text`.
    pub async fn jobs_with(&self, dataset: &str, text: &str) -> Vec<Value> {
        let mut jobs = self.jobs(dataset).await;
        jobs.retain(|j| j["query"].as_str().unwrap_or("").contains(text));
        jobs
    }

    /// The jobs the double saw for a dataset, with their outcomes.
    pub async fn jobs(&self, dataset: &str) -> Vec<Value> {
        let url = format!("{}/_double/jobs?dataset={dataset}", self.bq);
        let answer: Value = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer.as_array().cloned().unwrap_or_default()
    }

    pub async fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let answer = self
            .post(
                self.bq_url("/queries"),
                json!({ "query": sql, "useLegacySql": false }),
            )
            .await;
        assert_eq!(answer["jobComplete"], true);
        answer["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                r["f"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["v"].as_str().map(str::to_owned))
                    .collect()
            })
            .collect()
    }

    /// Row counts of the job's own tables.
    pub async fn bookkeeping(&self, dataset: &str) -> Vec<Vec<Option<String>>> {
        let n = |t: &str| format!("(SELECT COUNT(*) FROM `demo.{dataset}.{t}`)");
        self.query(&format!(
            "SELECT {}, {}, {}",
            n("bsp_loader_files"),
            n("bsp_loader_pending"),
            n("bsp_loader_dead_letters")
        ))
        .await
    }

    /// (id, bsp_status) of every row, in a stable order.
    pub async fn statuses(&self, dataset: &str) -> Vec<(String, Option<String>)> {
        self.query(&format!(
            "SELECT id, bsp_status FROM `demo.{dataset}.messages` ORDER BY id, bsp_status"
        ))
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone()))
        .collect()
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
