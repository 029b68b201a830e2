variable "namespace" {
  description = "Kubernetes namespace of the Ray objects."
  type        = string
  default     = "redraft"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes namespace name."
  }
}

variable "redraft_image" {
  description = "Container image with redraft (and Ray) installed, for example 123456789012.dkr.ecr.us-east-1.amazonaws.com/redraft:0.1.0. Pin a tag or digest, not latest."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.redraft_image)) && !endswith(var.redraft_image, ":latest")
    error_message = "redraft_image must carry an explicit tag or sha256 digest, and not :latest."
  }
}

variable "image_pull_policy" {
  description = "Pull policy of the redraft containers."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent"], var.image_pull_policy)
    error_message = "image_pull_policy must be Always or IfNotPresent."
  }
}

variable "ray_version" {
  description = "Ray version inside redraft_image (KubeRay uses it to pick compatible behaviour); must match the image."
  type        = string
  default     = "2.60.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.ray_version))
    error_message = "ray_version must look like 2.60.0."
  }
}

variable "aws_region" {
  description = "AWS region of the buckets, exported to the Ray pods as AWS_REGION/AWS_DEFAULT_REGION."
  type        = string
}

variable "job_service_account" {
  description = "Service account of the nightly job's Ray pods (bound to the job IAM role)."
  type        = string
  default     = "redraft-job"
}

variable "serve_service_account" {
  description = "Service account of the Serve cluster's Ray pods (bound to the serve IAM role)."
  type        = string
  default     = "redraft-serve"
}

variable "job_config_map" {
  description = "Name of the ConfigMap holding job.yaml; it is mounted at /config in the nightly job's pods."
  type        = string
  default     = "redraft-job-config"
}

variable "serve_config_map" {
  description = "Name of the ConfigMap holding serve.yaml; it is mounted at /config in the Serve cluster's pods."
  type        = string
  default     = "redraft-serve-config"
}

variable "head" {
  description = "CPU and memory of every Ray head pod (heads run on the system node group and get no GPU)."
  type = object({
    cpu    = optional(string, "2")
    memory = optional(string, "8Gi")
  })
  default = {}
}

variable "job" {
  description = <<-EOT
    The nightly RayJob: which GPU node group its workers run on (a key of the EKS module's gpu_node_groups),
    how many workers, and each worker's GPUs, CPU, memory and /dev/shm (Ray object store) size.
    active_deadline_seconds bounds a run (keep it below the schedule interval so runs never overlap);
    ttl_seconds_after_finished keeps the finished cluster around for inspecting logs before it is deleted.
  EOT
  type = object({
    gpu_node_group             = string
    workers                    = optional(number, 1)
    gpus_per_worker            = optional(number, 1)
    cpu                        = optional(string, "7")
    memory                     = optional(string, "56Gi")
    shm_size                   = optional(string, "16Gi")
    active_deadline_seconds    = optional(number, 79200)
    ttl_seconds_after_finished = optional(number, 600)
    backoff_limit              = optional(number, 1)
  })

  validation {
    condition     = var.job.workers >= 1 && floor(var.job.workers) == var.job.workers
    error_message = "job.workers must be a whole number, at least 1."
  }

  validation {
    condition     = var.job.gpus_per_worker >= 1 && var.job.gpus_per_worker <= 8 && floor(var.job.gpus_per_worker) == var.job.gpus_per_worker
    error_message = "job.gpus_per_worker must be a whole number between 1 and 8."
  }

  validation {
    condition     = var.job.active_deadline_seconds >= 600 && var.job.ttl_seconds_after_finished >= 0 && var.job.backoff_limit >= 0
    error_message = "job.active_deadline_seconds must be at least 600; ttl_seconds_after_finished and backoff_limit must not be negative."
  }
}

variable "serve" {
  description = <<-EOT
    The Serve RayCluster: its name, the GPU node group of its workers, how far the Ray autoscaler may
    scale the workers (min_workers = 0 lets the GPUs go when idle, at the price of a cold start), and each
    worker's GPUs, CPU, memory and /dev/shm size. idle_timeout_seconds is how long an idle worker lives.
  EOT
  type = object({
    name                 = optional(string, "redraft-serve")
    gpu_node_group       = string
    min_workers          = optional(number, 1)
    max_workers          = optional(number, 2)
    gpus_per_worker      = optional(number, 1)
    cpu                  = optional(string, "7")
    memory               = optional(string, "56Gi")
    shm_size             = optional(string, "16Gi")
    idle_timeout_seconds = optional(number, 600)
  })

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.serve.name))
    error_message = "serve.name must be a DNS label of at most 40 characters (KubeRay derives Service names from it)."
  }

  validation {
    condition     = var.serve.min_workers >= 0 && var.serve.min_workers <= var.serve.max_workers && var.serve.max_workers >= 1
    error_message = "serve needs 0 <= min_workers <= max_workers and max_workers >= 1."
  }

  validation {
    condition     = var.serve.gpus_per_worker >= 1 && var.serve.gpus_per_worker <= 8 && floor(var.serve.gpus_per_worker) == var.serve.gpus_per_worker
    error_message = "serve.gpus_per_worker must be a whole number between 1 and 8."
  }
}

variable "nightly_job_name_prefix" {
  description = "generateName of the RayJobs the schedule creates (each run is <prefix><random>)."
  type        = string
  default     = "redraft-nightly-"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{0,24}-$", var.nightly_job_name_prefix))
    error_message = "nightly_job_name_prefix must be a lowercase DNS prefix of at most 26 characters ending in '-'."
  }
}

variable "prometheus_url" {
  description = "In-cluster Prometheus URL given to the Ray dashboard (RAY_PROMETHEUS_HOST) for its metrics charts; null leaves it unset."
  type        = string
  default     = null
}

variable "grafana_url" {
  description = "In-cluster Grafana URL given to the Ray dashboard (RAY_GRAFANA_HOST); null leaves it unset."
  type        = string
  default     = null
}

variable "labels" {
  description = "Extra labels for every rendered object and pod."
  type        = map(string)
  default     = {}
}
