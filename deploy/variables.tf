# Variables whose name is a field of shared.config.Settings (location, the topic names, the
# prefixes, the collections, dead_letter_suffix, base_model, ...) are passed to the functions as
# SFTPIPE_<NAME> and default to the code's own default; tests/unit/test_deploy.py fails when the
# two drift apart.

# --- Where ---------------------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project to deploy into (a dedicated project is recommended: several grants are project-wide)."
  type        = string
}

variable "region" {
  description = "Region of the functions, Eventarc triggers, bucket, Artifact Registry and Scheduler job."
  type        = string
  default     = "us-central1"
}

variable "location" {
  description = "Vertex AI region for tuning jobs and evaluation calls (SFTPIPE_LOCATION)."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Location of the Firestore (default) database: a multi-region (nam5, eur3) or a region. Cannot be changed later; unused when create_firestore_database is false."
  type        = string
  default     = "nam5"
}

variable "name_prefix" {
  description = "Prefix of every named resource (functions, service accounts, triggers, scheduler job). At most 12 characters, lower case."
  type        = string
  default     = "sftpipe"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,11}$", var.name_prefix))
    error_message = "name_prefix: 1-12 characters, lower case letters, digits and dashes, starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default = {
    app        = "sftpipe"
    managed-by = "terraform"
  }
}

# --- Bucket --------------------------------------------------------------------------------------

variable "bucket" {
  description = "Name of the bucket that receives uploads and holds prepared datasets and reports (SFTPIPE_BUCKET). Empty: <project_id>-sftpipe."
  type        = string
  default     = ""
}

variable "incoming_prefix" {
  description = "Uploads under this prefix start a run (SFTPIPE_INCOMING_PREFIX)."
  type        = string
  default     = "incoming/"
}

variable "prepared_prefix" {
  description = "Where ingest writes prepared datasets (SFTPIPE_PREPARED_PREFIX)."
  type        = string
  default     = "prepared/"
}

variable "reports_prefix" {
  description = "Where ingest and completion write reports (SFTPIPE_REPORTS_PREFIX)."
  type        = string
  default     = "reports/"
}

variable "upload_prefixes" {
  description = "Prefixes of the bucket under which a manifest may name its files (SFTPIPE_UPLOAD_PREFIXES, joined with commas); ingest may read exactly these and incoming/. Each ends with '/'."
  type        = list(string)
  default     = ["datasets/"]

  validation {
    condition     = alltrue([for prefix in var.upload_prefixes : can(regex("^[^/,][^,]*/$", prefix))])
    error_message = "upload_prefixes: each prefix is non-empty, has no comma, does not start with '/' and ends with '/'."
  }
}

variable "allowed_buckets" {
  description = "Other buckets whose objects a manifest may name (SFTPIPE_ALLOWED_BUCKETS, joined with commas); ingest gets objectViewer on each. The person running Terraform must be able to set IAM on them."
  type        = list(string)
  default     = []
}

variable "prepared_retention_days" {
  description = "Days after which prepared datasets are deleted (tuning and evaluation are long done by then)."
  type        = number
  default     = 30
}

variable "reports_retention_days" {
  description = "Days after which reports are deleted."
  type        = number
  default     = 365
}

variable "incoming_retention_days" {
  description = "Days after which uploads are deleted; 0 keeps them forever."
  type        = number
  default     = 0
}

variable "noncurrent_retention_days" {
  description = "Days a replaced or deleted object version is kept (the bucket is versioned)."
  type        = number
  default     = 7
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the buckets with their objects. Keep false in production."
  type        = bool
  default     = false
}

variable "storage_data_access_logs" {
  description = "Turn on Cloud Audit Logs Data Access logs (reads and writes) for Cloud Storage in this project: who touched which object."
  type        = bool
  default     = true
}

# --- Pub/Sub -------------------------------------------------------------------------------------

variable "uploads_topic" {
  description = "Name of the uploads route (SFTPIPE_UPLOADS_TOPIC). On Google Cloud, ingest is fed by an Eventarc Cloud Storage trigger; the name only names ingest's dead-letter topic, as the local stack does."
  type        = string
  default     = "object-finalized"
}

