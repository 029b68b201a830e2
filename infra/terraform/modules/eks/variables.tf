variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,37}$", var.cluster_name))
    error_message = "cluster_name must start with a letter and contain at most 38 letters, digits and hyphens."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the node groups (for example \"1.33\")."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.33."
  }
}

variable "subnet_ids" {
  description = "Private subnet IDs for the control plane ENIs and all node groups (at least two zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "endpoint_public_access" {
  description = "Expose the Kubernetes API endpoint publicly (restricted to public_access_cidrs). Leave false and reach the API from inside the VPC (VPN, bastion, CI runner) where you can."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint when endpoint_public_access is true (for example your office's /32). Must not be empty when public access is on."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "public_access_cidrs must be valid IPv4 CIDRs and must not contain 0.0.0.0/0."
  }
}

variable "admin_principal_arns" {
  description = "IAM users or roles given cluster-admin through EKS access entries (in addition to the identity that creates the cluster)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", a))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
}

variable "log_retention_days" {
  description = "Retention of the control-plane logs in CloudWatch Logs, in days (one of the values CloudWatch accepts)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention period CloudWatch Logs accepts."
  }
}

variable "system_node_group" {
  description = "CPU node group for system pods, the KubeRay operator, Prometheus/Grafana and the Ray head pods. Always on-demand."
  type = object({
    instance_types = optional(list(string), ["m6i.2xlarge"])
    min_size       = optional(number, 2)
    desired_size   = optional(number, 2)
    max_size       = optional(number, 4)
    disk_size_gib  = optional(number, 100)
  })
  default = {}

  validation {
    condition = (
      length(var.system_node_group.instance_types) > 0 &&
      var.system_node_group.min_size >= 1 &&
      var.system_node_group.min_size <= var.system_node_group.desired_size &&
      var.system_node_group.desired_size <= var.system_node_group.max_size &&
      var.system_node_group.disk_size_gib >= 20
    )
    error_message = "system_node_group needs instance types, 1 <= min_size <= desired_size <= max_size, and disk_size_gib >= 20."
  }
}

variable "gpu_node_groups" {
  description = <<-EOT
    GPU node groups by name. Each scales between min_size and max_size (use min_size = 0 to pay nothing
    while idle; the cluster autoscaler adds nodes when Ray asks for GPU pods). Nodes carry the taint
    nvidia.com/gpu=true:NoSchedule and the label redraft.dev/gpu-group=<name>.
    capacity_type is ON_DEMAND or SPOT; instance_types must be GPU (g*/p*) types, for example
    ["p5.48xlarge"] (8x H100) or ["g6e.xlarge", "g6e.2xlarge"] (1x L40S).
    ami_type is AL2023_x86_64_NVIDIA (default) or BOTTLEROCKET_x86_64_NVIDIA.
  EOT
  type = map(object({
    instance_types = list(string)
    capacity_type  = optional(string, "ON_DEMAND")
    min_size       = optional(number, 0)
    max_size       = number
    disk_size_gib  = optional(number, 300)
    ami_type       = optional(string, "AL2023_x86_64_NVIDIA")
    labels         = optional(map(string), {})
  }))
  default = {}

  validation {
    condition     = alltrue([for name, g in var.gpu_node_groups : can(regex("^[a-z0-9][a-z0-9-]{0,19}$", name))])
    error_message = "gpu_node_groups keys must be 1-20 lowercase letters, digits or hyphens."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : contains(["ON_DEMAND", "SPOT"], g.capacity_type)])
    error_message = "capacity_type must be ON_DEMAND or SPOT."
  }

  validation {
    condition = alltrue([for g in values(var.gpu_node_groups) :
      length(g.instance_types) > 0 && alltrue([for t in g.instance_types : can(regex("^(g|p)[0-9][a-z0-9-]*\\.[0-9a-z]+$", t))])
    ])
    error_message = "instance_types must be a non-empty list of GPU instance types (g* or p* families, for example p5.48xlarge or g6e.xlarge)."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : g.min_size >= 0 && g.min_size <= g.max_size && g.max_size >= 1])
    error_message = "Each GPU node group needs 0 <= min_size <= max_size and max_size >= 1."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : contains(["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"], g.ami_type)])
    error_message = "ami_type must be AL2023_x86_64_NVIDIA or BOTTLEROCKET_x86_64_NVIDIA."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : g.disk_size_gib >= 100])
    error_message = "GPU nodes need disk_size_gib >= 100 (CUDA images and model weights are large)."
  }
}

variable "cluster_autoscaler_service_account" {
  description = "namespace/name of the cluster autoscaler's service account; its IRSA role is trusted for exactly this account."
  type        = string
  default     = "kube-system/cluster-autoscaler"

  validation {
    condition     = can(regex("^[a-z0-9-]+/[a-z0-9.-]+$", var.cluster_autoscaler_service_account))
    error_message = "cluster_autoscaler_service_account must be namespace/name."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
