# The four Cloud Run functions (2nd gen), one service account each, built from the repository
# root. Their triggers are in triggers.tf, their grants in iam.tf.

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "sftpipe ${each.key} function"
  description  = "Runtime identity of the ${each.key} function; roles in deploy/README.md."
}

# Builds the function images: reads the source archive, writes to the Artifact Registry
# repository, writes build logs. Nothing else (the default build identity is project-wide).
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "sftpipe function builds"
  description  = "Cloud Build identity for the sftpipe functions."
}

resource "google_cloudfunctions2_function" "this" {
  for_each = local.functions

  name        = "${var.name_prefix}-${each.key}"
  project     = var.project_id
  location    = var.region
  description = each.value.description

  build_config {
    runtime           = var.python_runtime
    entry_point       = each.value.entry_point
    docker_repository = google_artifact_registry_repository.functions.id
    service_account   = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.function_resources[each.key].memory
    available_cpu                    = var.function_resources[each.key].cpu
    timeout_seconds                  = var.function_resources[each.key].timeout_s
    max_instance_count               = var.function_resources[each.key].max_instances
    min_instance_count               = 0 # nothing runs (or costs) at rest
    max_instance_request_concurrency = 1
    service_account_email            = google_service_account.function[each.key].email

    # Only Eventarc / Pub/Sub push from this project reach the functions; they are not on the
    # internet and nobody but the trigger identity may invoke them (iam.tf).
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true

    # Each function knows its own timeout: submissions and evaluation calls are sized to end
    # inside it (shared/budgets.py). glibc maps every allocation over 4 MiB and unmaps it when
    # freed (MALLOC_MMAP_THRESHOLD_, shared/datasets/limits.py): ingest's two passes over a
    # large file then peak at the first pass's memory, not above it.
    environment_variables = merge(local.environment, {
      SFTPIPE_FUNCTION_TIMEOUT_S = tostring(var.function_resources[each.key].timeout_s)
      MALLOC_MMAP_THRESHOLD_     = "4194304"
    })

    dynamic "secret_environment_variables" {
      for_each = contains(local.notifying_functions, each.key) ? local.mounted_secrets : {}
      content {
        key        = "SFTPIPE_${upper(secret_environment_variables.key)}"
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest" # new instances read a new version; README, "Rotating a secret"
      }
    }
  }

  labels = {
    function = each.key
  }

  depends_on = [
    google_project_service.this,
    google_project_iam_member.build_log_writer,
    google_artifact_registry_repository_iam_member.build_writer,
    google_storage_bucket_iam_member.build_source_reader,
    google_secret_manager_secret_iam_member.accessor,
  ]
}
