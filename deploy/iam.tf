# Who may do what. One service account per function, each with only what its code calls;
# deploy/README.md lists every grant and why. Where a resource has its own IAM policy (topic,
# secret, Cloud Run service, Artifact Registry repository, bucket) the grant is made on it, not
# on the project; bucket grants are narrowed to one prefix with IAM conditions.

locals {
  object_prefix = "projects/_/buckets/${google_storage_bucket.data.name}/objects/"

  # What ingest reads in the data bucket: the uploads under incoming/, and the files a manifest
  # may name (shared/ingest/manifest.py, ReadPolicy: SFTPIPE_UPLOAD_PREFIXES). One grant with one
  # condition, so that what ingest may read is one expression to review.
  ingest_read_prefixes = concat([var.incoming_prefix], var.upload_prefixes)

  # Other buckets a manifest may name (SFTPIPE_ALLOWED_BUCKETS). The data bucket itself is left
  # out: a bucket-wide grant on it would open prepared/ and reports/ to ingest's reads.
  ingest_allowed_buckets = toset([for name in var.allowed_buckets : name if name != local.bucket])

  # function => [(role, prefix)] on the data bucket. objectUser (not objectCreator) where the
  # function writes, because a redelivered event rewrites the same object, and an overwrite
  # needs storage.objects.delete. Nothing may write or delete under incoming/: uploads are
  # never modified.
  bucket_grants = {
    "ingest/write-prepared"    = { function = "ingest", role = "roles/storage.objectUser", prefix = var.prepared_prefix }
    "ingest/write-reports"     = { function = "ingest", role = "roles/storage.objectUser", prefix = var.reports_prefix }
    "tuner/read-prepared"      = { function = "tuner", role = "roles/storage.objectViewer", prefix = var.prepared_prefix }
    "completion/read-prepared" = { function = "completion", role = "roles/storage.objectViewer", prefix = var.prepared_prefix }
    "completion/write-reports" = { function = "completion", role = "roles/storage.objectUser", prefix = var.reports_prefix }
    # The poller's reconciler ingests again a dataset whose ingest worker died (shared/reconcile.py).
    "poller/write-prepared" = { function = "poller", role = "roles/storage.objectUser", prefix = var.prepared_prefix }
    "poller/write-reports"  = { function = "poller", role = "roles/storage.objectUser", prefix = var.reports_prefix }
  }

  # function => topics it publishes to.
  publish_grants = {
    "ingest/tuning-requests" = { function = "ingest", topic = var.tuning_requests_topic }
    "tuner/job-events"       = { function = "tuner", topic = var.job_events_topic }
    "poller/job-events"      = { function = "poller", topic = var.job_events_topic }
    # The reconciler re-publishes the stored request of a READY dataset that never got a job.
    "poller/tuning-requests" = { function = "poller", topic = var.tuning_requests_topic }
    # Evaluation continuations: completion re-publishes a job event to resume a long evaluation.
    "completion/job-events" = { function = "completion", topic = var.job_events_topic }
    # After the pre-tuning baseline, completion hands the queued job's request to the tuner.
    "completion/tuning-requests" = { function = "completion", topic = var.tuning_requests_topic }
  }

  # Project-level roles: these services have no narrower resource to grant on.
  project_grants = {
    # Firestore: read and write documents (datasets, jobs, evaluations, idempotency).
    "ingest/datastore"     = { function = "ingest", role = "roles/datastore.user" }
    "tuner/datastore"      = { function = "tuner", role = "roles/datastore.user" }
    "poller/datastore"     = { function = "poller", role = "roles/datastore.user" }
    "completion/datastore" = { function = "completion", role = "roles/datastore.user" }
    # Vertex AI: tuner and poller create and read tuning jobs; completion calls generateContent on
    # the tuned endpoint and the base model.
    "tuner/aiplatform"      = { function = "tuner", role = "roles/aiplatform.user" }
    "poller/aiplatform"     = { function = "poller", role = "roles/aiplatform.user" }
    "completion/aiplatform" = { function = "completion", role = "roles/aiplatform.user" }
  }

  # Vertex AI tuning reads the prepared training and validation files as its service agent.
  # Keys are known at plan time; the service agent's email is not.
  dataset_readers = merge(
    { vertex-ai-service-agent = "serviceAccount:${google_project_service_identity.aiplatform.email}" },
    { for index, member in var.vertex_dataset_readers : "extra-${index}" => member },
    # A job that runs as its own service account reads its datasets as that account.
    var.tuning_service_account == "" ? {} : { tuning-service-account = "serviceAccount:${var.tuning_service_account}" },
  )
}

# A job created with a service account: the tuner must be allowed to act as it.
resource "google_service_account_iam_member" "tuner_acts_as_tuning_account" {
  count = var.tuning_service_account == "" ? 0 : 1

  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.tuning_service_account}"
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function["tuner"].email}"
}

