variable "cluster_name" {
  description = "Name of the EKS cluster (the cluster autoscaler discovers its node groups by it)."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster (for example \"1.33\"); picks the matching cluster autoscaler release."
  type        = string

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.33."
  }
}

variable "cluster_autoscaler_role_arn" {
  description = "IAM role of the cluster autoscaler (EKS module output cluster_autoscaler_role_arn)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.cluster_autoscaler_role_arn))
    error_message = "cluster_autoscaler_role_arn must be an IAM role ARN."
  }
}

variable "cluster_autoscaler_service_account" {
  description = "namespace/name of the cluster autoscaler's service account; must match the one its IAM role trusts."
  type        = string
  default     = "kube-system/cluster-autoscaler"

  validation {
    condition     = can(regex("^[a-z0-9-]+/[a-z0-9.-]+$", var.cluster_autoscaler_service_account))
    error_message = "cluster_autoscaler_service_account must be namespace/name."
  }
}

variable "cluster_autoscaler_image_tag" {
  description = "Cluster autoscaler image tag; null uses v<kubernetes_version>.0, the release built for the cluster's minor version."
  type        = string
  default     = null
}

variable "chart_versions" {
  description = "Helm chart versions: kuberay_operator, kube_prometheus_stack, cluster_autoscaler, nvidia_device_plugin."
  type = object({
    kuberay_operator      = optional(string, "1.5.1")
    kube_prometheus_stack = optional(string, "69.4.1")
    cluster_autoscaler    = optional(string, "9.53.0")
    nvidia_device_plugin  = optional(string, "0.17.1")
  })
  default = {}
}

variable "kuberay_namespace" {
  description = "Namespace of the KubeRay operator."
  type        = string
  default     = "kuberay-system"
}

variable "monitoring_namespace" {
  description = "Namespace of Prometheus and Grafana."
  type        = string
  default     = "monitoring"
}

variable "enable_monitoring" {
  description = "Install kube-prometheus-stack (Prometheus Operator, Prometheus, Grafana with its dashboard sidecar)."
  type        = bool
  default     = true
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples (Prometheus duration, for example 15d)."
  type        = string
  default     = "15d"

  validation {
    condition     = can(regex("^[0-9]+(h|d|w|y)$", var.prometheus_retention))
    error_message = "prometheus_retention must be a Prometheus duration such as 15d."
  }
}

variable "prometheus_storage_size" {
  description = "Size of Prometheus's persistent volume (gp3, encrypted)."
  type        = string
  default     = "50Gi"

  validation {
    condition     = can(regex("^[0-9]+(Gi|Ti)$", var.prometheus_storage_size))
    error_message = "prometheus_storage_size must be a quantity in Gi or Ti, for example 50Gi."
  }
}

variable "grafana_dashboard_label" {
  description = "Label (name and value) that Grafana's sidecar watches for dashboard ConfigMaps in every namespace."
  type = object({
    name  = string
    value = string
  })
  default = {
    name  = "grafana_dashboard"
    value = "1"
  }
}
