locals {
  # The client libraries use (default). Everything below names the database through this local,
  # not the resource, so that it works whether Terraform creates the database or finds it there.
  firestore_database = "(default)"
}

# The (default) Firestore database in Native mode, unless it exists already
# (create_firestore_database = false; deploy/README.md, "A project that already has Firestore").
resource "google_firestore_database" "default" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = local.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # `terraform destroy` leaves the database (and its data) in place; README, "Tear down".
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.this]
}

# Idempotency claims carry expire_at (shared/idempotency.py, 30 days after the claim); Firestore
# deletes them some time after that instant. The field is never queried, so it gets no
# single-field index (an index on an always-increasing timestamp only adds write hotspots).
resource "google_firestore_field" "idempotency_expire_at" {
  project    = var.project_id
  database   = local.firestore_database
  collection = var.idempotency_collection
  field      = "expire_at"

  ttl_config {}

  index_config {}

  # Created here or not, the database (and its API) must exist first.
  depends_on = [google_firestore_database.default, google_project_service.this]
}

# The job-event outbox (shared/state/store.py) keeps each published event 30 days (expire_at).
resource "google_firestore_field" "job_events_expire_at" {
  project    = var.project_id
  database   = local.firestore_database
  collection = "job_events"
  field      = "expire_at"

  ttl_config {}

  index_config {}

  # Created here or not, the database (and its API) must exist first.
  depends_on = [google_firestore_database.default, google_project_service.this]
}

# The FIFO queue (shared/state/store.py, JobStore.claim_for_submission): status == QUEUED,
# ordered by queued_at. The other queries (status in [...], published == false) are served by
# Firestore's automatic single-field indexes.
resource "google_firestore_index" "jobs_queue" {
  project    = var.project_id
  database   = local.firestore_database
  collection = var.jobs_collection

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "queued_at"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.default, google_project_service.this]
}
