# The pipeline's bucket: uploads in incoming/, prepared datasets in prepared/, reports in reports/.
resource "google_storage_bucket" "data" {
  # checkov:skip=CKV_GCP_62: Usage/storage access logs are a legacy feature that needs a second bucket; object access is audited with Cloud Audit Logs Data Access logs instead (README, "Security notes").
  name     = local.bucket
  project  = var.project_id
  location = var.region # Eventarc's Cloud Storage trigger must be in the bucket's region.

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true # required by the prefix-scoped IAM conditions in iam.tf
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = 604800 # 7 days
  }

  lifecycle_rule {
    condition {
      age            = var.prepared_retention_days
      matches_prefix = [var.prepared_prefix]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.reports_retention_days
      matches_prefix = [var.reports_prefix]
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.incoming_retention_days > 0 ? [var.incoming_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [var.incoming_prefix]
      }
      action {
        type = "Delete"
      }
    }
  }

  # Versioning keeps what is overwritten or deleted; drop those copies after a week.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.this]
}

# Source archives of the functions (Cloud Build reads them once per deployment).
resource "google_storage_bucket" "source" {
  # checkov:skip=CKV_GCP_62: Holds only build inputs written by Terraform; Cloud Audit Logs cover access, a second log bucket would add cost and nothing to read.
  name     = "${var.project_id}-${var.name_prefix}-source"
  project  = var.project_id
  location = var.region

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # nothing here that a redeploy cannot recreate

  versioning {
    enabled = true
  }

  # Archives are named by content hash; old ones are only needed to roll back within a month.
  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

# Cloud Functions deploys the repository root: main.py, functions/, shared/, requirements.txt.
# Everything else (tests, local stack, Terraform, virtualenvs, caches) stays out of the archive.
data "archive_file" "source" {
  type        = "zip"
  source_dir  = "${path.module}/.."
  output_path = "${path.module}/.terraform/sftpipe-source.zip"

  # Plain names match a top-level entry exactly in every provider version; the two patterns
  # catch byte-code caches and egg-info at any depth.
  excludes = [
    ".ci",
    ".git",
    ".hypothesis",
    ".pytest_cache",
    ".ruff_cache",
    ".sftpipe",
    ".venv",
    ".venv-deploy",
    "__pycache__",
    "**/__pycache__",
    "*.egg-info",
    "benchmarks",
    "build",
    "deploy",
    "dist",
    "local",
    "tests",
  ]
}

resource "google_storage_bucket_object" "source" {
  # The content hash in the name makes every code change a new object, hence a new build.
  name   = "sftpipe-source-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

# Images of the four functions, with a cleanup policy so that old builds do not pile up.
resource "google_artifact_registry_repository" "functions" {
  # checkov:skip=CKV_GCP_84: Google-managed encryption; CMEK would add a Cloud KMS key to run and pay for, and the images hold only this repository's public-ish code, no data.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  description   = "Images of the sftpipe functions (built by Cloud Build from the repository root)."
  format        = "DOCKER"

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.this]
}
