output "bucket" {
  description = "The pipeline's bucket (SFTPIPE_BUCKET)."
  value       = google_storage_bucket.data.name
}

output "upload_command" {
  description = "Start a run: upload a dataset under the incoming prefix."
  value       = "gcloud storage cp DATASET.jsonl gs://${google_storage_bucket.data.name}/${var.incoming_prefix}"
}

output "functions" {
  description = "Function name, Cloud Run URL (internal ingress only) and service account, by function."
  value = {
    for name, fn in google_cloudfunctions2_function.this : name => {
      name            = fn.name
      url             = fn.service_config[0].uri
      service_account = google_service_account.function[name].email
    }
  }
}

output "topics" {
  description = "Pub/Sub topics, by name."
  value       = { for name, topic in google_pubsub_topic.this : name => topic.id }
}

output "trigger_subscriptions" {
  description = "The subscription Eventarc created for each function's trigger (dead-letter policy set by terraform_data.delivery_policy)."
  value       = local.trigger_subscriptions
}

output "dead_letter_subscriptions" {
  description = "Where each function's undeliverable messages are kept, by function."
  value       = { for name, sub in google_pubsub_subscription.dead_letter : name => sub.id }
}

output "secrets" {
  description = "Secret Manager secrets for notifications: add a version, then list the name in notification_secrets."
  value       = { for name, secret in google_secret_manager_secret.this : name => secret.secret_id }
}

output "trigger_service_account" {
  description = "Identity Eventarc uses to invoke the functions."
  value       = google_service_account.trigger.email
}

output "scheduler_job" {
  description = "Cloud Scheduler job that publishes poll ticks."
  value       = google_cloud_scheduler_job.poll_tick.id
}
