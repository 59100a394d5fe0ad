//! The two calls gcp-bigquery-client has no method for, written with reqwest:
//! a load job sent by multipart upload (`multipart/related`: the job resource,
//! then the NDJSON rows; no bucket needed), and a dataset with a default table
//! expiration. One try each: `Api` retries them under its policy.

use std::sync::Arc;

use gcp_bigquery_client::auth::Authenticator;
use serde_json::Value;

use super::retry::Failure;

pub struct Raw {
    /// `https://bigquery.googleapis.com`, or the emulator's address.
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Arc<dyn Authenticator>,
}

impl Raw {
    /// Inserts a load job whose data travels in the request itself.
    pub async fn insert_load(
        &self,
        project: &str,
        job: &Value,
        ndjson: Vec<u8>,
    ) -> Result<Value, Failure> {
        let boundary = format!("bsp_{}", uuid::Uuid::new_v4().simple());
        let mut body = format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{job}\r\n\
             --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&ndjson);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let url = format!(
            "{}/upload/bigquery/v2/projects/{project}/jobs?uploadType=multipart",
            self.base
        );
        self.post(
            &url,
            &format!("multipart/related; boundary={boundary}"),
            body,
        )
        .await
    }

    /// Creates a dataset from its REST representation.
    pub async fn insert_dataset(&self, project: &str, dataset: &Value) -> Result<Value, Failure> {
        let url = format!("{}/bigquery/v2/projects/{project}/datasets", self.base);
        self.post(&url, "application/json", dataset.to_string().into_bytes())
            .await
    }

    async fn post(&self, url: &str, content_type: &str, body: Vec<u8>) -> Result<Value, Failure> {
        let token = self
            .auth
            .access_token()
            .await
            .map_err(|e| Failure::Transport(format!("no access token: {e}")))?;
        let answer = self
            .http
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Transport(e.without_url().to_string()))?;
        let code = answer.status().as_u16();
        let text = answer
            .text()
            .await
            .map_err(|e| Failure::Transport(e.without_url().to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            return Ok(value);
        }
        let error = &value["error"];
        Err(Failure::Http {
            code: i64::from(code),
            reason: error["errors"][0]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            message: error["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {code}"), str::to_owned),
        })
    }
}