# CMEK: Vertex AI's service agent encrypts the job and its tuned model with the key.
resource "google_kms_crypto_key_iam_member" "vertex_agent_uses_key" {
  count = var.tuning_kms_key_name == "" ? 0 : 1

  crypto_key_id = var.tuning_kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.aiplatform.email}"
}

# --- Function identities ------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "function" {
  for_each = local.bucket_grants

  bucket = google_storage_bucket.data.name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"

  condition {
    title       = "${each.key} only"
    description = "Objects under ${each.value.prefix} only."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${each.value.prefix}\")"
  }
}

resource "google_storage_bucket_iam_member" "ingest_reader" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.function["ingest"].email}"

  condition {
    title       = "ingest/read-uploads only"
    description = "Objects under ${join(", ", local.ingest_read_prefixes)} only."
    expression  = join(" || ", [for prefix in local.ingest_read_prefixes : "resource.name.startsWith(\"${local.object_prefix}${prefix}\")"])
  }

  lifecycle {
    precondition {
      # Otherwise the grant (and a manifest) would reach other datasets' prepared files and reports.
      condition = alltrue([
        for prefix in var.upload_prefixes : alltrue([
          for output in [var.prepared_prefix, var.reports_prefix] :
          !startswith(prefix, output) && !startswith(output, prefix)
        ])
      ])
      error_message = "upload_prefixes must not contain, or lie under, prepared_prefix or reports_prefix."
    }
  }
}

resource "google_storage_bucket_iam_member" "ingest_allowed_bucket_reader" {
  for_each = local.ingest_allowed_buckets

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.function["ingest"].email}"
}

# The poller's reconciler ingests again a dataset whose ingest worker died: it reads what ingest
# reads (the same condition) and writes what ingest writes (bucket_grants).
resource "google_storage_bucket_iam_member" "reconciler_upload_reader" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.function["poller"].email}"

  condition {
    title       = "poller/read-uploads only"
    description = "Objects under ${join(", ", local.ingest_read_prefixes)} only."
    expression  = google_storage_bucket_iam_member.ingest_reader.condition[0].expression
  }
}

# The reconciler (on the poller's tick) takes the tuner's dead letters: a request whose
# deliveries were spent is recorded as a FAILED job, so the user is told (shared/reconcile.py).
resource "google_pubsub_subscription_iam_member" "reconciler_dead_letter_reader" {
  project      = var.project_id
  subscription = google_pubsub_subscription.dead_letter["tuner"].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.function["poller"].email}"
}

resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = local.publish_grants

  project = var.project_id
  topic   = google_pubsub_topic.this[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_project_iam_member" "function" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# --- Trigger identity ---------------------------------------------------------------------------

# Eventarc requires its trigger identity to hold eventReceiver (project-level only).
resource "google_project_iam_member" "trigger_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.trigger.email}"
}

# The trigger identity may invoke the four functions, nothing else.
resource "google_cloud_run_v2_service_iam_member" "trigger_invoker" {
  for_each = local.functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

# Pub/Sub mints the OIDC token of each push as the trigger identity (needed in projects created
# before April 2021, harmless after): granted on that one service account, not the project.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.trigger.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# --- Service agents -----------------------------------------------------------------------------

# Eventarc's Cloud Storage trigger has the bucket publish notifications to a topic Eventarc
# creates and names; Google's documented grant is publisher on the project.
resource "google_project_iam_member" "gcs_agent_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_bucket_iam_member" "dataset_reader" {
  for_each = local.dataset_readers

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = each.value

  condition {
    title       = "prepared datasets only"
    description = "Vertex AI tuning reads the training and validation files under ${var.prepared_prefix}."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.prepared_prefix}\")"
  }
}

# A request with vertex_evaluation_metrics has Vertex AI's Gen AI evaluation service write its
# results under reports/vertex-evaluation/ (shared/tuning/submit.py), as the same service agents.
resource "google_storage_bucket_iam_member" "vertex_evaluation_writer" {
  for_each = local.dataset_readers

  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectUser"
  member = each.value

  condition {
    title       = "Vertex AI evaluation output only"
    description = "The Gen AI evaluation service writes a job's evaluation under ${var.reports_prefix}vertex-evaluation/."
    expression  = "resource.name.startsWith(\"${local.object_prefix}${var.reports_prefix}vertex-evaluation/\")"
  }
}

# --- Build identity -----------------------------------------------------------------------------

resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket_iam_member" "build_source_reader" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

# --- Audit ------------------------------------------------------------------------------------

# Who read or wrote which object, in Cloud Logging (instead of legacy bucket access logs).
# Authoritative for storage.googleapis.com's audit configuration in this project.
resource "google_project_iam_audit_config" "storage" {
  count = var.storage_data_access_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }

  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
