locals {
  apis = toset([
    "aiplatform.googleapis.com",       # Vertex AI tuning and generateContent
    "artifactregistry.googleapis.com", # function images
    "cloudbuild.googleapis.com",       # function builds
    "cloudfunctions.googleapis.com",   # Cloud Run functions
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com", # poll ticks
    "eventarc.googleapis.com",       # triggers
    "firestore.googleapis.com",      # state
    "iam.googleapis.com",            # service accounts
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com", # the functions run as Cloud Run services
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "this" {
  for_each = local.apis

  project = var.project_id
  service = each.value

  # Turning an API off on destroy can break other things in the project; destroy leaves them on.
  disable_on_destroy         = false
  disable_dependent_services = false
}

# Service agents that IAM bindings below name: create them now instead of on first use.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.this]
}

resource "google_project_service_identity" "aiplatform" {
  provider = google-beta

  project = var.project_id
  service = "aiplatform.googleapis.com"

  depends_on = [google_project_service.this]
}

resource "google_project_service_identity" "eventarc" {
  provider = google-beta

  project = var.project_id
  service = "eventarc.googleapis.com"

  depends_on = [google_project_service.this]
}

# Cloud Storage's service agent publishes the bucket's notifications for the Eventarc trigger.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.this]
}
