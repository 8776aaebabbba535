# The shape of the pipeline in one place: which function handles which event, with which entry
# point, and which dead-letter topic catches what it cannot handle. Everything else is derived.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number
  bucket         = var.bucket != "" ? var.bucket : "${var.project_id}-sftpipe"

  storage_finalized = "google.cloud.storage.object.v1.finalized"
  pubsub_published  = "google.cloud.pubsub.topic.v1.messagePublished"

  # entry_point: a function exported by main.py. topic: the Pub/Sub source (null: the bucket).
  # dead_letter: <function>-<source><suffix>, the names the local stack uses.
  functions = {
    ingest = {
      entry_point = "ingest"
      description = "Converts, validates and splits an upload in incoming/, records the dataset, publishes a tuning request."
      event_type  = local.storage_finalized
      topic       = null
      dead_letter = "ingest-${var.uploads_topic}${var.dead_letter_suffix}"
    }
    tuner = {
      entry_point = "tuner"
      description = "Turns a tuning-request/v1 into exactly one Vertex AI tuning job (or a QUEUED job)."
      event_type  = local.pubsub_published
      topic       = var.tuning_requests_topic
      dead_letter = "tuner-${var.tuning_requests_topic}${var.dead_letter_suffix}"
    }
    poller = {
      entry_point = "poller"
      description = "On each poll tick: reads job states from Vertex AI, applies transitions, submits queued jobs."
      event_type  = local.pubsub_published
      topic       = var.poll_ticks_topic
      dead_letter = "poller-${var.poll_ticks_topic}${var.dead_letter_suffix}"
    }
    completion = {
      entry_point = "completion"
      description = "On terminal job events: evaluates tuned against base model, writes the report, notifies."
      event_type  = local.pubsub_published
      topic       = var.job_events_topic
      dead_letter = "completion-${var.job_events_topic}${var.dead_letter_suffix}"
    }
  }

  # The topics this deployment owns (the sources of the Pub/Sub-triggered functions).
  topics = toset([var.tuning_requests_topic, var.job_events_topic, var.poll_ticks_topic])

  # Environment of every function: the names of everything they touch, as shared.config.Settings
  # reads them. The secrets are mounted separately (secrets.tf).
  settings_environment = {
    SFTPIPE_PROJECT                = var.project_id
    SFTPIPE_LOCATION               = var.location
    SFTPIPE_BUCKET                 = local.bucket
    SFTPIPE_INCOMING_PREFIX        = var.incoming_prefix
    SFTPIPE_PREPARED_PREFIX        = var.prepared_prefix
    SFTPIPE_REPORTS_PREFIX         = var.reports_prefix
    SFTPIPE_UPLOAD_PREFIXES        = join(",", var.upload_prefixes)
    SFTPIPE_ALLOWED_BUCKETS        = join(",", var.allowed_buckets)
    SFTPIPE_UPLOADS_TOPIC          = var.uploads_topic
    SFTPIPE_TUNING_REQUESTS_TOPIC  = var.tuning_requests_topic
    SFTPIPE_JOB_EVENTS_TOPIC       = var.job_events_topic
    SFTPIPE_POLL_TICKS_TOPIC       = var.poll_ticks_topic
    SFTPIPE_DEAD_LETTER_SUFFIX     = var.dead_letter_suffix
    SFTPIPE_DATASETS_COLLECTION    = var.datasets_collection
    SFTPIPE_JOBS_COLLECTION        = var.jobs_collection
    SFTPIPE_EVALUATIONS_COLLECTION = var.evaluations_collection
    SFTPIPE_IDEMPOTENCY_COLLECTION = var.idempotency_collection
    SFTPIPE_BASE_MODEL             = var.base_model
    SFTPIPE_MAX_CONCURRENT_JOBS    = tostring(var.max_concurrent_jobs)
    SFTPIPE_SLACK_CHANNEL          = var.slack_channel
    SFTPIPE_SMTP_HOST              = var.smtp_host
    SFTPIPE_SMTP_PORT              = tostring(var.smtp_port)
    SFTPIPE_SMTP_USERNAME          = var.smtp_username
    SFTPIPE_MAIL_FROM              = var.mail_from
    SFTPIPE_MAIL_TO                = join(",", var.mail_to)
    SFTPIPE_LOG_LEVEL              = var.log_level
    SFTPIPE_TUNING_SERVICE_ACCOUNT = var.tuning_service_account
    SFTPIPE_TUNING_KMS_KEY_NAME    = var.tuning_kms_key_name
    SFTPIPE_TUNING_OUTPUT_URI      = var.tuning_output_uri
    SFTPIPE_TUNING_DESCRIPTION     = var.tuning_description
  }
  environment = merge(local.settings_environment, var.extra_environment)
}
