#!/usr/bin/env bash
# Creates (or updates) the service account, its least-privilege roles, the Cloud Run job, a
# Cloud Scheduler trigger every 15 minutes, and the log-based metrics and alert policies of
# cron/monitoring/. Usage:
#   PROJECT_ID=my-project REGION=asia-south1 BUCKET=glific-callbacks DATASET=org_919876543210 \
#     bash cron/scheduler.sh
# Optional: NOTIFICATION_CHANNELS (comma-separated channel resource names the alerts go to),
# DEAD_LETTER_SHARE (default 0.05 of lines), BYTES_BUDGET (default 50e9 bytes a day).
set -euo pipefail
: "${PROJECT_ID:?}" "${REGION:?}" "${BUCKET:?}" "${DATASET:?}"
SA="bsp-status-loader@${PROJECT_ID}.iam.gserviceaccount.com"
SCHEDULE="${SCHEDULE:-*/15 * * * *}"

gcloud iam service-accounts describe "$SA" --project "$PROJECT_ID" >/dev/null 2>&1 ||
  gcloud iam service-accounts create bsp-status-loader --project "$PROJECT_ID" \
    --display-name "bsp-status-loader"

# Least privilege: run jobs in the project, edit only the organization's dataset and the job's
# staging dataset, read the bucket.
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:$SA" \
  --role roles/bigquery.jobUser --condition None >/dev/null
bq add-iam-policy-binding --member "serviceAccount:$SA" --role roles/bigquery.dataEditor \
  "${PROJECT_ID}:${DATASET}" >/dev/null
# The job's own staging dataset, made here (in the organization's dataset's location, tables
# expiring after a day) so the job needs no right to create datasets; `init` only checks it.
STAGING="${DATASET}_bsp_staging"
LOCATION=$(bq show --format=json "${PROJECT_ID}:${DATASET}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["location"])')
bq show "${PROJECT_ID}:${STAGING}" >/dev/null 2>&1 ||
  bq mk --dataset --location="$LOCATION" --default_table_expiration 86400 "${PROJECT_ID}:${STAGING}"
bq add-iam-policy-binding --member "serviceAccount:$SA" --role roles/bigquery.dataEditor \
  "${PROJECT_ID}:${STAGING}" >/dev/null
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

# Metrics and alerts as code: log-based metrics from the run summary records, then the
# alert policies that read them (matched by display name, so a rerun updates them).
MONITORING="$(dirname "$0")/monitoring"
for file in "$MONITORING"/metrics/*.json; do
  metric="$(basename "$file" .json)"
  if gcloud logging metrics describe "$metric" --project "$PROJECT_ID" >/dev/null 2>&1; then
    gcloud logging metrics update "$metric" --project "$PROJECT_ID" --config-from-file "$file" >/dev/null
  else
    gcloud logging metrics create "$metric" --project "$PROJECT_ID" --config-from-file "$file" >/dev/null
  fi
done
channels=()
if [ -n "${NOTIFICATION_CHANNELS:-}" ]; then
  channels=(--notification-channels "$NOTIFICATION_CHANNELS")
fi
for file in "$MONITORING"/policies/*.json; do
  sed -e "s/DEAD_LETTER_SHARE/${DEAD_LETTER_SHARE:-0.05}/g" -e "s/BYTES_BUDGET/${BYTES_BUDGET:-50e9}/g" \
    "$file" >/tmp/bsp-status-loader-policy.json
  name="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["displayName"])' \
    /tmp/bsp-status-loader-policy.json)"
  existing="$(gcloud monitoring policies list --project "$PROJECT_ID" \
    --filter "displayName=\"$name\"" --format 'value(name)' | head -n1)"
  if [ -n "$existing" ]; then
    gcloud monitoring policies update "$existing" --project "$PROJECT_ID" \
      --policy-from-file /tmp/bsp-status-loader-policy.json >/dev/null
  else
    gcloud monitoring policies create --project "$PROJECT_ID" "${channels[@]}" \
      --policy-from-file /tmp/bsp-status-loader-policy.json >/dev/null
  fi
done
