variable "namespace" {
  description = "Namespace for the Ray objects; the module creates it."
  type        = string
  default     = "redraft"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes namespace name."
  }
}

variable "redraft_image" {
  description = "Container image with redraft and Ray installed (tag or digest pinned), used by every Ray pod."
  type        = string
}

variable "image_pull_policy" {
  description = "Pull policy of the redraft containers (Always or IfNotPresent)."
  type        = string
  default     = "IfNotPresent"
}

variable "ray_version" {
  description = "Ray version inside redraft_image."
  type        = string
  default     = "2.60.0"
}

variable "aws_region" {
  description = "AWS region of the buckets (AWS_REGION in the Ray pods)."
  type        = string
}

variable "job_service_account" {
  description = "Service account created for the nightly job's Ray pods."
  type        = string
  default     = "redraft-job"
}

variable "job_role_arn" {
  description = "IAM role (IRSA) of the job service account: storage module output job_role_arn."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.job_role_arn))
    error_message = "job_role_arn must be an IAM role ARN."
  }
}

variable "serve_service_account" {
  description = "Service account created for the Serve cluster's Ray pods."
  type        = string
  default     = "redraft-serve"
}

variable "serve_role_arn" {
  description = "IAM role (IRSA) of the serve service account: storage module output serve_role_arn."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.serve_role_arn))
    error_message = "serve_role_arn must be an IAM role ARN."
  }
}

variable "job_config_yaml" {
  description = "Contents of the nightly job's config (redraft run /config/job.yaml): input.path, output.path, engine.checkpoint, ..."
  type        = string

  validation {
    condition     = can(yamldecode(var.job_config_yaml))
    error_message = "job_config_yaml must be valid YAML."
  }
}

variable "serve_config_yaml" {
  description = "Contents of the Serve config (redraft serve /config/serve.yaml)."
  type        = string

  validation {
    condition     = can(yamldecode(var.serve_config_yaml))
    error_message = "serve_config_yaml must be valid YAML."
  }
}

variable "nightly_schedule" {
  description = "Cron schedule of the nightly job, in the time zone given by schedule_time_zone."
  type        = string
  default     = "0 2 * * *"

  validation {
    condition     = length(split(" ", trimspace(var.nightly_schedule))) == 5
    error_message = "nightly_schedule must be a five-field cron expression."
  }
}

variable "schedule_time_zone" {
  description = "IANA time zone of nightly_schedule (CronJob spec.timeZone), for example Etc/UTC or Europe/Berlin."
  type        = string
  default     = "Etc/UTC"
}

variable "nightly_suspended" {
  description = "Pause the schedule without deleting it."
  type        = bool
  default     = false
}

variable "head" {
  description = "CPU and memory of each Ray head pod (see the ray-manifests module)."
  type = object({
    cpu    = optional(string, "2")
    memory = optional(string, "8Gi")
  })
  default = {}
}

variable "job" {
  description = "Nightly RayJob sizing: gpu_node_group, workers, gpus_per_worker, cpu, memory, shm_size, active_deadline_seconds, ttl_seconds_after_finished, backoff_limit (see the ray-manifests module)."
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
}

variable "serve" {
  description = "Serve RayCluster sizing: name, gpu_node_group, min_workers, max_workers, gpus_per_worker, cpu, memory, shm_size, idle_timeout_seconds (see the ray-manifests module)."
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
}

variable "kubectl_image" {
  description = "Image of the schedule's submitter container, which runs `kubectl create` on the RayJob template."
  type        = string
  default     = "registry.k8s.io/kubectl:v1.33.5"
}

variable "internal_load_balancer" {
  description = "Also expose the Serve cluster's dashboard (8265) and Serve API (8000) on an internal (VPC-only) network load balancer. false: reach them with kubectl port-forward only."
  type        = bool
  default     = false
}

variable "internal_load_balancer_source_ranges" {
  description = "CIDRs allowed through the internal load balancer (for example the VPC CIDR or your VPN's range). Required when internal_load_balancer is true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.internal_load_balancer_source_ranges : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "internal_load_balancer_source_ranges must be valid CIDRs and must not contain 0.0.0.0/0."
  }
}

variable "prometheus_url" {
  description = "In-cluster Prometheus URL for the Ray dashboard's charts (addons module output prometheus_url); null to leave unset."
  type        = string
  default     = null
}

variable "grafana_url" {
  description = "In-cluster Grafana URL for the Ray dashboard (addons module output grafana_url); null to leave unset."
  type        = string
  default     = null
}

variable "enable_pod_monitor" {
  description = "Create the PodMonitor that makes Prometheus scrape every Ray node's metrics port (needs the Prometheus Operator CRDs, installed by the addons module)."
  type        = bool
  default     = true
}

variable "grafana_dashboard_json" {
  description = "JSON of the redraft Grafana dashboard (workers/grafana/redraft_dashboard.json); stored in a ConfigMap labelled grafana_dashboard=1 that Grafana's sidecar loads. null skips it."
  type        = string
  default     = null

  validation {
    condition     = var.grafana_dashboard_json == null || can(jsondecode(var.grafana_dashboard_json))
    error_message = "grafana_dashboard_json must be valid JSON."
  }
}

variable "grafana_dashboard_label" {
  description = "Label (name and value) that Grafana's dashboard sidecar watches for."
  type = object({
    name  = string
    value = string
  })
  default = {
    name  = "grafana_dashboard"
    value = "1"
  }
}

variable "labels" {
  description = "Extra labels for every object."
  type        = map(string)
  default     = {}
}
