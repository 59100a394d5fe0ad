//! Credentials: one authenticator serves both the BigQuery client and the
//! requests it has no method for (load uploads), so the job asks Google for
//! tokens one way only. Built with yup-oauth2 (re-exported by the client) as
//! the client itself would: a key file, else Application Default Credentials
//! (a key file named by GOOGLE_APPLICATION_CREDENTIALS, gcloud's user
//! credentials, or the metadata server of Cloud Run).

use std::sync::Arc;

use async_trait::async_trait;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::yup_oauth2::{
    self, ApplicationDefaultCredentialsAuthenticator, ApplicationDefaultCredentialsFlowOpts,
    AuthorizedUserAuthenticator, ServiceAccountAuthenticator,
    authenticator::ApplicationDefaultCredentialsTypes, authenticator::DefaultAuthenticator,
};

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";

#[derive(Clone)]
struct Tokens(DefaultAuthenticator);

#[async_trait]
impl Authenticator for Tokens {
    async fn access_token(&self) -> Result<String, BQError> {
        let token = self.0.token(&[SCOPE]).await?;
        token.token().map(str::to_owned).ok_or(BQError::NoToken)
    }
}

/// The authenticator of a key file, or of Application Default Credentials.
pub async fn authenticator(key_file: Option<&str>) -> anyhow::Result<Arc<dyn Authenticator>> {
    let auth = match key_file {
        Some(file) => {
            let key = yup_oauth2::read_service_account_key(file).await?;
            ServiceAccountAuthenticator::builder(key).build().await?
        }
        None => match authorized_user().await {
            Some(secret) => AuthorizedUserAuthenticator::builder(secret).build().await?,
            None => {
                let opts = ApplicationDefaultCredentialsFlowOpts::default();
                match ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                    ApplicationDefaultCredentialsTypes::InstanceMetadata(b) => b.build().await?,
                    ApplicationDefaultCredentialsTypes::ServiceAccount(b) => b.build().await?,
                }
            }
        },
    };
    Ok(Arc::new(Tokens(auth)))
}

/// gcloud's user credentials (`gcloud auth application-default login`), when
/// Application Default Credentials point at them.
async fn authorized_user() -> Option<yup_oauth2::authorized_user::AuthorizedUserSecret> {
    let path = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                std::path::Path::new(&h).join(".config/gcloud/application_default_credentials.json")
            })
        })?;
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    if value["type"] != "authorized_user" {
        return None;
    }
    serde_json::from_value(value).ok()
}
