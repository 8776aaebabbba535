locals {
  pubsub_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# The three topics the functions publish to and consume from. Anyone with publisher on
# tuning-requests can start a run with one tuning-request/v1 message.
resource "google_pubsub_topic" "this" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption at rest; messages carry ids and gs:// URIs, never dataset content, so a Cloud KMS key (cost, rotation, availability risk) buys nothing here.
  for_each = local.topics

  name    = each.value
  project = var.project_id

  # Keep published messages a day so that a deleted and recreated subscription can seek back.
  message_retention_duration = "86400s"

  depends_on = [google_project_service.this]
}

# One dead-letter topic per function: what its subscription could not deliver after
# max_delivery_attempts tries.
resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption at rest; dead letters are the same small JSON bodies as the source topics.
  for_each = local.functions

  name    = each.value.dead_letter
  project = var.project_id

  depends_on = [google_project_service.this]
}

# A topic without a subscription drops what it receives: each dead-letter topic gets a pull
# subscription that keeps dead letters for inspection and replay (README, "Dead letters").
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.functions

  name    = each.value.dead_letter
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].id

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_days * 86400}s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires for inactivity: nobody pulls until something fails
  }
}

# The Pub/Sub service agent forwards undeliverable messages: publisher on each dead-letter topic
# (and subscriber on each source subscription, in triggers.tf).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.functions

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# A function publishes a message it refuses as invalid to its own dead-letter topic at once, with
# the reason (shared/dead_letter.py), instead of nacking it until Pub/Sub gives up. Only the
# Pub/Sub-triggered functions: ingest's events come from Cloud Storage.
resource "google_pubsub_topic_iam_member" "function_dead_letter_publisher" {
  for_each = { for name, function in local.functions : name => function if function.topic != null }

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.function[each.key].email}"
}