variable "tuning_requests_topic" {
  description = "Topic of tuning-request/v1 messages (SFTPIPE_TUNING_REQUESTS_TOPIC)."
  type        = string
  default     = "tuning-requests"
}

variable "job_events_topic" {
  description = "Topic of job-event/v1 messages (SFTPIPE_JOB_EVENTS_TOPIC)."
  type        = string
  default     = "job-events"
}

variable "poll_ticks_topic" {
  description = "Topic of poll-tick/v1 messages from Cloud Scheduler (SFTPIPE_POLL_TICKS_TOPIC)."
  type        = string
  default     = "poll-ticks"
}

variable "dead_letter_suffix" {
  description = "Suffix of each subscription's dead-letter topic: <function>-<topic><suffix> (SFTPIPE_DEAD_LETTER_SUFFIX)."
  type        = string
  default     = "-dead-letter"
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message before it goes to the dead-letter topic (5-100)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub allows 5 to 100 delivery attempts."
  }
}

variable "min_retry_delay_s" {
  description = "Minimum backoff between deliveries of a failed message, in seconds."
  type        = number
  default     = 10
}

variable "max_retry_delay_s" {
  description = "Maximum backoff between deliveries of a failed message, in seconds (at most 600)."
  type        = number
  default     = 600
}

variable "dead_letter_retention_days" {
  description = "Days a dead-lettered message is kept in its dead-letter subscription (at most 7 with the default)."
  type        = number
  default     = 7
}

variable "poll_schedule" {
  description = "Cron schedule of the poll tick (Cloud Scheduler syntax, UTC)."
  type        = string
  default     = "* * * * *"
}

# --- Firestore -----------------------------------------------------------------------------------

variable "datasets_collection" {
  description = "Firestore collection of datasets (SFTPIPE_DATASETS_COLLECTION)."
  type        = string
  default     = "datasets"
}

variable "jobs_collection" {
  description = "Firestore collection of tuning jobs (SFTPIPE_JOBS_COLLECTION)."
  type        = string
  default     = "jobs"
}

variable "evaluations_collection" {
  description = "Firestore collection of evaluations (SFTPIPE_EVALUATIONS_COLLECTION)."
  type        = string
  default     = "evaluations"
}

variable "idempotency_collection" {
  description = "Firestore collection of idempotency claims; its expire_at field gets a TTL policy (SFTPIPE_IDEMPOTENCY_COLLECTION)."
  type        = string
  default     = "idempotency"
}

variable "create_firestore_database" {
  description = "Create the Firestore (default) database. Set false in a project whose (default) database exists already (it must be in Native mode); the TTL policies and the index are made on it either way."
  type        = bool
  default     = true
}

variable "firestore_delete_protection" {
  description = "Refuse to delete the Firestore database (also outside Terraform). Only applies when create_firestore_database is true."
  type        = bool
  default     = true
}

# --- Pipeline settings ---------------------------------------------------------------------------

variable "base_model" {
  description = "Default base model for uploads (SFTPIPE_BASE_MODEL)."
  type        = string
  default     = "gemini-2.5-flash"
}

variable "max_concurrent_jobs" {
  description = "Tuning jobs allowed to run at once (SFTPIPE_MAX_CONCURRENT_JOBS); match it to your Vertex AI quota."
  type        = number
  default     = 1
}

variable "log_level" {
  description = "DEBUG, INFO, WARNING or ERROR (SFTPIPE_LOG_LEVEL)."
  type        = string
  default     = "INFO"
}

variable "extra_environment" {
  description = "More SFTPIPE_* settings for every function (for example SFTPIPE_EPOCHS, SFTPIPE_TEST_FRACTION). Names must be Settings fields."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.extra_environment) : can(regex("^SFTPIPE_[A-Z0-9_]+$", name))])
    error_message = "extra_environment keys must be SFTPIPE_* variables."
  }
}

# --- Notifications -------------------------------------------------------------------------------

