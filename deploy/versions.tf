terraform {
  # 1.5: terraform_data and check blocks; nothing newer is used.
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 7.0"
    }
    # Only for google_project_service_identity (creates the Pub/Sub and Vertex AI service agents
    # before IAM bindings name them).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.10, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }

  # State: keep it in a versioned bucket (see README, "State"). Uncomment and run
  # `terraform init -backend-config="bucket=<state bucket>"`.
  # backend "gcs" {
  #   prefix = "sftpipe"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = var.labels
}

provider "google-beta" {
  project = var.project_id
  region  = var.region

  default_labels = var.labels
}
