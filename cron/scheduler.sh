#!/usr/bin/env bash
# Creates (or updates) the service account, its least-privilege roles, the Cloud Run job and a
# Cloud Scheduler trigger every 15 minutes. Usage:
#   PROJECT_ID=my-project REGION=asia-south1 BUCKET=glific-callbacks DATASET=org_919876543210 \
#     bash cron/scheduler.sh
set -euo pipefail
: "${PROJECT_ID:?}" "${REGION:?}" "${BUCKET:?}" "${DATASET:?}"
SA="bsp-status-loader@${PROJECT_ID}.iam.gserviceaccount.com"
SCHEDULE="${SCHEDULE:-*/15 * * * *}"

gcloud iam service-accounts describe "$SA" --project "$PROJECT_ID" >/dev/null 2>&1 ||
  gcloud iam service-accounts create bsp-status-loader --project "$PROJECT_ID" \
    --display-name "bsp-status-loader"

# Least privilege: run jobs in the project, edit only the organization's dataset, read the bucket.
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:$SA" \
  --role roles/bigquery.jobUser --condition None >/dev/null
bq add-iam-policy-binding --member "serviceAccount:$SA" --role roles/bigquery.dataEditor \
  "${PROJECT_ID}:${DATASET}" >/dev/null
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member "serviceAccount:$SA" \
  --role roles/storage.objectViewer >/dev/null

sed -e "s/PROJECT_ID/$PROJECT_ID/g" -e "s/REGION/$REGION/g" \
  -e "s#gs://glific-callbacks/gupshup#gs://$BUCKET/gupshup#" -e "s/org_919876543210/$DATASET/" \
  "$(dirname "$0")/cloud-run-job.yaml" >/tmp/bsp-status-loader-job.yaml
gcloud run jobs replace /tmp/bsp-status-loader-job.yaml --region "$REGION" --project "$PROJECT_ID"

# The scheduler may start the job (roles/run.invoker on the job only).
gcloud run jobs add-iam-policy-binding bsp-status-loader --region "$REGION" --project "$PROJECT_ID" \
  --member "serviceAccount:$SA" --role roles/run.invoker >/dev/null

URI="https://run.googleapis.com/v2/projects/${PROJECT_ID}/locations/${REGION}/jobs/bsp-status-loader:run"
if gcloud scheduler jobs describe bsp-status-loader --location "$REGION" --project "$PROJECT_ID" >/dev/null 2>&1; then
  verb=update
else
  verb=create
fi
gcloud scheduler jobs "$verb" http bsp-status-loader --location "$REGION" --project "$PROJECT_ID" \
  --schedule "$SCHEDULE" --uri "$URI" --http-method POST --oauth-service-account-email "$SA"
