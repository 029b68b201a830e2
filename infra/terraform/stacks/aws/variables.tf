variable "region" {
  description = "AWS region for everything (pick one with capacity for your GPU instance types, for example us-east-1 or us-west-2)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "name" {
  description = "Name of the EKS cluster and prefix of its resources."
  type        = string
  default     = "redraft"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,37}$", var.name))
    error_message = "name must start with a letter and contain at most 38 letters, digits and hyphens."
  }
}

variable "bucket_prefix" {
  description = "Prefix of the S3 bucket names (<prefix>-corpus, -outputs, -checkpoints, -access-logs). Bucket names are global: include your organisation or account id."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,45}[a-z0-9]$", var.bucket_prefix))
    error_message = "bucket_prefix must be 3-47 characters of lowercase letters, digits and hyphens."
  }
}

variable "existing_vpc" {
  description = "Use this VPC instead of creating one: its ID, CIDR and private subnet IDs (at least two zones, with NAT egress, tagged kubernetes.io/role/internal-elb=1 for internal load balancers). null creates a VPC."
  type = object({
    vpc_id             = string
    vpc_cidr           = string
    private_subnet_ids = list(string)
  })
  default = null

  validation {
    condition     = var.existing_vpc == null || try(length(var.existing_vpc.private_subnet_ids) >= 2, false)
    error_message = "existing_vpc.private_subnet_ids needs subnets in at least two availability zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC this stack creates (ignored with existing_vpc)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Zones of the VPC this stack creates, 2 to 4 (ignored with existing_vpc). null means <region>a, <region>b and <region>c. Choose zones that offer your GPU instance types."
  type        = list(string)
  default     = null
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (ignored with existing_vpc)."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster."
  type        = string
  default     = "1.33"
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API publicly, restricted to public_access_cidrs. Needed to run the addons/ray stacks from outside the VPC."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to the public Kubernetes API endpoint (your office or VPN egress, for example 203.0.113.10/32)."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "Extra IAM roles/users that get cluster-admin (the identity running Terraform always gets it)."
  type        = list(string)
  default     = []
}

variable "system_node_group" {
  description = "CPU node group for system pods, operators, monitoring and Ray heads (see the eks module)."
  type = object({
    instance_types = optional(list(string), ["m6i.2xlarge"])
    min_size       = optional(number, 2)
    desired_size   = optional(number, 2)
    max_size       = optional(number, 4)
    disk_size_gib  = optional(number, 100)
  })
  default = {}
}

variable "gpu_node_groups" {
  description = "GPU node groups by name (see the eks module): instance_types, capacity_type (ON_DEMAND or SPOT), min_size (0 = scale to zero), max_size, disk_size_gib, ami_type, labels."
  type = map(object({
    instance_types = list(string)
    capacity_type  = optional(string, "ON_DEMAND")
    min_size       = optional(number, 0)
    max_size       = number
    disk_size_gib  = optional(number, 300)
    ami_type       = optional(string, "AL2023_x86_64_NVIDIA")
    labels         = optional(map(string), {})
  }))

  validation {
    condition     = length(var.gpu_node_groups) > 0
    error_message = "Define at least one GPU node group; redraft's jobs and Serve run on GPUs."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of redraft's Ray pods (the IAM roles trust service accounts in it)."
  type        = string
  default     = "redraft"
}

variable "job_service_account" {
  description = "Service account of the nightly job's Ray pods."
  type        = string
  default     = "redraft-job"
}

variable "serve_service_account" {
  description = "Service account of the Serve cluster's Ray pods."
  type        = string
  default     = "redraft-serve"
}

variable "checkpoint_expiration_days" {
  description = "Days before job resume state under checkpoints/ expires."
  type        = number
  default     = 30
}

variable "noncurrent_version_expiration_days" {
  description = "Days before overwritten or deleted object versions are removed from the data buckets."
  type        = number
  default     = 30
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete non-empty buckets (and everything in them)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every AWS resource (through the provider's default_tags)."
  type        = map(string)
  default     = {}
}
