# From the aws stack (terraform -chdir=../aws output -json ray_stack_inputs > aws.auto.tfvars.json).

variable "region" {
  description = "AWS region of the cluster and buckets."
  type        = string
}

variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the cluster's VPC; the default source range of the optional internal load balancer."
  type        = string
}

variable "namespace" {
  description = "Namespace of redraft's Ray objects (must match the one the IAM roles trust)."
  type        = string
}

variable "job_service_account" {
  description = "Service account of the nightly job's Ray pods (must match the one the job role trusts)."
  type        = string
}

variable "serve_service_account" {
  description = "Service account of the Serve cluster's Ray pods (must match the one the serve role trusts)."
  type        = string
}

variable "job_role_arn" {
  description = "IAM role of the nightly job's Ray pods."
  type        = string
}

variable "serve_role_arn" {
  description = "IAM role of the Serve cluster's Ray pods."
  type        = string
}

variable "s3_uris" {
  description = "S3 URIs (corpus, outputs, checkpoints, models) substituted into the config templates."
  type = object({
    corpus      = string
    outputs     = string
    checkpoints = string
    models      = string
  })
}

variable "gpu_node_groups" {
  description = "Names of the GPU node groups the aws stack created; job.gpu_node_group and serve.gpu_node_group must be among them."
  type        = list(string)
}

# From the addons stack (terraform -chdir=../addons output -json ray_stack_inputs > addons.auto.tfvars.json).

variable "prometheus_url" {
  description = "In-cluster Prometheus URL for the Ray dashboard's charts; null leaves it unset."
  type        = string
  default     = null
}

variable "grafana_url" {
  description = "In-cluster Grafana URL for the Ray dashboard; null leaves it unset."
  type        = string
  default     = null
}

# Yours to set (see examples/*.tfvars).

variable "redraft_image" {
  description = "Container image with redraft installed (for example <account>.dkr.ecr.<region>.amazonaws.com/redraft:0.1.0), with a pinned tag or digest."
  type        = string
}

variable "ray_version" {
  description = "Ray version inside redraft_image."
  type        = string
  default     = "2.60.0"
}

variable "job_config_template" {
  description = "Path of the nightly job's config template (YAML; $${corpus}, $${outputs}, $${checkpoints}, $${models} are replaced by the bucket URIs). Relative paths are relative to this directory."
  type        = string
  default     = "examples/job.yaml.tftpl"
}

variable "serve_config_template" {
  description = "Path of the Serve config template (YAML, same placeholders as job_config_template)."
  type        = string
  default     = "examples/serve.yaml.tftpl"
}

variable "nightly_schedule" {
  description = "Cron schedule of the nightly job."
  type        = string
  default     = "0 2 * * *"
}

variable "schedule_time_zone" {
  description = "IANA time zone of nightly_schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "nightly_suspended" {
  description = "Pause the nightly schedule."
  type        = bool
  default     = false
}

variable "job" {
  description = "Nightly job sizing (see the ray-manifests module): gpu_node_group, workers, gpus_per_worker, cpu, memory, shm_size, active_deadline_seconds, ttl_seconds_after_finished, backoff_limit."
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
    condition     = var.job.gpu_node_group != ""
    error_message = "job.gpu_node_group must name a GPU node group."
  }
}

variable "serve" {
  description = "Serve cluster sizing (see the ray-manifests module): name, gpu_node_group, min_workers, max_workers, gpus_per_worker, cpu, memory, shm_size, idle_timeout_seconds."
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

variable "internal_load_balancer" {
  description = "Expose the Serve cluster's dashboard and API on an internal NLB (VPC-only) in addition to port-forwarding."
  type        = bool
  default     = false
}

variable "internal_load_balancer_source_ranges" {
  description = "CIDRs allowed through the internal load balancer; null means the VPC CIDR."
  type        = list(string)
  default     = null
}

variable "grafana_dashboard_path" {
  description = "Path of redraft's Grafana dashboard JSON; null means workers/grafana/redraft_dashboard.json in this repository."
  type        = string
  default     = null
}
