variable "name_prefix" {
  description = "Prefix of every bucket name (buckets are <prefix>-corpus, <prefix>-outputs, <prefix>-checkpoints, <prefix>-access-logs). S3 names are global, so include something unique such as the account id."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,45}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-47 characters of lowercase letters, digits and hyphens, starting and ending with a letter or digit."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (IRSA); the Ray pod roles trust only this provider."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (https://oidc.eks.REGION.amazonaws.com/id/ID), used for the sub/aud conditions of the trust policies."
  type        = string

  validation {
    condition     = startswith(var.oidc_issuer_url, "https://")
    error_message = "oidc_issuer_url must start with https://."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the Ray pods."
  type        = string
  default     = "redraft"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes namespace name."
  }
}

variable "job_service_account" {
  description = "Kubernetes service account of the nightly batch job's Ray pods (reads the corpus, writes outputs and checkpoints)."
  type        = string
  default     = "redraft-job"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.job_service_account))
    error_message = "job_service_account must be a valid Kubernetes service account name."
  }
}

variable "serve_service_account" {
  description = "Kubernetes service account of the Serve cluster's Ray pods (reads model weights only)."
  type        = string
  default     = "redraft-serve"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.serve_service_account))
    error_message = "serve_service_account must be a valid Kubernetes service account name."
  }
}

variable "outputs_prefix" {
  description = "Key prefix in the outputs bucket that jobs may read and write."
  type        = string
  default     = "outputs/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.outputs_prefix))
    error_message = "outputs_prefix must be a relative key prefix ending in '/', without wildcards."
  }
}

variable "checkpoints_prefix" {
  description = "Key prefix in the checkpoints bucket for job resume state (jobs read and write it)."
  type        = string
  default     = "checkpoints/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.checkpoints_prefix))
    error_message = "checkpoints_prefix must be a relative key prefix ending in '/', without wildcards."
  }
}

variable "models_prefix" {
  description = "Key prefix in the checkpoints bucket holding model weights (jobs and Serve only read it)."
  type        = string
  default     = "models/"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/$", var.models_prefix))
    error_message = "models_prefix must be a relative key prefix ending in '/', without wildcards."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted object versions are removed, in every data bucket."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which unfinished multipart uploads are aborted, in every bucket."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1 && floor(var.abort_incomplete_multipart_upload_days) == var.abort_incomplete_multipart_upload_days
    error_message = "abort_incomplete_multipart_upload_days must be a whole number of days, at least 1."
  }
}

variable "checkpoint_expiration_days" {
  description = "Days after which job resume state under checkpoints_prefix expires (model weights under models_prefix never expire)."
  type        = number
  default     = 30

  validation {
    condition     = var.checkpoint_expiration_days >= 1 && floor(var.checkpoint_expiration_days) == var.checkpoint_expiration_days
    error_message = "checkpoint_expiration_days must be a whole number of days, at least 1."
  }
}

variable "outputs_infrequent_access_days" {
  description = "Days after which objects under outputs_prefix move to STANDARD_IA (S3 requires at least 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.outputs_infrequent_access_days >= 30 && floor(var.outputs_infrequent_access_days) == var.outputs_infrequent_access_days
    error_message = "outputs_infrequent_access_days must be a whole number of days, at least 30."
  }
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept in the access-log bucket."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 1 && floor(var.access_log_retention_days) == var.access_log_retention_days
    error_message = "access_log_retention_days must be a whole number of days, at least 1."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the buckets' KMS key is deleted after a destroy (7-30 days)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete buckets that still hold objects. Leave false outside throwaway environments."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
