# Eventarc triggers: Cloud Storage finalize on the bucket for ingest, Pub/Sub for the others.
#
# Eventarc delivers through a Pub/Sub push subscription that it creates and names itself
# (eventarc-<region>-<trigger>-sub-NNN); its API has no field for a dead-letter policy
# (hashicorp/terraform-provider-google#17697). Google's documented way is to update that
# subscription, which terraform_data.delivery_policy does after every (re)creation of a trigger:
# dead-letter topic, delivery attempts, retry backoff and an acknowledgement deadline longer than
# the function's timeout. README, "Why Eventarc, and how its subscriptions get dead letters".

resource "google_service_account" "trigger" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-trigger"
  display_name = "sftpipe Eventarc triggers"
  description  = "Identity in the OIDC token Eventarc sends to the sftpipe functions; may only invoke them."
}

resource "google_eventarc_trigger" "this" {
  for_each = local.functions

  name     = "${var.name_prefix}-${each.key}"
  project  = var.project_id
  location = var.region

  matching_criteria {
    attribute = "type"
    value     = each.value.event_type
  }

  # ingest: every object finalized in the bucket (the code ignores objects outside incoming/;
  # Eventarc cannot filter direct Cloud Storage events by object name).
  dynamic "matching_criteria" {
    for_each = each.value.topic == null ? [google_storage_bucket.data.name] : []
    content {
      attribute = "bucket"
      value     = matching_criteria.value
    }
  }

  # The others: our own topic, so that anyone may publish to it and the trigger only subscribes.
  dynamic "transport" {
    for_each = each.value.topic == null ? [] : [google_pubsub_topic.this[each.value.topic].id]
    content {
      pubsub {
        topic = transport.value
      }
    }
  }

  destination {
    cloud_run_service {
      service = google_cloudfunctions2_function.this[each.key].name
      region  = var.region
    }
  }

  service_account = google_service_account.trigger.email

  labels = {
    function = each.key
  }

  depends_on = [
    google_project_iam_member.trigger_event_receiver,
    google_project_iam_member.gcs_agent_publisher,
    google_project_service_identity.eventarc,
  ]
}

locals {
  # The subscription Eventarc created for each trigger (known after apply).
  trigger_subscriptions = {
    for name, trigger in google_eventarc_trigger.this : name => trigger.transport[0].pubsub[0].subscription
  }
}

# The Pub/Sub service agent must be able to acknowledge on the source subscription to forward a
# message to the dead-letter topic.
resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.functions

  project      = var.project_id
  subscription = local.trigger_subscriptions[each.key]
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Dead-letter and retry policy of each Eventarc subscription. Re-runs whenever Eventarc
# recreates the subscription (new name) or a policy value changes. Needs gcloud where Terraform
# runs (Cloud Shell has it).
resource "terraform_data" "delivery_policy" {
  for_each = local.functions

  triggers_replace = {
    project               = var.project_id
    subscription          = local.trigger_subscriptions[each.key]
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
    min_retry_delay       = "${var.min_retry_delay_s}s"
    max_retry_delay       = "${var.max_retry_delay_s}s"
    # Pub/Sub redelivers a push that is not answered within the deadline: give the function its
    # whole timeout plus start-up time (600 s is Pub/Sub's maximum).
    ack_deadline = min(var.function_resources[each.key].timeout_s + 60, 600)
  }

  provisioner "local-exec" {
    command = join(" ", [
      "gcloud pubsub subscriptions update",
      self.triggers_replace.subscription,
      "--project=${self.triggers_replace.project}",
      "--dead-letter-topic=${self.triggers_replace.dead_letter_topic}",
      "--max-delivery-attempts=${self.triggers_replace.max_delivery_attempts}",
      "--min-retry-delay=${self.triggers_replace.min_retry_delay}",
      "--max-retry-delay=${self.triggers_replace.max_retry_delay}",
      "--ack-deadline=${self.triggers_replace.ack_deadline}",
    ])
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_pubsub_subscription_iam_member.dead_letter_subscriber,
  ]
}
