# Secret Manager holds the notification credentials; Terraform creates the secrets but never
# their values (README, step 4), so no credential ever lands in Terraform state or plans.

locals {
  secrets = {
    slack_webhook_url = "Slack incoming webhook URL"
    slack_bot_token   = "Slack bot token (used with slack_channel)"
    smtp_password     = "SMTP password (used with smtp_host and smtp_username)"
  }

  # Functions that send notifications: completion (results) and ingest (rejected uploads).
  # The poller notifies through its reconciler (a dataset stranded in VALIDATING is rejected).
  notifying_functions = ["ingest", "poller", "completion"]

  # Secrets with a version that the notifying functions get as SFTPIPE_<NAME>.
  mounted_secrets = {
    for name in var.notification_secrets : name => google_secret_manager_secret.this[name].secret_id
  }
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = "${var.name_prefix}-${replace(each.key, "_", "-")}"

  labels = {
    purpose = "notifications"
  }

  annotations = {
    description = each.value
  }

  replication {
    auto {}
  }

  depends_on = [google_project_service.this]
}

# Each notifying function may read each notification secret, and nothing else may.
resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = {
    for pair in setproduct(local.notifying_functions, keys(local.secrets)) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], secret = pair[1] }
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.value.function].email}"
}
