variable "region" {
  description = "AWS region of the cluster (from the aws stack's addons_stack_inputs)."
  type        = string
}

variable "cluster_name" {
  description = "Name of the EKS cluster (from the aws stack's addons_stack_inputs)."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster (from the aws stack's addons_stack_inputs)."
  type        = string
}

variable "cluster_autoscaler_role_arn" {
  description = "IAM role of the cluster autoscaler (from the aws stack's addons_stack_inputs)."
  type        = string
}

variable "chart_versions" {
  description = "Helm chart versions to install: kuberay_operator, kube_prometheus_stack, cluster_autoscaler, nvidia_device_plugin (unset ones use the addons module's defaults)."
  type = object({
    kuberay_operator      = optional(string)
    kube_prometheus_stack = optional(string)
    cluster_autoscaler    = optional(string)
    nvidia_device_plugin  = optional(string)
  })
  default = {}
}

variable "enable_monitoring" {
  description = "Install Prometheus and Grafana (kube-prometheus-stack)."
  type        = bool
  default     = true
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples, for example 15d."
  type        = string
  default     = "15d"
}

variable "prometheus_storage_size" {
  description = "Size of Prometheus's persistent volume, for example 50Gi."
  type        = string
  default     = "50Gi"
}