variable "notification_secrets" {
  description = "Which notification secrets hold a version and are mounted: any of slack_webhook_url, slack_bot_token, smtp_password. Add the version first (README, step 4); a mounted secret without a version fails the deployment."
  type        = set(string)
  default     = []

  validation {
    condition     = length(setsubtract(var.notification_secrets, ["slack_webhook_url", "slack_bot_token", "smtp_password"])) == 0
    error_message = "notification_secrets: only slack_webhook_url, slack_bot_token and smtp_password."
  }
}

variable "slack_channel" {
  description = "Slack channel for the bot token (SFTPIPE_SLACK_CHANNEL)."
  type        = string
  default     = ""
}

variable "smtp_host" {
  description = "SMTP server; empty disables email (SFTPIPE_SMTP_HOST)."
  type        = string
  default     = ""
}

variable "smtp_port" {
  description = "SMTP port (SFTPIPE_SMTP_PORT)."
  type        = number
  default     = 587
}

variable "smtp_username" {
  description = "SMTP user name (SFTPIPE_SMTP_USERNAME)."
  type        = string
  default     = ""
}

variable "mail_from" {
  description = "Sender address of notification mails (SFTPIPE_MAIL_FROM)."
  type        = string
  default     = "sftpipe@localhost"
}

variable "mail_to" {
  description = "Recipients of notification mails (SFTPIPE_MAIL_TO, joined with commas)."
  type        = list(string)
  default     = []
}

# --- Functions -----------------------------------------------------------------------------------

variable "python_runtime" {
  description = "Cloud Run functions runtime (the code and its tests target Python 3.11)."
  type        = string
  default     = "python311"
}

variable "function_resources" {
  description = "Memory, CPU, timeout (seconds, at most 540 so that it fits Pub/Sub's 600 s acknowledgement deadline) and maximum instances per function. Keys: ingest, tuner, poller, completion."
  type = map(object({
    memory        = string
    cpu           = string
    timeout_s     = number
    max_instances = number
  }))
  default = {
    # Streams, converts and hashes whole uploads: the most memory and the longest timeout.
    ingest = { memory = "1Gi", cpu = "1", timeout_s = 540, max_instances = 10 }
    # One Firestore claim and one Vertex AI call per request.
    tuner = { memory = "512Mi", cpu = "0.333", timeout_s = 540, max_instances = 5 }
    # One instance: ticks are minutes apart and every tick reads all running jobs.
    poller = { memory = "1Gi", cpu = "1", timeout_s = 540, max_instances = 1 }
    # Evaluates in checkpointed slices that continue across invocations before the timeout.
    completion = { memory = "1Gi", cpu = "1", timeout_s = 540, max_instances = 5 }
  }

  validation {
    condition     = alltrue([for r in values(var.function_resources) : r.timeout_s >= 1 && r.timeout_s <= 540])
    error_message = "timeout_s must be between 1 and 540."
  }
}

variable "vertex_dataset_readers" {
  description = "Extra members (\"serviceAccount:...\") that may read prepared datasets, for a Vertex AI tuning service agent other than service-<number>@gcp-sa-aiplatform (README, \"Troubleshooting\")."
  type        = list(string)
  default     = []
}

variable "tuning_service_account" {
  description = "Service account every tuning job runs as (SFTPIPE_TUNING_SERVICE_ACCOUNT); empty: Vertex AI's service agent. The tuner may act as it, and it may read prepared datasets."
  type        = string
  default     = ""
}

variable "tuning_kms_key_name" {
  description = "Customer-managed key for every tuning job and tuned model (SFTPIPE_TUNING_KMS_KEY_NAME), in var.location; empty: Google-managed. Vertex AI's service agent may use it."
  type        = string
  default     = ""

  validation {
    condition     = var.tuning_kms_key_name == "" || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.tuning_kms_key_name))
    error_message = "tuning_kms_key_name must be projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "tuning_output_uri" {
  description = "gs://BUCKET/PREFIX where Vertex AI writes each tuning job's artifacts (SFTPIPE_TUNING_OUTPUT_URI); empty: Vertex's default."
  type        = string
  default     = ""
}

variable "tuning_description" {
  description = "Description of every tuning job (SFTPIPE_TUNING_DESCRIPTION); an upload's description wins."
  type        = string
  default     = ""
}
