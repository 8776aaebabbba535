locals {
  # A poll-tick/v1 body (shared.messages.PollTickV1). Cloud Scheduler cannot put the schedule
  # time into the body; without scheduled_at the poller takes the time of receipt.
  poll_tick_body = "{\"schema\": \"poll-tick/v1\"}"
}

resource "google_cloud_scheduler_job" "poll_tick" {
  name        = "${var.name_prefix}-poll-tick"
  project     = var.project_id
  region      = var.region
  description = "Publishes a poll-tick/v1 to ${var.poll_ticks_topic} so that the poller checks running tuning jobs."
  schedule    = var.poll_schedule
  time_zone   = "Etc/UTC"

  # A missed tick is not worth retrying: the next one comes a minute later.
  retry_config {
    retry_count = 0
  }

  pubsub_target {
    topic_name = google_pubsub_topic.this[var.poll_ticks_topic].id
    data       = base64encode(local.poll_tick_body)
    attributes = {
      schema = "poll-tick/v1"
    }
  }

  depends_on = [google_project_service.this]
}
